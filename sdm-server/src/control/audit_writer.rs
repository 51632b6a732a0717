//! [`store_audit_writer`]: the gateway's audit events, queued ([`AuditQueue`]) and written to the
//! store in batches by one background task, so that recording never waits on the database.
//!
//! A batch the store cannot take (disk full, database down) is kept and written again with
//! backoff until the store takes it; meanwhile the queue reports the failure, and the gateway
//! refuses connections (see [`AuditPolicy`]).

use std::sync::Arc;
use std::time::Duration;

use sdm_proto::error::one_line;
use tokio::task::JoinHandle;

use crate::gateway::{AuditBatches, AuditPolicy, AuditQueue, audit_queue};
use crate::remote::backoff;
use crate::store::Store;

/// Events written per transaction at most.
const BATCH: usize = 2048;
/// Retries of a failed write back off up to this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// At shutdown, a batch the store refuses is given up after this many attempts.
const ATTEMPTS_WHILE_CLOSING: u32 = 5;

/// A queue for the gateway's audit events and the task that writes them to `store`; the task
/// ends after every queue handle is dropped and what was queued is written.
pub fn store_audit_writer(
    store: Arc<dyn Store>,
    policy: AuditPolicy,
) -> (AuditQueue, JoinHandle<()>) {
    let (queue, batches) = audit_queue(policy);
    (queue, tokio::spawn(write_loop(store, batches)))
}

async fn write_loop(store: Arc<dyn Store>, mut batches: AuditBatches) {
    while let Some(events) = batches.next(BATCH).await {
        let mut attempt = 0;
        loop {
            match store.write_audit(events.clone()).await {
                Ok(()) => {
                    batches.written();
                    break;
                }
                Err(e) if batches.closing() && attempt + 1 >= ATTEMPTS_WHILE_CLOSING => {
                    tracing::error!(error = %e, lost = events.len(), "writing the audit trail failed at shutdown; these events are lost");
                    batches.lost(events.len());
                    break;
                }
                Err(e) => {
                    batches.failed(&format!("writing to the store failed: {}", one_line(&e)));
                    tokio::time::sleep(backoff(
                        attempt,
                        Duration::from_millis(100),
                        MAX_RETRY_WAIT,
                    ))
                    .await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
    batches.finish("this server");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, Outcome};
    use uuid::Uuid;

    use super::*;
    use crate::gateway::AuditSink;
    use crate::store::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_are_written_whole_and_in_order() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (writer, task) = store_audit_writer(store.clone(), AuditPolicy::default());
        let id = Uuid::new_v4();
        writer
            .record(AuditEvent::Started(AuditRecord {
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
                outcome: Outcome::Open,
                error: None,
                query_count: 0,
            }))
            .unwrap();
        // Rounds a little apart, so that later ones arrive while a write was just made.
        let mut seq = 0;
        for _ in 0..4 {
            for _ in 0..1_000 {
                seq += 1;
                writer
                    .record(AuditEvent::Query(AuditQueryEvent {
                        connection_id: id,
                        seq,
                        at: 2,
                        text: format!("SELECT {seq}"),
                    }))
                    .unwrap();
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
