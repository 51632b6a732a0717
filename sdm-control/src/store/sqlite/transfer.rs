//! Reading a whole SQLite installation out, for `sdm-server migrate`.

use std::sync::PoisonError;

use rusqlite::{Connection, Row};
use sdm_proto::audit::AuditRecordingEvent;

use super::SqliteStore;
use super::rows::{
    ACCOUNT_COLUMNS, CONNECTION_COLUMNS, Context, GATEWAY_COLUMNS, RESOURCE_COLUMNS,
    SESSION_COLUMNS, TOKEN_COLUMNS, account_row, connection_row, count_at, gateway_row, grant_row,
    resource_row, session_row, token_row, uuid_at,
};
use crate::store::StoreError;
use crate::store::transfer::{CHUNK, Counts, Item};

/// Collects items into chunks for `send`.
struct Chunks<'a> {
    chunk: Vec<Item>,
    counts: Counts,
    send: &'a mut dyn FnMut(Vec<Item>) -> bool,
}

impl Chunks<'_> {
    fn push(&mut self, item: Item) -> Result<(), StoreError> {
        self.counts.add(&item);
        self.chunk.push(item);
        if self.chunk.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        if (self.send)(chunk) {
            Ok(())
        } else {
            Err(StoreError::backend(
                "export the database",
                "the receiving side stopped reading",
            ))
        }
    }
}

/// Streams every row of `sql` through `make` into `out`.
fn table(
    conn: &Connection,
    out: &mut Chunks<'_>,
    context: &'static str,
    sql: &str,
    make: impl Fn(&Row<'_>) -> rusqlite::Result<Item>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql).context(context)?;
    let mut rows = stmt.query([]).context(context)?;
    while let Some(row) = rows.next().context(context)? {
        out.push(make(row).context(context)?)?;
    }
    Ok(())
}

/// Every audited statement, a connection at a time, each once, as
/// [`list_queries`](super::audit::list_queries) reads them: from the blocks and the rows written
/// before them.
fn statements(conn: &Connection, out: &mut Chunks<'_>) -> Result<(), StoreError> {
    const PAGE: u32 = 4096;
    let context = "read audited queries";
    let mut stmt = conn
        .prepare(
            "SELECT connection_id FROM audit_queries
             UNION SELECT connection_id FROM audit_query_blocks ORDER BY 1",
        )
        .context(context)?;
    let ids = stmt
        .query_map([], |r| uuid_at(r, 0))
        .context(context)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context(context)?;
    for id in ids {
        let mut after = 0;
        loop {
            let page = super::audit::list_queries(conn, id, after, PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            let full = page.len() == PAGE as usize;
            for q in page {
                out.push(Item::Query(q))?;
            }
            if !full {
                break;
            }
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Reads the whole state inside one read transaction (a consistent snapshot, even while a
    /// server writes), parents before children, and hands it to `send` in chunks; `send` returns
    /// false to stop. The last item is [`Item::End`] with what was read, which is also returned.
    /// Blocking: call it from a blocking context.
    pub fn export(&self, send: &mut dyn FnMut(Vec<Item>) -> bool) -> Result<Counts, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction().context("start reading the database")?;
        let mut out = Chunks {
            chunk: Vec::with_capacity(CHUNK),
            counts: Counts::default(),
            send,
        };
        table(
            &tx,
            &mut out,
            "read accounts",
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name"),
            |r| account_row(r).map(Item::Account),
        )?;
        table(
            &tx,
            &mut out,
            "read tokens",
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"),
            |r| token_row(r).map(Item::Token),
        )?;
        table(
            &tx,
            &mut out,
            "read resources",
            &format!("SELECT {RESOURCE_COLUMNS} FROM resources r ORDER BY r.name"),
            |r| resource_row(r).map(Item::Resource),
        )?;
        table(
            &tx,
            &mut out,
            "read grants",
            "SELECT account_id, resource_id, created_at FROM grants
             ORDER BY account_id, resource_id",
            |r| grant_row(r).map(Item::Grant),
        )?;
        table(
            &tx,
            &mut out,
            "read sessions",
            &format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY created_at, id"),
            |r| session_row(r).map(Item::Session),
        )?;
        table(
            &tx,
            &mut out,
            "read gateways",
            &format!("SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY name"),
            |r| gateway_row(r).map(Item::Gateway),
        )?;
        table(
            &tx,
            &mut out,
            "read settings",
            "SELECT key, value FROM settings ORDER BY key",
            |r| {
                Ok(Item::Setting {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            },
        )?;
        table(
            &tx,
            &mut out,
            "read the audit trail",
            &format!("SELECT {CONNECTION_COLUMNS} FROM audit_connections ORDER BY started_at, id"),
            |r| connection_row(r).map(Item::Connection),
        )?;
        statements(&tx, &mut out)?;
        table(
            &tx,
            &mut out,
            "read recorded terminal sessions",
            "SELECT connection_id, channel, seq, line FROM audit_recordings
             ORDER BY connection_id, channel, seq",
            |r| {
                Ok(Item::Recording(AuditRecordingEvent {
                    connection_id: uuid_at(r, 0)?,
                    channel: r.get(1)?,
                    seq: count_at(r, 2)?,
                    line: r.get(3)?,
                }))
            },
        )?;
        table(
            &tx,
            &mut out,
            "read the revocation epoch",
            "SELECT epoch FROM revocation_epoch WHERE id = 1",
            |r| Ok(Item::RevocationEpoch(r.get(0)?)),
        )?;
        // Nothing was written: ending the read transaction either way is the same.
        tx.rollback().context("finish reading the database")?;
        let counts = out.counts;
        out.push(Item::End(counts))?;
        out.flush()?;
        Ok(counts)
    }
}
