//! The task that empties an [`AuditQueue`]: it reads batches, hands each to an [`AuditWriter`]
//! and retries with backoff until the writer takes it, reporting failures to the queue (which
//! then refuses connections, see [`AuditPolicy`]). A batch is given up only when the writer
//! says it is invalid (retrying cannot help) or, at shutdown, after a few attempts; either way
//! it is logged and counted, never silently dropped.

use std::future::Future;
use std::time::Duration;

use sdm_proto::audit::AuditEvent;
use tokio::task::JoinHandle;

use super::queue::AuditBatches;
#[cfg(test)]
use super::queue::audit_queue;
use super::{AuditPolicy, AuditQueue};
use sdm_proto::backoff::jittered as backoff;

/// Events read from the queue at once.
const READ: usize = 2048;

/// Where a gateway's audit events go: the store of the control plane in the same process, or,
/// for a standalone gateway, its control plane over HTTP. A writer only writes; the retries are
/// the task's.
pub trait AuditWriter: Send + Sync + 'static {
    /// Events in the form one write sends them (the events themselves, an upload body).
    type Batch: Send + Sync + 'static;

    /// How failed writes are retried.
    const RETRY: Retry;

    /// Turns events, in order, into the batches to write, in order, each with the number of
    /// events it holds.
    fn prepare(&self, events: Vec<AuditEvent>) -> Vec<(usize, Self::Batch)>;

    /// Writes one batch, all of it or none of it.
    fn write(&self, batch: &Self::Batch) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// Why a batch was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// It could not be written now (store or control plane down, disk full): it is kept and
    /// written again.
    #[error("{0}")]
    Failed(String),
    /// It was refused as invalid: writing it again cannot help, so it is given up (logged and
    /// counted as lost).
    #[error("{0}")]
    Invalid(String),
}

/// How a writer's failed writes are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The wait after the first failure; it doubles, with jitter, up to `max_wait`.
    pub first_wait: Duration,
    /// The longest wait between two attempts.
    pub max_wait: Duration,
    /// At shutdown (every queue handle dropped), a batch is given up after this many failed
    /// attempts instead of holding the shutdown up.
    pub attempts_while_closing: u32,
}

/// A queue for a gateway's audit events and the task that writes them with `writer`; the task
/// ends after every queue handle is dropped and what was queued is written (or, when it cannot
/// be at shutdown, given up and counted). The queue's depth and losses show in `metrics`.
pub fn spawn_audit_writer<W: AuditWriter>(
    writer: W,
    policy: AuditPolicy,
    metrics: crate::GatewayMetrics,
) -> (AuditQueue, JoinHandle<()>) {
    let (queue, batches) = super::queue::counted_audit_queue(policy, metrics);
    (queue, tokio::spawn(write_all(writer, batches)))
}

async fn write_all<W: AuditWriter>(writer: W, mut batches: AuditBatches) {
    while let Some(events) = batches.next(READ).await {
        for (count, batch) in writer.prepare(events) {
            write(&writer, &batches, count, &batch).await;
        }
    }
    batches.finish();
}

