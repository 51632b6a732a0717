//! The gateway: accepts TLS connections from clients, verifies their lease offline, asks the
//! [`Directory`] where the resource lives, connects to it and splices bytes both ways.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sdm_proto::api::UpstreamTls;
use sdm_proto::lease::LeaseVerifier;
use sdm_proto::{ErrorKind, Lease, ResourceKind};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod audit;
mod backoff;
mod connection;
mod listener;
mod postgres;
mod prefixed;
mod registry;
mod splice;
mod verified;
mod workers;

pub use audit::{
    AuditPolicy, AuditQueue, AuditSink, AuditUnavailable, AuditWriter, DEFAULT_GRACE, DiscardAudit,
    Retry, WriteError, spawn_audit_writer,
};
pub(crate) use backoff::backoff;

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
}

/// A resource's address and how to log in to it, as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Resource name (for messages and logs).
    pub resource_name: String,
    /// What it speaks.
    pub kind: ResourceKind,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Credentials the gateway logs in with; `None`: the client logs in itself.
    pub credentials: Option<UpstreamCredentials>,
    /// TLS between the gateway and the resource.
    pub tls: UpstreamTls,
    /// The account's name (for the audit trail).
    pub account_name: String,
    /// The session's job labels (for the audit trail).
    pub labels: BTreeMap<String, String>,
    /// Databases a client may name besides the stored one (postgres).
    pub databases: Vec<String>,
    /// Whether replication connections are let through (postgres).
    pub replication: bool,
}

/// Stored credentials, decrypted. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Database; `None`: the one the client asks for.
    pub database: Option<String>,
}

impl std::fmt::Debug for UpstreamCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .finish()
    }
}

/// A refusal, sent to the client as a handshake error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The error kind the client reports.
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
}

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
}

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
        let registry = Arc::new(registry::Registry::default());
        tokio::spawn(registry::watch_revocations(
            config.clone(),
            registry.clone(),
            shutdown.subscribe(),
        ));
        let leases = Arc::new(verified::VerifiedLeases::new(config.leases.clone()));
        let task = tokio::spawn(listener::serve(
            listener,
            workers,
            config,
            registry,
            leases.clone(),
            shutdown.subscribe(),
        ));
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

    /// Stops accepting and closes open connections.
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
