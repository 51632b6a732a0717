//! The audit trail in SQLite (the `Store` methods in `sqlite.rs` call these).

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};
use uuid::Uuid;

use super::sqlite::{Context, json, map_at, uuid_at};
use super::{AuditEvent, AuditFilter, ConnectionRecord, QueryRecord, StoreError};

pub(super) const CONNECTION_COLUMNS: &str = "id, account_id, account_name, resource_id, resource_name, \
     gateway, session_id, lease_id, labels, client_addr, started_at, ended_at, bytes_up, \
     bytes_down, outcome, error, query_count";

pub(super) fn count_at(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(i)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn connection_row(row: &Row<'_>) -> rusqlite::Result<ConnectionRecord> {
    Ok(ConnectionRecord {
        id: uuid_at(row, 0)?,
        account_id: uuid_at(row, 1)?,
        account_name: row.get(2)?,
        resource_id: uuid_at(row, 3)?,
        resource_name: row.get(4)?,
        gateway: row.get(5)?,
        session_id: uuid_at(row, 6)?,
        lease_id: uuid_at(row, 7)?,
        labels: map_at(row, 8)?,
        client_addr: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
        bytes_up: count_at(row, 12)?,
        bytes_down: count_at(row, 13)?,
        outcome: row.get(14)?,
        error: row.get(15)?,
        query_count: count_at(row, 16)?,
    })
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn write(tx: &Transaction<'_>, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut start = tx
        .prepare_cached(&format!(
            "INSERT OR REPLACE INTO audit_connections ({CONNECTION_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ))
        .context("record a connection")?;
    let mut end = tx
        .prepare_cached(
            "UPDATE audit_connections SET ended_at = ?2, bytes_up = ?3, bytes_down = ?4,
                    outcome = ?5, error = ?6, query_count = ?7
             WHERE id = ?1",
        )
        .context("record a connection's end")?;
    let mut query = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO audit_queries (connection_id, seq, at, text) VALUES (?1, ?2, ?3, ?4)",
        )
        .context("record a query")?;
    for event in events {
        match event {
            AuditEvent::Started(c) => {
                start
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
                        c.outcome,
                        c.error,
                        signed(c.query_count)
                    ])
                    .context("record a connection")?;
            }
            AuditEvent::Ended(e) => {
                end.execute(params![
                    e.id.to_string(),
                    e.ended_at,
                    signed(e.bytes_up),
                    signed(e.bytes_down),
                    e.outcome,
                    e.error,
                    signed(e.query_count)
                ])
                .context("record a connection's end")?;
            }
            AuditEvent::Query(q) => {
                query
                    .execute(params![
                        q.connection_id.to_string(),
                        signed(q.seq),
                        q.at,
                        q.text
                    ])
                    .context("record a query")?;
            }
        }
    }
    Ok(())
}

pub(super) fn list_connections(
    conn: &Connection,
    filter: &AuditFilter,
) -> Result<Vec<ConnectionRecord>, StoreError> {
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
) -> Result<Option<ConnectionRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {CONNECTION_COLUMNS} FROM audit_connections WHERE id = ?1"),
        [id.to_string()],
        connection_row,
    )
    .optional()
    .context("read an audit record")
}

pub(super) fn list_queries(
    conn: &Connection,
    connection_id: Uuid,
    after: u64,
    limit: u32,
) -> Result<Vec<QueryRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, text FROM audit_queries
             WHERE connection_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .context("list queries")?;
    let rows = stmt
        .query_map(
            params![connection_id.to_string(), signed(after), i64::from(limit)],
            |row| {
                Ok(QueryRecord {
                    connection_id,
                    seq: count_at(row, 0)?,
                    at: row.get(1)?,
                    text: row.get(2)?,
                })
            },
        )
        .context("list queries")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("list queries")
}
