//! The audit trail in SQLite (the `Store` methods in `mod.rs` call these): a batch of events
//! applied in order, as far as its writer may; closing what a stopped gateway left open;
//! listing records and their queries.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, AuditRecordingEvent, Outcome};
use uuid::Uuid;

use super::query_blocks;
use super::rows::{CONNECTION_COLUMNS, Context, connection_row, count_at, json, signed};
use crate::store::audit::{Writer, interrupted_error};
use crate::store::{AuditFilter, AuditRefusals, StoreError};

/// The gateway that wrote a record, if there is one.
fn owner_of(tx: &Transaction<'_>, id: Uuid) -> Result<Option<String>, StoreError> {
    tx.prepare_cached("SELECT gateway FROM audit_connections WHERE id = ?1")
        .context("read an audit record's gateway")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()
        .context("read an audit record's gateway")
}

/// Applies `events` in order, as far as `writer` may (see [`Writer`]); what it may not do is
/// counted in the answer.
pub(super) fn write(
    tx: &Transaction<'_>,
    writer: Writer<'_>,
    events: &[AuditEvent],
) -> Result<AuditRefusals, StoreError> {
    let mut start = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_connections ({CONNECTION_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (id) DO NOTHING"
        ))
        .context("record a connection")?;
    let mut end = tx
        .prepare_cached(
            "UPDATE audit_connections SET ended_at = ?2, bytes_up = ?3, bytes_down = ?4,
                    outcome = ?5, error = ?6, query_count = ?7
             WHERE id = ?1 AND (?8 IS NULL OR gateway = ?8)",
        )
        .context("record a connection's end")?;
    let mut recording = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO audit_recordings (connection_id, channel, seq, line)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .context("record a terminal session")?;
    let mut refused = AuditRefusals::default();
    // Each connection's statements in this batch, written as blocks once all are known.
    let mut statements: Vec<(Uuid, Vec<&AuditQueryEvent>)> = Vec::new();
    let mut statements_of: HashMap<Uuid, usize> = HashMap::new();
    // Who owns each record this batch touches, as far as known: read once, then kept current.
    let mut owners: HashMap<Uuid, Option<String>> = HashMap::new();
    for event in events {
        match event {
            AuditEvent::Started(c) => {
                if writer.gateway().is_some_and(|g| g != c.gateway) {
                    refused.starts += 1;
                    continue;
                }
                let written = start
                    .execute(params![
                        c.id.to_string(),
                        c.account_id.to_string(),
                        c.account_name,
                        c.resource_id.to_string(),
                        c.resource_name,
                        c.gateway,
                        c.session_id.to_string(),
                        c.lease_id.to_string(),
                        json(&c.labels)?,
                        c.client_addr,
                        c.started_at,
                        c.ended_at,
                        signed(c.bytes_up),
                        signed(c.bytes_down),
                        c.outcome.as_str(),
                        c.error,
                        signed(c.query_count)
                    ])
                    .context("record a connection")?;
                if written > 0 {
                    owners.insert(c.id, Some(c.gateway.clone()));
                } else {
                    let owner = match owners.get(&c.id) {
                        Some(owner) => owner.clone(),
                        None => owner_of(tx, c.id)?,
                    };
                    // The same gateway sending a start again (an upload repeated after a lost
                    // answer) is no refusal.
                    if !writer.may_change(owner.as_deref()) {
                        refused.starts += 1;
                    }
                    owners.insert(c.id, owner);
                }
            }
            AuditEvent::Ended(e) => {
                let changed = end
                    .execute(params![
                        e.id.to_string(),
                        e.ended_at,
                        signed(e.bytes_up),
                        signed(e.bytes_down),
                        e.outcome.as_str(),
                        e.error,
                        signed(e.query_count),
                        writer.gateway()
                    ])
                    .context("record a connection's end")?;
                if changed == 0 && writer.gateway().is_some() {
                    refused.ends += 1;
                }
            }
            AuditEvent::Query(q) => {
                if !may_add_to(tx, writer, &mut owners, q.connection_id)? {
                    refused.queries += 1;
                    continue;
                }
                let at = *statements_of.entry(q.connection_id).or_insert_with(|| {
                    statements.push((q.connection_id, Vec::new()));
                    statements.len() - 1
                });
                statements[at].1.push(q);
            }
            AuditEvent::Recording(l) => {
                if !may_add_to(tx, writer, &mut owners, l.connection_id)? {
                    refused.recording_lines += 1;
                    continue;
                }
                recording
                    .execute(params![
                        l.connection_id.to_string(),
                        l.channel,
                        signed(l.seq),
                        l.line
                    ])
                    .context("record a terminal session")?;
            }
        }
    }
    write_statements(tx, statements)?;
    Ok(refused)
}

