//! The store suite's check of many audited statements: a busy connection's statements, written
//! over several batches of different sizes (a store may keep them in blocks), some sent twice,
//! come back each once and in order through every page size.

use sdm_proto::audit::{AuditEvent, AuditQueryEvent};
use uuid::Uuid;

use super::{Fixture, connection, query};

pub(crate) async fn many_statements_page_in_order_across_batches_and_repeats(f: &Fixture) {
    let busy = connection(Uuid::new_v4(), Uuid::new_v4(), 1000);
    let quiet = connection(Uuid::new_v4(), Uuid::new_v4(), 1000);
    let text = |seq: u64| {
        format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
            seq * 7919 % 100_000
        )
    };
    let all: Vec<AuditQueryEvent> = (1..=1300)
        .map(|seq| query(&busy, seq, &text(seq)))
        .collect();
    let events = |range: std::ops::Range<usize>| -> Vec<AuditEvent> {
        all[range].iter().cloned().map(AuditEvent::Query).collect()
    };
    let mut first = vec![
        AuditEvent::Started(Box::new(busy.clone())),
        AuditEvent::Started(Box::new(quiet.clone())),
    ];
    first.extend(events(0..1100));
    // The other connection's statement in the middle of the batch.
    first.insert(600, AuditEvent::Query(query(&quiet, 1, "BEGIN")));
    f.a.write_audit(first.into()).await.unwrap();
    // A batch repeated in part (an upload sent again after its answer was lost, with more).
    f.b.write_audit(events(1050..1200).into()).await.unwrap();
    f.a.write_audit(events(1200..1201).into()).await.unwrap();
    f.a.write_audit(events(1201..1300).into()).await.unwrap();

    for page in [1u32, 7, 100, 512, 513, 2000] {
        let mut read = Vec::new();
        let mut after = 0;
        loop {
            let got = f.b.list_queries(busy.id, after, page).await.unwrap();
            assert!(got.len() <= page as usize);
            let Some(last) = got.last() else { break };
            after = last.seq;
            read.extend(got);
        }
        assert_eq!(read.len(), all.len(), "pages of {page}");
        assert!(read == all, "pages of {page}: statements differ");
    }
    assert_eq!(
        f.a.list_queries(busy.id, 1299, 10).await.unwrap(),
        vec![all[1299].clone()]
    );
    assert_eq!(f.a.list_queries(busy.id, 1300, 10).await.unwrap(), vec![]);
    assert_eq!(
        f.a.list_queries(quiet.id, 0, 10).await.unwrap(),
        vec![query(&quiet, 1, "BEGIN")]
    );
}
