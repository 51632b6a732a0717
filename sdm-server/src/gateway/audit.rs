//! Where the gateway reports what passes through it. Reporting never blocks the data path: a
//! sink queues events and a background task writes them elsewhere (the store, or the control
//! plane of a standalone gateway), in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::AuditEvent;

/// Receives audit events from the gateway.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event; must return at once.
    fn record(&self, event: AuditEvent);
}

/// Drops every event (for gateways whose owner keeps no audit trail, and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, _event: AuditEvent) {}
}

/// Events waiting to be written; beyond this, events are dropped (and counted) rather than
/// slowing connections down.
const QUEUE: usize = 64 * 1024;
/// Under sustained traffic, a batch is handed out at most this often, so that each carries many
/// events: a write costs about as much for one event as for hundreds (a SQLite commit rewrites
/// the same pages, an upload is a round trip), and a PostgreSQL query audit would otherwise be
/// written once per query. An event after a quiet spell is handed out at once.
const MIN_INTERVAL: Duration = Duration::from_millis(25);

/// The recording end of a bounded audit queue.
#[derive(Debug)]
pub struct AuditQueue {
    queue: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

/// The writing end of an [`AuditQueue`], owned by the task that writes the events.
#[derive(Debug)]
pub(crate) struct AuditBatches {
    rx: mpsc::Receiver<AuditEvent>,
    dropped: Arc<AtomicU64>,
    last_batch: Option<Instant>,
}

/// A queue and the batches it hands to its writing task.
pub(crate) fn audit_queue() -> (AuditQueue, AuditBatches) {
    let (queue, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let batches = AuditBatches {
        rx,
        dropped: dropped.clone(),
        last_batch: None,
    };
    (AuditQueue { queue, dropped }, batches)
}

impl AuditSink for AuditQueue {
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

impl AuditBatches {
    /// The next events, in order, at most `max`; `None` once every [`AuditQueue`] is dropped and
    /// everything queued was handed out.
    pub(crate) async fn next(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        let mut batch = Vec::with_capacity(max.min(256));
        if self.rx.recv_many(&mut batch, max).await == 0 {
            return None;
        }
        if let Some(next) = self.last_batch.map(|at| at + MIN_INTERVAL)
            && batch.len() < max
            && Instant::now() < next
        {
            tokio::time::sleep_until(next).await;
            while batch.len() < max {
                match self.rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        self.last_batch = Some(Instant::now());
        Some(batch)
    }

    /// Counts `count` events that could not be written.
    pub(crate) fn lost(&self, count: usize) {
        self.dropped.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Says, when the queue is done, how many events were lost while `owner` ran.
    pub(crate) fn finish(self, owner: &str) {
        let lost = self.dropped.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(lost, "audit events were lost while {owner} ran");
        }
    }
}
