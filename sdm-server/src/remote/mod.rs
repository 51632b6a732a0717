//! [`StandaloneGateway`]: a gateway with no database of its own (`sdm-server gateway`).
//!
//! It runs the same gateway code as `sdm-server serve`, with a [`RemoteDirectory`] that asks the
//! control plane where leases go and an audit uploader for the audit trail, both
//! over the `/v1/gateway/…` routes with a gateway token and the pinned CA. At start it registers
//! (and receives the lease verification keys and a TLS certificate issued by the installation's
//! CA for its public address); then it heartbeats so that clients are offered it, polls the
//! revocation epoch every second, renews its certificate daily, and withdraws when stopped.
//! Several control plane URLs may be given: the next is used when one fails.
//!
//! While no control plane answers, it rides the outage out: leases it has verified are served on
//! the last answer for their session (see [`RemoteDirectory`]), and its audit trail is spooled
//! on its own disk (see [`Spool`]) and uploaded, in order, when a control plane answers again.
//!
//! ```no_run
//! # async fn run() -> Result<(), sdm_server::remote::StandaloneError> {
//! use sdm_server::remote::{StandaloneConfig, StandaloneGateway};
//! let config = StandaloneConfig::new(std::env::var("SDM_GATEWAY_TOKEN").unwrap_or_default())
//!     .control_planes(["https://cp-a.internal:8443", "https://cp-b.internal:8443"])
//!     .listen("0.0.0.0:8444".parse().unwrap())
//!     .public_addr("gw-eu-1.internal:8444");
//! let gateway = StandaloneGateway::start(config).await?;
//! // … until asked to stop:
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdm_gateway::registration::{self, RegistrationStatus, Registry, RegistryError, Served};
use sdm_gateway::{AuditPolicy, DEFAULT_DRAIN, Gateway, GatewayConfig, GatewayMetrics};
use sdm_proto::gateway::RegisterGateway;
use sdm_proto::server_tls::{ALPN_GATEWAY, LeafResolver, server_config};
use sdm_proto::{Token, TokenKind};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

mod args;
mod audit;
mod client;
mod directory;
mod registry;
mod spool;

pub use args::{AuditArgs, GatewayArgs, parse_duration};
pub use directory::RemoteDirectory;
pub use spool::{DEFAULT_SPOOL_MAX_BYTES, Spool, SpoolError};

use client::ControlPlane;
use registry::RemoteRegistry;

/// How long a client has to finish TLS and the HELLO, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for a control plane to answer, by default.
pub const DEFAULT_REGISTER_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on each step of a clean stop (the drain of open connections comes on top).
const STOP_STEP: Duration = Duration::from_secs(10);

/// How to run a standalone gateway.
#[derive(Clone)]
pub struct StandaloneConfig {
    token: String,
    control_planes: Vec<String>,
    listen: SocketAddr,
    public_addr: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    handshake_timeout: Duration,
    register_timeout: Duration,
    audit_policy: AuditPolicy,
    audit_spool: Option<PathBuf>,
    audit_spool_max: u64,
    drain: Duration,
    metrics: GatewayMetrics,
}

impl std::fmt::Debug for StandaloneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneConfig")
            .field("token", &"<redacted>")
            .field("control_planes", &self.control_planes)
            .field("listen", &self.listen)
            .field("public_addr", &self.public_addr)
            .field("tags", &self.tags)
            .field("audit_spool", &self.audit_spool)
            .finish_non_exhaustive()
    }
}

impl StandaloneConfig {
    /// A gateway authenticating with this gateway token (`sdm_gw_…`), listening on
    /// `127.0.0.1:8444`, talking to the control plane URL the token carries.
    pub fn new(token: impl Into<String>) -> StandaloneConfig {
        StandaloneConfig {
            token: token.into(),
            control_planes: Vec::new(),
            listen: crate::DEFAULT_GATEWAY_LISTEN,
            public_addr: None,
            tags: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            register_timeout: DEFAULT_REGISTER_TIMEOUT,
            audit_policy: AuditPolicy::default(),
            audit_spool: None,
            audit_spool_max: DEFAULT_SPOOL_MAX_BYTES,
            drain: DEFAULT_DRAIN,
            metrics: GatewayMetrics::default(),
        }
    }

