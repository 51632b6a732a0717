//! Session lifetimes in SQLite: the per-account limit, use, expiry and pruning (the `Store`
//! methods in `mod.rs` call these).

use rusqlite::{Connection, Transaction, params};
use uuid::Uuid;

use super::rows::{Context, json, uuid_at};
use crate::store::{SessionExpiry, SessionRecord, StoreError};

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(super) fn insert(conn: &Connection, session: &SessionRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, account_id, labels, client, created_at, ended_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .context("create a session")?
    .execute(params![
        session.id.to_string(),
        session.account_id.to_string(),
        json(&session.labels)?,
        session.client,
        session.created_at,
        session.ended_at,
        session.last_used_at
    ])
    .context("create a session")?;
    Ok(())
}

pub(super) fn count_open(conn: &Connection, account_id: Uuid) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM sessions WHERE account_id = ?1 AND ended_at IS NULL")
        .context("count open sessions")?
        .query_row([account_id.to_string()], |r| r.get(0))
        .context("count open sessions")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Inserts `session`, then makes room among the account's open sessions (see
/// [`Store::open_session`](crate::store::Store::open_session)). The one connection serialises logins.
pub(super) fn open(
    tx: &Transaction<'_>,
    session: &SessionRecord,
    max_open: u32,
) -> Result<u64, StoreError> {
    insert(tx, session)?;
    let open = count_open(tx, session.account_id)?;
    let excess = open.saturating_sub(u64::from(max_open.max(1)));
    if excess == 0 {
        return Ok(0);
    }
    let oldest: Vec<Uuid> = tx
        .prepare_cached(
            "SELECT id FROM sessions
             WHERE account_id = ?1 AND ended_at IS NULL AND id <> ?2
             ORDER BY created_at, rowid LIMIT ?3",
        )
        .context("find the oldest open sessions")?
        .query_map(
            params![
                session.account_id.to_string(),
                session.id.to_string(),
                i64::try_from(excess).unwrap_or(i64::MAX)
            ],
            |r| uuid_at(r, 0),
        )
        .context("find the oldest open sessions")?
        .collect::<rusqlite::Result<_>>()
        .context("find the oldest open sessions")?;
    let mut delete = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ?1 AND last_used_at IS NULL")
        .context("remove an unused session")?;
    let mut end = tx
        .prepare_cached("UPDATE sessions SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL")
        .context("end a session")?;
    let mut made_room = 0;
    for id in &oldest {
        let id = id.to_string();
        let deleted = delete.execute([&id]).context("remove an unused session")?;
        let ended = if deleted == 0 {
            end.execute(params![id, session.created_at])
                .context("end a session")?
        } else {
            0
        };
        made_room += count(deleted + ended);
    }
    Ok(made_room)
}

pub(super) fn touch(conn: &Connection, id: Uuid, now: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE sessions SET last_used_at = ?2 WHERE id = ?1 AND ended_at IS NULL")
        .context("record a session's use")?
        .execute(params![id.to_string(), now])
        .context("record a session's use")?;
    Ok(n > 0)
}

pub(super) fn expire(
    conn: &Connection,
    expiry: SessionExpiry,
    limit: u32,
) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE sessions SET ended_at = ?1
             WHERE id IN (
                 SELECT s.id FROM sessions s
                 WHERE s.ended_at IS NULL
                   AND (s.created_at < ?3
                        OR (COALESCE(s.last_used_at, s.created_at) < ?2
                            AND NOT EXISTS (SELECT 1 FROM audit_connections c
                                            WHERE c.session_id = s.id AND c.ended_at IS NULL)))
                 LIMIT ?4)",
        )
        .context("end expired sessions")?
        .execute(params![
            expiry.now,
            expiry.idle_before,
            expiry.created_before,
            i64::from(limit)
        ])
        .context("end expired sessions")?;
    Ok(count(n))
}

pub(super) fn prune(conn: &Connection, ended_before: i64, limit: u32) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE ended_at < ?1 LIMIT ?2)",
        )
        .context("remove ended sessions")?
        .execute(params![ended_before, i64::from(limit)])
        .context("remove ended sessions")?;
    Ok(count(n))
}
