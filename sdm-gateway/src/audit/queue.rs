//! The bounded queue between the gateway's connections and its audit writer, and the state
//! they share: whether writes fail, since when, and what was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sdm_proto::audit::AuditEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::{AuditPolicy, AuditSink, AuditUnavailable};
use crate::GatewayMetrics;

/// Events waiting to be written. Beyond `QUEUE - RESERVED_FOR_ENDS`, new connections and
/// statements are refused; the rest is kept for the ends of connections already open (at most
/// one per connection a gateway carries), so that closing them never loses their record.
const QUEUE: usize = 64 * 1024;
const RESERVED_FOR_ENDS: usize = 16 * 1024 + 1024;
/// The statement text waiting to be written is bounded too (statements run to 64 KiB each).
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// A connection starts only while the queue has room for a long statement.
const ROOM_TO_START: usize = 256 * 1024;
/// Under sustained traffic, a batch is handed out at most this often, so that each carries many
/// events: a write costs about as much for one event as for hundreds (a SQLite commit rewrites
/// the same pages, an upload is a round trip), and a PostgreSQL query audit would otherwise be
/// written once per query. An event after a quiet spell is handed out at once. At 25 ms the
/// store's writer took 8 % of an embedded gateway's CPU at 12,000 statements a second; at
/// 100 ms, with each batch's handling made cheaper, 2.5 % (docs/BENCHMARKS.md, "Lever: larger
/// audit batches"). What a killed process had not written yet spans this long at most, when
/// the writer keeps up.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Whether the writer is keeping up, shared by a queue and its writing end.
#[derive(Debug, Default)]
struct Health {
    /// Set while writes fail (the fast path of [`AuditQueue::admit`] reads only this).
    failing: AtomicBool,
    /// Since when, and why.
    failure: Mutex<Option<(Instant, String)>>,
    /// Events lost (fail-open only, or given up at shutdown).
    dropped: AtomicU64,
    /// About how many bytes the queued events hold.
    queued_bytes: AtomicUsize,
    /// Where the queue's depth and losses are shown.
    metrics: GatewayMetrics,
}

/// About how much memory an event holds while queued.
fn size_of(event: &AuditEvent) -> usize {
    match event {
        AuditEvent::Query(q) => 64 + q.text.len(),
        AuditEvent::Recording(l) => 64 + l.line.len(),
        _ => 256,
    }
}

/// The recording end of a bounded audit queue.
#[derive(Debug)]
pub struct AuditQueue {
    queue: mpsc::Sender<AuditEvent>,
    health: Arc<Health>,
    policy: AuditPolicy,
}

/// The writing end of an [`AuditQueue`], owned by the task that writes the events.
#[derive(Debug)]
pub(super) struct AuditBatches {
    rx: mpsc::Receiver<AuditEvent>,
    health: Arc<Health>,
    last_batch: Option<Instant>,
    last_len: usize,
}

/// A queue and the batches it hands to its writing task, counting nowhere.
#[cfg(test)]
pub(super) fn audit_queue(policy: AuditPolicy) -> (AuditQueue, AuditBatches) {
    counted_audit_queue(policy, GatewayMetrics::default())
}

/// A queue and the batches it hands to its writing task; its depth and losses show in
/// `metrics`.
pub(super) fn counted_audit_queue(
    policy: AuditPolicy,
    metrics: GatewayMetrics,
) -> (AuditQueue, AuditBatches) {
    let (queue, rx) = mpsc::channel(QUEUE);
    let health = Arc::new(Health {
        metrics,
        ..Health::default()
    });
    let batches = AuditBatches {
        rx,
        health: health.clone(),
        last_batch: None,
        last_len: 0,
    };
    (
        AuditQueue {
            queue,
            health,
            policy,
        },
        batches,
    )
}

impl AuditQueue {
    /// Since when and why the writer fails, if it does.
    fn failure(&self) -> Option<(Instant, String)> {
        if !self.health.failing.load(Ordering::Acquire) {
            return None;
        }
        self.health.failure.lock().ok()?.clone()
    }