    /// Count into `metrics` (what `--diag-listen` serves at `/metrics`); by default the
    /// counts go nowhere.
    pub fn metrics(mut self, metrics: &crate::diag::Metrics) -> Self {
        self.metrics = metrics.gateway();
        self
    }

    /// Control plane URLs (`https://host:port`), tried in order; the next is used when one
    /// fails. Default: the URL in the token.
    pub fn control_planes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.control_planes = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Address to listen on (port 0 picks a free one).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The `host:port` clients connect to, when it differs from the bound address; its host is
    /// the name the gateway's certificate is issued for.
    pub fn public_addr(mut self, addr: impl Into<String>) -> Self {
        self.public_addr = Some(addr.into());
        self
    }

    /// The tags to serve under (they must be among those the gateway's token allows). Default:
    /// all of them.
    pub fn tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = Some(tags);
        self
    }

    /// How long a client has to finish TLS and the HELLO (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long start-up waits for a control plane to answer (default 120 s).
    pub fn register_timeout(mut self, timeout: Duration) -> Self {
        self.register_timeout = timeout;
        self
    }

    /// What the gateway does when it cannot upload its audit trail (default: refuse new
    /// connections at once and close open ones after [`DEFAULT_GRACE`](sdm_gateway::DEFAULT_GRACE)).
    pub fn audit_policy(mut self, policy: AuditPolicy) -> Self {
        self.audit_policy = policy;
        self
    }

    /// The directory that keeps the audit trail while no control plane takes it (created 0700;
    /// one per gateway process). Default: [`default_spool_dir`].
    pub fn audit_spool(mut self, dir: impl Into<PathBuf>) -> Self {
        self.audit_spool = Some(dir.into());
        self
    }

    /// Bound on the spool's size in bytes (default 1 GiB); when it is full, new connections are
    /// refused until a control plane takes the spooled events.
    pub fn audit_spool_max(mut self, bytes: u64) -> Self {
        self.audit_spool_max = bytes;
        self
    }

    /// At shutdown, how long open connections may run on before they are closed (default 10 s).
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }
}

/// Where a standalone gateway spools its audit trail unless told: `$STATE_DIRECTORY/audit-spool`
/// under systemd, else `$XDG_STATE_HOME/sdm/gateway-audit-spool`, else
/// `~/.local/state/sdm/gateway-audit-spool`.
pub fn default_spool_dir() -> Result<PathBuf, String> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = var("STATE_DIRECTORY") {
        // systemd may list several, separated by colons: the first is ours.
        let first = state
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return Ok(PathBuf::from(first).join("audit-spool"));
    }
    let base = match (var("XDG_STATE_HOME"), var("HOME")) {
        (Some(state), _) => PathBuf::from(state),
        (None, Some(home)) => PathBuf::from(home).join(".local/state"),
        (None, None) => {
            return Err("no HOME to put the audit spool in; give --audit-spool DIR".into());
        }
    };
    Ok(base.join("sdm/gateway-audit-spool"))
}

/// A standalone gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandaloneError {
    /// A setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A control plane answered and refused the registration (bad token, tags not allowed, …).
    #[error("the control plane refused to register this gateway: {0}")]
    Refused(String),
    /// No control plane answered in time.
    #[error("no control plane answered within {} s: {why}", after.as_secs())]
    Unreachable {
        /// How long start-up waited.
        after: Duration,
        /// What happened at each control plane.
        why: String,
    },
    /// The control plane's answer could not be used.
    #[error("the control plane's registration answer is unusable: {0}")]
    Registration(String),
    /// The audit spool cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The listener could not be bound.
    #[error("cannot listen for the gateway on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running standalone gateway.
pub struct StandaloneGateway {
    name: String,
    address: String,
    local_addr: SocketAddr,
    registry: Arc<RemoteRegistry>,
    gateway: Option<Gateway>,
    tasks: Vec<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
    drain_task: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    drain: Duration,
    status: RegistrationStatus,
}

