//! Port overrides on PostgreSQL: reading the resources' ports and the setting, and writing
//! what `store::port_overrides` decides, inside the caller's transaction. Several control
//! planes write at once, so every transaction that hands out or checks a port first takes
//! [`PORT_LOCK`]: two resources created at once on two control planes still get two ports.

use uuid::Uuid;

use super::rows::{col, port_at};
use super::{Tx, tx_execute, tx_query_opt};
use crate::store::port_overrides::{
    self, PortChange, PortHolder, PortOverrides, PortOverridesChange, SETTING_KEY, first_free,
    holder_of,
};
use crate::store::{ResourceRecord, StoreError};

/// Advisory lock held while local ports are handed out or checked ("sdm_port").
const PORT_LOCK: i64 = 0x7364_6d5f_706f_7274;

/// Takes the port lock until the transaction ends.
pub(super) async fn lock(tx: &Tx<'_>) -> Result<(), StoreError> {
    tx_execute(
        tx,
        "lock local ports",
        "SELECT pg_advisory_xact_lock($1)",
        &[&PORT_LOCK],
    )
    .await
    .map(|_| ())
}

async fn setting(tx: &Tx<'_>) -> Result<PortOverrides, StoreError> {
    let row = tx_query_opt(
        tx,
        "read the port-overrides setting",
        "SELECT value FROM settings WHERE key = $1",
        &[&SETTING_KEY],
    )
    .await?;
    let stored: Option<Vec<u8>> = row.as_ref().map(|r| col(r, 0)).transpose()?;
    PortOverrides::decode(stored.as_deref())
}

/// Every resource's local port, sorted by name.
async fn holders(tx: &Tx<'_>) -> Result<Vec<PortHolder>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, name, port_override, port_assigned FROM resources ORDER BY name",
        )
        .await
        .map_err(|e| StoreError::backend("read local ports", e))?;
    let rows = tx
        .query(&stmt, &[])
        .await
        .map_err(|e| StoreError::backend("read local ports", e))?;
    rows.iter()
        .map(|r| {
            Ok(PortHolder {
                id: col(r, 0)?,
                name: col(r, 1)?,
                port: port_at(r, 2)?,
                assigned: col(r, 3)?,
            })
        })
        .collect()
}

/// Gives `resource` (about to be stored) its local port, as SQLite's `place` does; the
/// caller holds the port lock.
pub(super) async fn place(
    tx: &Tx<'_>,
    resource: &mut ResourceRecord,
    stored: Option<u16>,
) -> Result<(), StoreError> {
    match resource.port_override {
        Some(port) if Some(port) == stored => Ok(()),
        Some(port) => {
            resource.port_assigned = false;
            match holder_of(&holders(tx).await?, port, resource.id) {
                Some(h) => Err(StoreError::PortTaken {
                    port,
                    holder: h.name.clone(),
                }),
                None => Ok(()),
            }
        }
        None => {
            let setting = setting(tx).await?;
            resource.port_assigned = setting.assign;
            if setting.assign {
                let others: Vec<PortHolder> = holders(tx)
                    .await?
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
pub(super) async fn stored_port(tx: &Tx<'_>, id: Uuid) -> Result<Option<Option<u16>>, StoreError> {
    tx_query_opt(
        tx,
        "read a resource's local port",
        "SELECT port_override FROM resources WHERE id = $1",
        &[&id],
    )
    .await?
    .as_ref()
    .map(|r| port_at(r, 0))
    .transpose()
}

/// Changes the setting and applies it to every resource; the new setting and how many ports
/// changed. The caller holds the port lock.
pub(super) async fn change(
    tx: &Tx<'_>,
    change: PortOverridesChange,
) -> Result<(PortOverrides, u64), StoreError> {
    let setting = change.applied_to(self::setting(tx).await?);
    let changes = port_overrides::plan(setting, &holders(tx).await?, change.regenerate)?;
    for PortChange { id, port, assigned } in &changes {
        tx_execute(
            tx,
            "assign local ports",
            "UPDATE resources SET port_override = $2, port_assigned = $3 WHERE id = $1",
            &[id, &port.map(i32::from), assigned],
        )
        .await?;
    }
    tx_execute(
        tx,
        "store the port-overrides setting",
        "INSERT INTO settings (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SETTING_KEY, &setting.encode()],
    )
    .await?;
    Ok((setting, changes.len() as u64))
}
