//! The store suite's checks of who may change an audit record: only the gateway that opened
//! the connection, and, for records it left open when its process stopped, its next start.

use sdm_proto::audit::{AuditEvent, AuditRecord, AuditRecordingEvent, Outcome};
use uuid::Uuid;

use super::{Fixture, connection, end, ended, query};
use crate::store::AuditRefusals;

/// An authenticated gateway writes records of its own connections and changes only those:
/// another gateway's record cannot be replaced, ended or given queries, and what was refused is
/// counted. A gateway repeating its own upload is not refused, and nothing reopens an ended
/// record.
pub(crate) async fn a_gateway_changes_only_its_own_audit_records(f: &Fixture) {
    let store = f.a.as_ref();
    let (account, resource) = (Uuid::new_v4(), Uuid::new_v4());
    let mut theirs = connection(account, resource, 1000);
    theirs.gateway = "gw-a".into();
    let first = vec![
        AuditEvent::Started(Box::new(theirs.clone())),
        AuditEvent::Query(query(&theirs, 1, "SELECT 1")),
    ];
    assert_eq!(
        store
            .write_gateway_audit("gw-a", first.clone())
            .await
            .unwrap(),
        AuditRefusals::default()
    );

    // Gateway B goes after A's record in every way it can, and writes one of its own.
    let forged = AuditRecord {
        gateway: "gw-b".into(),
        account_name: "someone-else".into(),
        ended_at: Some(1001),
        outcome: "ok".into(),
        ..theirs.clone()
    };
    let mut mine = connection(account, resource, 1002);
    mine.gateway = "gw-b".into();
    let mine_end = end(&mine, 1003, "ok");
    let mut claims_a = connection(account, resource, 1004);
    claims_a.gateway = "gw-a".into();
    let refused =
        f.b.write_gateway_audit(
            "gw-b",
            vec![
                AuditEvent::Started(Box::new(forged)),
                AuditEvent::Ended(end(&theirs, 1001, "ok")),
                AuditEvent::Query(query(&theirs, 2, "DROP TABLE audit")),
                AuditEvent::Recording(recording_line(&theirs, 1, "forged")),
                AuditEvent::Query(query(&theirs, 1, "SELECT 'nothing to see'")),
                AuditEvent::Ended(end(&connection(account, resource, 1), 5, "ok")),
                AuditEvent::Query(query(&connection(account, resource, 1), 1, "orphan")),
                AuditEvent::Started(Box::new(claims_a.clone())),
                AuditEvent::Started(Box::new(mine.clone())),
                AuditEvent::Query(query(&mine, 1, "BEGIN")),
                AuditEvent::Recording(recording_line(&mine, 0, "header")),
                AuditEvent::Ended(mine_end.clone()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        AuditRefusals {
            starts: 2,
            ends: 2,
            queries: 3,
            recording_lines: 1,
        }
    );
    assert_eq!(refused.total(), 8);
    assert!(store.recorded_channels(theirs.id).await.unwrap().is_empty());
    assert_eq!(
        store.list_recording(mine.id, 7, None, 10).await.unwrap(),
        vec![recording_line(&mine, 0, "header")]
    );
    assert_eq!(
        store.get_connection(theirs.id).await.unwrap(),
        Some(theirs.clone())
    );
    assert_eq!(
        store.list_queries(theirs.id, 0, 10).await.unwrap(),
        vec![query(&theirs, 1, "SELECT 1")]
    );
    assert_eq!(store.get_connection(claims_a.id).await.unwrap(), None);
    assert_eq!(
        store.get_connection(mine.id).await.unwrap(),
        Some(ended(&mine, &mine_end))
    );
    assert_eq!(
        store.list_queries(mine.id, 0, 10).await.unwrap(),
        vec![query(&mine, 1, "BEGIN")]
    );

    // A sends its first upload again (its answer was lost), then its end and a late query.
    let theirs_end = end(&theirs, 1010, "ok");
    let mut again = first.clone();
    again.push(AuditEvent::Ended(theirs_end.clone()));
    again.push(AuditEvent::Query(query(&theirs, 2, "COMMIT")));
    assert_eq!(
        store
            .write_gateway_audit("gw-a", again.clone())
            .await
            .unwrap(),
        AuditRefusals::default()
    );
    assert_eq!(
        f.b.write_gateway_audit("gw-a", again).await.unwrap(),
        AuditRefusals::default()
    );
    assert_eq!(
        store.get_connection(theirs.id).await.unwrap(),
        Some(ended(&theirs, &theirs_end))
    );
    // Neither A's old start nor the control plane's own writer reopens the ended record.
    store.write_gateway_audit("gw-a", first).await.unwrap();
    store
        .write_audit(vec![AuditEvent::Started(Box::new(theirs.clone()))].into())
        .await
        .unwrap();
    assert_eq!(
        store.get_connection(theirs.id).await.unwrap(),
        Some(ended(&theirs, &theirs_end))
    );
    assert_eq!(
        store.list_queries(theirs.id, 0, 10).await.unwrap(),
        vec![query(&theirs, 1, "SELECT 1"), query(&theirs, 2, "COMMIT")]
    );
}

/// The records a stopped gateway left open are closed as interrupted, and only that gateway's;
/// an end that still arrives from the gateway wins.
pub(crate) async fn records_a_stopped_gateway_left_open_are_interrupted(f: &Fixture) {
    let store = f.a.as_ref();
    let (account, resource) = (Uuid::new_v4(), Uuid::new_v4());
    let on = |gateway: &str, started_at: i64| {
        let mut c = connection(account, resource, started_at);
        c.gateway = gateway.into();
        c
    };
    let (open, done, later, elsewhere) = (
        on("gw-a", 100),
        on("gw-a", 101),
        on("gw-a", 900),
        on("gw-b", 102),
    );
    let done_end = end(&done, 150, "ok");
    store
        .write_audit(
            vec![
                AuditEvent::Started(Box::new(open.clone())),
                AuditEvent::Started(Box::new(done.clone())),
                AuditEvent::Ended(done_end.clone()),
                AuditEvent::Started(Box::new(later.clone())),
                AuditEvent::Started(Box::new(elsewhere.clone())),
            ]
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(f.b.interrupt_connections("gw-a", 500).await.unwrap(), 2);
    let closed = store.get_connection(open.id).await.unwrap().unwrap();
    assert_eq!(closed.ended_at, Some(500));
    assert_eq!(closed.outcome, Outcome::Interrupted);
    assert!(
        closed.error.as_deref().is_some_and(|e| e.contains("gw-a")),
        "{closed:?}"
    );
    // Started after the moment given (clocks differ between hosts): ended at its start.
    assert_eq!(
        store
            .get_connection(later.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        Some(900)
    );
    assert_eq!(
        store.get_connection(done.id).await.unwrap(),
        Some(ended(&done, &done_end))
    );
    assert_eq!(
        store.get_connection(elsewhere.id).await.unwrap(),
        Some(elsewhere.clone())
    );
    assert_eq!(store.interrupt_connections("gw-a", 600).await.unwrap(), 0);
    let real_end = end(&open, 450, "ok");
    store
        .write_gateway_audit("gw-a", vec![AuditEvent::Ended(real_end.clone())])
        .await
        .unwrap();
    assert_eq!(
        store.get_connection(open.id).await.unwrap(),
        Some(ended(&open, &real_end))
    );
}

fn recording_line(c: &AuditRecord, seq: u64, line: &str) -> AuditRecordingEvent {
    AuditRecordingEvent {
        connection_id: c.id,
        channel: 7,
        seq,
        line: line.into(),
    }
}