/// Writes each connection's statements as blocks. A statement written again (the same
/// connection and position, as when an upload is repeated after a lost answer) may be stored
/// twice; [`list_queries`] returns each position once.
fn write_statements(
    tx: &Transaction<'_>,
    statements: Vec<(Uuid, Vec<&AuditQueryEvent>)>,
) -> Result<(), StoreError> {
    if statements.is_empty() {
        return Ok(());
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO audit_query_blocks (connection_id, first_seq, last_seq, body)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .context("record a query")?;
    for (id, mut run) in statements {
        // In order already when they come from a queue; a gateway's upload is not trusted to be.
        run.sort_by_key(|q| q.seq);
        run.dedup_by_key(|q| q.seq);
        let id = id.to_string();
        for block in query_blocks::encode(&run) {
            insert
                .execute(params![
                    id,
                    signed(block.first_seq),
                    signed(block.last_seq),
                    block.body
                ])
                .context("record a query")?;
        }
    }
    Ok(())
}

/// Whether `writer` may add queries or recording lines to record `id` (a gateway only to its
/// own); `owners` remembers what was read.
fn may_add_to(
    tx: &Transaction<'_>,
    writer: Writer<'_>,
    owners: &mut HashMap<Uuid, Option<String>>,
    id: Uuid,
) -> Result<bool, StoreError> {
    if writer.gateway().is_none() {
        return Ok(true);
    }
    let owner = match owners.get(&id) {
        Some(owner) => owner.clone(),
        None => {
            let owner = owner_of(tx, id)?;
            owners.insert(id, owner.clone());
            owner
        }
    };
    Ok(writer.may_change(owner.as_deref()))
}

/// Closes the records `gateway` left open as [`Outcome::Interrupted`].
pub(super) fn interrupt(conn: &Connection, gateway: &str, now: i64) -> Result<u64, StoreError> {
    let n = conn
        .execute(
            "UPDATE audit_connections SET ended_at = MAX(started_at, ?2), outcome = ?3, error = ?4
             WHERE gateway = ?1 AND ended_at IS NULL",
            params![
                gateway,
                now,
                Outcome::Interrupted.as_str(),
                interrupted_error(gateway)
            ],
        )
        .context("close the records a stopped gateway left open")?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Deletes at most `limit` records that ended before `ended_before`, and their queries.
pub(super) fn prune(
    tx: &Transaction<'_>,
    ended_before: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    let context = "remove audit records past the retention";
    // started_at <= ended_at: the first condition lets the time index find the candidates.
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS doomed_audit (id TEXT PRIMARY KEY)",
        [],
    )
    .context(context)?;
    tx.execute("DELETE FROM doomed_audit", [])
        .context(context)?;
    tx.execute(
        "INSERT INTO doomed_audit SELECT id FROM audit_connections
         WHERE started_at < ?1 AND ended_at IS NOT NULL AND ended_at < ?1 LIMIT ?2",
        params![ended_before, i64::from(limit)],
    )
    .context(context)?;
    tx.execute(
        "DELETE FROM audit_queries WHERE connection_id IN (SELECT id FROM doomed_audit)",
        [],
    )
    .context(context)?;
    tx.execute(
        "DELETE FROM audit_query_blocks WHERE connection_id IN (SELECT id FROM doomed_audit)",
        [],
    )
    .context(context)?;
    tx.execute(
        "DELETE FROM audit_recordings WHERE connection_id IN (SELECT id FROM doomed_audit)",
        [],
    )
    .context(context)?;
    let n = tx
        .execute(
            "DELETE FROM audit_connections WHERE id IN (SELECT id FROM doomed_audit)",
            [],
        )
        .context(context)?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

pub(super) fn list_connections(
    conn: &Connection,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut clauses = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(a) = filter.account_id {
        args.push(a.to_string().into());
        clauses.push(format!("account_id = ?{}", args.len()));
    }
    if let Some(r) = filter.resource_id {
        args.push(r.to_string().into());
        clauses.push(format!("resource_id = ?{}", args.len()));
    }
    if let Some(since) = filter.since {
        args.push(since.into());
        clauses.push(format!("started_at >= ?{}", args.len()));
    }
    if let Some(until) = filter.until {
        args.push(until.into());
        clauses.push(format!("started_at < ?{}", args.len()));
    }
    if let Some((at, id)) = filter.before {
        args.push(at.into());
        let a = args.len();
        args.push(id.to_string().into());
        clauses.push(format!(
            "(started_at < ?{a} OR (started_at = ?{a} AND id < ?{}))",
            args.len()
        ));
    }
    let predicate = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    args.push(i64::from(filter.limit).into());
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM audit_connections {predicate}
         ORDER BY started_at DESC, id DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare(&sql).context("list audit records")?;
    let rows = stmt
        .query_map(params_from_iter(args), connection_row)
        .context("list audit records")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("list audit records")
}

pub(super) fn get_connection(
    conn: &Connection,
    id: Uuid,
) -> Result<Option<AuditRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {CONNECTION_COLUMNS} FROM audit_connections WHERE id = ?1"),
        [id.to_string()],
        connection_row,
    )
    .optional()
    .context("read an audit record")
}

