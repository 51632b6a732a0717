//! Session lifetimes in PostgreSQL: the per-account limit, use, expiry and pruning (the `Store`
//! methods in `mod.rs` call these).

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::rows::{Context, col};
use crate::store::{SessionExpiry, SessionRecord, StoreError};

/// Inserts `session`, then makes room among the account's open sessions (see
/// [`Store::open_session`](crate::store::Store::open_session)). Logins of one account are serialised
/// by a lock on its row (`FOR NO KEY UPDATE`: it does not hold up the foreign-key checks of new
/// tokens and grants), so that two control planes logging the account in at once cannot both
/// count one session too few.
pub(super) async fn open(
    tx: &Transaction<'_>,
    session: &SessionRecord,
    max_open: u32,
) -> Result<u64, StoreError> {
    let context = "create a session";
    let lock = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .await
        .context(context)?;
    tx.query_opt(&lock, &[&session.account_id])
        .await
        .context(context)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO sessions (id, account_id, labels, client, created_at, ended_at,
                                   last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .context(context)?;
    tx.execute(
        &insert,
        &[
            &session.id,
            &session.account_id,
            &Json(&session.labels),
            &session.client,
            &session.created_at,
            &session.ended_at,
            &session.last_used_at,
        ],
    )
    .await
    .context(context)?;
    let context = "make room among an account's open sessions";
    let oldest = tx
        .prepare_cached(
            "SELECT id FROM sessions
             WHERE account_id = $1 AND ended_at IS NULL AND id <> $2
             ORDER BY created_at, seq
             LIMIT GREATEST((SELECT COUNT(*) FROM sessions
                             WHERE account_id = $1 AND ended_at IS NULL) - $3, 0)",
        )
        .await
        .context(context)?;
    let ids: Vec<Uuid> = tx
        .query(
            &oldest,
            &[
                &session.account_id,
                &session.id,
                &i64::from(max_open.max(1)),
            ],
        )
        .await
        .context(context)?
        .iter()
        .map(|row| col(row, 0))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    // Never used: nothing refers to them. Used: ended as a logout ends them.
    let delete = tx
        .prepare_cached("DELETE FROM sessions WHERE id = ANY($1) AND last_used_at IS NULL")
        .await
        .context(context)?;
    let deleted = tx.execute(&delete, &[&ids]).await.context(context)?;
    let end = tx
        .prepare_cached("UPDATE sessions SET ended_at = $2 WHERE id = ANY($1) AND ended_at IS NULL")
        .await
        .context(context)?;
    let ended = tx
        .execute(&end, &[&ids, &session.created_at])
        .await
        .context(context)?;
    Ok(deleted.saturating_add(ended))
}

pub(super) async fn touch(client: &ClientWrapper, id: Uuid, now: i64) -> Result<bool, StoreError> {
    let context = "record a session's use";
    let stmt = client
        .prepare_cached("UPDATE sessions SET last_used_at = $2 WHERE id = $1 AND ended_at IS NULL")
        .await
        .context(context)?;
    Ok(client.execute(&stmt, &[&id, &now]).await.context(context)? > 0)
}

pub(super) async fn count_open(
    client: &ClientWrapper,
    account_id: Uuid,
) -> Result<u64, StoreError> {
    let context = "count open sessions";
    let stmt = client
        .prepare_cached("SELECT COUNT(*) FROM sessions WHERE account_id = $1 AND ended_at IS NULL")
        .await
        .context(context)?;
    let row = client
        .query_one(&stmt, &[&account_id])
        .await
        .context(context)?;
    Ok(u64::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
}

pub(super) async fn expire(
    client: &ClientWrapper,
    expiry: SessionExpiry,
    limit: u32,
) -> Result<u64, StoreError> {
    let context = "end expired sessions";
    let stmt = client
        .prepare_cached(
            "UPDATE sessions SET ended_at = $1
             WHERE id IN (
                 SELECT s.id FROM sessions s
                 WHERE s.ended_at IS NULL
                   AND (s.created_at < $3
                        OR (COALESCE(s.last_used_at, s.created_at) < $2
                            AND NOT EXISTS (SELECT 1 FROM audit_connections c
                                            WHERE c.session_id = s.id AND c.ended_at IS NULL)))
                 LIMIT $4)
               AND ended_at IS NULL",
        )
        .await
        .context(context)?;
    client
        .execute(
            &stmt,
            &[
                &expiry.now,
                &expiry.idle_before,
                &expiry.created_before,
                &i64::from(limit),
            ],
        )
        .await
        .context(context)
}

pub(super) async fn prune(
    client: &ClientWrapper,
    ended_before: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    let context = "remove ended sessions";
    let stmt = client
        .prepare_cached(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE ended_at < $1 LIMIT $2)",
        )
        .await
        .context(context)?;
    client
        .execute(&stmt, &[&ended_before, &i64::from(limit)])
        .await
        .context(context)
}
