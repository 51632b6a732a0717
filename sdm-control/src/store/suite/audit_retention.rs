//! The store suite's check of the audit retention: records that ended before the cut are
//! removed in bounded batches with their queries and recordings; open and newer records stay.

use sdm_proto::audit::{AuditEvent, AuditRecordingEvent};
use uuid::Uuid;

use super::{Fixture, connection, end, ended, query};
use crate::store::AuditFilter;

pub(crate) async fn audit_records_past_the_retention_go_with_their_queries(f: &Fixture) {
    let store = f.a.as_ref();
    let (account, resource) = (Uuid::new_v4(), Uuid::new_v4());
    let old: Vec<_> = (0..3)
        .map(|i| connection(account, resource, 1000 + i))
        .collect();
    // Started long ago but still open: the retention never takes an open record.
    let still_open = connection(account, resource, 900);
    // Started before the cut, ended after it: kept.
    let ended_late = connection(account, resource, 1500);
    let recent = connection(account, resource, 2500);
    let mut events = vec![AuditEvent::Started(Box::new(still_open.clone()))];
    for c in &old {
        events.push(AuditEvent::Started(Box::new(c.clone())));
        events.push(AuditEvent::Query(query(c, 1, "SELECT 'old'")));
        events.push(AuditEvent::Recording(line(c, "old")));
        events.push(AuditEvent::Ended(end(c, c.started_at + 10, "ok")));
    }
    let late_end = end(&ended_late, 2100, "ok");
    let recent_end = end(&recent, 2600, "ok");
    events.extend([
        AuditEvent::Started(Box::new(ended_late.clone())),
        AuditEvent::Ended(late_end.clone()),
        AuditEvent::Started(Box::new(recent.clone())),
        AuditEvent::Query(query(&recent, 1, "SELECT 'recent'")),
        AuditEvent::Recording(line(&recent, "recent")),
        AuditEvent::Ended(recent_end.clone()),
    ]);
    store.write_audit(events.into()).await.unwrap();

    // Bounded batches, from either handle; a second run finds nothing more.
    assert_eq!(store.prune_audit(2000, 2).await.unwrap(), 2);
    assert_eq!(f.b.prune_audit(2000, 2).await.unwrap(), 1);
    assert_eq!(store.prune_audit(2000, 2).await.unwrap(), 0);

    for c in &old {
        assert_eq!(store.get_connection(c.id).await.unwrap(), None);
        assert!(store.list_queries(c.id, 0, 10).await.unwrap().is_empty());
        assert!(store.recorded_channels(c.id).await.unwrap().is_empty());
        assert!(
            store
                .list_recording(c.id, 1, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let left: Vec<Uuid> = store
        .list_connections(AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [recent.id, ended_late.id, still_open.id]);
    assert_eq!(
        store.get_connection(recent.id).await.unwrap(),
        Some(ended(&recent, &recent_end))
    );
    assert_eq!(store.list_queries(recent.id, 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.recorded_channels(recent.id).await.unwrap(), [1]);
    assert_eq!(
        store.list_recording(recent.id, 1, None, 10).await.unwrap(),
        [line(&recent, "recent")]
    );
}

fn line(c: &sdm_proto::audit::AuditRecord, text: &str) -> AuditRecordingEvent {
    AuditRecordingEvent {
        connection_id: c.id,
        channel: 1,
        seq: 0,
        line: text.into(),
    }
}
