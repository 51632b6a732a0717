//! [`Server`]: start the control plane and its gateway in this process.
//!
//! ```no_run
//! # async fn run() -> Result<(), sdm_server::ServerError> {
//! let server = sdm_server::Server::builder()
//!     .data_dir("/var/lib/sdm")
//!     .start()
//!     .await?;
//! if let Some(token) = server.admin_token() {
//!     println!("{token}"); // only on the start that created the installation
//! }
//! println!("API at {}", server.api_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sdm_control::api::{self, ApiConfig};
use sdm_control::audit_retention::sweep_audit;
use sdm_control::bootstrap::{Installation, ServerError};
use sdm_control::keys::KeyError;
use sdm_control::sessions::sweep_sessions;
use sdm_control::store::{DatabaseUrl, Store};
use sdm_control::{SessionPolicy, StoreDirectory};
use sdm_gateway::AuditPolicy;
use sdm_proto::server_tls as tls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::embedded::{EmbeddedDirectory, EmbeddedGateway, GatewayKit, store_audit_writer};

/// Default API address (loopback only).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);
/// Default gateway address (loopback only).
pub const DEFAULT_GATEWAY_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8444);
/// Default lease lifetime.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);
/// Shortest and longest lease lifetime accepted.
pub const LEASE_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(2), Duration::from_secs(24 * 3600));
/// Default of [`ServerBuilder::api_connections_per_source`].
pub const DEFAULT_API_CONNECTIONS_PER_SOURCE: usize = api::DEFAULT_CONNECTIONS_PER_SOURCE;

const GATEWAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown lets in-flight API requests finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server {
    _private: (),
}

impl Server {
    /// A builder with loopback defaults; only [`data_dir`](ServerBuilder::data_dir) is required.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            data_dir: None,
            database_url: None,
            listen: DEFAULT_LISTEN,
            gateway_listen: DEFAULT_GATEWAY_LISTEN,
            public_url: None,
            gateway_public_addr: None,
            gateway_name: "embedded".to_owned(),
            lease_ttl: DEFAULT_LEASE_TTL,
            gateway_handshake_timeout: GATEWAY_HANDSHAKE_TIMEOUT,
            gateway_drain: sdm_gateway::DEFAULT_DRAIN,
            audit_policy: AuditPolicy::default(),
            api_connections_per_source: DEFAULT_API_CONNECTIONS_PER_SOURCE,
            sessions: SessionPolicy::default(),
            audit_retention: None,
            gateway_metrics: sdm_gateway::GatewayMetrics::default(),
            control_metrics: sdm_control::ControlMetrics::default(),
        }
    }
}

/// How to start a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    data_dir: Option<PathBuf>,
    /// Parsed when given; a parse error is reported by `start`.
    database_url: Option<Result<DatabaseUrl, String>>,
    listen: SocketAddr,
    gateway_listen: SocketAddr,
    public_url: Option<String>,
    gateway_public_addr: Option<String>,
    gateway_name: String,
    lease_ttl: Duration,
    gateway_handshake_timeout: Duration,
    gateway_drain: Duration,
    audit_policy: AuditPolicy,
    api_connections_per_source: usize,
    sessions: SessionPolicy,
    audit_retention: Option<Duration>,
    gateway_metrics: sdm_gateway::GatewayMetrics,
    control_metrics: sdm_control::ControlMetrics,
}

impl ServerBuilder {
    /// Count into `metrics` (what `--diag-listen` serves at `/metrics`); by default the
    /// counts go nowhere.
    pub fn metrics(mut self, metrics: &crate::diag::Metrics) -> Self {
        self.gateway_metrics = metrics.gateway();
        self.control_metrics = metrics.control();
        self
    }

