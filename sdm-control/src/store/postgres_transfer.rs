//! Writing a whole installation into PostgreSQL, for `sdm-server migrate`: one transaction,
//! rows streamed in with binary `COPY`.

use std::mem::discriminant;
use std::pin::pin;

use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};

use super::StoreError;
use super::postgres::{
    Context, PostgresStore, count_at, kind_str, signed, status_str, tls_mode_str,
};
use super::transfer::{Counts, Item};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// What the database holds already.
async fn existing(tx: &Tx<'_>) -> Result<Counts, StoreError> {
    let context = "count what the database holds";
    let row = tx
        .query_one(
            "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM tokens),
                    (SELECT COUNT(*) FROM resources), (SELECT COUNT(*) FROM grants),
                    (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM gateways),
                    (SELECT COUNT(*) FROM settings), (SELECT COUNT(*) FROM audit_connections),
                    (SELECT COUNT(*) FROM audit_queries)",
            &[],
        )
        .await
        .context(context)?;
    Ok(Counts {
        accounts: count_at(&row, 0)?,
        tokens: count_at(&row, 1)?,
        resources: count_at(&row, 2)?,
        grants: count_at(&row, 3)?,
        sessions: count_at(&row, 4)?,
        gateways: count_at(&row, 5)?,
        settings: count_at(&row, 6)?,
        connections: count_at(&row, 7)?,
        queries: count_at(&row, 8)?,
    })
}

/// The `COPY` statement and column types for a kind of item.
fn copy_target(item: &Item) -> Option<(&'static str, &'static [Type])> {
    Some(match item {
        Item::Account(_) => (
            "COPY accounts (id, name, kind, status, created_at) FROM STDIN BINARY",
            &[Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        ),
        Item::Token(_) => (
            "COPY tokens (id, account_id, secret_hash, created_at, revoked_at) FROM STDIN BINARY",
            &[Type::UUID, Type::UUID, Type::BYTEA, Type::INT8, Type::INT8],
        ),
        Item::Resource(_) => (
            "COPY resources (id, name, kind, hostname, port, port_override, tags, username,
                             database, password_sealed, created_at, tls_mode, tls_ca_pem,
                             databases, replication)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT4,
                Type::INT4,
                Type::JSONB,
                Type::TEXT,
                Type::TEXT,
                Type::BYTEA,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::JSONB,
                Type::BOOL,
            ],
        ),
        Item::Grant(_) => (
            "COPY grants (account_id, resource_id, created_at) FROM STDIN BINARY",
            &[Type::UUID, Type::UUID, Type::INT8],
        ),
        Item::Session(_) => (
            "COPY sessions (id, account_id, labels, client, created_at, ended_at, last_used_at)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::UUID,
                Type::JSONB,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
        ),
        Item::Gateway(_) => (
            "COPY gateways (id, name, address, server_name, last_seen) FROM STDIN BINARY",
            &[Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8],
        ),
        Item::Setting { .. } => (
            "COPY settings (key, value) FROM STDIN BINARY",
            &[Type::TEXT, Type::BYTEA],
        ),
        Item::Connection(_) => (
            "COPY audit_connections (id, account_id, account_name, resource_id, resource_name,
                                     gateway, session_id, lease_id, labels, client_addr,
                                     started_at, ended_at, bytes_up, bytes_down, outcome, error,
                                     query_count)
             FROM STDIN BINARY",
            &[
                Type::UUID,
                Type::UUID,
                Type::TEXT,
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::UUID,
                Type::UUID,
                Type::JSONB,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
            ],
        ),
        Item::Query(_) => (
            "COPY audit_queries (connection_id, seq, at, text) FROM STDIN BINARY",
            &[Type::UUID, Type::INT8, Type::INT8, Type::TEXT],
        ),
        Item::RevocationEpoch(_) | Item::End(_) => return None,
    })
}

