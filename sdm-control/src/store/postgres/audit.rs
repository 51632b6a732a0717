//! The audit trail in PostgreSQL (the `Store` methods in `mod.rs` call these).
//!
//! A batch is written with four statements whatever its size: the gateways of the records it
//! touches are read (a gateway may change only its own records, and a start never replaces a
//! record), its events are folded per connection into what applying them one by one would leave
//! (a start writes the record, an end updates it), then the new records, the ends of records
//! written by earlier batches and the queries each go in as arrays (`UNNEST`).

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::ClientWrapper;
use sdm_proto::audit::{
    AuditEnd, AuditEvent, AuditQueryEvent, AuditRecord, AuditRecordingEvent, Outcome,
};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::rows::{CONNECTION_COLUMNS, Context, col, connection_row, count_at, invalid, signed};
use crate::store::audit::{Writer, interrupted_error};
use crate::store::{AuditFilter, AuditRefusals, StoreError};

/// What a batch leaves of one connection's record.
enum Fold<'a> {
    /// The whole record (a start, with any later ends applied).
    Record(Box<AuditRecord>),
    /// An end for a record written earlier.
    End(&'a AuditEnd),
}

/// The gateways that wrote the records with these ids, for those that exist.
async fn owners(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, String>, StoreError> {
    let context = "read audit records' gateways";
    let stmt = tx
        .prepare_cached("SELECT id, gateway FROM audit_connections WHERE id = ANY($1)")
        .await
        .context(context)?;
    tx.query(&stmt, &[&ids])
        .await
        .context(context)?
        .iter()
        .map(|row| Ok((col(row, 0)?, col(row, 1)?)))
        .collect()
}

/// The events of a batch that `writer` may apply (see [`Writer`]), in order, and what it may
/// not. `owners` holds the gateway of every record that existed before the batch.
fn admissible<'a>(
    writer: Writer<'_>,
    events: &'a [AuditEvent],
    mut owners: HashMap<Uuid, String>,
) -> (Vec<&'a AuditEvent>, AuditRefusals) {
    let mut refused = AuditRefusals::default();
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        match event {
            AuditEvent::Started(c) => {
                if writer.gateway().is_some_and(|g| g != c.gateway) {
                    refused.starts += 1;
                } else if let Some(owner) = owners.get(&c.id) {
                    // Records are changed only by their ends. The same gateway sending a start
                    // again (an upload repeated after a lost answer) is no refusal.
                    if !writer.may_change(Some(owner)) {
                        refused.starts += 1;
                    }
                } else {
                    owners.insert(c.id, c.gateway.clone());
                    kept.push(event);
                }
            }
            AuditEvent::Ended(e) => {
                if writer.may_change(owners.get(&e.id).map(String::as_str)) {
                    kept.push(event);
                } else {
                    refused.ends += 1;
                }
            }
            AuditEvent::Query(q) => {
                if writer.may_change(owners.get(&q.connection_id).map(String::as_str)) {
                    kept.push(event);
                } else {
                    refused.queries += 1;
                }
            }
            AuditEvent::Recording(l) => {
                if writer.may_change(owners.get(&l.connection_id).map(String::as_str)) {
                    kept.push(event);
                } else {
                    refused.recording_lines += 1;
                }
            }
        }
    }
    (kept, refused)
}