    /// Where keys and the database live (created with mode 0700 if missing). Required.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep the state in PostgreSQL (`postgres://user:password@host:port/dbname`) instead of
    /// `sdm.db` in the data directory, so that several control planes can share it. The keys
    /// still come from the data directory (or `SDM_SECRET_KEY`): every control plane on one
    /// database needs the same `ca.pem`, `ca.key`, `lease.key`, `ssh_ca.key` and `secret.key`.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url =
            Some(DatabaseUrl::parse(url).map_err(|e| sdm_proto::error::one_line(&e)));
        self
    }

    /// API address; default `127.0.0.1:8443`. Port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Gateway address; default `127.0.0.1:8444`. Port 0 picks a free port.
    pub fn gateway_listen(mut self, addr: SocketAddr) -> Self {
        self.gateway_listen = addr;
        self
    }

    /// The `https://host:port` URL clients reach the API at, when it differs from the bound
    /// address (a load balancer, a DNS name). New tokens carry it.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// The `host:port` clients reach the gateway at, when it differs from the bound address.
    pub fn gateway_public_addr(mut self, addr: impl Into<String>) -> Self {
        self.gateway_public_addr = Some(addr.into());
        self
    }

    /// The name the embedded gateway registers under (default `embedded`); gateways are
    /// registered by name, so a restart keeps the gateway's id.
    pub fn gateway_name(mut self, name: impl Into<String>) -> Self {
        self.gateway_name = name.into();
        self
    }

    /// How long a client has to finish TLS and the gateway HELLO (default 10 s); slower
    /// clients are dropped.
    pub fn gateway_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.gateway_handshake_timeout = timeout;
        self
    }

    /// At shutdown, how long the gateway's open connections may run on before they are closed
    /// with the protocol's message (default 10 s).
    pub fn gateway_drain(mut self, drain: Duration) -> Self {
        self.gateway_drain = drain;
        self
    }

    /// The most connections one client address (an IPv6 /64) may hold on the API at once
    /// (default 256); more are closed as soon as they are accepted, so that one source cannot
    /// take every slot. Raise it when many clients reach the API through one address (NAT, a
    /// proxy).
    pub fn api_connections_per_source(mut self, connections: usize) -> Self {
        self.api_connections_per_source = connections;
        self
    }

    /// Lifetime of issued leases (2 s to 24 h; default 300 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// What the gateway does when its audit trail cannot be written (default: refuse new
    /// connections at once and close open ones after [`DEFAULT_GRACE`](sdm_gateway::DEFAULT_GRACE)).
    pub fn audit_policy(mut self, policy: AuditPolicy) -> Self {
        self.audit_policy = policy;
        self
    }

    /// How many open sessions an account may hold, and how long sessions live (default
    /// [`SessionPolicy::default`]: 1000 per account, 1 h idle, 7 days at most, ended ones kept
    /// 7 days). The idle timeout and the maximum age must be at least the lease lifetime.
    pub fn session_policy(mut self, policy: SessionPolicy) -> Self {
        self.sessions = policy;
        self
    }

    /// Removes audit records that ended longer ago than `retention`, in the background (default:
    /// none, the trail is kept whole). Open records are always kept.
    pub fn audit_retention(mut self, retention: Option<Duration>) -> Self {
        self.audit_retention = retention;
        self
    }

    /// Loads or creates the installation, binds both listeners and starts serving.
    pub async fn start(self) -> Result<RunningServer, ServerError> {
        start(self).await
    }
}

/// A started server. Dropping it stops everything abruptly; [`shutdown`](Self::shutdown) stops
/// gracefully.
pub struct RunningServer {
    api_url: String,
    api_addr: SocketAddr,
    gateway_addr: SocketAddr,
    admin_token: Option<String>,
    ca_fingerprint: [u8; 32],
    lease_public_key: Vec<u8>,
    stop: watch::Sender<bool>,
    api_task: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    gateway: Option<EmbeddedGateway>,
    audit_task: Option<JoinHandle<()>>,
    /// What another gateway of this installation needs (see [`RunningServer::start_gateway`]).
    kit: Option<GatewayKit>,
    /// Asked by the readiness probe.
    store: Arc<dyn Store>,
}

/// Another gateway started by [`RunningServer::start_gateway`], registered like the first.
pub struct ExtraGateway(EmbeddedGateway);

impl std::fmt::Debug for ExtraGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraGateway")
            .field("address", &self.0.address)
            .finish_non_exhaustive()
    }
}