/// A connection's statements after position `after`, at most `limit`, in order: from the blocks
/// and from the rows written one by one before them (schema version 11), merged.
pub(super) fn list_queries(
    conn: &Connection,
    connection_id: Uuid,
    after: u64,
    limit: u32,
) -> Result<Vec<AuditQueryEvent>, StoreError> {
    let context = "list queries";
    let limit = limit as usize;
    let id = connection_id.to_string();
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, text FROM audit_queries
             WHERE connection_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .context(context)?;
    let rows = stmt
        .query_map(params![id, signed(after), limit as i64], |row| {
            Ok(AuditQueryEvent {
                connection_id,
                seq: count_at(row, 0)?,
                at: row.get(1)?,
                text: row.get(2)?,
            })
        })
        .context(context)?;
    let mut found = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .context(context)?;

    // Blocks in order of position; one that repeats positions (a repeated upload) adds only
    // what the ones before it did not hold.
    let mut stmt = conn
        .prepare_cached(
            "SELECT body FROM audit_query_blocks
             WHERE connection_id = ?1 AND last_seq > ?2 ORDER BY first_seq, last_seq",
        )
        .context(context)?;
    let mut blocks = stmt.query(params![id, signed(after)]).context(context)?;
    let mut from_blocks: Vec<AuditQueryEvent> = Vec::new();
    let mut last = after;
    while from_blocks.len() < limit
        && let Some(row) = blocks.next().context(context)?
    {
        let body: Vec<u8> = row.get(0).context(context)?;
        let statements = query_blocks::decode(connection_id, &body)
            .map_err(|e| StoreError::backend(context, e))?;
        for q in statements {
            if q.seq > last && from_blocks.len() < limit {
                last = q.seq;
                from_blocks.push(q);
            }
        }
    }
    if found.is_empty() {
        return Ok(from_blocks);
    }
    found.extend(from_blocks);
    found.sort_by_key(|q| q.seq);
    found.dedup_by_key(|q| q.seq);
    found.truncate(limit);
    Ok(found)
}

pub(super) fn recorded_channels(
    conn: &Connection,
    connection_id: Uuid,
) -> Result<Vec<u32>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT channel FROM audit_recordings WHERE connection_id = ?1 ORDER BY channel",
        )
        .context("list recorded channels")?;
    let rows = stmt
        .query_map([connection_id.to_string()], |row| row.get(0))
        .context("list recorded channels")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("list recorded channels")
}

