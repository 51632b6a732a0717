//! The store suite's checks of session lifetimes: the per-account limit, expiry and removal.

use std::sync::Arc;

use sdm_proto::api::AccountKind;
use sdm_proto::audit::AuditEvent;
use uuid::Uuid;

use super::{Fixture, connection, end, session, with_account};
use crate::store::{SessionExpiry, SessionRecord, Store};

fn session_at(account_id: Uuid, created_at: i64, last_used_at: Option<i64>) -> SessionRecord {
    SessionRecord {
        created_at,
        last_used_at,
        ..session(account_id)
    }
}

/// Timestamps have whole seconds: among sessions opened in the same second, the limit still
/// ends the one opened first, never one opened moments ago (a job's fresh session, cut by the
/// next login of its own token). The ids are chosen so that sorting by id picks the wrong one.
pub(crate) async fn sessions_opened_in_one_second_end_in_the_order_they_were_opened(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let opened = |id: u128| SessionRecord {
        id: Uuid::from_u128(id),
        ..session_at(a.id, 100, Some(100))
    };
    let (first, second, third) = (opened(u128::MAX), opened(2), opened(1));
    assert_eq!(store.open_session(first.clone(), 2).await.unwrap(), 0);
    assert_eq!(f.b.open_session(second.clone(), 2).await.unwrap(), 0);
    assert_eq!(store.open_session(third.clone(), 2).await.unwrap(), 1);
    assert_eq!(
        store.get_session(first.id).await.unwrap().unwrap().ended_at,
        Some(100),
        "the first opened is the oldest"
    );
    for kept in [&second, &third] {
        assert_eq!(
            f.b.get_session(kept.id).await.unwrap().unwrap().ended_at,
            None
        );
    }
}

