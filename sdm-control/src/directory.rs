//! [`StoreDirectory`]: where a lease goes, decided on the control plane's [`Store`]: the answer
//! to the embedded gateways' directory and to standalone gateways' `/v1/gateway/authorize`.
//!
//! Every connection is decided on the current state, so suspending an account, ending a session
//! or removing a grant refuses the next connection at once. Positive answers are remembered
//! ([`AnswerCache`]) only while the store can vouch, without a database trip, that nothing
//! changed since (embedded SQLite); otherwise every connection reads the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use sdm_proto::{ErrorKind, Lease, ResourceKind};

use sdm_proto::api::{Credentials, UpstreamTls};
use sdm_proto::gateway::{Denied, GatewayUpstream};

use super::access;
use super::answer_cache::AnswerCache;
use crate::keys::{SecretBox, SshCa};
use crate::ssh_upstream;
use crate::store::{Store, StoreError};

/// Answers the gateway from the store.
#[derive(Clone)]
pub struct StoreDirectory {
    store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    /// Signs ssh login certificates; gateway host keys derive from it.
    ssh_ca: Arc<SshCa>,
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
    /// A directory reading `store`, opening stored passwords with `secrets`, signing ssh
    /// logins with `ssh_ca`.
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        ssh_ca: Arc<SshCa>,
    ) -> StoreDirectory {
        StoreDirectory {
            store,
            secrets,
            ssh_ca,
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
        let upstream = self.decide_for_any_lease(lease, gateway_tags).await?;
        ssh_upstream::sign_for_lease(&self.ssh_ca, lease, upstream)
    }

    /// [`decide`](Self::decide) without what is made for this lease alone (an ssh login
    /// certificate): the part that may be remembered for the account, session and resource.
    async fn decide_for_any_lease(
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
        let ssh = resource.kind == ResourceKind::Ssh;
        let credentials = match (&resource.username, &resource.password_sealed) {
            // An ssh resource's sealed secret is its login key, not a password (below).
            (Some(username), _) if ssh => Some(Credentials {
                username: username.clone(),
                password: String::new(),
                database: None,
            }),
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
        let ssh = if ssh {
            if resource.username.is_none() {
                return Err(denied(
                    ErrorKind::Internal,
                    format!(
                        "ssh resource {} has no upstream user name; an admin must set one",
                        resource.name
                    ),
                ));
            }
            let private_key = match (&resource.password_sealed, resource.ssh_certificate_authority)
            {
                (Some(sealed), false) => Some(self.secrets.open(sealed).map_err(|e| {
                    tracing::error!(resource = %resource.name, error = %e, "a stored ssh key cannot be opened");
                    denied(
                        ErrorKind::Internal,
                        format!(
                            "the stored ssh key of resource {} cannot be decrypted; an admin must set it again",
                            resource.name
                        ),
                    )
                })?),
                _ => None,
            };
            Some(ssh_upstream::settings(
                &self.ssh_ca,
                &resource,
                private_key,
            )?)
        } else {
            None
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
            ssh,
        })
    }

    /// Records `host_key` (an OpenSSH public key line) as the one the ssh resource of `lease`
    /// presents, when none is recorded yet; refused (`upstream_refused`) when another is.
    /// The lease must still hold for a gateway with `gateway_tags`.
    pub async fn record_host_key(
        &self,
        lease: &Lease,
        gateway_tags: &BTreeMap<String, String>,
        host_key: &str,
    ) -> Result<(), Denied> {
        let upstream = self.decide_for_any_lease(lease, gateway_tags).await?;
        if upstream.kind != ResourceKind::Ssh {
            return Err(denied(
                ErrorKind::InvalidArgument,
                format!(
                    "resource {} is not an ssh resource; it has no host key to record",
                    upstream.resource_name
                ),
            ));
        }
        let host_key = ssh_upstream::host_key(host_key).map_err(|reason| {
            denied(
                ErrorKind::InvalidArgument,
                format!(
                    "the host key of resource {}: {reason}",
                    upstream.resource_name
                ),
            )
        })?;
        let recorded = self
            .store
            .record_ssh_host_key(lease.resource_id, &host_key)
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => denied(
                    ErrorKind::ResourceNotFound,
                    format!("resource {} was deleted", upstream.resource_name),
                ),
                e => unavailable(e),
            })?;
        if recorded {
            tracing::info!(resource = %upstream.resource_name, host_key = %host_key, "recorded an ssh server's host key");
            return Ok(());
        }
        tracing::warn!(resource = %upstream.resource_name, presented = %host_key, "an ssh server presented a host key other than the recorded one");
        Err(denied(
            ErrorKind::UpstreamRefused,
            format!(
                "the host key of ssh resource {} changed: the server presented {host_key}, \
                 which is not the key recorded for it. If the server was reinstalled, an admin \
                 can forget the old key (`sdm admin servers update {} --forget-host-key`); \
                 otherwise someone may be impersonating it",
                upstream.resource_name, upstream.resource_name
            ),
        ))
    }

    /// The tags of the gateway this directory answers for.
    pub fn gateway_tags(&self) -> &BTreeMap<String, String> {
        &self.tags
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
        let answer = match self.answers.get(epoch, &key) {
            Some(answer) => answer,
            None => {
                let answer = self.decide_for_any_lease(lease, &self.tags).await?;
                self.answers.put(epoch, key, &answer);
                answer
            }
        };
        // After the cache: a remembered answer never carries another lease's certificate.
        ssh_upstream::sign_for_lease(&self.ssh_ca, lease, answer)
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
        secrets: Arc<SecretBox>,
        ssh_ca: Arc<SshCa>,
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
            ssh_certificate_authority: false,
            ssh_record_sessions: false,
            ssh_host_key: None,
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
        let ssh_ca = Arc::new(SshCa::generate().unwrap());
        Fixture {
            directory: StoreDirectory::new(store.clone(), secrets.clone(), ssh_ca.clone()),
            store,
            lease,
            account,
            secrets,
            ssh_ca,
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

    /// The fixture's resource made an ssh resource logging in as `deploy` with `login`
    /// (`None`: sdm's SSH CA).
    async fn ssh_fixture(login: Option<&str>) -> Fixture {
        let f = fixture().await;
        let mut resource = f.resource().await;
        resource.kind = ResourceKind::Ssh;
        resource.port = 22;
        resource.username = Some("deploy".into());
        resource.database = None;
        resource.password_sealed = login.map(|key| f.secrets.seal(key).unwrap());
        resource.ssh_certificate_authority = login.is_none();
        f.store.update_resource(resource).await.unwrap();
        f
    }

    fn public(pem: &str) -> ssh_key::PublicKey {
        ssh_key::PrivateKey::from_openssh(pem)
            .unwrap()
            .public_key()
            .clone()
    }

    #[tokio::test]
    async fn an_ssh_resource_gets_its_stored_key_and_a_host_key_every_control_plane_shares() {
        let key = crate::ssh_upstream::tests::ed25519_pem();
        let f = ssh_fixture(Some(&key)).await;
        let up = f.directory.authorize(&f.lease).await.unwrap();
        let credentials = up.credentials.clone().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("deploy", "")
        );
        let ssh = up.ssh.clone().unwrap();
        assert_eq!(ssh.private_key, key);
        assert_eq!(ssh.certificate, None);
        assert!(ssh.known_host_keys.is_empty());
        // Another control plane with the same keys (here: another directory) presents the same
        // host key; it is the one clients are told to pin.
        let other = StoreDirectory::new(f.store.clone(), f.secrets.clone(), f.ssh_ca.clone());
        let again = other.decide(&f.lease, &BTreeMap::new()).await.unwrap();
        assert_eq!(again.ssh.unwrap().host_key, ssh.host_key);
        let mut pinned = public(&ssh.host_key);
        pinned.set_comment("");
        assert_eq!(
            Some(pinned.to_openssh().unwrap()),
            crate::ssh_upstream::host_key_line(&f.ssh_ca, f.lease.resource_id)
        );
        // Another resource gets another host key.
        assert_ne!(
            crate::ssh_upstream::host_key_line(&f.ssh_ca, Uuid::new_v4()),
            crate::ssh_upstream::host_key_line(&f.ssh_ca, f.lease.resource_id)
        );
        // The key is a secret: not in Debug output.
        assert!(!format!("{up:?}").contains(key.lines().nth(1).unwrap()));
    }

    #[tokio::test]
    async fn every_lease_gets_its_own_certificate_even_from_a_remembered_answer() {
        let f = ssh_fixture(None).await;
        let first = f.directory.authorize(&f.lease).await.unwrap();
        let second_lease = Lease {
            id: Uuid::new_v4(),
            expires_at: 4_000_000_000,
            ..f.lease.clone()
        };
        // Same account, session and resource: the answer is remembered between the two.
        let second = f.directory.authorize(&second_lease).await.unwrap();
        let (a, b) = (first.ssh.unwrap(), second.ssh.unwrap());
        assert_ne!(a.private_key, b.private_key);
        for (ssh, lease) in [(&a, &f.lease), (&b, &second_lease)] {
            let certificate =
                ssh_key::Certificate::from_openssh(ssh.certificate.as_deref().unwrap()).unwrap();
            assert_eq!(
                certificate.public_key(),
                public(&ssh.private_key).key_data()
            );
            assert_eq!(
                certificate.key_id(),
                format!("sdm:account=etl:resource=pg:lease={}", lease.id)
            );
            assert_eq!(certificate.valid_principals(), ["deploy".to_string()]);
            assert!(
                f.ssh_ca
                    .validates(&certificate, certificate.valid_after() + 1)
            );
        }
        let certificate =
            ssh_key::Certificate::from_openssh(b.certificate.as_deref().unwrap()).unwrap();
        assert_eq!(certificate.valid_before(), 4_000_000_000);
    }

    #[tokio::test]
    async fn the_first_host_key_is_recorded_and_any_other_refused() {
        let f = ssh_fixture(None).await;
        let tags = BTreeMap::new();
        let seen = crate::ssh_upstream::host_key_line(&f.ssh_ca, Uuid::new_v4()).unwrap();
        let other = crate::ssh_upstream::host_key_line(&f.ssh_ca, Uuid::new_v4()).unwrap();
        f.directory
            .record_host_key(&f.lease, &tags, &format!("{seen} root@web"))
            .await
            .unwrap();
        // Recorded: the next connection is told to accept only it.
        let up = f.directory.authorize(&f.lease).await.unwrap();
        assert_eq!(up.ssh.unwrap().known_host_keys, vec![seen.clone()]);
        f.directory
            .record_host_key(&f.lease, &tags, &seen)
            .await
            .unwrap();
        let refused = f
            .directory
            .record_host_key(&f.lease, &tags, &other)
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::UpstreamRefused);
        assert!(
            refused
                .message
                .contains("host key of ssh resource pg changed"),
            "{}",
            refused.message
        );
        assert_eq!(f.resource().await.ssh_host_key, Some(seen));
        // Not a key at all, or a resource without host keys.
        let bad = f
            .directory
            .record_host_key(&f.lease, &tags, "hello")
            .await
            .unwrap_err();
        assert_eq!(bad.kind, ErrorKind::InvalidArgument);
        let pg = fixture().await;
        let refused = pg
            .directory
            .record_host_key(&pg.lease, &tags, &other)
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::InvalidArgument);
        // A lease that no longer holds records nothing.
        f.store
            .revoke_grant(f.account.id, f.lease.resource_id)
            .await
            .unwrap();
        assert_eq!(
            f.directory
                .record_host_key(&f.lease, &tags, &other)
                .await
                .unwrap_err()
                .kind,
            ErrorKind::Forbidden
        );
    }
}