pub(super) fn list_recording(
    conn: &Connection,
    connection_id: Uuid,
    channel: u32,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditRecordingEvent>, StoreError> {
    let context = "read a terminal session's recording";
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, line FROM audit_recordings
             WHERE connection_id = ?1 AND channel = ?2 AND (?3 IS NULL OR seq > ?3)
             ORDER BY seq LIMIT ?4",
        )
        .context(context)?;
    let rows = stmt
        .query_map(
            params![
                connection_id.to_string(),
                channel,
                after.map(signed),
                i64::from(limit)
            ],
            |row| {
                Ok(AuditRecordingEvent {
                    connection_id,
                    channel,
                    seq: count_at(row, 0)?,
                    line: row.get(1)?,
                })
            },
        )
        .context(context)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().context(context)
}

#[cfg(test)]
mod tests {
    use sdm_proto::audit::AuditEnd;

    use super::super::tests::database_before;
    use super::super::{FILE, SqliteStore};
    use super::*;
    use crate::store::Store;
    use crate::store::suite::connection;
    use crate::store::transfer::Item;

    fn statement(connection_id: Uuid, seq: u64) -> AuditQueryEvent {
        AuditQueryEvent {
            connection_id,
            seq,
            at: 1000 + i64::try_from(seq).unwrap(),
            text: format!("SELECT {seq}"),
        }
    }

    /// A database written by a version before blocks: its statements are read, exported and
    /// removed with the ones written as blocks since, each once and in order.
    #[tokio::test]
    async fn statements_written_before_blocks_are_read_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let record = connection(Uuid::new_v4(), Uuid::new_v4(), 1000);
        let id = record.id;
        {
            let conn = database_before(&path, 11);
            // Statements 1 to 3, one row each, as version 10 wrote them.
            for seq in 1..=3u64 {
                let q = statement(id, seq);
                conn.execute(
                    "INSERT INTO audit_queries (connection_id, seq, at, text) VALUES (?1, ?2, ?3, ?4)",
                    params![id.to_string(), signed(seq), q.at, q.text],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        // The connection's start, statement 3 again (written across the upgrade), then 4 to 6.
        let mut events = vec![AuditEvent::Started(Box::new(record))];
        events.extend((3..=6).map(|seq| AuditEvent::Query(statement(id, seq))));
        store.write_audit(events.into()).await.unwrap();
        let all: Vec<_> = (1..=6).map(|seq| statement(id, seq)).collect();
        assert_eq!(store.list_queries(id, 0, 100).await.unwrap(), all);
        assert_eq!(store.list_queries(id, 2, 2).await.unwrap(), all[2..4]);
        assert_eq!(store.list_queries(id, 3, 100).await.unwrap(), all[3..]);

        let mut exported = Vec::new();
        let exporter = store.clone();
        tokio::task::spawn_blocking(move || {
            exporter
                .export(&mut |chunk| {
                    exported.extend(chunk.into_iter().filter_map(|item| match item {
                        Item::Query(q) => Some(q),
                        _ => None,
                    }));
                    true
                })
                .unwrap();
            assert_eq!(exported, all, "each statement exported once, in order");
        })
        .await
        .unwrap();

        store
            .write_audit(
                vec![AuditEvent::Ended(AuditEnd {
                    id,
                    ended_at: 1010,
                    bytes_up: 0,
                    bytes_down: 0,
                    outcome: "ok".into(),
                    error: None,
                    query_count: 6,
                })]
                .into(),
            )
            .await
            .unwrap();
        assert_eq!(store.prune_audit(2000, 100).await.unwrap(), 1);
        assert_eq!(store.list_queries(id, 0, 100).await.unwrap(), vec![]);
        let conn = store.conn.lock().unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM audit_queries) + (SELECT COUNT(*) FROM audit_query_blocks)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "no statement outlives its record");
    }

    /// A damaged block is an error for the reader, not a panic and not a silent gap.
    #[tokio::test]
    async fn a_damaged_block_is_reported() {
        let store = SqliteStore::open_in_memory().unwrap();
        let id = Uuid::new_v4();
        store
            .conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO audit_query_blocks (connection_id, first_seq, last_seq, body)
                 VALUES (?1, 1, 2, x'01ffff')",
                [id.to_string()],
            )
            .unwrap();
        let err = store.list_queries(id, 0, 10).await.unwrap_err();
        let why = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("damaged")),
            "{err}: {why:?}"
        );
    }
}
