//! [`StoreAuditWriter`]: the gateway's audit events, queued and written to the store in batches
//! by one background task, so that recording never waits on the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::gateway::AuditSink;
use crate::store::{AuditEvent, Store};

/// Events waiting to be written; beyond this, events are dropped (and counted) rather than
/// slowing connections down.
const QUEUE: usize = 64 * 1024;
/// Events written per transaction at most.
const BATCH: usize = 2048;

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
    while rx.recv_many(&mut batch, BATCH).await > 0 {
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
