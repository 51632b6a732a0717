//! The gateways `sdm-server serve` runs itself: each is the data plane's [`Gateway`], wired to
//! this process's control plane through the traits a standalone gateway uses over HTTP (a
//! [`Directory`], an [`AuditSink`], a [`Registry`](sdm_gateway::registration::Registry)),
//! and kept registered by the same loop.

use std::sync::Arc;
use std::time::Duration;

use sdm_control::keys::{CertificateAuthority, KeyError};
use sdm_control::store::Store;
use sdm_gateway::registration::RegistrationStatus;
use sdm_gateway::registration::{self, Registry, Served};
use sdm_gateway::{AuditSink, Directory, Gateway, GatewayConfig, GatewayMetrics};
use sdm_proto::gateway::RegisterGateway;
use sdm_proto::server_tls::{self as tls, LeafResolver};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::registry::EmbeddedRegistry;
use crate::ServerError;

/// What every gateway of one installation shares.
#[derive(Clone)]
pub(crate) struct GatewayKit {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ca: Arc<CertificateAuthority>,
    /// What the gateways' certificates are issued for.
    pub(crate) names: Vec<String>,
    pub(crate) lease_public_key: Vec<u8>,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) drain: Duration,
    pub(crate) metrics: GatewayMetrics,
}

/// A running gateway of this process.
pub(crate) struct EmbeddedGateway {
    pub(crate) gateway: Gateway,
    /// Where clients are sent.
    pub(crate) address: String,
    /// Serves its certificate (and the API's, for the first gateway).
    pub(crate) resolver: Arc<LeafResolver>,
    registry: Arc<EmbeddedRegistry>,
    registered: Registered,
}

/// The registration loop of a gateway, stopped with it.
struct Registered(JoinHandle<()>);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl GatewayKit {
    /// Registers a gateway named `name` that clients reach at `address` (its certificate is
    /// checked for `server_name`) and serves it on `listener`.
    pub(crate) async fn start_gateway(
        &self,
        name: &str,
        listener: TcpListener,
        address: String,
        server_name: String,
    ) -> Result<EmbeddedGateway, ServerError> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Gateway(format!("its listener has no address: {e}")))?;
        let registry = Arc::new(EmbeddedRegistry::new(
            self.store.clone(),
            self.ca.clone(),
            self.names.clone(),
            server_name,
            name.to_owned(),
            &self.lease_public_key,
        ));
        let mut request = RegisterGateway {
            name: Some(name.to_owned()),
            address: address.clone(),
            tags: None,
            version: format!("sdm-server/{}", env!("CARGO_PKG_VERSION")),
            starting: true,
        };
        let registration = registry
            .register(&request)
            .await
            .map_err(|e| ServerError::Gateway(e.to_string()))?;
        // Heartbeats and renewals come from a process that serves: they must close nothing.
        request.starting = false;
        let leaf = registration::leaf_of(&registration).map_err(ServerError::Gateway)?;
        let tls_error = |e| ServerError::Keys(KeyError::Tls(e));
        let resolver = LeafResolver::new(leaf).map_err(tls_error)?;
        let gateway = Gateway::start_on(
            listener,
            GatewayConfig {
                name: registration.name.clone(),
                listen: local_addr,
                tls: tls::server_config(resolver.clone(), tls::ALPN_GATEWAY).map_err(tls_error)?,
                leases: registration::verifier_of(&registration.lease_keys)
                    .map_err(ServerError::Gateway)?,
                directory: self.directory.clone(),
                audit: self.audit.clone(),
                handshake_timeout: self.handshake_timeout,
                drain: self.drain,
                metrics: self.metrics.clone(),
            },
        )
        .map_err(|source| ServerError::Bind {
            what: "gateway",
            addr: local_addr,
            source,
        })?;
        let registered = registration::keep_registered(
            registry.clone(),
            request,
            Duration::from_secs(registration.heartbeat_secs),
            Served {
                resolver: resolver.clone(),
                lease_keys: gateway.lease_keys(),
                named_keys: registration.lease_keys,
                metrics: self.metrics.clone(),
                // Readiness of `serve` is the store's: this gateway's control plane is itself.
                status: RegistrationStatus::default(),
            },
        );
        Ok(EmbeddedGateway {
            gateway,
            address,
            resolver,
            registry,
            registered: Registered(registered),
        })
    }
}

impl EmbeddedGateway {
    /// Stops serving; with `withdraw`, first takes it off the gateways offered to clients (a
    /// gateway that stops without withdrawing stays offered until its record goes stale).
    pub(crate) async fn stop(self, withdraw: bool) {
        drop(self.registered);
        if withdraw && let Err(e) = self.registry.withdraw().await {
            tracing::warn!(error = %e, "could not withdraw the gateway");
        }
        self.gateway.shutdown().await;
    }
}