impl std::fmt::Debug for StandaloneGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneGateway")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl StandaloneGateway {
    /// Registers with the control plane, binds and starts serving.
    pub async fn start(config: StandaloneConfig) -> Result<StandaloneGateway, StandaloneError> {
        let token = Token::parse(&config.token)
            .map_err(|e| StandaloneError::Config(format!("the gateway token is not valid: {e}")))?;
        if token.kind != TokenKind::Gateway {
            return Err(StandaloneError::Config(
                "this is not a gateway token; sdm-server gateway needs a gateway token \
                 (sdm_gw_…), which an admin creates with POST /v1/admin/gateways"
                    .into(),
            ));
        }
        let urls = if config.control_planes.is_empty() {
            vec![token.api_url.clone()]
        } else {
            config.control_planes.clone()
        };
        let control_plane =
            Arc::new(ControlPlane::new(&urls, &token).map_err(StandaloneError::Config)?);
        let bind = |source| StandaloneError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        let address = match &config.public_addr {
            Some(a) => a.clone(),
            None if local_addr.ip().is_unspecified() => {
                return Err(StandaloneError::Config(format!(
                    "the gateway listens on all interfaces ({local_addr}); give the address \
                     clients connect to with --public-addr HOST:PORT"
                )));
            }
            None => local_addr.to_string(),
        };
        let mut request = RegisterGateway {
            name: None,
            address: address.clone(),
            tags: config.tags.clone(),
            version: format!("sdm-server/{}", env!("CARGO_PKG_VERSION")),
            // This process serves nothing yet: records its name left open are an earlier one's.
            starting: true,
        };
        let spool_dir = match &config.audit_spool {
            Some(dir) => dir.clone(),
            None => default_spool_dir().map_err(StandaloneError::Config)?,
        };
        let spool = Arc::new(Spool::open(&spool_dir, config.audit_spool_max)?);
        // Before registering: registering closes the records this gateway left open, and the
        // spool may hold their real ends (or starts).
        upload_left_over(&control_plane, &spool, config.register_timeout).await?;
        let registry = Arc::new(RemoteRegistry(control_plane.clone()));
        let registration =
            registration::register(registry.as_ref(), &request, config.register_timeout)
                .await
                .map_err(|e| match e {
                    RegistryError::Refused(message) => StandaloneError::Refused(message),
                    RegistryError::Unavailable(why) => StandaloneError::Unreachable {
                        after: config.register_timeout,
                        why,
                    },
                })?;
        // Heartbeats and renewals come from a process that serves: they must close nothing.
        request.starting = false;
        let unusable = StandaloneError::Registration;
        let resolver = LeafResolver::new(registration::leaf_of(&registration).map_err(unusable)?)
            .map_err(|e| unusable(e.to_string()))?;
        let tls =
            server_config(resolver.clone(), ALPN_GATEWAY).map_err(|e| unusable(e.to_string()))?;
        let leases = registration::verifier_of(&registration.lease_keys).map_err(unusable)?;
        let directory = Arc::new(RemoteDirectory::new(
            control_plane.clone(),
            registration.name.clone(),
        ));
        let spooled = Arc::new(Notify::new());
        let (audit, audit_task) = audit::audit_uploader(
            control_plane.clone(),
            config.audit_policy,
            spool.clone(),
            spooled.clone(),
            config.metrics.clone(),
        );
        let (stop_drain, drain_stop) = watch::channel(false);
        let drain_task = tokio::spawn(audit::drain(
            control_plane.clone(),
            spool,
            spooled,
            drain_stop,
        ));
        let gateway = Gateway::start_on(
            listener,
            GatewayConfig {
                name: registration.name.clone(),
                listen: local_addr,
                tls,
                leases,
                directory,
                audit: Arc::new(audit),
                handshake_timeout: config.handshake_timeout,
                drain: config.drain,
                metrics: config.metrics.clone(),
            },
        )
        .map_err(bind)?;
        let every = Duration::from_secs(registration.heartbeat_secs.clamp(1, 60));
        let status = RegistrationStatus::default();
        let served = Served {
            resolver,
            lease_keys: gateway.lease_keys(),
            named_keys: registration.lease_keys.clone(),
            metrics: config.metrics.clone(),
            status: status.clone(),
        };
        let tasks = vec![registration::keep_registered(
            registry.clone(),
            request,
            every,
            served,
        )];
        tracing::info!(
            name = %registration.name,
            address = %address,
            local_addr = %local_addr,
            tags = ?registration.tags,
            audit_spool = %spool_dir.display(),
            control_plane = %control_plane.current_url(),
            "gateway registered with the control plane"
        );
        Ok(StandaloneGateway {
            name: registration.name,
            address,
            local_addr,
            registry,
            gateway: Some(gateway),
            tasks,
            audit_task: Some(audit_task),
            drain_task: Some((stop_drain, drain_task)),
            drain: config.drain,
            status,
        })
    }

    /// The name of its identity (clients and audit records show it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address clients are sent to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What `/readyz` asks: whether the last heartbeat reached a control plane.
    pub fn readiness(&self) -> Arc<dyn crate::diag::Readiness> {
        Arc::new(Heartbeats(self.status.clone()))
    }

    /// Withdraws from the gateways offered to clients, stops accepting, lets open connections
    /// finish for the drain time and closes the rest with the protocol's message, then makes the
    /// rest of the audit trail durable: uploaded, or else spooled for the next start (each step
    /// bounded).
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        match tokio::time::timeout(STOP_STEP, self.registry.withdraw()).await {
            Ok(Ok(())) => tracing::info!(name = %self.name, "withdrew from the control plane"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not withdraw; clients skip this gateway until its registration goes stale")
            }
            Err(_) => tracing::warn!(
                "withdrawing timed out; clients skip this gateway until its registration goes stale"
            ),
        }
        if let Some(gateway) = self.gateway.take()
            && tokio::time::timeout(self.drain + STOP_STEP, gateway.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("the gateway did not stop in time");
        }
        if let Some(task) = self.audit_task.take()
            && tokio::time::timeout(STOP_STEP, task).await.is_err()
        {
            tracing::warn!(
                "the audit trail was neither uploaded nor spooled completely before the stop"
            );
        }
        if let Some((stop, task)) = self.drain_task.take() {
            stop.send_replace(true);
            if tokio::time::timeout(STOP_STEP, task).await.is_err() {
                tracing::warn!(
                    "uploading the spooled audit trail was cut short; the rest is uploaded at the next start"
                );
            }
        }
        tracing::info!(name = %self.name, "gateway stopped");
    }
}