/// Writes a run of items of one kind.
async fn write_run(tx: &Tx<'_>, run: &[Item]) -> Result<(), StoreError> {
    let context = "copy rows into PostgreSQL";
    let Some(first) = run.first() else {
        return Ok(());
    };
    let Some((sql, types)) = copy_target(first) else {
        for item in run {
            if let Item::RevocationEpoch(epoch) = item {
                tx.execute(
                    "UPDATE revocation_epoch SET epoch = GREATEST(epoch, $1) WHERE id = 1",
                    &[epoch],
                )
                .await
                .context("copy the revocation epoch")?;
            }
        }
        return Ok(());
    };
    let sink = tx.copy_in(sql).await.context(context)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for item in run {
        let written = match item {
            Item::Account(a) => {
                writer
                    .as_mut()
                    .write(&[
                        &a.id,
                        &a.name,
                        &kind_str(a.kind),
                        &status_str(a.status),
                        &a.created_at,
                    ])
                    .await
            }
            Item::Token(t) => {
                writer
                    .as_mut()
                    .write(&[
                        &t.id,
                        &t.account_id,
                        &t.secret_hash,
                        &t.created_at,
                        &t.revoked_at,
                    ])
                    .await
            }
            Item::Resource(r) => {
                writer
                    .as_mut()
                    .write(&[
                        &r.id,
                        &r.name,
                        &r.kind.as_str(),
                        &r.hostname,
                        &i32::from(r.port),
                        &r.port_override.map(i32::from),
                        &Json(&r.tags),
                        &r.username,
                        &r.database,
                        &r.password_sealed,
                        &r.created_at,
                        &tls_mode_str(r.tls_mode),
                        &r.tls_ca_pem,
                        &Json(&r.databases),
                        &r.replication,
                    ])
                    .await
            }
            Item::Grant(g) => {
                writer
                    .as_mut()
                    .write(&[&g.account_id, &g.resource_id, &g.created_at])
                    .await
            }
            Item::Session(s) => {
                writer
                    .as_mut()
                    .write(&[
                        &s.id,
                        &s.account_id,
                        &Json(&s.labels),
                        &s.client,
                        &s.created_at,
                        &s.ended_at,
                        &s.last_used_at,
                    ])
                    .await
            }
            Item::Gateway(g) => {
                writer
                    .as_mut()
                    .write(&[&g.id, &g.name, &g.address, &g.server_name, &g.last_seen])
                    .await
            }
            Item::Setting { key, value } => writer.as_mut().write(&[key, value]).await,
            Item::Connection(c) => {
                writer
                    .as_mut()
                    .write(&[
                        &c.id,
                        &c.account_id,
                        &c.account_name,
                        &c.resource_id,
                        &c.resource_name,
                        &c.gateway,
                        &c.session_id,
                        &c.lease_id,
                        &Json(&c.labels),
                        &c.client_addr,
                        &c.started_at,
                        &c.ended_at,
                        &signed(c.bytes_up),
                        &signed(c.bytes_down),
                        &c.outcome.as_str(),
                        &c.error,
                        &signed(c.query_count),
                    ])
                    .await
            }
            Item::Query(q) => {
                writer
                    .as_mut()
                    .write(&[&q.connection_id, &signed(q.seq), &q.at, &q.text])
                    .await
            }
            Item::RevocationEpoch(_) | Item::End(_) => Ok(()),
        };
        written.context(context)?;
    }
    writer.finish().await.context(context)?;
    Ok(())
}