    fn over_budget(&self, more: usize) -> bool {
        self.health.queued_bytes.load(Ordering::Relaxed) + more > MAX_QUEUED_BYTES
    }

    /// An event that does not fit: refused, or (fail-open) lost and counted.
    fn overflow(&self, why: &str) -> Result<(), AuditUnavailable> {
        if !self.policy.fail_open {
            return Err(AuditUnavailable(why.to_owned()));
        }
        let before = self.health.dropped.fetch_add(1, Ordering::Relaxed);
        self.health.metrics.audit_lost(1);
        if before.is_power_of_two() {
            tracing::error!(
                lost = before + 1,
                "{why}; audit events are being lost (the gateway runs with the audit failing open)"
            );
        }
        Ok(())
    }
}

impl AuditSink for AuditQueue {
    fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        const FULL: &str = "the audit queue is full (the writer is not keeping up)";
        let is_end = matches!(event, AuditEvent::Ended(_));
        let size = size_of(&event);
        if !is_end && (self.queue.capacity() <= RESERVED_FOR_ENDS || self.over_budget(size)) {
            return self.overflow(FULL);
        }
        match self.queue.try_send(event) {
            Ok(()) => {
                self.health.queued_bytes.fetch_add(size, Ordering::Relaxed);
                self.health.metrics.audit_queued(1);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow(FULL),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.overflow("the audit writer has stopped")
            }
        }
    }

    fn admit(&self) -> Result<(), AuditUnavailable> {
        if self.policy.fail_open {
            return Ok(());
        }
        if let Some((_, why)) = self.failure() {
            return Err(AuditUnavailable(why));
        }
        if self.queue.capacity() <= RESERVED_FOR_ENDS || self.over_budget(ROOM_TO_START) {
            return Err(AuditUnavailable(
                "the audit queue is full (the writer is not keeping up)".into(),
            ));
        }
        Ok(())
    }

    fn has_room_for_bulk(&self) -> bool {
        self.queue.capacity() > QUEUE / 2
            && self.health.queued_bytes.load(Ordering::Relaxed) < MAX_QUEUED_BYTES / 2
    }

    fn must_close(&self) -> Option<AuditUnavailable> {
        if self.policy.fail_open {
            return None;
        }
        let (since, why) = self.failure()?;
        (since.elapsed() >= self.policy.grace).then_some(AuditUnavailable(why))
    }
}

