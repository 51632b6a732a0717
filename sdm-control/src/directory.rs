//! [`StoreDirectory`]: where a lease goes, decided on the control plane's [`Store`]: the answer
//! to the embedded gateways' directory and to standalone gateways' `/v1/gateway/authorize`.
//!
//! Every connection is decided on the current state, so suspending an account, ending a session
//! or removing a grant refuses the next connection at once. Positive answers are remembered
//! ([`AnswerCache`]) only while the store can vouch, without a database trip, that nothing
//! changed since (embedded SQLite); otherwise every connection reads the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use sdm_proto::{ErrorKind, Lease};

use sdm_proto::api::{Credentials, UpstreamTls};
use sdm_proto::gateway::{Denied, GatewayUpstream};

use super::access;
use super::answer_cache::AnswerCache;
use crate::keys::SecretBox;
use crate::store::{Store, StoreError};

/// Answers the gateway from the store.
#[derive(Clone)]
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    /// The tags of the gateway this directory answers for (none for an embedded gateway).
    tags: BTreeMap<String, String>,
    answers: Arc<AnswerCache>,
}

impl std::fmt::Debug for StoreDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDirectory").finish_non_exhaustive()
    }
}

fn denied(kind: ErrorKind, message: String) -> Denied {
    Denied { kind, message }
}

fn unavailable(e: StoreError) -> Denied {
    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "the gateway could not read the control plane's state");
    denied(
        ErrorKind::Internal,
        "the control plane's database is unavailable; try again shortly".into(),
    )
}

impl StoreDirectory {
    /// A directory reading `store`, opening stored passwords with `secrets`.
    pub fn new(store: Arc<dyn Store>, secrets: Arc<SecretBox>) -> StoreDirectory {
        StoreDirectory {
            store,
            secrets,
            tags: BTreeMap::new(),
            answers: Arc::default(),
        }
    }

    /// Where `lease` goes when a gateway with `gateway_tags` asks (see
    /// [`pinning`](super::pinning)), or why not.
    pub async fn decide(
        &self,
        lease: &Lease,
        gateway_tags: &BTreeMap<String, String>,
    ) -> Result<GatewayUpstream, Denied> {
        let facts = self
            .store
            .access_facts(lease.account_id, lease.session_id, lease.resource_id)
            .await
            .map_err(unavailable)?;
        let access::Allowed {
            account,
            session,
            resource,
        } = access::judge(
            facts,
            access::Request {
                account_id: lease.account_id,
                session_id: lease.session_id,
                resource_id: lease.resource_id,
                gateway_tags: Some(gateway_tags),
                moment: access::Moment::Connection,
            },
        )
        .map_err(|refused| denied(refused.kind, refused.message))?;
        let credentials = match (&resource.username, &resource.password_sealed) {
            (Some(username), Some(sealed)) => {
                let password = self.secrets.open(sealed).map_err(|e| {
                    tracing::error!(resource = %resource.name, error = %e, "a stored password cannot be opened");
                    denied(
                        ErrorKind::Internal,
                        format!(
                            "the stored credentials of resource {} cannot be decrypted; an admin must set them again",
                            resource.name
                        ),
                    )
                })?;
                Some(Credentials {
                    username: username.clone(),
                    password,
                    database: resource.database.clone(),
                })
            }
            _ => None,
        };
        Ok(GatewayUpstream {
            resource_name: resource.name,
            kind: resource.kind,
            host: resource.hostname,
            port: resource.port,
            credentials,
            upstream_tls: UpstreamTls {
                mode: resource.tls_mode,
                ca_pem: resource.tls_ca_pem,
            },
            account_name: account.name,
            labels: session.labels,
            databases: resource.databases,
            replication: resource.replication,
            ssh: None,
        })
    }
}

