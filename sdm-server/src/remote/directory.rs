//! [`RemoteDirectory`]: the gateway's [`Directory`] over the control plane's
//! `/v1/gateway/authorize` and `/v1/gateway/revocations` routes.
//!
//! Positive answers are kept for a few seconds per lease, so that a burst of connections on one
//! lease costs one round trip to the control plane, not one each. The cache never
//! outlives a revocation: whenever the revocation epoch moves (read every second by the
//! gateway), the whole cache is dropped before the open connections are checked again, and an
//! answer fetched before that moment is not stored afterwards. So open connections close within
//! the same bound as on the control plane's own gateway; a new connection may be admitted on a
//! cached answer until the next epoch read (at most about a second) and is then closed with the
//! others.
//!
//! While no control plane answers (unreachable, timing out, or failing with a server error), the
//! last answer for the lease's session and resource is served instead, for as long as the
//! presented lease is valid: the gateway has verified its signature and expiry, so the control
//! plane did issue it, and the answer was current at the last revocation epoch the gateway
//! heard. A revocation made during the outage therefore takes effect when a control plane
//! answers again (docs/SECURITY.md, "Control-plane outages").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_gateway::{Denied, Directory, Upstream};
use sdm_proto::api::routes;
use sdm_proto::gateway::{Authorization, AuthorizeLease, RecordHostKey, RevocationEpoch};
use sdm_proto::{ErrorKind, Lease};
use uuid::Uuid;

use super::client::{CallError, SharedControlPlane};

/// How long a positive answer is reused (unless the revocation epoch moves first, which a
/// resource update also does).
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(5);
/// Bound on cached leases (and on last answers); past it the cache starts over.
const CACHE_MAX: usize = 100_000;
/// A last answer is kept this long past the expiry of the lease it was given for: a lease renewed
/// in the same session just before an outage (the longest lease lives a day) is still served.
const KEEP_LAST_ANSWER: i64 = 24 * 3600;
/// Bound on one authorization (the client is waiting).
const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one read of the revocation epoch (read every second).
const EPOCH_TIMEOUT: Duration = Duration::from_secs(3);

struct Cache {
    entries: HashMap<Uuid, (Instant, Upstream)>,
    /// The last answer per (session, resource), with the account it was for and the latest
    /// expiry of a lease it served: used only while no control plane answers.
    last: HashMap<(Uuid, Uuid), LastAnswer>,
}

struct LastAnswer {
    account: Uuid,
    upstream: Upstream,
    expires_at: i64,
}

/// Asks the control plane where leases go.
pub struct RemoteDirectory {
    control_plane: SharedControlPlane,
    name: String,
    cache: Mutex<Cache>,
    /// Moves with every drop of the cache; an answer fetched under an older value is not kept.
    generation: AtomicU64,
    last_epoch: Mutex<Option<i64>>,
}

impl std::fmt::Debug for RemoteDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDirectory")
            .field("name", &self.name)
            .field("control_plane", &self.control_plane)
            .finish_non_exhaustive()
    }
}