/// Writes the end of a connection that started in the same batch into its start, so that it
/// costs one row written instead of an insert and an update (a job that connects per
/// transaction starts and ends most of its connections within one batch).
fn fold_ends(batch: Vec<AuditEvent>) -> Vec<AuditEvent> {
    // Long-lived connections' batches are statements only: nothing to fold, nothing to move.
    if !batch
        .iter()
        .any(|e| matches!(e, AuditEvent::Started(c) if c.ended_at.is_none()))
    {
        return batch;
    }
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
                Some(AuditEvent::Started(c)) => c.apply(&end),
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
    pub(super) async fn next(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        // Sized like the batch before: growing a small one, or touching a large fresh one,
        // cost more than the events' own handling.
        let mut batch = Vec::with_capacity(self.last_len.max(16).min(max));
        if self.rx.recv_many(&mut batch, max).await == 0 {
            return None;
        }
        if let Some(next) = self.last_batch.map(|at| at + MIN_INTERVAL)
            && batch.len() < max
            && Instant::now() < next
        {
            tokio::time::sleep_until(next).await;
            // What came meanwhile, taken in runs: one at a time, each event would give its
            // slot back under the channel's lock.
            let mut now = Context::from_waker(Waker::noop());
            while batch.len() < max {
                let room = max - batch.len();
                match self.rx.poll_recv_many(&mut now, &mut batch, room) {
                    Poll::Ready(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        self.last_batch = Some(Instant::now());
        self.last_len = batch.len();
        let size: usize = batch.iter().map(size_of).sum();
        self.health.queued_bytes.fetch_sub(size, Ordering::Relaxed);
        self.health.metrics.audit_queued(-(batch.len() as i64));
        Some(fold_ends(batch))
    }

    /// A write failed: new connections are refused from now on, open ones after the grace.
    pub(super) fn failed(&self, why: &str) {
        let Ok(mut failure) = self.health.failure.lock() else {
            return;
        };
        if failure.is_none() {
            tracing::error!(
                reason = why,
                "the audit trail cannot be written; the gateway refuses new connections until it can"
            );
            *failure = Some((Instant::now(), why.to_owned()));
        } else if let Some((_, reason)) = failure.as_mut() {
            why.clone_into(reason);
        }
        self.health.failing.store(true, Ordering::Release);
    }

    /// A write succeeded: the gateway serves again if it had stopped.
    pub(super) fn written(&self) {
        if !self.health.failing.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut failure) = self.health.failure.lock()
            && let Some((since, _)) = failure.take()
        {
            tracing::warn!(
                after = ?since.elapsed(),
                "the audit trail is written again; the gateway accepts connections"
            );
        }
        self.health.failing.store(false, Ordering::Release);
    }

    /// Whether every queue handle is gone (the gateway is shutting down): a writer then stops
    /// retrying after a few attempts instead of holding the shutdown up.
    pub(super) fn closing(&self) -> bool {
        self.rx.is_closed()
    }

    /// Counts `count` events given up (at shutdown, or refused by the control plane as
    /// invalid); they are logged, never silently dropped.
    pub(super) fn lost(&self, count: usize) {
        self.health
            .dropped
            .fetch_add(count as u64, Ordering::Relaxed);
        self.health.metrics.audit_lost(count as u64);
    }

    /// Says, when the queue is done, how many events were lost while the gateway ran.
    pub(super) fn finish(self) {
        let lost = self.health.dropped.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::error!(lost, "audit events were lost while this gateway ran");
        }
    }

    /// Events lost so far.
    #[cfg(test)]
    pub(super) fn lost_so_far(&self) -> u64 {
        self.health.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use sdm_proto::audit::{AuditEnd, AuditQueryEvent, AuditRecord};

    use super::*;

    fn started(id: Uuid) -> AuditEvent {
        AuditEvent::Started(Box::new(AuditRecord {
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
        }))
    }

    fn ended(id: Uuid, outcome: &str) -> AuditEnd {
        AuditEnd {
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
        AuditEvent::Query(AuditQueryEvent {
            connection_id: id,
            seq: 1,
            at: 101,
            text: "SELECT 1".into(),
        })
    }

    /// Statement `seq` of one connection.
    fn statement(seq: u64, text: &str) -> AuditEvent {
        AuditEvent::Query(AuditQueryEvent {
            connection_id: Uuid::nil(),
            seq,
            at: 1,
            text: text.into(),
        })
    }

    #[tokio::test]
    async fn a_connection_that_ends_in_its_batch_is_written_once() {
        let (queue, mut batches) = audit_queue(AuditPolicy::default());
        let [a, b, c] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        // `c` started in an earlier batch; `b` is still open.
        for event in [
            started(a),
            query(a),
            started(b),
            AuditEvent::Ended(ended(c, "ok")),
            AuditEvent::Ended(ended(a, "upstream_failed")),
        ] {
            queue.record(event).unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn under_sustained_traffic_a_batch_waits_its_interval_and_takes_what_came_meanwhile() {
        let (queue, mut batches) = audit_queue(AuditPolicy::default());
        let event = |seq| statement(seq, "SELECT 1");
        queue.record(event(1)).unwrap();
        let first = Instant::now();
        assert_eq!(batches.next(100).await, Some(vec![event(1)]), "at once");
        queue.record(event(2)).unwrap();
        let waiting = tokio::spawn(async move { (batches.next(100).await, Instant::now()) });
        // The writer now holds event 2 and waits out the interval.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for seq in 3..=40 {
            queue.record(event(seq)).unwrap();
        }
        let (batch, at) = waiting.await.unwrap();
        assert_eq!(batch, Some((2..=40).map(event).collect::<Vec<_>>()));
        assert!(
            at - first >= MIN_INTERVAL,
            "handed out after {:?}",
            at - first
        );
    }

    #[tokio::test]
    async fn a_failing_writer_refuses_new_connections_and_closes_open_ones_after_the_grace() {
        let policy = |grace| AuditPolicy {
            fail_open: false,
            grace,
        };
        let (queue, batches) = audit_queue(policy(Duration::from_secs(3600)));
        assert_eq!(queue.admit(), Ok(()));
        batches.failed("writing to the store failed: database or disk is full");
        let refused = queue.admit().unwrap_err();
        assert!(refused.to_string().contains("disk is full"), "{refused}");
        assert_eq!(
            queue.must_close(),
            None,
            "open connections have their grace"
        );
        queue
            .record(query(Uuid::nil()))
            .expect("events are still queued meanwhile");
        batches.written();
        assert_eq!((queue.admit(), queue.must_close()), (Ok(()), None));

        let (queue, batches) = audit_queue(policy(Duration::ZERO));
        batches.failed("the control plane is unreachable");
        assert!(
            queue
                .must_close()
                .is_some_and(|why| why.0.contains("unreachable"))
        );
        let (open, batches) = audit_queue(AuditPolicy {
            fail_open: true,
            grace: Duration::ZERO,
        });
        batches.failed("disk full");
        assert_eq!(
            (open.admit(), open.must_close()),
            (Ok(()), None),
            "fail-open serves on"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_statements_and_keeps_room_for_ends() {
        let (queue, _batches) = audit_queue(AuditPolicy::default());
        let mut taken = 0;
        while queue.record(query(Uuid::nil())).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, QUEUE - RESERVED_FOR_ENDS);
        assert!(queue.admit().is_err(), "no new connection while full");
        for _ in 0..RESERVED_FOR_ENDS {
            queue
                .record(AuditEvent::Ended(ended(Uuid::nil(), "ok")))
                .unwrap();
        }

        let (open, batches) = audit_queue(AuditPolicy {
            fail_open: true,
            ..AuditPolicy::default()
        });
        for _ in 0..QUEUE {
            open.record(query(Uuid::nil())).unwrap();
        }
        assert_eq!(
            batches.health.dropped.load(Ordering::Relaxed),
            RESERVED_FOR_ENDS as u64,
            "fail-open counts what it loses"
        );
    }

    #[tokio::test]
    async fn recordings_wait_once_the_queue_is_half_full_and_statements_still_fit() {
        let (queue, mut batches) = audit_queue(AuditPolicy::default());
        let mut taken = 0;
        while queue.has_room_for_bulk() {
            queue.record(query(Uuid::nil())).unwrap();
            taken += 1;
        }
        assert_eq!(taken, QUEUE / 2, "room for recordings until half full");
        queue
            .record(query(Uuid::nil()))
            .expect("statements still have room");
        assert!(queue.admit().is_ok(), "and new connections too");
        batches.next(QUEUE).await.unwrap();
        assert!(queue.has_room_for_bulk(), "room again once written");
    }

    #[tokio::test]
    async fn queued_statement_text_is_bounded_and_given_back_as_it_is_written() {
        let (queue, mut batches) = audit_queue(AuditPolicy::default());
        let big = |seq| statement(seq, &"x".repeat(64 * 1024));
        let mut taken = 0;
        while queue.record(big(taken)).is_ok() {
            taken += 1;
        }
        assert!(taken < 1100, "{taken} statements of 64 KiB were queued");
        assert!(queue.admit().is_err());
        let batch = batches.next(10).await.unwrap();
        assert_eq!(batch.len(), 10);
        queue
            .record(big(taken))
            .expect("room again once a batch is handed out");
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