/// Writes one batch of `count` events, retrying until the writer takes it.
async fn write<W: AuditWriter>(writer: &W, batches: &AuditBatches, count: usize, batch: &W::Batch) {
    let mut failures = 0u32;
    loop {
        let why = match writer.write(batch).await {
            Ok(()) => {
                batches.written();
                return;
            }
            Err(WriteError::Invalid(why)) => {
                tracing::error!(reason = %why, lost = count, "audit events were refused as invalid; they are lost");
                batches.lost(count);
                return;
            }
            Err(WriteError::Failed(why)) => why,
        };
        failures = failures.saturating_add(1);
        if batches.closing() && failures >= W::RETRY.attempts_while_closing {
            tracing::error!(reason = %why, lost = count, "audit events could not be written at shutdown; they are lost");
            batches.lost(count);
            return;
        }
        batches.failed(&why);
        let retry = W::RETRY;
        tokio::time::sleep(backoff(failures - 1, retry.first_wait, retry.max_wait)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sdm_proto::audit::AuditQueryEvent;
    use uuid::Uuid;

    use super::*;
    use crate::AuditSink;

    /// Takes batches of one event each, after answering each batch with the errors queued for
    /// it, and keeps what it took.
    #[derive(Clone, Default)]
    struct Script {
        errors: Arc<Mutex<Vec<(u64, WriteError)>>>,
        taken: Arc<Mutex<Vec<u64>>>,
        attempts: Arc<Mutex<u32>>,
    }

    impl AuditWriter for Script {
        type Batch = u64;

        const RETRY: Retry = Retry {
            first_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(2),
            attempts_while_closing: 3,
        };

        fn prepare(&self, events: Vec<AuditEvent>) -> Vec<(usize, u64)> {
            events
                .into_iter()
                .filter_map(|e| match e {
                    AuditEvent::Query(q) => Some((1, q.seq)),
                    _ => None,
                })
                .collect()
        }

        async fn write(&self, seq: &u64) -> Result<(), WriteError> {
            *self.attempts.lock().unwrap() += 1;
            let mut errors = self.errors.lock().unwrap();
            if let Some(at) = errors.iter().position(|(s, _)| s == seq) {
                return Err(errors.remove(at).1);
            }
            self.taken.lock().unwrap().push(*seq);
            Ok(())
        }
    }

    fn query(seq: u64) -> AuditEvent {
        AuditEvent::Query(AuditQueryEvent {
            connection_id: Uuid::nil(),
            seq,
            at: 1,
            text: "SELECT 1".into(),
        })
    }

    fn fails(seq: u64, times: usize) -> Vec<(u64, WriteError)> {
        vec![(seq, WriteError::Failed("the store is down".into())); times]
    }

    #[tokio::test]
    async fn failed_writes_are_retried_until_taken_and_invalid_ones_are_counted() {
        let script = Script::default();
        script.errors.lock().unwrap().extend(fails(1, 2));
        script
            .errors
            .lock()
            .unwrap()
            .push((2, WriteError::Invalid("bad".into())));
        let (queue, mut batches) = audit_queue(AuditPolicy::default());
        for seq in 1..=3 {
            queue.record(query(seq)).unwrap();
        }
        let events = batches.next(READ).await.unwrap();
        let [(_, first), rest @ ..] = &script.prepare(events)[..] else {
            unreachable!()
        };
        write(&script, &batches, 1, first).await;
        assert_eq!(
            *script.attempts.lock().unwrap(),
            3,
            "two failures, then taken"
        );
        for (count, batch) in rest {
            write(&script, &batches, *count, batch).await;
        }
        assert_eq!(*script.taken.lock().unwrap(), vec![1, 3]);
        assert_eq!(batches.lost_so_far(), 1, "the invalid batch is counted");
        assert_eq!(queue.admit(), Ok(()), "taken again: the gateway serves");
    }

    #[tokio::test]
    async fn a_failing_writer_refuses_connections_and_gives_up_only_at_shutdown() {
        let script = Script::default();
        script.errors.lock().unwrap().extend(fails(1, 1000));
        let (queue, task) = spawn_audit_writer(
            script.clone(),
            AuditPolicy::default(),
            crate::GatewayMetrics::default(),
        );
        queue.record(query(1)).unwrap();
        let failing = async {
            while queue.admit().is_ok() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), failing)
            .await
            .expect("the failure reaches the queue");
        let refused = queue.admit().unwrap_err();
        assert!(refused.0.contains("the store is down"), "{refused}");
        let before = *script.attempts.lock().unwrap();
        drop(queue);
        task.await.unwrap();
        let attempts = *script.attempts.lock().unwrap();
        assert!(attempts > before, "it kept trying until shutdown");
        assert!(script.taken.lock().unwrap().is_empty());
    }
}