impl RemoteDirectory {
    /// A directory for the gateway `name`, asking `control_plane`.
    pub(crate) fn new(control_plane: SharedControlPlane, name: String) -> RemoteDirectory {
        RemoteDirectory {
            control_plane,
            name,
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                last: HashMap::new(),
            }),
            generation: AtomicU64::new(0),
            last_epoch: Mutex::new(None),
        }
    }

    fn cached(&self, lease: Uuid) -> Option<Upstream> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .entries
            .get(&lease)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, up)| up.clone())
    }

    fn remember(&self, lease: &Lease, upstream: &Upstream, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `forget_all` takes, so a drop cannot slip in between.
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if cache.entries.len() >= CACHE_MAX {
            cache.entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.entries.len() >= CACHE_MAX {
                cache.entries.clear();
            }
        }
        cache
            .entries
            .insert(lease.id, (Instant::now(), upstream.clone()));
        if cache.last.len() >= CACHE_MAX {
            let now = sdm_proto::unix_now();
            cache
                .last
                .retain(|_, last| last.expires_at.saturating_add(KEEP_LAST_ANSWER) > now);
            if cache.last.len() >= CACHE_MAX {
                cache.last.clear();
            }
        }
        cache.last.insert(
            (lease.session_id, lease.resource_id),
            LastAnswer {
                account: lease.account_id,
                upstream: upstream.clone(),
                expires_at: lease.expires_at,
            },
        );
    }

    /// The last answer for `lease`'s session and resource, to serve while no control plane
    /// answers; the gateway has verified the lease (signature and expiry) before asking.
    fn last_answer(&self, lease: &Lease) -> Option<Upstream> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let last = cache.last.get_mut(&(lease.session_id, lease.resource_id))?;
        if last.account != lease.account_id
            || last.expires_at.saturating_add(KEEP_LAST_ANSWER) < sdm_proto::unix_now()
        {
            return None;
        }
        // A login certificate sdm's CA signed for an earlier lease cannot log in once it has
        // expired: the job is better told that no control plane answers (which signs anew)
        // than that the server refused the gateway.
        let now = sdm_proto::unix_now();
        let ssh = last.upstream.ssh.as_ref();
        if ssh
            .and_then(|s| s.certificate_valid_before)
            .is_some_and(|t| t <= now)
        {
            return None;
        }
        last.expires_at = last.expires_at.max(lease.expires_at);
        Some(last.upstream.clone())
    }

    fn forget(&self, lease: &Lease) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.entries.remove(&lease.id);
        cache.last.remove(&(lease.session_id, lease.resource_id));
    }

    fn knows_no_epoch(&self) -> bool {
        self.last_epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn forget_all(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.entries.clear();
        cache.last.clear();
    }

    fn unavailable(&self, e: &CallError) -> Denied {
        let message = match e {
            CallError::Refused { status: 401, .. } => format!(
                "gateway {}'s token was refused by the control plane; it can serve no one until \
                 an admin gives it a valid gateway token",
                self.name
            ),
            CallError::Refused { message, .. } => format!(
                "gateway {} could not check the lease with the control plane: {message}",
                self.name
            ),
            CallError::Unavailable(_) => format!(
                "gateway {} cannot reach the control plane to check the lease, and has no earlier \
                 answer for this session and resource to serve it on; try again when the control \
                 plane is back",
                self.name
            ),
        };
        tracing::warn!(gateway = %self.name, error = %e, "authorizing a lease failed");
        // Never a revocation kind: failing to ask must not close open connections.
        Denied {
            kind: ErrorKind::Internal,
            message,
        }
    }
}

/// Whether the call failed for want of a control plane that answers (unreachable, timing out,
/// failing), as opposed to one that answered and refused this gateway.
fn could_not_ask(e: &CallError) -> bool {
    match e {
        CallError::Unavailable(_) => true,
        CallError::Refused { status, .. } => *status >= 500 || *status == 429,
    }
}