pub(super) async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    writer: Writer<'_>,
    events: &[AuditEvent],
) -> Result<AuditRefusals, StoreError> {
    let mut ids: Vec<Uuid> = events.iter().map(AuditEvent::connection_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let (events, refused) = admissible(writer, events, owners(tx, ids).await?);
    let mut order: Vec<Uuid> = Vec::new();
    let mut folded: HashMap<Uuid, Fold<'_>> = HashMap::new();
    let mut queries: Vec<&AuditQueryEvent> = Vec::new();
    let mut lines: Vec<&AuditRecordingEvent> = Vec::new();
    for event in events {
        match event {
            AuditEvent::Started(c) => {
                if folded.insert(c.id, Fold::Record(c.clone())).is_none() {
                    order.push(c.id);
                }
            }
            AuditEvent::Ended(e) => match folded.get_mut(&e.id) {
                Some(Fold::Record(record)) => record.apply(e),
                Some(slot @ Fold::End(_)) => *slot = Fold::End(e),
                None => {
                    folded.insert(e.id, Fold::End(e));
                    order.push(e.id);
                }
            },
            AuditEvent::Query(q) => queries.push(q),
            AuditEvent::Recording(l) => lines.push(l),
        }
    }
    let mut records = Vec::new();
    let mut ends = Vec::new();
    for id in &order {
        match folded.remove(id) {
            Some(Fold::Record(record)) => records.push(*record),
            Some(Fold::End(end)) => ends.push(end),
            None => {}
        }
    }
    let gateway = writer.gateway();
    if !records.is_empty() {
        write_records(tx, &records).await?;
    }
    if !ends.is_empty() {
        write_ends(tx, &ends, gateway).await?;
    }
    if !queries.is_empty() {
        write_queries(tx, &queries, gateway).await?;
    }
    if !lines.is_empty() {
        write_recording(tx, &lines, gateway).await?;
    }
    Ok(refused)
}

/// Closes the records `gateway` left open as [`Outcome::Interrupted`].
pub(super) async fn interrupt(
    client: &ClientWrapper,
    gateway: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let context = "close the records a stopped gateway left open";
    let stmt = client
        .prepare_cached(
            "UPDATE audit_connections SET ended_at = GREATEST(started_at, $2), outcome = $3,
                    error = $4
             WHERE gateway = $1 AND ended_at IS NULL",
        )
        .await
        .context(context)?;
    client
        .execute(
            &stmt,
            &[
                &gateway,
                &now,
                &Outcome::Interrupted.as_str(),
                &interrupted_error(gateway),
            ],
        )
        .await
        .context(context)
}

/// Deletes at most `limit` records that ended before `ended_before`, and their queries, in one
/// statement (its parts share one snapshot).
pub(super) async fn prune(
    client: &ClientWrapper,
    ended_before: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    let context = "remove audit records past the retention";
    // started_at <= ended_at: the first condition lets the time index find the candidates.
    let stmt = client
        .prepare_cached(
            "WITH doomed AS (
                 SELECT id FROM audit_connections
                 WHERE started_at < $1 AND ended_at IS NOT NULL AND ended_at < $1 LIMIT $2),
             queries AS (
                 DELETE FROM audit_queries WHERE connection_id IN (SELECT id FROM doomed)),
             recordings AS (
                 DELETE FROM audit_recordings WHERE connection_id IN (SELECT id FROM doomed))
             DELETE FROM audit_connections WHERE id IN (SELECT id FROM doomed)",
        )
        .await
        .context(context)?;
    client
        .execute(&stmt, &[&ended_before, &i64::from(limit)])
        .await
        .context(context)
}

/// Inserts whole records that do not exist yet; one that does (written meanwhile by another
/// transaction) is kept as it is.
async fn write_records(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    let context = "record a connection";
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_connections ({CONNECTION_COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[],
                                  $6::text[], $7::uuid[], $8::uuid[], $9::jsonb[], $10::text[],
                                  $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
                                  $15::text[], $16::text[], $17::bigint[])
             ON CONFLICT (id) DO NOTHING"
        ))
        .await
        .context(context)?;
    let ids: Vec<Uuid> = records.iter().map(|c| c.id).collect();
    let account_ids: Vec<Uuid> = records.iter().map(|c| c.account_id).collect();
    let account_names: Vec<&str> = records.iter().map(|c| c.account_name.as_str()).collect();
    let resource_ids: Vec<Uuid> = records.iter().map(|c| c.resource_id).collect();
    let resource_names: Vec<&str> = records.iter().map(|c| c.resource_name.as_str()).collect();
    let gateways: Vec<&str> = records.iter().map(|c| c.gateway.as_str()).collect();
    let session_ids: Vec<Uuid> = records.iter().map(|c| c.session_id).collect();
    let lease_ids: Vec<Uuid> = records.iter().map(|c| c.lease_id).collect();
    let labels: Vec<Json<&BTreeMap<String, String>>> =
        records.iter().map(|c| Json(&c.labels)).collect();
    let client_addrs: Vec<&str> = records.iter().map(|c| c.client_addr.as_str()).collect();
    let started: Vec<i64> = records.iter().map(|c| c.started_at).collect();
    let ended: Vec<Option<i64>> = records.iter().map(|c| c.ended_at).collect();
    let up: Vec<i64> = records.iter().map(|c| signed(c.bytes_up)).collect();
    let down: Vec<i64> = records.iter().map(|c| signed(c.bytes_down)).collect();
    let outcomes: Vec<&str> = records.iter().map(|c| c.outcome.as_str()).collect();
    let errors: Vec<Option<&str>> = records.iter().map(|c| c.error.as_deref()).collect();
    let counts: Vec<i64> = records.iter().map(|c| signed(c.query_count)).collect();
    tx.execute(
        &stmt,
        &[
            &ids,
            &account_ids,
            &account_names,
            &resource_ids,
            &resource_names,
            &gateways,
            &session_ids,
            &lease_ids,
            &labels,
            &client_addrs,
            &started,
            &ended,
            &up,
            &down,
            &outcomes,
            &errors,
            &counts,
        ],
    )
    .await
    .context(context)?;
    Ok(())
}

