//! The store's behaviour, written once and run against every backend: `store_suite!(fixture)`
//! in a backend's tests expands to one `#[tokio::test]` per check below, each on a fresh
//! database from `fixture()`.
//!
//! A [`Fixture`] has two handles on one database: for PostgreSQL two stores with their own
//! pools, as two control planes have; for SQLite two clones of one store, as one process has.

use std::collections::BTreeMap;
use std::sync::Arc;

use sdm_proto::ResourceKind;
use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
use sdm_proto::audit::{AuditEnd, AuditEvent, AuditQueryEvent, AuditRecord};
use uuid::Uuid;

use super::{
    AccountRecord, AuditFilter, GatewayRecord, GrantRecord, ResourceRecord, SessionRecord, Store,
    StoreError, TokenRecord,
};

mod accounts_page;
mod audit_owners;
mod audit_retention;
mod audit_statements;
mod port_overrides;
mod sessions;
mod ssh_host_keys;

pub(crate) use accounts_page::account_pages_search_count_and_show_the_last_login;
pub(crate) use audit_owners::{
    a_gateway_changes_only_its_own_audit_records,
    records_a_stopped_gateway_left_open_are_interrupted,
};
pub(crate) use audit_retention::audit_records_past_the_retention_go_with_their_queries;
pub(crate) use audit_statements::many_statements_page_in_order_across_batches_and_repeats;
pub(crate) use port_overrides::{
    concurrent_creations_and_switching_on_never_share_a_port,
    port_overrides_assign_unique_ports_and_keep_explicit_ones,
};
pub(crate) use sessions::{
    expired_sessions_end_and_old_ended_ones_are_removed,
    logins_beyond_the_limit_end_the_oldest_sessions,
    sessions_opened_in_one_second_end_in_the_order_they_were_opened,
};
pub(crate) use ssh_host_keys::ssh_host_keys_are_recorded_once_even_by_racing_writers;

/// Two handles on one fresh database.
pub(crate) struct Fixture {
    pub a: Arc<dyn Store>,
    pub b: Arc<dyn Store>,
    /// Whatever must live as long as the database (a temp dir, a cluster handle).
    pub _keep: Box<dyn Send + Sync>,
}

/// Expands to one test per check, each on a fresh `$fixture().await`.
macro_rules! store_suite {
    ($fixture:path) => {
        $crate::store::suite::store_suite!(
            @tests $fixture;
            accounts_round_trip_and_names_are_unique,
            deleting_an_account_cascades,
            the_last_active_admin_stays,
            rotation_revokes_tokens_and_ends_sessions,
            resources_and_grants,
            a_resources_grants_name_their_accounts_in_name_order,
            resource_updates_keep_name_and_creation_time,
            sessions_gateways_and_settings,
            names_sort_byte_wise,
            account_pages_search_count_and_show_the_last_login,
            revocation_epoch_moves_on_exactly_the_revoking_events,
            audit_batches_fold_page_and_filter,
            concurrent_writers_leave_a_consistent_store,
            concurrent_suspensions_keep_one_active_admin,
            access_facts_agree_with_the_single_reads,
            logins_beyond_the_limit_end_the_oldest_sessions,
            sessions_opened_in_one_second_end_in_the_order_they_were_opened,
            expired_sessions_end_and_old_ended_ones_are_removed,
            a_gateway_changes_only_its_own_audit_records,
            records_a_stopped_gateway_left_open_are_interrupted,
            audit_records_past_the_retention_go_with_their_queries,
            many_statements_page_in_order_across_batches_and_repeats,
            port_overrides_assign_unique_ports_and_keep_explicit_ones,
            concurrent_creations_and_switching_on_never_share_a_port,
            ssh_host_keys_are_recorded_once_even_by_racing_writers,
        );
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                $crate::store::suite::$name(&fixture).await;
            }
        )*
    };
}
pub(crate) use store_suite;

fn account(name: &str, kind: AccountKind) -> AccountRecord {
    AccountRecord {
        id: Uuid::new_v4(),
        name: name.into(),
        kind,
        status: AccountStatus::Active,
        created_at: 100,
    }
}

fn token(account_id: Uuid) -> TokenRecord {
    TokenRecord {
        id: Uuid::new_v4(),
        account_id,
        secret_hash: vec![1; 32],
        created_at: 100,
        revoked_at: None,
    }
}

/// A resource with an explicit local port of its own (no two share one).
fn resource(name: &str) -> ResourceRecord {
    static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(15432);
    let port = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ResourceRecord {
        id: Uuid::new_v4(),
        name: name.into(),
        kind: ResourceKind::Postgres,
        hostname: "db.internal".into(),
        port: 5432,
        port_override: Some(port),
        port_assigned: false,
        tags: BTreeMap::from([("env".into(), "prod".into())]),
        username: Some("app".into()),
        database: None,
        password_sealed: Some(vec![9; 40]),
        tls_mode: TlsMode::Disable,
        tls_ca_pem: None,
        databases: vec!["reports".into(), "staging".into()],
        replication: true,
        ssh_certificate_authority: false,
        ssh_record_sessions: false,
        ssh_host_key: None,
        created_at: 100,
    }
}