impl StoreDirectory {
    /// The revocation epoch now; `None` when the store cannot be read.
    pub async fn revocation_epoch(&self) -> Option<i64> {
        match self.store.revocation_epoch().await {
            Ok(epoch) => Some(epoch),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocation epoch");
                None
            }
        }
    }

    /// Where `lease` goes now, or why not; answers are remembered while the store can vouch
    /// that nothing changed since.
    pub async fn authorize(&self, lease: &Lease) -> Result<GatewayUpstream, Denied> {
        // Read before the store: a change committed in between moves the epoch past the one
        // the answer is remembered under.
        let Some(epoch) = self.store.local_revocation_epoch() else {
            return self.decide(lease, &self.tags).await;
        };
        let key = (lease.account_id, lease.session_id, lease.resource_id);
        if let Some(answer) = self.answers.get(epoch, &key) {
            return Ok(answer);
        }
        let answer = self.decide(lease, &self.tags).await?;
        self.answers.put(epoch, key, &answer);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::ResourceKind;
    use sdm_proto::api::{AccountKind, AccountStatus, TlsMode};
    use uuid::Uuid;

    use super::*;
    use crate::pinning;
    use crate::store::{
        AccountRecord, GrantRecord, ResourceRecord, SessionRecord, SqliteStore, TokenRecord,
    };

    struct Fixture {
        store: Arc<SqliteStore>,
        directory: StoreDirectory,
        lease: Lease,
        account: AccountRecord,
    }

    async fn fixture() -> Fixture {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let account = AccountRecord {
            id: Uuid::new_v4(),
            name: "etl".into(),
            kind: AccountKind::Service,
            status: AccountStatus::Active,
            created_at: 1,
        };
        store
            .create_account(
                account.clone(),
                TokenRecord {
                    id: Uuid::new_v4(),
                    account_id: account.id,
                    secret_hash: vec![0; 32],
                    created_at: 1,
                    revoked_at: None,
                },
            )
            .await
            .unwrap();
        let secrets = Arc::new(SecretBox::from_base64(&format!("{}=", "A".repeat(43))).unwrap());
        let resource = ResourceRecord {
            id: Uuid::new_v4(),
            name: "pg".into(),
            kind: ResourceKind::Postgres,
            hostname: "127.0.0.1".into(),
            port: 5432,
            port_override: None,
            port_assigned: false,
            tags: BTreeMap::new(),
            username: Some("app".into()),
            database: Some("app".into()),
            password_sealed: Some(secrets.seal("s3cret").unwrap()),
            tls_mode: TlsMode::Require,
            tls_ca_pem: None,
            databases: vec!["reports".into()],
            replication: true,
            created_at: 1,
        };
        store.create_resource(resource.clone()).await.unwrap();
        store
            .grant(GrantRecord {
                account_id: account.id,
                resource_id: resource.id,
                created_at: 1,
            })
            .await
            .unwrap();
        let session = SessionRecord {
            id: Uuid::new_v4(),
            account_id: account.id,
            labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
            client: String::new(),
            created_at: 1,
            ended_at: None,
            last_used_at: None,
        };
        store.create_session(session.clone()).await.unwrap();
        let lease = Lease {
            id: Uuid::new_v4(),
            account_id: account.id,
            resource_id: resource.id,
            session_id: session.id,
            issued_at: 1,
            expires_at: 2,
        };
        Fixture {
            directory: StoreDirectory::new(store.clone(), secrets),
            store,
            lease,
            account,
        }
    }

    impl Fixture {
        async fn resource(&self) -> ResourceRecord {
            self.store
                .get_resource(self.lease.resource_id)
                .await
                .unwrap()
                .unwrap()
        }
    }

    async fn refusal(f: &Fixture) -> Denied {
        f.directory.authorize(&f.lease).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_granted_lease_gets_the_upstream() {
        let f = fixture().await;
        let up = f.directory.authorize(&f.lease).await.unwrap();
        assert_eq!(
            up,
            GatewayUpstream {
                resource_name: "pg".into(),
                kind: ResourceKind::Postgres,
                host: "127.0.0.1".into(),
                port: 5432,
                credentials: Some(Credentials {
                    username: "app".into(),
                    password: "s3cret".into(),
                    database: Some("app".into()),
                }),
                upstream_tls: UpstreamTls {
                    mode: TlsMode::Require,
                    ca_pem: None,
                },
                account_name: f.account.name.clone(),
                labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
                databases: vec!["reports".into()],
                replication: true,
                ssh: None,
            }
        );
    }

    /// Each change lands after the answer was remembered, and the next connection sees it.
    #[tokio::test]
    async fn remembered_answers_end_with_every_change() {
        let f = fixture().await;
        let first = f.directory.authorize(&f.lease).await.unwrap();
        assert_eq!(f.directory.authorize(&f.lease).await.unwrap(), first);

        let mut resource = f.resource().await;
        resource.port = 6543;
        f.store.update_resource(resource).await.unwrap();
        let moved = f.directory.authorize(&f.lease).await.unwrap();
        assert_eq!(moved.port, 6543);

        f.store
            .set_account_status(f.account.id, AccountStatus::Suspended)
            .await
            .unwrap();
        assert_eq!(refusal(&f).await.kind, ErrorKind::Unauthenticated);
        f.store
            .set_account_status(f.account.id, AccountStatus::Active)
            .await
            .unwrap();
        f.directory.authorize(&f.lease).await.unwrap();

        f.store
            .revoke_grant(f.account.id, f.lease.resource_id)
            .await
            .unwrap();
        assert_eq!(refusal(&f).await.kind, ErrorKind::Forbidden);
        f.store
            .grant(GrantRecord {
                account_id: f.account.id,
                resource_id: f.lease.resource_id,
                created_at: 2,
            })
            .await
            .unwrap();
        f.directory.authorize(&f.lease).await.unwrap();

        assert!(f.store.end_session(f.lease.session_id, 3).await.unwrap());
        assert_eq!(refusal(&f).await.kind, ErrorKind::Unauthenticated);
    }

    #[tokio::test]
    async fn suspension_is_immediate_and_reversible() {
        let f = fixture().await;
        f.store
            .set_account_status(f.account.id, AccountStatus::Suspended)
            .await
            .unwrap();
        let d = refusal(&f).await;
        assert_eq!(d.kind, ErrorKind::Unauthenticated);
        assert!(d.message.contains("suspended"), "{}", d.message);
        f.store
            .set_account_status(f.account.id, AccountStatus::Active)
            .await
            .unwrap();
        f.directory.authorize(&f.lease).await.unwrap();
    }

    #[tokio::test]
    async fn a_deleted_account_is_refused() {
        let f = fixture().await;
        f.store.delete_account(f.account.id, 5).await.unwrap();
        let d = refusal(&f).await;
        assert_eq!(d.kind, ErrorKind::Unauthenticated);
        assert!(d.message.contains("deleted"), "{}", d.message);
    }

    #[tokio::test]
    async fn a_revoked_grant_is_forbidden() {
        let f = fixture().await;
        f.store
            .revoke_grant(f.account.id, f.lease.resource_id)
            .await
            .unwrap();
        let d = refusal(&f).await;
        assert_eq!(d.kind, ErrorKind::Forbidden);
        assert!(
            d.message.contains("access to resource pg was revoked"),
            "{}",
            d.message
        );
    }

    #[tokio::test]
    async fn a_pinned_resource_goes_only_to_matching_gateways() {
        let f = fixture().await;
        let mut resource = f.resource().await;
        resource
            .tags
            .insert(pinning::PIN_TAG.into(), "region=eu".into());
        f.store.update_resource(resource).await.unwrap();
        // The embedded gateway has no tags.
        let d = refusal(&f).await;
        assert_eq!(d.kind, ErrorKind::Forbidden);
        assert!(d.message.contains("pinned"), "{}", d.message);
        let eu = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
        let us = BTreeMap::from([("region".to_owned(), "us".to_owned())]);
        f.directory.decide(&f.lease, &eu).await.unwrap();
        assert_eq!(
            f.directory.decide(&f.lease, &us).await.unwrap_err().kind,
            ErrorKind::Forbidden
        );
    }

    #[tokio::test]
    async fn a_deleted_resource_is_not_found() {
        let f = fixture().await;
        f.store.delete_resource(f.lease.resource_id).await.unwrap();
        assert_eq!(refusal(&f).await.kind, ErrorKind::ResourceNotFound);
    }

    #[tokio::test]
    async fn ended_foreign_or_unknown_sessions_are_refused() {
        let mut f = fixture().await;
        f.store.end_session(f.lease.session_id, 3).await.unwrap();
        assert_eq!(refusal(&f).await.kind, ErrorKind::Unauthenticated);
        f.lease.session_id = Uuid::new_v4();
        assert_eq!(refusal(&f).await.kind, ErrorKind::Unauthenticated);
        // A session that belongs to another account.
        let other = SessionRecord {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            labels: BTreeMap::from([("dag_id".into(), "etl".into())]),
            client: String::new(),
            created_at: 1,
            ended_at: None,
            last_used_at: None,
        };
        f.store.create_session(other.clone()).await.unwrap();
        f.lease.session_id = other.id;
        assert_eq!(refusal(&f).await.kind, ErrorKind::Unauthenticated);
    }
}
