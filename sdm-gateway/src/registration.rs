//! Staying registered with a control plane: the first registration (retried while no control
//! plane answers), then one task that heartbeats so that clients are offered the gateway,
//! follows the control plane's lease keys, and registers again daily for a fresh certificate.
//!
//! The same loop runs for a gateway embedded in `sdm-server serve` (its [`Registry`] is the
//! control plane in the same process) and for a standalone one (its registry is the control
//! plane's `/v1/gateway/…` routes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::backoff::jittered;
use sdm_proto::gateway::{GatewayRegistration, HeartbeatReply, RegisterGateway};
use sdm_proto::lease::LeaseVerifier;
use sdm_proto::server_tls::{Leaf, LeafResolver};
use tokio::task::JoinHandle;

use super::LeaseKeys;

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
                    Ok(reply) => served.follow(&reply.lease_keys),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "heartbeat failed; clients stop being offered this gateway if it keeps failing"
                    ),
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
