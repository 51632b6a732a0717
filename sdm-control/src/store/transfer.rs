//! Moving a whole installation's state from one backend to another (`sdm-server migrate`):
//! the source exports [`Item`]s table by table, parents before children, and the target
//! imports them in one transaction. Both sides keep their SQL to themselves; only records cross.

use std::fmt;

use sdm_proto::audit::{AuditQueryEvent, AuditRecord, AuditRecordingEvent};
use tokio::sync::mpsc;

use super::{
    AccountRecord, GatewayRecord, GrantRecord, PostgresStore, ResourceRecord, SessionRecord,
    SqliteStore, StoreError, TokenRecord,
};

/// Chunks in flight between the reading and the writing side.
const IN_FLIGHT: usize = 4;

/// Items are sent in chunks of this many.
pub const CHUNK: usize = 1000;

/// One row of the state, as records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An account.
    Account(AccountRecord),
    /// A token (its hash).
    Token(TokenRecord),
    /// A resource, its password still sealed.
    Resource(ResourceRecord),
    /// A grant.
    Grant(GrantRecord),
    /// A session.
    Session(SessionRecord),
    /// A registered gateway.
    Gateway(GatewayRecord),
    /// A setting.
    Setting {
        /// Its key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// An audited connection.
    Connection(AuditRecord),
    /// An audited query.
    Query(AuditQueryEvent),
    /// A line of a recorded terminal session.
    Recording(AuditRecordingEvent),
    /// The revocation counter.
    RevocationEpoch(i64),
    /// The end: everything was sent, this much of each kind. The target commits only after
    /// receiving it and finding that it wrote as much.
    End(Counts),
}

/// How many rows of each kind were moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accounts.
    pub accounts: u64,
    /// Tokens.
    pub tokens: u64,
    /// Resources.
    pub resources: u64,
    /// Grants.
    pub grants: u64,
    /// Sessions.
    pub sessions: u64,
    /// Gateways.
    pub gateways: u64,
    /// Settings.
    pub settings: u64,
    /// Audited connections.
    pub connections: u64,
    /// Audited queries.
    pub queries: u64,
    /// Lines of recorded terminal sessions.
    pub recording_lines: u64,
}

impl Counts {
    /// Counts `item`.
    pub fn add(&mut self, item: &Item) {
        match item {
            Item::Account(_) => self.accounts += 1,
            Item::Token(_) => self.tokens += 1,
            Item::Resource(_) => self.resources += 1,
            Item::Grant(_) => self.grants += 1,
            Item::Session(_) => self.sessions += 1,
            Item::Gateway(_) => self.gateways += 1,
            Item::Setting { .. } => self.settings += 1,
            Item::Connection(_) => self.connections += 1,
            Item::Query(_) => self.queries += 1,
            Item::Recording(_) => self.recording_lines += 1,
            Item::RevocationEpoch(_) | Item::End(_) => {}
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accounts, {} tokens, {} resources, {} grants, {} sessions, {} gateways, \
             {} settings, {} audited connections, {} audited queries, {} recording lines",
            self.accounts,
            self.tokens,
            self.resources,
            self.grants,
            self.sessions,
            self.gateways,
            self.settings,
            self.connections,
            self.queries,
            self.recording_lines
        )
    }
}

/// Copies everything `source` holds into `target` in one transaction of the target (see
/// [`PostgresStore::import`] for `replace`), and returns what was copied. The source is read
/// on the blocking pool while the target writes.
pub async fn sqlite_to_postgres(
    source: &SqliteStore,
    target: &PostgresStore,
    replace: bool,
) -> Result<Counts, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(IN_FLIGHT);
    let reader = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer_gone = false;
            let read = source.export(&mut |chunk| {
                writer_gone = tx.blocking_send(chunk).is_err();
                !writer_gone
            });
            (read, writer_gone)
        })
    };
    let written = target.import(&mut rx, replace).await;
    // Unblock the reader if the writer gave up early.
    drop(rx);
    let (read, writer_gone) = reader
        .await
        .map_err(|e| StoreError::backend("read the source database", e))?;
    match (read, written) {
        (_, Ok(counts)) => Ok(counts),
        // The reader stopped because the writer failed: the writer's error says why.
        (_, Err(e)) if writer_gone => Err(e),
        // The writer saw no end because the reader failed: the reader's error says why.
        (Err(e), Err(_)) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::ResourceKind;
    use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
    use sdm_proto::audit::{AuditEvent, AuditQueryEvent, AuditRecordingEvent};
    use uuid::Uuid;

    use super::*;
    use crate::store::suite::fresh_postgres_database;
    use crate::store::{AuditFilter, Store};

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
        recordings: Vec<Vec<AuditRecordingEvent>>,
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
        let mut recordings = Vec::new();
        for c in &connections {
            queries.push(store.list_queries(c.id, 0, 10_000).await.unwrap());
            for channel in store.recorded_channels(c.id).await.unwrap() {
                recordings.push(
                    store
                        .list_recording(c.id, channel, None, 10_000)
                        .await
                        .unwrap(),
                );
            }
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
            recordings,
        }
    }

    /// An installation with a bit of everything, some of it revoked or ended, and an audit
    /// trail longer than one chunk.
    async fn populate(store: &dyn Store) -> Ids {
        let mut ids = Ids {
            tokens: Vec::new(),
            sessions: Vec::new(),
            settings: vec![
                "secret_key_check",
                "auto_connect",
                "gateway.name.x",
                crate::store::port_overrides::SETTING_KEY,
            ],
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
                port_assigned: false,
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
                // The ssh resource logs in with sdm's SSH CA and has a recorded host key; the
                // others keep a sealed secret (a password; an ssh key lives there too).
                ssh_certificate_authority: i == 1,
                ssh_record_sessions: false,
                ssh_host_key: (i == 1)
                    .then(|| "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey".into()),
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
        // Ports assigned by the setting stay assigned (port_assigned moves along).
        let (_, assigned) = store
            .change_port_overrides(crate::store::PortOverridesChange {
                assign: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(assigned, 2);
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
            if i % 100 == 0 {
                for seq in 0..3 {
                    events.push(AuditEvent::Recording(AuditRecordingEvent {
                        connection_id: c.id,
                        channel: (i % 3) as u32,
                        seq,
                        line: format!("[{seq}.5, \"o\", \"ünï {i}\\r\\n\"]"),
                    }));
                }
            }
            events.push(AuditEvent::Started(Box::new(c)));
        }
        store.write_audit(events.into()).await.unwrap();
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
                settings: 3,
                connections: 1500,
                queries: 2250,
                recording_lines: 45,
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
}