#[async_trait::async_trait]
impl Directory for RemoteDirectory {
    async fn authorize(&self, lease: &Lease, signed: &[u8]) -> Result<Upstream, Denied> {
        if let Some(up) = self.cached(lease.id) {
            return Ok(up);
        }
        // Until the gateway knows a revocation epoch, the first one it reads drops every
        // answer kept (it cannot tell whether they predate a revocation). Reading it first
        // keeps this answer from being dropped by that first read, so an outage right after
        // start can still be ridden out on it.
        if self.knows_no_epoch() {
            let _ = self.revocation_epoch().await;
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let request = AuthorizeLease {
            lease: URL_SAFE_NO_PAD.encode(signed),
        };
        let answer: Authorization = match self
            .control_plane
            .post(routes::GATEWAY_AUTHORIZE, &request, AUTHORIZE_TIMEOUT)
            .await
        {
            Ok(answer) => answer,
            Err(e) if could_not_ask(&e) => match self.last_answer(lease) {
                Some(up) => {
                    tracing::warn!(gateway = %self.name, lease = %lease.id, resource = %up.resource_name, expires_at = lease.expires_at, error = %e, "no control plane answers; serving the lease on the last answer for its session until it expires");
                    return Ok(up);
                }
                None => return Err(self.unavailable(&e)),
            },
            Err(e) => return Err(self.unavailable(&e)),
        };
        match answer {
            Authorization::Allowed(up) => {
                self.remember(lease, &up, generation);
                Ok(up)
            }
            Authorization::Denied(refusal) => {
                self.forget(lease);
                Err(Denied {
                    kind: refusal.kind(),
                    message: refusal.message,
                })
            }
        }
    }

    async fn revocation_epoch(&self) -> Option<i64> {
        let read: Result<RevocationEpoch, _> = self
            .control_plane
            .get(routes::GATEWAY_REVOCATIONS, EPOCH_TIMEOUT)
            .await;
        match read {
            Ok(RevocationEpoch { epoch }) => {
                let mut last = self
                    .last_epoch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if *last != Some(epoch) {
                    // Before the gateway re-checks its connections: they must get fresh answers.
                    self.forget_all();
                    *last = Some(epoch);
                }
                Some(epoch)
            }
            Err(e) => {
                tracing::warn!(gateway = %self.name, error = %e, "cannot read the revocation epoch");
                None
            }
        }
    }

    async fn record_host_key(
        &self,
        lease: &Lease,
        signed: &[u8],
        host_key: &str,
    ) -> Result<(), Denied> {
        let request = RecordHostKey {
            lease: URL_SAFE_NO_PAD.encode(signed),
            host_key: host_key.to_owned(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| Denied {
            kind: ErrorKind::Internal,
            message: format!("cannot encode a host key to record: {e}"),
        })?;
        match self
            .control_plane
            .post_raw(routes::GATEWAY_SSH_HOST_KEY, Some(body), AUTHORIZE_TIMEOUT)
            .await
        {
            Ok(()) => {
                // Answers kept for this lease still say no key is recorded.
                self.forget(lease);
                Ok(())
            }
            // The control plane's verdict on this key or lease (another key recorded, the
            // lease no longer holds): the connection is refused with it.
            Err(CallError::Refused {
                status,
                kind,
                message,
            }) if status != 401 => Err(Denied { kind, message }),
            // Unrecorded, the key is not trusted: fail closed.
            Err(e) => {
                tracing::warn!(gateway = %self.name, lease = %lease.id, error = %e, "recording an ssh host key failed");
                Err(Denied {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "gateway {} could not record the ssh server's host key with the control \
                         plane ({e}); try again when the control plane answers",
                        self.name
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sdm_proto::ResourceKind;
    use sdm_proto::api::UpstreamTls;

    use super::*;

    fn directory() -> RemoteDirectory {
        let token = sdm_proto::Token::generate(
            sdm_proto::TokenKind::Gateway,
            "https://127.0.0.1:1",
            [0; 32],
        )
        .unwrap();
        let cp = super::super::client::ControlPlane::new(&["https://127.0.0.1:1".into()], &token)
            .unwrap();
        RemoteDirectory::new(std::sync::Arc::new(cp), "gw".into())
    }

    fn up() -> Upstream {
        Upstream {
            resource_name: "pg".into(),
            kind: ResourceKind::Postgres,
            host: "db".into(),
            port: 5432,
            credentials: None,
            upstream_tls: UpstreamTls::default(),
            account_name: "etl".into(),
            labels: BTreeMap::new(),
            databases: Vec::new(),
            replication: false,
            ssh: None,
        }
    }

    fn lease() -> Lease {
        let now = sdm_proto::unix_now();
        Lease {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            resource_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now + 60,
        }
    }

    #[test]
    fn a_drop_of_the_cache_wins_over_an_answer_fetched_before_it() {
        let d = directory();
        let lease = lease();
        let before = d.generation.load(Ordering::SeqCst);
        d.remember(&lease, &up(), before);
        assert!(d.cached(lease.id).is_some());
        // An answer fetched before the epoch moved is not kept afterwards.
        let stale = d.generation.load(Ordering::SeqCst);
        d.forget_all();
        assert!(d.cached(lease.id).is_none());
        assert!(
            d.last_answer(&lease).is_none(),
            "a revocation drops the last answers too"
        );
        d.remember(&lease, &up(), stale);
        assert!(d.cached(lease.id).is_none());
        d.remember(&lease, &up(), d.generation.load(Ordering::SeqCst));
        assert!(d.cached(lease.id).is_some());
        d.forget(&lease);
        assert!(d.cached(lease.id).is_none());
        assert!(d.last_answer(&lease).is_none());
    }

    #[test]
    fn a_last_answer_whose_ssh_certificate_expired_is_not_served() {
        let d = directory();
        let first = lease();
        let mut ssh_up = up();
        ssh_up.ssh = Some(sdm_proto::gateway::SshUpstream {
            host_key: String::new(),
            known_host_keys: Vec::new(),
            private_key: "key".into(),
            certificate: Some("cert".into()),
            certificate_valid_before: Some(first.expires_at),
            record_sessions: false,
        });
        d.remember(&first, &ssh_up, d.generation.load(Ordering::SeqCst));
        let renewed = Lease {
            id: Uuid::new_v4(),
            expires_at: first.expires_at + 600,
            ..first.clone()
        };
        // Still valid: served.
        assert!(d.last_answer(&renewed).is_some());
        // Expired (the first lease's end has passed): not served.
        let expired = sdm_proto::unix_now() - 1;
        ssh_up.ssh.as_mut().unwrap().certificate_valid_before = Some(expired);
        d.remember(&first, &ssh_up, d.generation.load(Ordering::SeqCst));
        assert!(d.last_answer(&renewed).is_none());
    }

    #[test]
    fn the_last_answer_serves_later_leases_of_the_same_session_and_account_only() {
        let d = directory();
        let first = lease();
        d.remember(&first, &up(), d.generation.load(Ordering::SeqCst));
        // Renewed in the same session: served on the answer given for the first lease.
        let renewed = Lease {
            id: Uuid::new_v4(),
            expires_at: first.expires_at + 30,
            ..first.clone()
        };
        assert_eq!(d.last_answer(&renewed).unwrap().resource_name, "pg");
        let other_session = Lease {
            session_id: Uuid::new_v4(),
            ..renewed.clone()
        };
        assert!(d.last_answer(&other_session).is_none());
        let other_account = Lease {
            account_id: Uuid::new_v4(),
            ..renewed.clone()
        };
        assert!(d.last_answer(&other_account).is_none());
        let other_resource = Lease {
            resource_id: Uuid::new_v4(),
            ..renewed
        };
        assert!(d.last_answer(&other_resource).is_none());
    }

    #[test]
    fn only_a_control_plane_that_did_not_answer_lets_the_last_answer_serve() {
        assert!(could_not_ask(&CallError::Unavailable("down".into())));
        for (status, kind, yes) in [
            (503, ErrorKind::Internal, true),
            (500, ErrorKind::Internal, true),
            (401, ErrorKind::Unauthenticated, false),
            (403, ErrorKind::Forbidden, false),
        ] {
            let e = CallError::Refused {
                status,
                kind,
                message: "x".into(),
            };
            assert_eq!(could_not_ask(&e), yes, "{status}");
        }
    }

    #[test]
    fn failing_to_ask_is_never_a_revocation() {
        let d = directory();
        for e in [
            CallError::Unavailable("down".into()),
            CallError::Refused {
                status: 401,
                kind: ErrorKind::Unauthenticated,
                message: "no".into(),
            },
        ] {
            assert_eq!(d.unavailable(&e).kind, ErrorKind::Internal);
        }
    }
}