fn session(account_id: Uuid) -> SessionRecord {
    SessionRecord {
        id: Uuid::new_v4(),
        account_id,
        labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
        client: "test".into(),
        created_at: 100,
        ended_at: None,
        last_used_at: None,
    }
}

fn grant(account_id: Uuid, resource_id: Uuid, created_at: i64) -> GrantRecord {
    GrantRecord {
        account_id,
        resource_id,
        created_at,
    }
}

async fn with_account(store: &dyn Store, name: &str, kind: AccountKind) -> AccountRecord {
    let a = account(name, kind);
    store.create_account(a.clone(), token(a.id)).await.unwrap();
    a
}

pub(crate) async fn accounts_round_trip_and_names_are_unique(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    assert_eq!(store.get_account(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(f.b.get_account(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.find_account_by_name("etl").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.find_account_by_name("ETL").await.unwrap(), None);
    let dup = account("etl", AccountKind::Admin);
    let err = f.b.create_account(dup.clone(), token(dup.id)).await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    // The failed create left nothing behind, not even its token.
    assert_eq!(store.list_accounts().await.unwrap(), vec![a.clone()]);
    assert_eq!(store.count_admins().await.unwrap(), 0);
    let b = account("analytics", AccountKind::Service);
    let t = token(b.id);
    store.create_account(b.clone(), t.clone()).await.unwrap();
    assert_eq!(store.get_token(t.id).await.unwrap(), Some(t));
    let names: Vec<_> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["analytics", "etl"]);
    let s = store
        .set_account_status(a.id, AccountStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(s.status, AccountStatus::Suspended);
    assert_eq!(
        f.b.get_account(a.id).await.unwrap().unwrap().status,
        AccountStatus::Suspended
    );
    assert!(matches!(
        store
            .set_account_status(Uuid::new_v4(), AccountStatus::Active)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_account(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.get_token(Uuid::new_v4()).await.unwrap(), None);
}

pub(crate) async fn deleting_an_account_cascades(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let t = token(a.id);
    store.insert_token(t.clone()).await.unwrap();
    let r = resource("pg");
    store.create_resource(r.clone()).await.unwrap();
    store.grant(grant(a.id, r.id, 5)).await.unwrap();
    let s = session(a.id);
    store.create_session(s.clone()).await.unwrap();
    f.b.delete_account(a.id, 200).await.unwrap();
    assert_eq!(store.get_account(a.id).await.unwrap(), None);
    assert_eq!(store.get_token(t.id).await.unwrap(), None);
    assert!(!store.has_grant(a.id, r.id).await.unwrap());
    assert_eq!(store.list_grants(a.id).await.unwrap(), vec![]);
    // The resource stays; the session is ended, not deleted (audit keeps pointing at it).
    assert_eq!(store.get_resource(r.id).await.unwrap(), Some(r));
    assert_eq!(
        store.get_session(s.id).await.unwrap().unwrap().ended_at,
        Some(200)
    );
    assert!(matches!(
        store.delete_account(a.id, 200).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.insert_token(token(a.id)).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn the_last_active_admin_stays(f: &Fixture) {
    let store = f.a.as_ref();
    let admin = with_account(store, "admin", AccountKind::Admin).await;
    assert_eq!(store.count_admins().await.unwrap(), 1);
    assert!(matches!(
        store.delete_account(admin.id, 1).await,
        Err(StoreError::LastAdmin)
    ));
    assert!(matches!(
        store
            .set_account_status(admin.id, AccountStatus::Suspended)
            .await,
        Err(StoreError::LastAdmin)
    ));
    // Refused changes changed nothing.
    assert_eq!(
        store.get_account(admin.id).await.unwrap().unwrap().status,
        AccountStatus::Active
    );
    let second = with_account(store, "admin2", AccountKind::Admin).await;
    store
        .set_account_status(second.id, AccountStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(store.count_admins().await.unwrap(), 2);
    // A suspended second admin does not count.
    assert!(matches!(
        store.delete_account(admin.id, 1).await,
        Err(StoreError::LastAdmin)
    ));
    // A suspended admin may be deleted or kept suspended freely.
    store
        .set_account_status(second.id, AccountStatus::Suspended)
        .await
        .unwrap();
    store
        .set_account_status(second.id, AccountStatus::Active)
        .await
        .unwrap();
    store.delete_account(admin.id, 1).await.unwrap();
    assert_eq!(store.count_admins().await.unwrap(), 1);
    // Service accounts never count.
    with_account(store, "svc", AccountKind::Service).await;
    assert!(matches!(
        store
            .set_account_status(second.id, AccountStatus::Suspended)
            .await,
        Err(StoreError::LastAdmin)
    ));
}

pub(crate) async fn rotation_revokes_tokens_and_ends_sessions(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let old = token(a.id);
    store.insert_token(old.clone()).await.unwrap();
    let s = session(a.id);
    store.create_session(s.clone()).await.unwrap();
    let mut new = token(a.id);
    new.created_at = 300;
    f.b.rotate_token(new.clone()).await.unwrap();
    assert_eq!(
        store.get_token(old.id).await.unwrap().unwrap().revoked_at,
        Some(300)
    );
    assert_eq!(store.get_token(new.id).await.unwrap(), Some(new.clone()));
    assert_eq!(
        store.get_session(s.id).await.unwrap().unwrap().ended_at,
        Some(300)
    );
    assert_eq!(store.revoke_tokens(a.id, 400).await.unwrap(), 1);
    assert_eq!(store.revoke_tokens(a.id, 500).await.unwrap(), 0);
    assert_eq!(
        store.get_token(new.id).await.unwrap().unwrap().revoked_at,
        Some(400),
        "a revoked token keeps its first revocation time"
    );
    assert_eq!(store.revoke_tokens(Uuid::new_v4(), 500).await.unwrap(), 0);
    assert!(matches!(
        store.rotate_token(token(Uuid::new_v4())).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn access_facts_agree_with_the_single_reads(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let pg = resource("pg");
    store.create_resource(pg.clone()).await.unwrap();
    let s = session(a.id);
    store.create_session(s.clone()).await.unwrap();

    // Nothing granted yet; unknown ids read as absent, not as errors.
    let facts = f.b.access_facts(a.id, s.id, pg.id).await.unwrap();
    assert_eq!(facts.account, Some(a.clone()));
    assert_eq!(facts.session, Some(s.clone()));
    assert_eq!(facts.resource, Some(pg.clone()));
    assert!(!facts.granted);
    let none = store
        .access_facts(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(
        (none.account, none.session, none.resource),
        (None, None, None)
    );
    assert!(!none.granted);

    store.grant(grant(a.id, pg.id, 7)).await.unwrap();
    assert!(f.b.access_facts(a.id, s.id, pg.id).await.unwrap().granted);
    // Written through one handle, read through the other.
    assert!(f.b.end_session(s.id, 200).await.unwrap());
    let ended = store.access_facts(a.id, s.id, pg.id).await.unwrap();
    assert_eq!(ended.session.and_then(|s| s.ended_at), Some(200));
}

pub(crate) async fn a_resources_grants_name_their_accounts_in_name_order(f: &Fixture) {
    let store = f.a.as_ref();
    let pg = resource("pg");
    let other = resource("other");
    store.create_resource(pg.clone()).await.unwrap();
    store.create_resource(other.clone()).await.unwrap();
    assert_eq!(store.list_resource_grants(pg.id).await.unwrap(), vec![]);
    let zeta = with_account(store, "zeta", AccountKind::Service).await;
    let alpha = with_account(store, "alpha", AccountKind::Admin).await;
    let beta = with_account(store, "beta", AccountKind::Service).await;
    store.grant(grant(zeta.id, pg.id, 3)).await.unwrap();
    store.grant(grant(alpha.id, pg.id, 4)).await.unwrap();
    // Another resource's grant is not listed.
    store.grant(grant(beta.id, other.id, 5)).await.unwrap();
    assert_eq!(
        f.b.list_resource_grants(pg.id).await.unwrap(),
        vec![
            (alpha.clone(), grant(alpha.id, pg.id, 4)),
            (zeta.clone(), grant(zeta.id, pg.id, 3)),
        ]
    );
    // A revoked grant and a deleted account leave the list; an unknown resource has none.
    store.revoke_grant(alpha.id, pg.id).await.unwrap();
    store.delete_account(zeta.id, 10).await.unwrap();
    assert_eq!(store.list_resource_grants(pg.id).await.unwrap(), vec![]);
    assert_eq!(
        store.list_resource_grants(Uuid::new_v4()).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.list_resource_grants(other.id).await.unwrap(),
        vec![(beta.clone(), grant(beta.id, other.id, 5))]
    );
}

pub(crate) async fn resources_and_grants(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let pg = resource("pg");
    let kafka = ResourceRecord {
        kind: ResourceKind::Other("kafka".into()),
        password_sealed: None,
        port_override: None,
        port_assigned: false,
        tags: BTreeMap::new(),
        tls_mode: TlsMode::VerifyFull,
        tls_ca_pem: Some("-----BEGIN CERTIFICATE-----\n…\n".into()),
        database: Some("événements".into()),
        ..resource("kafka")
    };
    store.create_resource(pg.clone()).await.unwrap();
    store.create_resource(kafka.clone()).await.unwrap();
    assert!(matches!(
        f.b.create_resource(resource("pg")).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.get_resource(pg.id).await.unwrap(), Some(pg.clone()));
    assert_eq!(
        f.b.find_resource_by_name("kafka").await.unwrap(),
        Some(kafka.clone())
    );
    assert_eq!(store.find_resource_by_name("nope").await.unwrap(), None);
    assert_eq!(
        store.list_resources().await.unwrap(),
        vec![kafka.clone(), pg.clone()]
    );
    let g = grant(a.id, pg.id, 7);
    assert_eq!(store.grant(g.clone()).await.unwrap(), g);
    // Granting again keeps the first grant.
    assert_eq!(f.b.grant(grant(a.id, pg.id, 8)).await.unwrap(), g);
    assert_eq!(store.list_grants(a.id).await.unwrap(), vec![g.clone()]);
    assert!(store.has_grant(a.id, pg.id).await.unwrap());
    assert!(!store.has_grant(a.id, kafka.id).await.unwrap());
    assert_eq!(
        store.list_granted_resources(a.id).await.unwrap(),
        vec![pg.clone()]
    );
    let g2 = grant(a.id, kafka.id, 9);
    store.grant(g2.clone()).await.unwrap();
    // Sorted by resource name.
    assert_eq!(
        store.list_grants(a.id).await.unwrap(),
        vec![g2.clone(), g.clone()]
    );
    assert_eq!(
        store.list_granted_resources(a.id).await.unwrap(),
        vec![kafka.clone(), pg.clone()]
    );
    for missing in [
        grant(a.id, Uuid::new_v4(), 1),
        grant(Uuid::new_v4(), pg.id, 1),
    ] {
        assert!(matches!(
            store.grant(missing).await,
            Err(StoreError::NotFound(_))
        ));
    }
    assert!(store.revoke_grant(a.id, pg.id).await.unwrap());
    assert!(!f.b.revoke_grant(a.id, pg.id).await.unwrap());
    store.grant(g.clone()).await.unwrap();
    store.delete_resource(pg.id).await.unwrap();
    assert!(!store.has_grant(a.id, pg.id).await.unwrap());
    assert_eq!(store.get_resource(pg.id).await.unwrap(), None);
    assert!(matches!(
        store.delete_resource(pg.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn resource_updates_keep_name_and_creation_time(f: &Fixture) {
    let store = f.a.as_ref();
    let r = resource("pg");
    store.create_resource(r.clone()).await.unwrap();
    let changed = ResourceRecord {
        name: "renamed".into(),
        created_at: 999,
        kind: ResourceKind::Ssh,
        hostname: "10.0.0.7".into(),
        port: 22,
        port_override: None,
        port_assigned: false,
        tags: BTreeMap::from([("team".into(), "data".into()), ("env".into(), "dev".into())]),
        username: None,
        database: Some("app".into()),
        password_sealed: None,
        tls_mode: TlsMode::Require,
        tls_ca_pem: Some("pem".into()),
        ssh_certificate_authority: true,
        ssh_record_sessions: false,
        ssh_host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost".into()),
        ..r.clone()
    };
    f.b.update_resource(changed.clone()).await.unwrap();
    let stored = store.get_resource(r.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        ResourceRecord {
            name: r.name.clone(),
            created_at: r.created_at,
            ..changed
        }
    );
    assert!(matches!(
        store.update_resource(resource("ghost")).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(crate) async fn sessions_gateways_and_settings(f: &Fixture) {
    let store = f.a.as_ref();
    let a = with_account(store, "etl", AccountKind::Service).await;
    let s = session(a.id);
    store.create_session(s.clone()).await.unwrap();
    assert_eq!(f.b.get_session(s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(store.get_session(Uuid::new_v4()).await.unwrap(), None);
    assert!(store.end_session(s.id, 150).await.unwrap());
    assert!(!f.b.end_session(s.id, 160).await.unwrap());
    assert!(!store.end_session(Uuid::new_v4(), 160).await.unwrap());
    assert_eq!(
        store.get_session(s.id).await.unwrap().unwrap().ended_at,
        Some(150)
    );
    let gw = GatewayRecord {
        id: Uuid::new_v4(),
        name: "default".into(),
        address: "127.0.0.1:8444".into(),
        server_name: "127.0.0.1".into(),
        last_seen: 10,
    };
    assert_eq!(store.upsert_gateway(gw.clone()).await.unwrap(), gw);
    let moved = GatewayRecord {
        id: Uuid::new_v4(),
        address: "127.0.0.1:9444".into(),
        last_seen: 20,
        ..gw.clone()
    };
    let stored = f.b.upsert_gateway(moved).await.unwrap();
    assert_eq!(stored.id, gw.id, "a gateway keeps its id across restarts");
    assert_eq!(stored.address, "127.0.0.1:9444");
    assert_eq!(stored.last_seen, 20);
    let other = GatewayRecord {
        id: Uuid::new_v4(),
        name: "another".into(),
        ..gw.clone()
    };
    store.upsert_gateway(other.clone()).await.unwrap();
    assert_eq!(store.list_gateways().await.unwrap(), vec![other, stored]);
    assert!(store.put_setting_if_absent("k", vec![1]).await.unwrap());
    assert!(!f.b.put_setting_if_absent("k", vec![2]).await.unwrap());
    assert_eq!(store.get_setting("k").await.unwrap(), Some(vec![1]));
    f.b.set_setting("k", vec![3, 0, 255]).await.unwrap();
    assert_eq!(store.get_setting("k").await.unwrap(), Some(vec![3, 0, 255]));
    store.set_setting("empty", Vec::new()).await.unwrap();
    assert_eq!(store.get_setting("empty").await.unwrap(), Some(Vec::new()));
    assert_eq!(store.get_setting("nope").await.unwrap(), None);
}

/// Names compare as bytes whatever the database's collation: upper case before `_` before
/// lower case.
pub(crate) async fn names_sort_byte_wise(f: &Fixture) {
    let store = f.a.as_ref();
    let names = ["b-2", "B", "a", "_x", "b.1", "A10", "A9"];
    for name in names {
        with_account(store, name, AccountKind::Service).await;
        store.create_resource(resource(name)).await.unwrap();
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort_unstable();
    assert_eq!(expected, ["A10", "A9", "B", "_x", "a", "b-2", "b.1"]);
    let accounts: Vec<String> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(accounts, expected);
    let resources: Vec<String> = store
        .list_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(resources, expected);
}

/// The epoch moves on exactly the events that take access away or change where it leads (a
/// resource update), once per row changed (a cascade counts its rows), and on nothing else.
pub(crate) async fn revocation_epoch_moves_on_exactly_the_revoking_events(f: &Fixture) {
    let store = f.a.as_ref();
    let mut last = store.revocation_epoch().await.unwrap();
    let mut step = async |what: &str, by: i64| {
        let now = f.b.revocation_epoch().await.unwrap();
        assert_eq!(now - last, by, "epoch change after {what}");
        last = now;
    };
    let admin = with_account(store, "admin", AccountKind::Admin).await;
    let a = with_account(store, "etl", AccountKind::Service).await;
    let pg = resource("pg");
    let redis = resource("redis");
    store.create_resource(pg.clone()).await.unwrap();
    store.create_resource(redis.clone()).await.unwrap();
    store.grant(grant(a.id, pg.id, 1)).await.unwrap();
    store.grant(grant(a.id, redis.id, 1)).await.unwrap();
    let s = session(a.id);
    store.create_session(s.clone()).await.unwrap();
    store.set_setting("k", vec![1]).await.unwrap();
    step("creating things", 0).await;

    store
        .set_account_status(a.id, AccountStatus::Active)
        .await
        .unwrap();
    step("setting the status it had", 0).await;
    store
        .set_account_status(a.id, AccountStatus::Suspended)
        .await
        .unwrap();
    step("a suspension", 1).await;
    store
        .set_account_status(a.id, AccountStatus::Active)
        .await
        .unwrap();
    step("an unsuspension", 1).await;
    let _ = store
        .set_account_status(admin.id, AccountStatus::Suspended)
        .await;
    step("a refused suspension", 0).await;

    assert!(store.end_session(s.id, 5).await.unwrap());
    step("ending a session", 1).await;
    assert!(!store.end_session(s.id, 6).await.unwrap());
    step("ending an ended session", 0).await;

    let s2 = session(a.id);
    store.create_session(s2).await.unwrap();
    // Two live tokens (the first and this one) and an open session.
    store.insert_token(token(a.id)).await.unwrap();
    assert_eq!(store.revoke_tokens(a.id, 7).await.unwrap(), 2);
    step("revoking two tokens and ending a session", 3).await;
    assert_eq!(store.revoke_tokens(a.id, 8).await.unwrap(), 0);
    step("revoking nothing", 0).await;
    let mut t = token(a.id);
    t.created_at = 9;
    store.rotate_token(t).await.unwrap();
    step("rotating onto a fresh token (nothing live to revoke)", 0).await;
    let mut t = token(a.id);
    t.created_at = 10;
    store.rotate_token(t).await.unwrap();
    step("rotating (one live token revoked)", 1).await;

    assert!(store.revoke_grant(a.id, pg.id).await.unwrap());
    step("revoking a grant", 1).await;
    assert!(!store.revoke_grant(a.id, pg.id).await.unwrap());
    step("revoking a missing grant", 0).await;
    store.grant(grant(a.id, pg.id, 11)).await.unwrap();
    step("granting", 0).await;
    let mut changed = pg.clone();
    changed.port = 6543;
    store.update_resource(changed).await.unwrap();
    step("updating a resource (gateways re-check)", 1).await;

    store.delete_resource(redis.id).await.unwrap();
    step("deleting a resource with one grant", 2).await;

    let s3 = session(a.id);
    store.create_session(s3).await.unwrap();
    store.delete_account(a.id, 12).await.unwrap();
    step("deleting an account with one grant and one open session", 3).await;
    let _ = store.delete_resource(redis.id).await;
    let _ = store.delete_account(a.id, 13).await;
    step("deleting what is gone", 0).await;
}

pub(crate) fn connection(account_id: Uuid, resource_id: Uuid, started_at: i64) -> AuditRecord {
    AuditRecord {
        id: Uuid::new_v4(),
        account_id,
        account_name: "etl".into(),
        resource_id,
        resource_name: "pg".into(),
        gateway: "embedded".into(),
        session_id: Uuid::new_v4(),
        lease_id: Uuid::new_v4(),
        labels: BTreeMap::from([("dag_id".into(), "nightly ünïcode".into())]),
        client_addr: "127.0.0.1:50000".into(),
        started_at,
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        outcome: "open".into(),
        error: None,
        query_count: 0,
    }
}

fn end(c: &AuditRecord, ended_at: i64, outcome: &str) -> AuditEnd {
    AuditEnd {
        id: c.id,
        ended_at,
        bytes_up: 1 << 40,
        bytes_down: u64::MAX,
        outcome: outcome.into(),
        error: (outcome != "ok").then(|| format!("{outcome} happened")),
        query_count: 2,
    }
}

fn ended(c: &AuditRecord, e: &AuditEnd) -> AuditRecord {
    AuditRecord {
        ended_at: Some(e.ended_at),
        bytes_up: e.bytes_up,
        // Stored as a signed 64-bit number: saturates.
        bytes_down: e.bytes_down.min(i64::MAX as u64),
        outcome: e.outcome.clone(),
        error: e.error.clone(),
        query_count: e.query_count,
        ..c.clone()
    }
}

fn query(c: &AuditRecord, seq: u64, text: &str) -> AuditQueryEvent {
    AuditQueryEvent {
        connection_id: c.id,
        seq,
        at: c.started_at + i64::try_from(seq).unwrap(),
        text: text.into(),
    }
}

/// A batch is applied as if its events were applied one by one; lists are newest first,
/// filtered and paged by `(started_at, id)`.
pub(crate) async fn audit_batches_fold_page_and_filter(f: &Fixture) {
    let store = f.a.as_ref();
    let (etl, bi, pg, redis) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // c1: started and ended in one batch, queries before and after its end.
    let c1 = connection(etl, pg, 1000);
    let e1 = end(&c1, 1010, "ok");
    // c2: started in the first batch, ended in the second.
    let c2 = connection(bi, pg, 1001);
    let e2 = end(&c2, 1020, "forbidden");
    // c3: failed at once (a start that carries its end); another resource.
    let mut c3 = connection(etl, redis, 1001);
    c3.ended_at = Some(1001);
    c3.outcome = "upstream_refused".into();
    c3.error = Some("connection refused".into());
    // c4: ended in the same batch twice (the last end wins); a replay of its start in a later
    // batch changes nothing (records are changed only by their ends).
    let c4 = connection(bi, redis, 1002);
    let e4a = end(&c4, 1003, "closed");
    let e4b = end(&c4, 1004, "ok");
    store
        .write_audit(
            vec![
                AuditEvent::Started(Box::new(c1.clone())),
                AuditEvent::Query(query(&c1, 1, "SELECT 1")),
                AuditEvent::Started(Box::new(c2.clone())),
                AuditEvent::Ended(e1.clone()),
                AuditEvent::Query(query(&c1, 2, "SELECT 'ünïcode', E'\\n'")),
                AuditEvent::Started(Box::new(c3.clone())),
                AuditEvent::Started(Box::new(c4.clone())),
                AuditEvent::Ended(e4a),
                AuditEvent::Ended(e4b.clone()),
                // An end for a connection nobody recorded changes nothing.
                AuditEvent::Ended(end(&connection(etl, pg, 1), 5, "ok")),
            ]
            .into(),
        )
        .await
        .unwrap();
    f.b.write_audit(
        vec![
            AuditEvent::Ended(e2.clone()),
            // A query already recorded keeps its first text.
            AuditEvent::Query(query(&c1, 2, "replaced?")),
            AuditEvent::Query(query(&c2, 1, "BEGIN")),
        ]
        .into(),
    )
    .await
    .unwrap();
    f.b.write_audit(Vec::new().into()).await.unwrap();

    assert_eq!(
        store.get_connection(c1.id).await.unwrap(),
        Some(ended(&c1, &e1))
    );
    assert_eq!(
        store.get_connection(c2.id).await.unwrap(),
        Some(ended(&c2, &e2))
    );
    assert_eq!(store.get_connection(c3.id).await.unwrap(), Some(c3.clone()));
    assert_eq!(
        store.get_connection(c4.id).await.unwrap(),
        Some(ended(&c4, &e4b))
    );
    assert_eq!(store.get_connection(Uuid::new_v4()).await.unwrap(), None);
    store
        .write_audit(vec![AuditEvent::Started(Box::new(c4.clone()))].into())
        .await
        .unwrap();
    assert_eq!(
        store.get_connection(c4.id).await.unwrap(),
        Some(ended(&c4, &e4b))
    );

    let all = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    let ids = |list: Vec<AuditRecord>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    // Newest first; c2 and c3 started in the same second: larger id first.
    let (first, second) = if c2.id > c3.id {
        (c2.id, c3.id)
    } else {
        (c3.id, c2.id)
    };
    let newest_first = vec![c4.id, first, second, c1.id];
    assert_eq!(
        ids(store.list_connections(all.clone()).await.unwrap()),
        newest_first
    );
    // Pages of one, each continuing after the previous page's last record.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page =
            f.b.list_connections(AuditFilter {
                limit: 1,
                before,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some((last.started_at, last.id));
        paged.extend(ids(page));
    }
    assert_eq!(paged, newest_first);
    let filtered = |filter: AuditFilter| async move {
        let mut got = ids(store.list_connections(filter).await.unwrap());
        got.sort();
        got
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    assert_eq!(
        filtered(AuditFilter {
            account_id: Some(etl),
            ..all.clone()
        })
        .await,
        sorted(vec![c1.id, c3.id])
    );
    assert_eq!(
        filtered(AuditFilter {
            resource_id: Some(redis),
            ..all.clone()
        })
        .await,
        sorted(vec![c3.id, c4.id])
    );
    assert_eq!(
        filtered(AuditFilter {
            account_id: Some(bi),
            resource_id: Some(pg),
            ..all.clone()
        })
        .await,
        vec![c2.id]
    );
    assert_eq!(
        filtered(AuditFilter {
            since: Some(1001),
            until: Some(1002),
            ..all.clone()
        })
        .await,
        sorted(vec![c2.id, c3.id])
    );
    assert_eq!(
        store
            .list_connections(AuditFilter {
                limit: 2,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        store.list_queries(c1.id, 0, 100).await.unwrap(),
        vec![
            query(&c1, 1, "SELECT 1"),
            query(&c1, 2, "SELECT 'ünïcode', E'\\n'")
        ]
    );
    assert_eq!(
        f.b.list_queries(c1.id, 1, 100).await.unwrap(),
        vec![query(&c1, 2, "SELECT 'ünïcode', E'\\n'")]
    );
    assert_eq!(
        store.list_queries(c1.id, 0, 1).await.unwrap(),
        vec![query(&c1, 1, "SELECT 1")]
    );
    assert_eq!(
        store.list_queries(c2.id, 0, 100).await.unwrap(),
        vec![query(&c2, 1, "BEGIN")]
    );
    assert_eq!(store.list_queries(c3.id, 0, 100).await.unwrap(), vec![]);
}

/// Two handles create accounts, resources and grants at once, some racing for the same names:
/// every name ends up taken exactly once, every racing create either succeeded or saw a
/// conflict, and every grant made is there.
pub(crate) async fn concurrent_writers_leave_a_consistent_store(f: &Fixture) {
    const EACH: usize = 12;
    const SHARED: usize = 6;
    let work = |store: Arc<dyn Store>, side: &'static str| async move {
        let mut created_accounts = Vec::new();
        let mut created_resources = Vec::new();
        let mut conflicts = 0usize;
        for i in 0..EACH {
            // Names of their own, and names both sides race for.
            let name = if i < SHARED {
                format!("shared-{i}")
            } else {
                format!("{side}-{i}")
            };
            let a = account(&name, AccountKind::Service);
            match store.create_account(a.clone(), token(a.id)).await {
                Ok(()) => created_accounts.push(a),
                Err(StoreError::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("{side}: creating account {name}: {e:?}"),
            }
            let r = resource(&name);
            match store.create_resource(r.clone()).await {
                Ok(_) => created_resources.push(r),
                Err(StoreError::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("{side}: creating resource {name}: {e:?}"),
            }
        }
        (created_accounts, created_resources, conflicts)
    };
    let (left, right) = tokio::join!(
        tokio::spawn(work(f.a.clone(), "left")),
        tokio::spawn(work(f.b.clone(), "right"))
    );
    let (left, right) = (left.unwrap(), right.unwrap());
    let accounts: Vec<AccountRecord> = left.0.iter().chain(&right.0).cloned().collect();
    let resources: Vec<ResourceRecord> = left.1.iter().chain(&right.1).cloned().collect();
    assert_eq!(
        accounts.len() + resources.len() + left.2 + right.2,
        4 * EACH
    );
    assert_eq!(accounts.len(), 2 * EACH - SHARED);
    assert_eq!(resources.len(), 2 * EACH - SHARED);
    let mut stored = f.a.list_accounts().await.unwrap();
    let mut expected = accounts.clone();
    expected.sort_by(|x, y| x.name.cmp(&y.name));
    stored.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(stored, expected);
    assert_eq!(f.b.list_resources().await.unwrap().len(), resources.len());

    // Both sides grant every resource to every account at once (each pair twice), while
    // one side revokes a fixed set: what is left is exactly the grants minus the revocations
    // that came after them, so check the pairs nobody revokes.
    let grants_of = |store: Arc<dyn Store>, at: i64| {
        let accounts = accounts.clone();
        let resources = resources.clone();
        async move {
            for a in &accounts {
                for r in &resources {
                    store.grant(grant(a.id, r.id, at)).await.unwrap();
                }
            }
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(grants_of(f.a.clone(), 1)),
        tokio::spawn(grants_of(f.b.clone(), 2))
    );
    x.unwrap();
    y.unwrap();
    for a in &accounts {
        let grants = f.a.list_grants(a.id).await.unwrap();
        assert_eq!(grants.len(), resources.len(), "grants of {}", a.name);
        assert!(
            grants
                .iter()
                .all(|g| g.created_at == 1 || g.created_at == 2)
        );
    }
    // Deleting accounts on one side while the other grants to them ends with no grant of a
    // deleted account and no error other than NotFound.
    let victims: Vec<AccountRecord> = accounts.iter().take(4).cloned().collect();
    let deleter = {
        let store = f.a.clone();
        let victims = victims.clone();
        async move {
            for v in &victims {
                store.delete_account(v.id, 50).await.unwrap();
            }
        }
    };
    let granter = {
        let store = f.b.clone();
        let victims = victims.clone();
        let resources = resources.clone();
        async move {
            for v in &victims {
                for r in &resources {
                    match store.revoke_grant(v.id, r.id).await {
                        Ok(_) => {}
                        Err(e) => panic!("revoke: {e:?}"),
                    }
                    match store.grant(grant(v.id, r.id, 3)).await {
                        Ok(_) | Err(StoreError::NotFound(_)) => {}
                        Err(e) => panic!("grant: {e:?}"),
                    }
                }
            }
        }
    };
    let (x, y) = tokio::join!(tokio::spawn(deleter), tokio::spawn(granter));
    x.unwrap();
    y.unwrap();
    for v in &victims {
        assert_eq!(f.b.list_grants(v.id).await.unwrap(), vec![]);
        assert_eq!(f.b.get_account(v.id).await.unwrap(), None);
    }
    assert_eq!(
        f.b.list_accounts().await.unwrap().len(),
        accounts.len() - victims.len()
    );
}

/// Two handles each suspend (or delete) one of the last two active admins at once: one wins,
/// the other is told it would remove the last admin. Repeated, since it is a race.
pub(crate) async fn concurrent_suspensions_keep_one_active_admin(f: &Fixture) {
    let mut survivor: Option<Uuid> = None;
    for round in 0..24 {
        let x = with_account(f.a.as_ref(), &format!("admin-x{round}"), AccountKind::Admin).await;
        let y = with_account(f.a.as_ref(), &format!("admin-y{round}"), AccountKind::Admin).await;
        // Leave exactly x and y active.
        if let Some(previous) = survivor {
            f.a.set_account_status(previous, AccountStatus::Suspended)
                .await
                .unwrap();
        }
        let delete = round % 2 == 1;
        let remove = move |store: Arc<dyn Store>, id: Uuid| async move {
            if delete {
                store.delete_account(id, 1).await
            } else {
                store
                    .set_account_status(id, AccountStatus::Suspended)
                    .await
                    .map(|_| ())
            }
        };
        let (rx, ry) = tokio::join!(
            tokio::spawn(remove(f.a.clone(), x.id)),
            tokio::spawn(remove(f.b.clone(), y.id))
        );
        let results = [rx.unwrap(), ry.unwrap()];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::LastAdmin))),
            "round {round}: {results:?}"
        );
        let active: Vec<Uuid> =
            f.b.list_accounts()
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.kind == AccountKind::Admin && a.status == AccountStatus::Active)
                .map(|a| a.id)
                .collect();
        assert_eq!(active.len(), 1, "round {round}");
        assert!(active[0] == x.id || active[0] == y.id, "round {round}");
        survivor = Some(active[0]);
    }
}

/// A new, empty database in the test process's shared PostgreSQL cluster.
pub(crate) async fn fresh_postgres_database() -> super::DatabaseUrl {
    let cluster = tokio::task::spawn_blocking(sdm_testkit::PgCluster::shared)
        .await
        .unwrap()
        .expect("a PostgreSQL cluster for the store tests (initdb and postgres on this machine)");
    let name = format!("sdm_{}", Uuid::new_v4().simple());
    let (client, connection) =
        tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    connection.await.unwrap().unwrap();
    super::DatabaseUrl::parse(&cluster.url(&name)).unwrap()
}