impl Drop for StandaloneGateway {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some((stop, _)) = &self.drain_task {
            stop.send_replace(true);
        }
    }
}

struct Heartbeats(RegistrationStatus);

#[async_trait::async_trait]
impl crate::diag::Readiness for Heartbeats {
    async fn failing(&self) -> Vec<String> {
        match self.0.failure() {
            None => Vec::new(),
            Some(why) => vec![format!(
                "registration: no control plane answered the last heartbeat: {why}"
            )],
        }
    }
}

/// Uploads what an earlier process of this gateway left in the spool, retrying until a control
/// plane takes it or `timeout` passes.
async fn upload_left_over(
    control_plane: &client::SharedControlPlane,
    spool: &Arc<Spool>,
    timeout: Duration,
) -> Result<(), StandaloneError> {
    if spool.is_empty() {
        return Ok(());
    }
    let (batches, bytes) = spool.usage();
    tracing::info!(
        batches,
        bytes,
        "uploading the audit trail an earlier run spooled"
    );
    let deadline = Instant::now() + timeout;
    let mut failures = 0u32;
    loop {
        match audit::upload_spooled(control_plane, spool).await {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= deadline => {
                return Err(StandaloneError::Unreachable {
                    after: timeout,
                    why: format!("the spooled audit trail could not be uploaded: {why}"),
                });
            }
            Err(_) => {
                let wait = sdm_proto::backoff::jittered(
                    failures,
                    Duration::from_millis(500),
                    Duration::from_secs(5),
                );
                failures = failures.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