/// A login beyond the account's limit makes room by its oldest open sessions, never the new
/// one: a session that was used is ended (as a logout: the epoch moves), one never used is
/// removed. Other accounts are untouched, and concurrent logins through two handles leave
/// exactly the limit open.
pub(crate) async fn logins_beyond_the_limit_end_the_oldest_sessions(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let other = with_account(store, "bi", AccountKind::Service).await;
    let bystander = session_at(other.id, 1, None);
    assert_eq!(store.open_session(bystander.clone(), 1).await.unwrap(), 0);

    let s1 = session_at(a.id, 100, None);
    let s2 = session_at(a.id, 101, Some(101));
    let s3 = session_at(a.id, 102, None);
    for s in [&s1, &s2, &s3] {
        assert_eq!(store.open_session(s.clone(), 3).await.unwrap(), 0);
    }
    assert_eq!(f.b.count_open_sessions(a.id).await.unwrap(), 3);
    let epoch = store.revocation_epoch().await.unwrap();
    // The oldest was never used: removed, and nothing to cut.
    let s4 = session_at(a.id, 103, None);
    assert_eq!(f.b.open_session(s4.clone(), 3).await.unwrap(), 1);
    assert_eq!(store.get_session(s1.id).await.unwrap(), None);
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch);
    // The next oldest was used: ended at the new login's time, and the epoch moves.
    let s5 = session_at(a.id, 104, None);
    assert_eq!(store.open_session(s5.clone(), 3).await.unwrap(), 1);
    assert_eq!(
        store.get_session(s2.id).await.unwrap().unwrap().ended_at,
        Some(104)
    );
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 1);
    assert_eq!(store.count_open_sessions(a.id).await.unwrap(), 3);
    // A lower limit makes room for as many as needed; a new session that looks older than
    // the others (a clock step back) is still the one kept.
    let s6 = session_at(a.id, 50, None);
    assert_eq!(store.open_session(s6.clone(), 1).await.unwrap(), 3);
    assert_eq!(store.count_open_sessions(a.id).await.unwrap(), 1);
    assert_eq!(store.get_session(s6.id).await.unwrap(), Some(s6.clone()));
    for gone in [&s3, &s4, &s5] {
        assert_eq!(store.get_session(gone.id).await.unwrap(), None);
    }
    assert_eq!(
        store.get_session(bystander.id).await.unwrap(),
        Some(bystander.clone())
    );

    // A lease issued in a session is recorded; an ended or unknown session is not in use.
    assert!(store.touch_session(s6.id, 110).await.unwrap());
    assert_eq!(
        f.b.get_session(s6.id).await.unwrap().unwrap().last_used_at,
        Some(110)
    );
    assert!(!store.touch_session(s2.id, 111).await.unwrap());
    assert!(!store.touch_session(Uuid::new_v4(), 111).await.unwrap());

    // Two control planes logging the same account in at once.
    let logins = |store: Arc<dyn Store>, account: Uuid| async move {
        for i in 0..20 {
            let used = (i % 2 == 0).then_some(200);
            store
                .open_session(session_at(account, 200 + i, used), 5)
                .await
                .unwrap();
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(logins(f.a.clone(), a.id)),
        tokio::spawn(logins(f.b.clone(), a.id))
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(store.count_open_sessions(a.id).await.unwrap(), 5);
    assert_eq!(store.count_open_sessions(other.id).await.unwrap(), 1);
}

/// Sessions idle for too long (unless a connection of theirs is still open) and sessions too
/// old end, in bounded batches, as a logout ends them; ended sessions are removed after the
/// retention, and the audit trail that names them stays whole.
pub(crate) async fn expired_sessions_end_and_old_ended_ones_are_removed(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let fresh = session_at(a.id, 1000, Some(1990));
    let idle = session_at(a.id, 1000, None);
    let idle_used = session_at(a.id, 900, Some(1100));
    let connected = session_at(a.id, 900, None);
    let old = session_at(a.id, 100, Some(1999));
    let ended_long_ago = SessionRecord {
        ended_at: Some(300),
        ..session_at(a.id, 200, None)
    };
    for s in [&fresh, &idle, &idle_used, &connected, &old, &ended_long_ago] {
        store.create_session(s.clone()).await.unwrap();
    }
    // An idle session with a connection still open is not idle; one whose connection ended is.
    let mut open = connection(a.id, Uuid::new_v4(), 950);
    open.session_id = connected.id;
    let mut closed = connection(a.id, Uuid::new_v4(), 950);
    closed.session_id = idle_used.id;
    store
        .write_audit(
            vec![
                AuditEvent::Started(Box::new(open.clone())),
                AuditEvent::Started(Box::new(closed.clone())),
                AuditEvent::Ended(end(&closed, 960, "ok")),
            ]
            .into(),
        )
        .await
        .unwrap();
    let epoch = store.revocation_epoch().await.unwrap();
    let expiry = SessionExpiry {
        now: 2000,
        idle_before: 1500,
        created_before: 500,
    };
    assert_eq!(store.expire_sessions(expiry, 2).await.unwrap(), 2);
    assert_eq!(f.b.expire_sessions(expiry, 2).await.unwrap(), 1);
    assert_eq!(store.expire_sessions(expiry, 2).await.unwrap(), 0);
    assert_eq!(store.revocation_epoch().await.unwrap(), epoch + 3);
    for gone in [&idle, &idle_used, &old] {
        assert_eq!(
            store.get_session(gone.id).await.unwrap().unwrap().ended_at,
            Some(2000)
        );
    }
    for kept in [&fresh, &connected] {
        assert_eq!(
            store.get_session(kept.id).await.unwrap(),
            Some(kept.clone())
        );
    }

    // Removal: only sessions that ended before the cut, in bounded batches.
    assert_eq!(store.prune_sessions(300, 100).await.unwrap(), 0);
    assert_eq!(store.prune_sessions(301, 100).await.unwrap(), 1);
    assert_eq!(store.get_session(ended_long_ago.id).await.unwrap(), None);
    assert_eq!(f.b.prune_sessions(2001, 2).await.unwrap(), 2);
    assert_eq!(store.prune_sessions(2001, 2).await.unwrap(), 1);
    for gone in [&idle, &idle_used, &old] {
        assert_eq!(store.get_session(gone.id).await.unwrap(), None);
    }
    assert_eq!(store.count_open_sessions(a.id).await.unwrap(), 2);
    assert_eq!(
        store
            .get_connection(closed.id)
            .await
            .unwrap()
            .unwrap()
            .session_id,
        idle_used.id
    );
}