/// Ends records written by earlier batches (only `gateway`'s, when given); an end for an
/// unknown record changes nothing.
async fn write_ends(
    tx: &deadpool_postgres::Transaction<'_>,
    ends: &[&AuditEnd],
    gateway: Option<&str>,
) -> Result<(), StoreError> {
    let context = "record a connection's end";
    let stmt = tx
        .prepare_cached(
            "UPDATE audit_connections c SET ended_at = u.ended_at, bytes_up = u.bytes_up,
                    bytes_down = u.bytes_down, outcome = u.outcome, error = u.error,
                    query_count = u.query_count
             FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::text[], $7::bigint[])
                  AS u (id, ended_at, bytes_up, bytes_down, outcome, error, query_count)
             WHERE c.id = u.id AND ($8::text IS NULL OR c.gateway = $8)",
        )
        .await
        .context(context)?;
    let ids: Vec<Uuid> = ends.iter().map(|e| e.id).collect();
    let ended: Vec<i64> = ends.iter().map(|e| e.ended_at).collect();
    let up: Vec<i64> = ends.iter().map(|e| signed(e.bytes_up)).collect();
    let down: Vec<i64> = ends.iter().map(|e| signed(e.bytes_down)).collect();
    let outcomes: Vec<&str> = ends.iter().map(|e| e.outcome.as_str()).collect();
    let errors: Vec<Option<&str>> = ends.iter().map(|e| e.error.as_deref()).collect();
    let counts: Vec<i64> = ends.iter().map(|e| signed(e.query_count)).collect();
    tx.execute(
        &stmt,
        &[
            &ids, &ended, &up, &down, &outcomes, &errors, &counts, &gateway,
        ],
    )
    .await
    .context(context)?;
    Ok(())
}

/// Adds queries (only to `gateway`'s records, when given); a query already recorded (same
/// connection and position) is kept as it was (SQLite's `INSERT OR IGNORE`).
async fn write_queries(
    tx: &deadpool_postgres::Transaction<'_>,
    queries: &[&AuditQueryEvent],
    gateway: Option<&str>,
) -> Result<(), StoreError> {
    let context = "record a query";
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_queries (connection_id, seq, at, text)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::text[])
                 AS u (connection_id, seq, at, text)
             WHERE $5::text IS NULL
                OR EXISTS (SELECT 1 FROM audit_connections c
                           WHERE c.id = u.connection_id AND c.gateway = $5)
             ON CONFLICT (connection_id, seq) DO NOTHING",
        )
        .await
        .context(context)?;
    let ids: Vec<Uuid> = queries.iter().map(|q| q.connection_id).collect();
    let seqs: Vec<i64> = queries.iter().map(|q| signed(q.seq)).collect();
    let at: Vec<i64> = queries.iter().map(|q| q.at).collect();
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    tx.execute(&stmt, &[&ids, &seqs, &at, &texts, &gateway])
        .await
        .context(context)?;
    Ok(())
}

/// Adds recording lines as [`write_queries`] adds queries.
async fn write_recording(
    tx: &deadpool_postgres::Transaction<'_>,
    lines: &[&AuditRecordingEvent],
    gateway: Option<&str>,
) -> Result<(), StoreError> {
    let context = "record a terminal session";
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_recordings (connection_id, channel, seq, line)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::text[])
                 AS u (connection_id, channel, seq, line)
             WHERE $5::text IS NULL
                OR EXISTS (SELECT 1 FROM audit_connections c
                           WHERE c.id = u.connection_id AND c.gateway = $5)
             ON CONFLICT (connection_id, channel, seq) DO NOTHING",
        )
        .await
        .context(context)?;
    let ids: Vec<Uuid> = lines.iter().map(|l| l.connection_id).collect();
    let channels: Vec<i64> = lines.iter().map(|l| i64::from(l.channel)).collect();
    let seqs: Vec<i64> = lines.iter().map(|l| signed(l.seq)).collect();
    let texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    tx.execute(&stmt, &[&ids, &channels, &seqs, &texts, &gateway])
        .await
        .context(context)?;
    Ok(())
}

