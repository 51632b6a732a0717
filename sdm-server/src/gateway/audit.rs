//! Where the gateway reports what passes through it. Reporting never blocks the data path: a
//! sink queues events and a background task writes them elsewhere (the store, or the control
//! plane of a standalone gateway), in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

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

/// Writes the end of a connection that started in the same batch into its start, so that it
/// costs one row written instead of an insert and an update (a job that connects per
/// transaction starts and ends most of its connections within one batch).
fn fold_ends(batch: Vec<AuditEvent>) -> Vec<AuditEvent> {
    let mut out = Vec::with_capacity(batch.len());
    // Where each connection that started in this batch, and has not ended yet, sits in `out`.
    let mut open: HashMap<Uuid, usize> = HashMap::new();
    for event in batch {
        match event {
            AuditEvent::Started(c) => {
                if c.ended_at.is_none() {
                    open.insert(c.id, out.len());
                }
                out.push(AuditEvent::Started(c));
            }
            AuditEvent::Ended(end) => match open.remove(&end.id).map(|at| &mut out[at]) {
                Some(AuditEvent::Started(c)) => {
                    c.ended_at = Some(end.ended_at);
                    c.bytes_up = end.bytes_up;
                    c.bytes_down = end.bytes_down;
                    c.outcome = end.outcome;
                    c.error = end.error;
                    c.query_count = end.query_count;
                }
                _ => out.push(AuditEvent::Ended(end)),
            },
            other => out.push(other),
        }
    }
    out
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
        Some(fold_ends(batch))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConnectionEnd, ConnectionRecord, QueryRecord};

    fn started(id: Uuid) -> AuditEvent {
        AuditEvent::Started(ConnectionRecord {
            id,
            account_id: Uuid::nil(),
            account_name: "etl".into(),
            resource_id: Uuid::nil(),
            resource_name: "pg".into(),
            gateway: "gw".into(),
            session_id: Uuid::nil(),
            lease_id: Uuid::nil(),
            labels: Default::default(),
            client_addr: "127.0.0.1:1".into(),
            started_at: 100,
            ended_at: None,
            bytes_up: 0,
            bytes_down: 0,
            outcome: "open".into(),
            error: None,
            query_count: 0,
        })
    }

    fn ended(id: Uuid, outcome: &str) -> ConnectionEnd {
        ConnectionEnd {
            id,
            ended_at: 107,
            bytes_up: 11,
            bytes_down: 22,
            outcome: outcome.into(),
            error: Some("why".into()),
            query_count: 1,
        }
    }

    fn query(id: Uuid) -> AuditEvent {
        AuditEvent::Query(QueryRecord {
            connection_id: id,
            seq: 1,
            at: 101,
            text: "SELECT 1".into(),
        })
    }

    #[tokio::test]
    async fn a_connection_that_ends_in_its_batch_is_written_once() {
        let (queue, mut batches) = audit_queue();
        let [a, b, c] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        // `c` started in an earlier batch; `b` is still open.
        for event in [
            started(a),
            query(a),
            started(b),
            AuditEvent::Ended(ended(c, "ok")),
            AuditEvent::Ended(ended(a, "upstream_failed")),
        ] {
            queue.record(event);
        }
        let batch = batches.next(100).await.unwrap();
        let AuditEvent::Started(mut whole) = started(a) else {
            unreachable!()
        };
        whole.ended_at = Some(107);
        whole.bytes_up = 11;
        whole.bytes_down = 22;
        whole.outcome = "upstream_failed".into();
        whole.error = Some("why".into());
        whole.query_count = 1;
        assert_eq!(
            batch,
            vec![
                AuditEvent::Started(whole),
                query(a),
                started(b),
                AuditEvent::Ended(ended(c, "ok")),
            ]
        );
    }

    #[test]
    fn an_end_without_its_start_in_the_batch_is_kept() {
        let id = Uuid::new_v4();
        let batch = vec![AuditEvent::Ended(ended(id, "ok")), started(id)];
        assert_eq!(
            fold_ends(batch.clone()),
            batch,
            "an end before the start is not folded"
        );
        let AuditEvent::Started(mut refused) = started(id) else {
            unreachable!()
        };
        refused.ended_at = Some(100);
        refused.outcome = "permission_denied".into();
        // A connection refused at once is recorded whole; a stray end after it stays an update.
        let batch = vec![
            AuditEvent::Started(refused),
            AuditEvent::Ended(ended(id, "ok")),
        ];
        assert_eq!(fold_ends(batch.clone()), batch);
    }
}