impl PostgresStore {
    /// Writes the items received from `items` (as [`SqliteStore::export`] sends them) in one
    /// transaction, committed only when the closing [`Item::End`] arrived and matches what was
    /// written, and returns how many of each it wrote. A database that holds any sdm data
    /// is refused with [`StoreError::NotEmpty`], unless `replace`: then its contents are
    /// deleted first, in the same transaction.
    ///
    /// [`SqliteStore::export`]: super::SqliteStore::export
    pub async fn import(
        &self,
        items: &mut mpsc::Receiver<Vec<Item>>,
        replace: bool,
    ) -> Result<Counts, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .context("start the import transaction")?;
        let before = existing(&tx).await?;
        if !before.is_empty() {
            if !replace {
                return Err(StoreError::NotEmpty(before.to_string()));
            }
            tx.batch_execute(
                "TRUNCATE accounts, tokens, resources, grants, sessions, gateways, settings,
                          audit_connections, audit_queries",
            )
            .await
            .context("empty the database")?;
            tracing::warn!(replaced = %before, "replaced the database's contents");
        }
        let mut counts = Counts::default();
        let mut end = None;
        while let Some(chunk) = items.recv().await {
            if end.is_some() {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    "the source sent rows after its end",
                ));
            }
            let mut rest = chunk.as_slice();
            if let Some(Item::End(sent)) = rest.last() {
                end = Some(*sent);
                rest = &rest[..rest.len() - 1];
            }
            while let Some(first) = rest.first() {
                let kind = discriminant(first);
                let end = rest
                    .iter()
                    .position(|i| discriminant(i) != kind)
                    .unwrap_or(rest.len());
                let (run, tail) = rest.split_at(end);
                write_run(&tx, run).await?;
                run.iter().for_each(|i| counts.add(i));
                rest = tail;
            }
        }
        // Without its end the source failed half way: roll back, keep nothing.
        match end {
            None => {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    "the source stopped before its end; nothing was written",
                ));
            }
            Some(sent) if sent != counts => {
                return Err(StoreError::backend(
                    "copy rows into PostgreSQL",
                    format!("the source sent {sent} but {counts} arrived; nothing was written"),
                ));
            }
            Some(_) => {}
        }
        tx.commit().await.context("commit the import")?;
        Ok(counts)
    }

    /// How many rows of each kind the database holds.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.context("start a transaction")?;
        let counts = existing(&tx).await?;
        tx.commit().await.context("commit a transaction")?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::ResourceKind;
    use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
    use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecord};
    use uuid::Uuid;

    use super::*;
    use crate::store::suite::fresh_postgres_database;
    use crate::store::transfer::sqlite_to_postgres;
    use crate::store::{
        AccountRecord, AuditFilter, GatewayRecord, GrantRecord, ResourceRecord, SessionRecord,
        SqliteStore, Store, TokenRecord,
    };

    /// Everything a store holds, read through the `Store` trait.
    #[derive(Debug, PartialEq, Eq)]
    struct Everything {
        accounts: Vec<AccountRecord>,
        tokens: Vec<Option<TokenRecord>>,
        resources: Vec<ResourceRecord>,
        grants: Vec<Vec<GrantRecord>>,
        sessions: Vec<Option<SessionRecord>>,
        gateways: Vec<GatewayRecord>,
        settings: Vec<Option<Vec<u8>>>,
        connections: Vec<AuditRecord>,
        queries: Vec<Vec<AuditQueryEvent>>,
    }

    struct Ids {
        tokens: Vec<Uuid>,
        sessions: Vec<Uuid>,
        settings: Vec<&'static str>,
    }

    async fn everything(store: &dyn Store, ids: &Ids) -> Everything {
        let accounts = store.list_accounts().await.unwrap();
        let connections = store
            .list_connections(AuditFilter {
                limit: 10_000,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let mut grants = Vec::new();
        for a in &accounts {
            grants.push(store.list_grants(a.id).await.unwrap());
        }
        let mut tokens = Vec::new();
        for t in &ids.tokens {
            tokens.push(store.get_token(*t).await.unwrap());
        }
        let mut sessions = Vec::new();
        for s in &ids.sessions {
            sessions.push(store.get_session(*s).await.unwrap());
        }
        let mut settings = Vec::new();
        for k in &ids.settings {
            settings.push(store.get_setting(k).await.unwrap());
        }
        let mut queries = Vec::new();
        for c in &connections {
            queries.push(store.list_queries(c.id, 0, 10_000).await.unwrap());
        }
        Everything {
            accounts,
            tokens,
            resources: store.list_resources().await.unwrap(),
            grants,
            sessions,
            gateways: store.list_gateways().await.unwrap(),
            settings,
            connections,
            queries,
        }
    }

    /// An installation with a bit of everything, some of it revoked or ended, and an audit
    /// trail longer than one chunk.
    async fn populate(store: &dyn Store) -> Ids {
        let mut ids = Ids {
            tokens: Vec::new(),
            sessions: Vec::new(),
            settings: vec!["secret_key_check", "auto_connect", "gateway.name.x"],
        };
        let mut accounts = Vec::new();
        for (i, kind) in [
            AccountKind::Admin,
            AccountKind::Service,
            AccountKind::Service,
        ]
        .into_iter()
        .enumerate()
        {
            let account = AccountRecord {
                id: Uuid::new_v4(),
                name: format!("account-{i}"),
                kind,
                status: if i == 2 {
                    AccountStatus::Suspended
                } else {
                    AccountStatus::Active
                },
                created_at: 1000 + i as i64,
            };
            let token = TokenRecord {
                id: Uuid::new_v4(),
                account_id: account.id,
                secret_hash: vec![i as u8; 32],
                created_at: 1000,
                revoked_at: None,
            };
            ids.tokens.push(token.id);
            store.create_account(account.clone(), token).await.unwrap();
            accounts.push(account);
        }
        let rotated = TokenRecord {
            id: Uuid::new_v4(),
            account_id: accounts[1].id,
            secret_hash: vec![7; 32],
            created_at: 1100,
            revoked_at: None,
        };
        ids.tokens.push(rotated.id);
        store.rotate_token(rotated).await.unwrap();
        let mut resources = Vec::new();
        for (i, kind) in [
            ResourceKind::Postgres,
            ResourceKind::Ssh,
            ResourceKind::Other("kafka".into()),
        ]
        .into_iter()
        .enumerate()
        {
            let r = ResourceRecord {
                id: Uuid::new_v4(),
                name: format!("res-{i}"),
                kind,
                hostname: "db.internal".into(),
                port: 5432 + i as u16,
                port_override: (i == 0).then_some(15432),
                tags: BTreeMap::from([("env".into(), format!("e{i}"))]),
                username: Some("app".into()),
                database: (i == 0).then(|| "app".into()),
                password_sealed: (i != 1).then(|| vec![0xA5; 60]),
                tls_mode: [TlsMode::Disable, TlsMode::Require, TlsMode::VerifyFull][i],
                tls_ca_pem: (i == 2).then(|| "-----BEGIN CERTIFICATE-----".into()),
                databases: if i == 0 {
                    vec!["reports".into()]
                } else {
                    Vec::new()
                },
                replication: i == 2,
                created_at: 1200,
            };
            store.create_resource(r.clone()).await.unwrap();
            resources.push(r);
        }
        for a in &accounts[1..] {
            for r in &resources[..2] {
                store
                    .grant(GrantRecord {
                        account_id: a.id,
                        resource_id: r.id,
                        created_at: 1300,
                    })
                    .await
                    .unwrap();
            }
        }
        for (i, a) in accounts.iter().enumerate() {
            let s = SessionRecord {
                id: Uuid::new_v4(),
                account_id: a.id,
                labels: BTreeMap::from([("dag_id".into(), format!("dag-{i}"))]),
                client: "sdm-core/0.1.0".into(),
                created_at: 1400,
                ended_at: None,
                last_used_at: (i == 1).then_some(1420),
            };
            ids.sessions.push(s.id);
            store.create_session(s.clone()).await.unwrap();
        }
        store.end_session(ids.sessions[0], 1450).await.unwrap();
        store
            .upsert_gateway(GatewayRecord {
                id: Uuid::new_v4(),
                name: "embedded".into(),
                address: "127.0.0.1:8444".into(),
                server_name: "127.0.0.1".into(),
                last_seen: 1500,
            })
            .await
            .unwrap();
        store
            .set_setting("secret_key_check", vec![1, 2, 3])
            .await
            .unwrap();
        store
            .set_setting("auto_connect", b"true".to_vec())
            .await
            .unwrap();
        let mut events = Vec::new();
        for i in 0..1500u64 {
            let c = AuditRecord {
                id: Uuid::new_v4(),
                account_id: accounts[1].id,
                account_name: accounts[1].name.clone(),
                resource_id: resources[0].id,
                resource_name: resources[0].name.clone(),
                gateway: "embedded".into(),
                session_id: ids.sessions[1],
                lease_id: Uuid::new_v4(),
                labels: BTreeMap::from([("dag_id".into(), "dag-1".into())]),
                client_addr: "127.0.0.1:5000".into(),
                started_at: 2000 + i as i64,
                ended_at: (i % 3 != 0).then_some(2100 + i as i64),
                bytes_up: i * 10,
                bytes_down: i * 100,
                outcome: if i % 3 == 0 { "open" } else { "ok" }.into(),
                error: None,
                query_count: i % 4,
            };
            for seq in 1..=(i % 4) {
                events.push(AuditEvent::Query(AuditQueryEvent {
                    connection_id: c.id,
                    seq,
                    at: c.started_at,
                    text: format!("SELECT {seq}"),
                }));
            }
            events.push(AuditEvent::Started(c));
        }
        store.write_audit(events).await.unwrap();
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_installation_moves_to_postgres_whole_and_only_into_an_empty_database() {
        let source = SqliteStore::open_in_memory().unwrap();
        let ids = populate(&source).await;
        let url = fresh_postgres_database().await;
        let target = PostgresStore::connect(&url).await.unwrap();

        let counts = sqlite_to_postgres(&source, &target, false).await.unwrap();
        assert_eq!(
            counts,
            Counts {
                accounts: 3,
                tokens: 4,
                resources: 3,
                grants: 4,
                sessions: 3,
                gateways: 1,
                settings: 2,
                connections: 1500,
                queries: 2250,
            }
        );
        assert_eq!(target.counts().await.unwrap(), counts);
        let before = everything(&source, &ids).await;
        assert_eq!(everything(&target, &ids).await, before);
        assert!(
            target.revocation_epoch().await.unwrap() >= source.revocation_epoch().await.unwrap()
        );
        assert!(target.revocation_epoch().await.unwrap() > 0);

        // A second run finds data and refuses, leaving it as it was.
        let err = sqlite_to_postgres(&source, &target, false)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotEmpty(_)), "{err:?}");
        assert!(err.to_string().contains("3 accounts"), "{err}");
        assert_eq!(target.counts().await.unwrap(), counts);

        // With replace, the target's own rows go and the source's come back.
        let extra = AccountRecord {
            id: Uuid::new_v4(),
            name: "only-in-target".into(),
            kind: AccountKind::Service,
            status: AccountStatus::Active,
            created_at: 1,
        };
        target
            .create_account(
                extra.clone(),
                TokenRecord {
                    id: Uuid::new_v4(),
                    account_id: extra.id,
                    secret_hash: vec![0; 32],
                    created_at: 1,
                    revoked_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            sqlite_to_postgres(&source, &target, true).await.unwrap(),
            counts
        );
        assert_eq!(target.get_account(extra.id).await.unwrap(), None);
        assert_eq!(everything(&target, &ids).await, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_stops_half_way_leaves_nothing() {
        let url = fresh_postgres_database().await;
        let target = PostgresStore::connect(&url).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let account = AccountRecord {
            id: Uuid::new_v4(),
            name: "a".into(),
            kind: AccountKind::Admin,
            status: AccountStatus::Active,
            created_at: 1,
        };
        tx.send(vec![Item::Account(account.clone())]).await.unwrap();
        drop(tx);
        let err = target.import(&mut rx, false).await.unwrap_err();
        assert!(
            sdm_proto::error::one_line(&err).contains("stopped before its end"),
            "{err:?}"
        );
        // A miscounted end is refused too.
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(vec![
            Item::Account(account),
            Item::End(Counts {
                accounts: 2,
                ..Counts::default()
            }),
        ])
        .await
        .unwrap();
        drop(tx);
        let err = target.import(&mut rx, false).await.unwrap_err();
        assert!(
            sdm_proto::error::one_line(&err).contains("nothing was written"),
            "{err:?}"
        );
        assert!(target.counts().await.unwrap().is_empty());
    }
}