impl ExtraGateway {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.gateway.local_addr()
    }

    /// Stops it and withdraws it from the gateways offered to clients at once.
    pub async fn stop(self) {
        self.0.stop(true).await;
    }

    /// Stops it as a crash would: no goodbye, its registration stays until it goes stale.
    pub async fn kill(self) {
        self.0.stop(false).await;
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("api_url", &self.api_url)
            .field("api_addr", &self.api_addr)
            .field("gateway_addr", &self.gateway_addr)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The URL clients use: the public URL if one was given, else `https://<bound address>`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The address the API is bound to.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The address the gateway is bound to.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// The first admin's token, only on the start that created the installation. It is not
    /// stored anywhere: show it once.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// SHA-256 of the CA certificate's DER, as tokens carry it.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.ca_fingerprint
    }

    /// The Ed25519 public key leases are signed with (for gateways running elsewhere).
    pub fn lease_public_key(&self) -> &[u8] {
        &self.lease_public_key
    }

    /// What `/readyz` asks: whether the store answers a real query within
    /// [`STORE_PROBE_TIMEOUT`] (the keys are loaded: the server would not run otherwise).
    pub fn readiness(&self) -> Arc<dyn crate::diag::Readiness> {
        Arc::new(StoreReadiness(self.store.clone()))
    }

    /// Starts another gateway of this installation on `listen` (port 0 picks one), registered
    /// under `name` and offered to clients like the first. Stop it with
    /// [`ExtraGateway::stop`] or [`ExtraGateway::kill`].
    pub async fn start_gateway(
        &self,
        name: &str,
        listen: SocketAddr,
    ) -> Result<ExtraGateway, ServerError> {
        let kit = self
            .kit
            .clone()
            .ok_or_else(|| ServerError::Config("the server is shutting down".into()))?;
        let bind = |source| ServerError::Bind {
            what: "gateway",
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let gateway = kit
            .start_gateway(name, listener, addr.to_string(), addr.ip().to_string())
            .await?;
        Ok(ExtraGateway(gateway))
    }

    /// Stops accepting, lets in-flight API requests finish (up to 10 s), then stops the gateway.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(task) = self.api_task.take() {
            let bound = SHUTDOWN_DRAIN + Duration::from_secs(1);
            if tokio::time::timeout(bound, task).await.is_err() {
                tracing::warn!("the API did not stop in time");
            }
        }
        // Open connections run on for the gateway's drain time, then are told to close.
        let drain = self.kit.as_ref().map_or(Duration::ZERO, |kit| kit.drain);
        if let Some(gateway) = self.gateway.take()
            && tokio::time::timeout(drain + SHUTDOWN_DRAIN, gateway.stop(false))
                .await
                .is_err()
        {
            tracing::warn!("the gateway did not stop in time");
        }
        // The writer ends once the gateways' connections have ended and its queue is written.
        self.kit = None;
        if let Some(task) = self.audit_task.take()
            && tokio::time::timeout(SHUTDOWN_DRAIN, task).await.is_err()
        {
            tracing::warn!("the audit trail was not written completely before shutdown");
        }
        tracing::info!("sdm-server stopped");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.api_task.take() {
            task.abort();
        }
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

/// How long the readiness probe waits for the store.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct StoreReadiness(Arc<dyn Store>);

#[async_trait::async_trait]
impl crate::diag::Readiness for StoreReadiness {
    async fn failing(&self) -> Vec<String> {
        // The revocation epoch: one small row, read on every gateway poll anyway.
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, self.0.revocation_epoch()).await {
            Ok(Ok(_)) => Vec::new(),
            Ok(Err(e)) => vec![format!(
                "store: unreachable: {}",
                sdm_proto::error::one_line(&e)
            )],
            Err(_) => vec![format!(
                "store: no answer to a query within {} s",
                STORE_PROBE_TIMEOUT.as_secs()
            )],
        }
    }
}

