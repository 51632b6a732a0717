//! Staying registered with a control plane: the first registration (retried while no control
//! plane answers), then one task that heartbeats so that clients are offered the gateway,
//! follows the control plane's lease keys, and registers again daily for a fresh certificate.
//!
//! The same loop runs for a gateway embedded in `sdm-server serve` (its [`Registry`] is the
//! control plane in the same process) and for a standalone one (its registry is the control
//! plane's `/v1/gateway/…` routes).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::backoff::jittered;
use sdm_proto::gateway::{GatewayRegistration, HeartbeatReply, RegisterGateway};
use sdm_proto::lease::LeaseVerifier;
use sdm_proto::server_tls::{Leaf, LeafResolver};
use tokio::task::JoinHandle;

use super::{GatewayMetrics, LeaseKeys};

/// How often the certificate is renewed (it is valid for 90 days).
const RENEWAL: Duration = Duration::from_secs(24 * 3600);
/// After a failed renewal, the next attempt.
const RENEWAL_RETRY: Duration = Duration::from_secs(3600);

/// A control plane that gateways register with.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers (again): the gateway's name, certificate and the lease keys to check with.
    async fn register(
        &self,
        request: &RegisterGateway,
    ) -> Result<GatewayRegistration, RegistryError>;

    /// Says the gateway is alive (and where); the answer names the lease keys now.
    async fn heartbeat(&self, request: &RegisterGateway) -> Result<HeartbeatReply, RegistryError>;

    /// Withdraws the gateway from those offered to clients.
    async fn withdraw(&self) -> Result<(), RegistryError>;
}

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The control plane answered and refused (bad token, tags not allowed, …).
    #[error("{0}")]
    Refused(String),
    /// No control plane answered, or not usefully; asking again later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// Registers, retrying with backoff while no control plane answers, for at most `bound`.
