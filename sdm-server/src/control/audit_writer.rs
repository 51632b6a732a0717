//! [`StoreAuditWriter`]: the gateway's audit events, queued and written to the store in batches
//! by one background task, so that recording never waits on the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::gateway::AuditSink;
use crate::store::{AuditEvent, Store};

/// Events waiting to be written; beyond this, events are dropped (and counted) rather than
/// slowing connections down.
const QUEUE: usize = 64 * 1024;
/// Events written per transaction at most.
const BATCH: usize = 2048;
/// Under sustained traffic, a transaction starts at most this often, so that each carries many
/// events: a commit costs about as much for one row as for hundreds (SQLite rewrites the same
/// pages), and a PostgreSQL query audit would otherwise commit once per query. An event after a
/// quiet spell is written at once.
const MIN_INTERVAL: Duration = Duration::from_millis(25);

/// Queues audit events for the store.
#[derive(Debug)]
pub struct StoreAuditWriter {
    queue: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl StoreAuditWriter {
    /// A writer and its task; the task ends after every writer handle is dropped and the queue
    /// is written.
    pub fn start(store: Arc<dyn Store>) -> (StoreAuditWriter, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write_loop(store, rx, dropped.clone()));
        (StoreAuditWriter { queue, dropped }, task)
    }
}

impl AuditSink for StoreAuditWriter {
    fn record(&self, event: AuditEvent) {
        if self.queue.try_send(event).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before.is_power_of_two() {
                tracing::warn!(
                    dropped = before + 1,
                    "the audit queue is full; events are being dropped"
                );
            }
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<AuditEvent>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_write: Option<Instant> = None;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if let Some(next) = last_write.map(|at| at + MIN_INTERVAL)
            && batch.len() < BATCH
            && Instant::now() < next
        {
            tokio::time::sleep_until(next).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        last_write = Some(Instant::now());
        let events = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let count = events.len();
        if let Err(e) = store.write_audit(events).await {
            dropped.fetch_add(count as u64, Ordering::Relaxed);
            tracing::error!(error = %e, lost = count, "writing the audit trail failed");
        }
    }
    let lost = dropped.load(Ordering::Relaxed);
    if lost > 0 {
        tracing::warn!(lost, "audit events were lost while this server ran");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::store::{ConnectionRecord, QueryRecord, SqliteStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_are_written_whole_and_in_order() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (writer, task) = StoreAuditWriter::start(store.clone());
        let id = Uuid::new_v4();
        writer.record(AuditEvent::Started(ConnectionRecord {
            id,
            account_id: Uuid::new_v4(),
            account_name: "etl".into(),
            resource_id: Uuid::new_v4(),
            resource_name: "pg".into(),
            gateway: "embedded".into(),
            session_id: Uuid::new_v4(),
            lease_id: Uuid::new_v4(),
            labels: BTreeMap::new(),
            client_addr: "127.0.0.1:5".into(),
            started_at: 1,
            ended_at: None,
            bytes_up: 0,
            bytes_down: 0,
            outcome: "open".into(),
            error: None,
            query_count: 0,
        }));
        // Rounds a little apart, so that later ones arrive while a write was just made.
        let mut seq = 0;
        for _ in 0..4 {
            for _ in 0..1_000 {
                seq += 1;
                writer.record(AuditEvent::Query(QueryRecord {
                    connection_id: id,
                    seq,
                    at: 2,
                    text: format!("SELECT {seq}"),
                }));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(writer);
        task.await.unwrap();
        let mut texts = Vec::new();
        loop {
            let page = store
                .list_queries(id, texts.len() as u64, 1_000)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            texts.extend(page.into_iter().map(|q| q.text));
        }
        let expected: Vec<String> = (1..=seq).map(|i| format!("SELECT {i}")).collect();
        assert_eq!(texts, expected);
    }
}
