//! [`store_audit_writer`]: the embedded gateway's audit events, queued ([`AuditQueue`]) and
//! written to the store in batches, one transaction each, by the gateway's writing task (see
//! [`spawn_audit_writer`]), so that recording never waits on the database.
//!
//! A batch the store cannot take (disk full, database down) is kept and written again with
//! backoff until the store takes it; meanwhile the queue reports the failure, and the gateway
//! refuses connections (see [`AuditPolicy`]).

use std::sync::Arc;
use std::time::Duration;

use sdm_control::store::Store;
use sdm_gateway::{AuditPolicy, AuditQueue, AuditWriter, Retry, WriteError, spawn_audit_writer};
use sdm_proto::audit::AuditEvent;
use sdm_proto::error::one_line;
use tokio::task::JoinHandle;

/// A queue for the gateway's audit events and the task that writes them to `store`; the task
/// ends after every queue handle is dropped and what was queued is written.
pub(crate) fn store_audit_writer(
    store: Arc<dyn Store>,
    policy: AuditPolicy,
    metrics: sdm_gateway::GatewayMetrics,
) -> (AuditQueue, JoinHandle<()>) {
    spawn_audit_writer(StoreWriter(store), policy, metrics)
}

/// Writes each batch in one transaction.
struct StoreWriter(Arc<dyn Store>);

impl AuditWriter for StoreWriter {
    /// Shared with the store's blocking task, so that a batch kept for a retry is not copied.
    type Batch = Arc<[AuditEvent]>;

    const RETRY: Retry = Retry {
        first_wait: Duration::from_millis(100),
        max_wait: Duration::from_secs(5),
        attempts_while_closing: 5,
    };

    fn prepare(&self, events: Vec<AuditEvent>) -> Vec<(usize, Arc<[AuditEvent]>)> {
        vec![(events.len(), events.into())]
    }

    async fn write(&self, batch: &Arc<[AuditEvent]>) -> Result<(), WriteError> {
        self.0.write_audit(batch.clone()).await.map_err(|e| {
            WriteError::Failed(format!("writing to the store failed: {}", one_line(&e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord, Outcome};
    use uuid::Uuid;

    use super::*;
    use sdm_control::store::SqliteStore;
    use sdm_gateway::AuditSink;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_are_written_whole_and_in_order() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (writer, task) = store_audit_writer(
            store.clone(),
            AuditPolicy::default(),
            sdm_gateway::GatewayMetrics::default(),
        );
        let id = Uuid::new_v4();
        writer
            .record(AuditEvent::Started(Box::new(AuditRecord {
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
            })))
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