pub async fn register(
    registry: &dyn Registry,
    request: &RegisterGateway,
    bound: Duration,
) -> Result<GatewayRegistration, RegistryError> {
    let deadline = Instant::now() + bound;
    let mut attempt = 0;
    loop {
        match registry.register(request).await {
            Err(RegistryError::Unavailable(why)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(RegistryError::Unavailable(why));
                }
                tracing::warn!(%why, "no control plane answered yet; retrying");
                let pause = jittered(attempt, Duration::from_millis(500), Duration::from_secs(10));
                tokio::time::sleep(pause.min(left)).await;
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

/// The certificate a registration carries.
pub fn leaf_of(registration: &GatewayRegistration) -> Result<Leaf, String> {
    Leaf::from_pem(
        &registration.certificate_chain_pem,
        &registration.private_key_pem,
    )
    .map_err(str::to_owned)
}

/// The lease verifier for keys named as a registration or heartbeat names them.
pub fn verifier_of(lease_keys: &[String]) -> Result<LeaseVerifier, String> {
    let keys = lease_keys
        .iter()
        .map(|k| URL_SAFE_NO_PAD.decode(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "a lease key is not base64url".to_owned())?;
    if keys.is_empty() {
        return Err("no lease verification key".into());
    }
    Ok(LeaseVerifier::new(keys))
}

/// What the loop keeps current: the certificate served and the lease keys checked.
pub struct Served {
    /// Serves the gateway's certificate (and, in `sdm-server serve`, the API's).
    pub resolver: Arc<LeafResolver>,
    /// The gateway's lease keys.
    pub lease_keys: LeaseKeys,
    /// The keys as the registration named them.
    pub named_keys: Vec<String>,
    /// Counts heartbeats.
    pub metrics: GatewayMetrics,
    /// Whether the last heartbeat was answered, for a readiness probe.
    pub status: RegistrationStatus,
}

/// Whether a registered gateway is still known to a control plane: the last heartbeat's
/// failure, if it failed. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct RegistrationStatus(Arc<Mutex<Option<String>>>);

impl RegistrationStatus {
    /// Why the last heartbeat failed; `None` while heartbeats are answered.
    pub fn failure(&self) -> Option<String> {
        // A poisoned lock still holds a usable answer.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, failure: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

/// Keeps a registered gateway registered until the task is aborted: a heartbeat every
/// `every` (a failed one is logged: clients stop being offered a gateway whose heartbeats keep
/// failing), and a new registration daily for a fresh certificate (hourly after a failure).
/// `request` must not be marked `starting`.
pub fn keep_registered(
    registry: Arc<dyn Registry>,
    request: RegisterGateway,
    every: Duration,
    mut served: Served,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let renewal = tokio::time::sleep(RENEWAL);
        tokio::pin!(renewal);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => match registry.heartbeat(&request).await {
                    Ok(reply) => {
                        served.metrics.heartbeat(true);
                        served.status.set(None);
                        served.follow(&reply.lease_keys);
                    }
                    Err(e) => {
                        served.metrics.heartbeat(false);
                        served.status.set(Some(e.to_string()));
                        tracing::warn!(
                            error = %e,
                            "heartbeat failed; clients stop being offered this gateway if it keeps failing"
                        );
                    }
                },
                () = &mut renewal => {
                    let next = match served.renew(registry.as_ref(), &request).await {
                        Ok(()) => {
                            tracing::info!("renewed the gateway's TLS certificate");
                            RENEWAL
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not renew the TLS certificate; trying again in an hour");
                            RENEWAL_RETRY
                        }
                    };
                    renewal.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        }
    })
}

impl Served {
    /// Registers again and serves the new certificate.
    async fn renew(
        &mut self,
        registry: &dyn Registry,
        request: &RegisterGateway,
    ) -> Result<(), String> {
        let registration = registry
            .register(request)
            .await
            .map_err(|e| e.to_string())?;
        let leaf = leaf_of(&registration)?;
        self.resolver.replace(leaf).map_err(|e| e.to_string())?;
        self.follow(&registration.lease_keys);
        Ok(())
    }

    /// Takes the lease keys the control plane named, if they differ (its `lease.key` was
    /// replaced): new leases are signed with the new key, and would all be refused here until
    /// a restart otherwise. An empty list (an older control plane) changes nothing.
    fn follow(&mut self, named: &[String]) {
        if named.is_empty() || named == self.named_keys.as_slice() {
            return;
        }
        match verifier_of(named) {
            Ok(verifier) => {
                self.lease_keys.replace(verifier);
                self.named_keys = named.to_vec();
                tracing::info!(
                    "the control plane's lease keys changed; new connections are checked against the new keys"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "the control plane named unusable lease keys; keeping the current ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sdm_proto::Lease;
    use sdm_proto::lease::LeaseSigner;
    use uuid::Uuid;

    use super::*;
    use crate::verified::VerifiedLeases;

    /// A control plane that answers from a script: each registration issues a new certificate
    /// unless told to fail; heartbeats name the lease keys set last.
    #[derive(Default)]
    struct Script {
        calls: Mutex<Vec<&'static str>>,
        keys: Mutex<Vec<String>>,
        refuse_registrations: Mutex<bool>,
    }

    fn leaf_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // The chain a registration carries is [leaf, CA]; a self-signed one stands for both.
        (cert.pem().repeat(2), key.serialize_pem())
    }

    #[async_trait::async_trait]
    impl Registry for Script {
        async fn register(
            &self,
            _request: &RegisterGateway,
        ) -> Result<GatewayRegistration, RegistryError> {
            self.calls.lock().unwrap().push("register");
            if *self.refuse_registrations.lock().unwrap() {
                return Err(RegistryError::Unavailable("down".into()));
            }
            let (certificate_chain_pem, private_key_pem) = leaf_pem();
            Ok(GatewayRegistration {
                id: Uuid::new_v4(),
                name: "gw".into(),
                tags: Default::default(),
                lease_keys: self.keys.lock().unwrap().clone(),
                certificate_chain_pem,
                private_key_pem,
                heartbeat_secs: 20,
                revocation_epoch: 0,
            })
        }

        async fn heartbeat(
            &self,
            _request: &RegisterGateway,
        ) -> Result<HeartbeatReply, RegistryError> {
            self.calls.lock().unwrap().push("heartbeat");
            Ok(HeartbeatReply {
                revocation_epoch: 0,
                lease_keys: self.keys.lock().unwrap().clone(),
            })
        }

        async fn withdraw(&self) -> Result<(), RegistryError> {
            Ok(())
        }
    }

    fn signer() -> LeaseSigner {
        LeaseSigner::from_pkcs8(&LeaseSigner::generate_pkcs8().unwrap()).unwrap()
    }

    fn named(signer: &LeaseSigner) -> String {
        URL_SAFE_NO_PAD.encode(signer.public_key())
    }

    /// Whether a lease `signer` signed now passes `leases`.
    fn accepts(leases: &VerifiedLeases, signer: &LeaseSigner) -> bool {
        let now = sdm_proto::unix_now();
        let lease = Lease {
            id: Uuid::new_v4(),
            account_id: Uuid::new_v4(),
            resource_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now + 60,
        };
        leases.verify(&signer.sign(&lease), now, 5).is_ok()
    }

    fn request() -> RegisterGateway {
        RegisterGateway {
            name: None,
            address: "127.0.0.1:8444".into(),
            tags: None,
            version: String::new(),
            starting: false,
        }
    }

    fn count(script: &Script, call: &str) -> usize {
        script
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == call)
            .count()
    }

    /// Lets the loop run (the clock stands still) until `script` had `n` calls of `call`.
    async fn until(script: &Script, call: &str, n: usize) {
        for _ in 0..10_000 {
            if count(script, call) >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{call} called {} times, not {n}", count(script, call));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_follow_the_lease_keys_and_the_certificate_is_renewed_daily() {
        let (old_key, new_key) = (signer(), signer());
        let script = Arc::new(Script::default());
        *script.keys.lock().unwrap() = vec![named(&old_key)];
        let first = script.register(&request()).await.unwrap();
        let resolver = LeafResolver::new(leaf_of(&first).unwrap()).unwrap();
        let leases = Arc::new(VerifiedLeases::new(verifier_of(&first.lease_keys).unwrap()));
        let task = keep_registered(
            script.clone(),
            request(),
            Duration::from_secs(20),
            Served {
                resolver: resolver.clone(),
                lease_keys: LeaseKeys(leases.clone()),
                named_keys: first.lease_keys.clone(),
                metrics: GatewayMetrics::default(),
                status: RegistrationStatus::default(),
            },
        );
        // The loop starts its clocks when it first runs.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let served_first = resolver.certificate();
        assert!(accepts(&leases, &old_key));

        // The control plane's lease key is replaced: the next heartbeat brings the new one.
        *script.keys.lock().unwrap() = vec![named(&new_key)];
        tokio::time::advance(Duration::from_secs(20)).await;
        until(&script, "heartbeat", 1).await;
        assert!(accepts(&leases, &new_key), "the new key is followed");
        assert!(!accepts(&leases, &old_key), "the old key is dropped");

        // A day later the gateway registers again and serves the new certificate.
        tokio::time::advance(RENEWAL).await;
        until(&script, "register", 2).await;
        let served_second = resolver.certificate();
        assert_ne!(served_second, served_first, "the certificate was renewed");

        // A renewal that fails is tried again an hour later; meanwhile the old one serves.
        *script.refuse_registrations.lock().unwrap() = true;
        tokio::time::advance(RENEWAL).await;
        until(&script, "register", 3).await;
        assert_eq!(resolver.certificate(), served_second);
        *script.refuse_registrations.lock().unwrap() = false;
        tokio::time::advance(RENEWAL_RETRY - Duration::from_secs(1)).await;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(count(&script, "register"), 3, "not before the hour is up");
        tokio::time::advance(Duration::from_secs(1)).await;
        until(&script, "register", 4).await;
        assert_ne!(
            resolver.certificate(),
            served_second,
            "renewed on the retry"
        );
        task.abort();
    }
}
