//! Port overrides on SQLite: reading the resources' ports and the setting, and writing what
//! `store::port_overrides` decides, inside the caller's transaction. This process holds the
//! only connection, so its transactions are already serialised.

use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use super::rows::{Context, port_at, uuid_at};
use crate::store::port_overrides::{
    self, PortChange, PortHolder, PortOverrides, PortOverridesChange, SETTING_KEY, first_free,
    holder_of,
};
use crate::store::{ResourceRecord, StoreError};

pub(super) fn setting(tx: &Transaction<'_>) -> Result<PortOverrides, StoreError> {
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [SETTING_KEY],
            |r| r.get(0),
        )
        .optional()
        .context("read the port-overrides setting")?;
    PortOverrides::decode(stored.as_deref())
}

/// Every resource's local port, sorted by name.
fn holders(tx: &Transaction<'_>) -> Result<Vec<PortHolder>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, name, port_override, port_assigned FROM resources ORDER BY name",
        )
        .context("read local ports")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(PortHolder {
                id: uuid_at(r, 0)?,
                name: r.get(1)?,
                port: port_at(r, 2)?,
                assigned: r.get(3)?,
            })
        })
        .context("read local ports")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("read local ports")
}

/// Gives `resource` (about to be stored) its local port: an explicit one is checked against
/// the others', none while the setting is on gets the lowest free one. `stored`: the port it
/// holds now (updates), which is not checked again, so that an update that keeps a port does
/// not fail on ports that were shared before ports had to be unique.
pub(super) fn place(
    tx: &Transaction<'_>,
    resource: &mut ResourceRecord,
    stored: Option<u16>,
) -> Result<(), StoreError> {
    match resource.port_override {
        Some(port) if Some(port) == stored => Ok(()),
        Some(port) => {
            resource.port_assigned = false;
            match holder_of(&holders(tx)?, port, resource.id) {
                Some(h) => Err(StoreError::PortTaken {
                    port,
                    holder: h.name.clone(),
                }),
                None => Ok(()),
            }
        }
        None => {
            let setting = setting(tx)?;
            resource.port_assigned = setting.assign;
            if setting.assign {
                let others: Vec<PortHolder> = holders(tx)?
                    .into_iter()
                    .filter(|h| h.id != resource.id)
                    .collect();
                resource.port_override = Some(first_free(setting.range, &others)?);
            }
            Ok(())
        }
    }
}

/// The port `id` holds now, if it exists.
pub(super) fn stored_port(
    tx: &Transaction<'_>,
    id: Uuid,
) -> Result<Option<Option<u16>>, StoreError> {
    tx.query_row(
        "SELECT port_override FROM resources WHERE id = ?1",
        [id.to_string()],
        |r| port_at(r, 0),
    )
    .optional()
    .context("read a resource's local port")
}

/// Changes the setting and applies it to every resource; the new setting and how many ports
/// changed.
pub(super) fn change(
    tx: &Transaction<'_>,
    change: PortOverridesChange,
) -> Result<(PortOverrides, u64), StoreError> {
    let setting = change.applied_to(self::setting(tx)?);
    let changes = port_overrides::plan(setting, &holders(tx)?, change.regenerate)?;
    for PortChange { id, port, assigned } in &changes {
        tx.execute(
            "UPDATE resources SET port_override = ?2, port_assigned = ?3 WHERE id = ?1",
            params![id.to_string(), port, assigned],
        )
        .context("assign local ports")?;
    }
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SETTING_KEY, setting.encode()],
    )
    .context("store the port-overrides setting")?;
    Ok((setting, changes.len() as u64))
}