/// `https://host[:port][/path]` → (the URL without a trailing `/`, host without brackets).
fn parse_public_url(url: &str) -> Result<(String, String), ServerError> {
    let bad = |why: &dyn std::fmt::Display| {
        ServerError::Config(format!(
            "public URL {url:?} {why}; give it as https://host:port"
        ))
    };
    let parsed = sdm_proto::addr::HttpsUrl::parse(url).map_err(|why| bad(&why))?;
    let url = url.trim_end_matches('/').to_owned();
    if url.len() > 2048 {
        return Err(bad(&"is longer than 2048 characters"));
    }
    Ok((url, parsed.host))
}

fn url_for(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// The names the leaf certificate is issued for.
fn certificate_names(
    public_host: Option<&str>,
    gateway_public_host: Option<&str>,
    bound: &[IpAddr],
) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let extra = public_host
        .into_iter()
        .chain(gateway_public_host)
        .map(str::to_owned)
        .chain(
            bound
                .iter()
                .filter(|ip| !ip.is_unspecified())
                .map(IpAddr::to_string),
        );
    for name in extra {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

async fn start(b: ServerBuilder) -> Result<RunningServer, ServerError> {
    let data_dir = b.data_dir.clone().ok_or_else(|| {
        ServerError::Config("no data directory given (sdm-server serve --data-dir DIR)".into())
    })?;
    if b.lease_ttl < LEASE_TTL_RANGE.0 || b.lease_ttl > LEASE_TTL_RANGE.1 {
        return Err(ServerError::Config(format!(
            "lease TTL of {} s is out of range ({} s to {} s)",
            b.lease_ttl.as_secs(),
            LEASE_TTL_RANGE.0.as_secs(),
            LEASE_TTL_RANGE.1.as_secs()
        )));
    }
    if b.api_connections_per_source == 0 {
        return Err(ServerError::Config(
            "the API's connections per source must be at least 1".into(),
        ));
    }
    b.sessions.check(b.lease_ttl).map_err(ServerError::Config)?;
    if b.gateway_name.is_empty() || b.gateway_name.len() > 64 {
        return Err(ServerError::Config(
            "the gateway name must have 1 to 64 characters".into(),
        ));
    }
    let public = b.public_url.as_deref().map(parse_public_url).transpose()?;
    let gateway_public = b
        .gateway_public_addr
        .as_deref()
        .map(|a| {
            sdm_proto::addr::host_and_port(a).map_err(|why| {
                ServerError::Config(format!(
                    "gateway public address {a:?} {why}; give it as host:port"
                ))
            })
        })
        .transpose()?;
    let installation = Installation::open(&data_dir, b.database_url.clone()).await?;
    b.control_metrics.time_store(installation.store.as_ref());

    // The API listener: its address goes into the URL that tokens carry.
    let api_listener = TcpListener::bind(b.listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "API",
            addr: b.listen,
            source,
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            what: "API",
            addr: b.listen,
            source,
        })?;
    let api_url = match &public {
        Some((url, _)) => url.clone(),
        None => {
            if api_addr.ip().is_unspecified() {
                tracing::warn!(
                    "the API listens on all interfaces but no public URL is set: tokens will \
                     carry {}, which clients cannot reach; pass --public-url",
                    url_for(api_addr)
                );
            }
            url_for(api_addr)
        }
    };

    // The gateway's listener: its address goes into its registration.
    let gateway_listener = TcpListener::bind(b.gateway_listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "gateway",
            addr: b.gateway_listen,
            source,
        })?;
    let gateway_addr = gateway_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            what: "gateway",
            addr: b.gateway_listen,
            source,
        })?;
    let gateway_public_host = gateway_public.as_ref().map(|(host, _)| host.clone());
    let (address, server_name) = match (&b.gateway_public_addr, gateway_public) {
        (Some(text), Some((host, _))) => (text.clone(), host),
        _ => {
            if gateway_addr.ip().is_unspecified() {
                tracing::warn!(
                    "the gateway listens on all interfaces but no public address is set: clients \
                     will be sent to {gateway_addr}, which they cannot reach; pass \
                     --gateway-public-addr"
                );
            }
            (gateway_addr.to_string(), gateway_addr.ip().to_string())
        }
    };

    let admin_token = installation.bootstrap_admin(&api_url).await?;
    let Installation {
        store,
        ca,
        lease_signer,
        secret_box,
        ssh_ca,
    } = installation;
    let ca_fingerprint = ca.fingerprint();

    // The gateway, and the audit trail it writes through a background writer. It registers
    // with this process's control plane as a standalone gateway does with its own; the
    // registration brings the TLS leaf, which also serves the API (one leaf for both
    // listeners, renewed daily by the gateway's registration loop).
    let secret_box = Arc::new(secret_box);
    let (audit_writer, audit_task) =
        store_audit_writer(store.clone(), b.audit_policy, b.gateway_metrics.clone());
    let lease_public_key = lease_signer.public_key();
    let kit = GatewayKit {
        store: store.clone(),
        ca: ca.clone(),
        names: certificate_names(
            public.as_ref().map(|(_, host)| host.as_str()),
            gateway_public_host.as_deref(),
            &[b.listen.ip(), b.gateway_listen.ip()],
        ),
        lease_public_key: lease_public_key.clone(),
        directory: Arc::new(EmbeddedDirectory(StoreDirectory::new(
            store.clone(),
            secret_box.clone(),
            ssh_ca.clone(),
        ))),
        audit: Arc::new(audit_writer),
        handshake_timeout: b.gateway_handshake_timeout,
        drain: b.gateway_drain,
        metrics: b.gateway_metrics.clone(),
    };
    let gateway = kit
        .start_gateway(&b.gateway_name, gateway_listener, address, server_name)
        .await?;
    let tls_error = |e| ServerError::Keys(KeyError::Tls(e));
    let api_tls = tls::server_config(gateway.resolver.clone(), tls::ALPN_API).map_err(tls_error)?;

    let (stop, stop_rx) = watch::channel(false);
    let api_task = api::spawn(
        api_listener,
        api_tls,
        ApiConfig {
            store: store.clone(),
            signer: Arc::new(lease_signer),
            secrets: secret_box,
            api_url: api_url.clone(),
            ca,
            ssh_ca,
            lease_ttl: b.lease_ttl,
            sessions: b.sessions,
            connections_per_source: b.api_connections_per_source,
            metrics: b.control_metrics.clone(),
        },
        stop_rx,
        SHUTDOWN_DRAIN,
    );
    let mut background = vec![tokio::spawn(sweep_sessions(store.clone(), b.sessions))];
    if let Some(retention) = b.audit_retention {
        background.push(tokio::spawn(sweep_audit(store.clone(), retention)));
    }
    tracing::info!(
        api_url = %api_url,
        api_addr = %api_addr,
        gateway = %gateway.address,
        gateway_addr = %gateway_addr,
        data_dir = %data_dir.display(),
        "sdm-server is running"
    );
    Ok(RunningServer {
        api_url,
        api_addr,
        gateway_addr,
        admin_token,
        ca_fingerprint,
        lease_public_key,
        stop,
        api_task: Some(api_task),
        background,
        gateway: Some(gateway),
        audit_task: Some(audit_task),
        kit: Some(kit),
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert_eq!(
            parse_public_url("https://sdm.example.com:8443/").unwrap(),
            (
                "https://sdm.example.com:8443".into(),
                "sdm.example.com".into()
            )
        );
        assert_eq!(
            parse_public_url("https://[::1]:8443").unwrap().1,
            "::1".to_owned()
        );
        assert_eq!(
            parse_public_url("https://sdm.example.com").unwrap().1,
            "sdm.example.com"
        );
        for bad in [
            "http://x:1",
            "https://",
            "https://:8443",
            "https://u@x:1",
            "https://x:0",
            "https://x:port",
            "https://::1:8443",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn certificate_names_skip_unspecified_and_duplicates() {
        let names = certificate_names(
            Some("sdm.example.com"),
            Some("127.0.0.1"),
            &["0.0.0.0".parse().unwrap(), "10.0.0.5".parse().unwrap()],
        );
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "sdm.example.com",
                "10.0.0.5"
            ]
        );
    }
}