pub(super) async fn list_connections(
    client: &ClientWrapper,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let context = "list audit records";
    let mut clauses = Vec::new();
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(a) = filter.account_id {
        args.push(Box::new(a));
        clauses.push(format!("account_id = ${}", args.len()));
    }
    if let Some(r) = filter.resource_id {
        args.push(Box::new(r));
        clauses.push(format!("resource_id = ${}", args.len()));
    }
    if let Some(since) = filter.since {
        args.push(Box::new(since));
        clauses.push(format!("started_at >= ${}", args.len()));
    }
    if let Some(until) = filter.until {
        args.push(Box::new(until));
        clauses.push(format!("started_at < ${}", args.len()));
    }
    if let Some((at, id)) = filter.before {
        args.push(Box::new(at));
        let a = args.len();
        args.push(Box::new(id));
        clauses.push(format!("(started_at, id) < (${a}, ${})", args.len()));
    }
    let predicate = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    args.push(Box::new(i64::from(filter.limit)));
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM audit_connections {predicate}
         ORDER BY started_at DESC, id DESC LIMIT ${}",
        args.len()
    );
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = client.prepare_cached(&sql).await.context(context)?;
    client
        .query(&stmt, &params)
        .await
        .context(context)?
        .iter()
        .map(connection_row)
        .collect()
}

pub(super) async fn get_connection(
    client: &ClientWrapper,
    id: Uuid,
) -> Result<Option<AuditRecord>, StoreError> {
    let context = "read an audit record";
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM audit_connections WHERE id = $1"
        ))
        .await
        .context(context)?;
    client
        .query_opt(&stmt, &[&id])
        .await
        .context(context)?
        .as_ref()
        .map(connection_row)
        .transpose()
}

pub(super) async fn list_queries(
    client: &ClientWrapper,
    connection_id: Uuid,
    after: u64,
    limit: u32,
) -> Result<Vec<AuditQueryEvent>, StoreError> {
    let context = "list queries";
    let stmt = client
        .prepare_cached(
            "SELECT seq, at, text FROM audit_queries
             WHERE connection_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .await
        .context(context)?;
    client
        .query(&stmt, &[&connection_id, &signed(after), &i64::from(limit)])
        .await
        .context(context)?
        .iter()
        .map(|row| {
            Ok(AuditQueryEvent {
                connection_id,
                seq: count_at(row, 0)?,
                at: col(row, 1)?,
                text: col(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn recorded_channels(
    client: &ClientWrapper,
    connection_id: Uuid,
) -> Result<Vec<u32>, StoreError> {
    let context = "list recorded channels";
    let stmt = client
        .prepare_cached(
            "SELECT DISTINCT channel FROM audit_recordings WHERE connection_id = $1 ORDER BY channel",
        )
        .await
        .context(context)?;
    client
        .query(&stmt, &[&connection_id])
        .await
        .context(context)?
        .iter()
        .map(|row| {
            let channel: i64 = col(row, 0)?;
            u32::try_from(channel).map_err(|_| invalid(format!("channel {channel} out of range")))
        })
        .collect()
}

pub(super) async fn list_recording(
    client: &ClientWrapper,
    connection_id: Uuid,
    channel: u32,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditRecordingEvent>, StoreError> {
    let context = "read a terminal session's recording";
    let stmt = client
        .prepare_cached(
            "SELECT seq, line FROM audit_recordings
             WHERE connection_id = $1 AND channel = $2 AND ($3::bigint IS NULL OR seq > $3)
             ORDER BY seq LIMIT $4",
        )
        .await
        .context(context)?;
    client
        .query(
            &stmt,
            &[
                &connection_id,
                &i64::from(channel),
                &after.map(signed),
                &i64::from(limit),
            ],
        )
        .await
        .context(context)?
        .iter()
        .map(|row| {
            Ok(AuditRecordingEvent {
                connection_id,
                channel,
                seq: count_at(row, 0)?,
                line: col(row, 1)?,
            })
        })
        .collect()
}
