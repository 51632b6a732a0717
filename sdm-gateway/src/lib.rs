//! The gateway: accepts TLS connections from clients, verifies their lease offline, asks the
//! [`Directory`] where the resource lives, connects to it and splices bytes both ways.
//!
//! It is the data plane only: what it needs from a control plane comes through three traits,
//! [`Directory`] (where a lease goes), [`AuditSink`] (what passed through) and
//! [`registration::Registry`] (staying offered to clients), so that the same code runs inside
//! `sdm-server serve`, wired to the control plane in that process, and as a standalone
//! gateway with no database, wired to a control plane over HTTPS. It depends on no store.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sdm_proto::Lease;
use sdm_proto::lease::LeaseVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod audit;
mod connection;
mod finished;
mod listener;
mod metrics;
mod mysql;
mod open_connections;
mod postgres;
mod prefixed;
pub mod registration;
mod splice;
mod ssh;
mod verified;
mod workers;

pub use metrics::GatewayMetrics;

pub use audit::{
    AuditPolicy, AuditQueue, AuditSink, AuditUnavailable, AuditWriter, DEFAULT_GRACE, DiscardAudit,
    Retry, WriteError, spawn_audit_writer,
};

/// Where a lease may go, as decided by the control plane's state.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The upstream for a lease whose signature and expiry were already verified, or why not:
    /// the account is suspended or gone (`Unauthenticated`), the session ended
    /// (`Unauthenticated`), the grant was removed (`Forbidden`), the resource was deleted
    /// (`ResourceNotFound`), the resource is pinned to other gateways (`Forbidden`).
    ///
    /// `signed` is the lease as the client presented it (signature included), for directories
    /// that ask a control plane elsewhere, which checks the signature again.
    async fn authorize(&self, lease: &Lease, signed: &[u8]) -> Result<Upstream, Denied>;

    /// A number that grows whenever access may have been taken away; `None` when the control
    /// plane's state cannot be read right now. The gateway re-checks its open connections when
    /// it moves.
    async fn revocation_epoch(&self) -> Option<i64>;

    /// Records `host_key` (an OpenSSH public key line) as the one the ssh resource of `lease`
    /// presents, when none was recorded yet ([`SshUpstream::known_host_keys`] was empty).
    /// Refused when another key was recorded meanwhile: the connection is then refused too.
    async fn record_host_key(
        &self,
        lease: &Lease,
        signed: &[u8],
        host_key: &str,
    ) -> Result<(), Denied>;
}

/// Stored credentials, decrypted. `Debug` hides the password.
pub use sdm_proto::api::Credentials as UpstreamCredentials;
/// A refusal, sent to the client as a handshake error.
pub use sdm_proto::gateway::Denied;
/// A resource's address and how to log in to it, as the control plane decided it for one
/// lease (the same type whether the control plane runs in this process or answers over HTTP).
pub use sdm_proto::gateway::GatewayUpstream as Upstream;
/// How the gateway speaks SSH for one resource.
pub use sdm_proto::gateway::SshUpstream;

/// How a gateway runs.
pub struct GatewayConfig {
    /// Name shown to clients and in logs.
    pub name: String,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// TLS 1.3 configuration (certificate chain: leaf then CA; ALPN `sdm/1`).
    pub tls: Arc<rustls::ServerConfig>,
    /// Verifies lease signatures.
    pub leases: LeaseVerifier,
    /// Decides where leases go.
    pub directory: Arc<dyn Directory>,
    /// Receives a record of every connection (and, for postgres, its queries).
    pub audit: Arc<dyn AuditSink>,
    /// How long a client has to complete TLS and the HELLO.
    pub handshake_timeout: Duration,
    /// At shutdown, how long open connections may run on before they are closed with the
    /// protocol's message ([`DEFAULT_DRAIN`] by default).
    pub drain: Duration,
    /// Where connections count themselves (see [`GatewayMetrics`]).
    pub metrics: GatewayMetrics,
}

/// See [`GatewayConfig::drain`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    leases: Arc<verified::VerifiedLeases>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Replaces the keys a running gateway checks leases with ([`Gateway::lease_keys`]).
#[derive(Clone)]
pub struct LeaseKeys(Arc<verified::VerifiedLeases>);

impl LeaseKeys {
    /// New connections' leases are checked against `verifier` from now on; leases accepted
    /// under the old keys are checked again.
    pub fn replace(&self, verifier: LeaseVerifier) {
        self.0.replace_keys(verifier);
    }
}

impl Gateway {
    /// Binds and starts serving in the background.
    pub async fn start(config: GatewayConfig) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(config.listen).await?;
        Gateway::start_on(listener, config)
    }

    /// Starts serving on a listener bound already (`config.listen` is then only informative):
    /// for a gateway that must know its port before its certificate exists.
    pub fn start_on(listener: TcpListener, config: GatewayConfig) -> std::io::Result<Gateway> {
        let local_addr = listener.local_addr()?;
        let workers = workers::Workers::start()?;
        let (shutdown, _) = watch::channel(false);
        let config = Arc::new(config);
        let open_connections = Arc::new(open_connections::OpenConnections::new(
            config.metrics.clone(),
        ));
        // Revocations are enforced until the last connection is gone, through the drain.
        let (finished, finished_rx) = watch::channel(false);
        tokio::spawn(open_connections::watch_revocations(
            config.clone(),
            open_connections.clone(),
            finished_rx,
        ));
        let leases = Arc::new(verified::VerifiedLeases::new(config.leases.clone()));
        let serving = listener::serve(
            listener,
            workers,
            config,
            open_connections,
            leases.clone(),
            shutdown.subscribe(),
        );
        let task = tokio::spawn(async move {
            serving.await;
            finished.send_replace(true);
        });
        tracing::info!(address = %local_addr, "gateway listening");
        Ok(Gateway {
            local_addr,
            leases,
            shutdown,
            task: Some(task),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that replaces the keys this gateway checks leases with, while it runs.
    pub fn lease_keys(&self) -> LeaseKeys {
        LeaseKeys(self.leases.clone())
    }

    /// Stops accepting, lets open connections run on for [`GatewayConfig::drain`], then
    /// closes the rest with the protocol's message (each end is recorded).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
