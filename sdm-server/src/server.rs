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

use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::lease::LeaseVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::api::{self, ApiState};
use crate::control::sessions::sweep_sessions;
use crate::control::{GATEWAY_HEARTBEAT, SessionPolicy, StoreDirectory, store_audit_writer};
use crate::gateway::{AuditPolicy, AuditSink, Gateway, GatewayConfig};
use crate::keys::tls::{self, LeafResolver};
use crate::keys::{CertificateAuthority, KeyError, Keys, SECRET_KEY_ENV, SecretBox};
use crate::store::{
    AccountRecord, DatabaseUrl, GatewayRecord, PostgresStore, SqliteStore, Store, StoreError,
};
use sdm_proto::error::one_line;

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
pub const DEFAULT_API_CONNECTIONS_PER_SOURCE: usize = api::serve::DEFAULT_CONNECTIONS_PER_SOURCE;
/// Name of the first admin account.
pub const FIRST_ADMIN_NAME: &str = "admin";

const GATEWAY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown lets in-flight API requests finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How often the TLS leaf is reissued (it is valid for 90 days).
const LEAF_RENEWAL: Duration = Duration::from_secs(24 * 3600);
/// Setting that holds a value sealed with the credential-encryption key, to detect a wrong key.
const SECRET_KEY_CHECK: &str = "secret_key_check";
const SECRET_KEY_CHECK_TEXT: &str = "sdm secret key check v1";

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A builder setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The keys could not be loaded or created.
    #[error("cannot set up the server's keys")]
    Keys(#[source] KeyError),
    /// The database could not be opened.
    #[error("cannot open the database {}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL database could not be reached or set up.
    #[error("cannot use the PostgreSQL database {url}")]
    Postgres {
        /// Its URL, without the password.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The credential-encryption key is not the one the database was set up with.
    #[error(
        "the credential-encryption key does not match this database: restore the original \
         secret.key, or set {SECRET_KEY_ENV} to the key this installation was created with"
    )]
    SecretKeyMismatch,
    /// The lease-signing key is not the one the other control planes of a shared database use.
    #[error(
        "the lease-signing key in the data directory (lease.key) is not the one this \
         installation's other control planes use, so gateways would refuse the leases it signs: \
         copy lease.key from another control plane"
    )]
    LeaseKeyMismatch,
    /// The state could not be read or written during start.
    #[error("cannot {what}")]
    State {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen for the {what} on {addr} (is another sdm-server running?)")]
    Bind {
        /// `"API"` or `"gateway"`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A background task failed unexpectedly.
    #[error("an internal start-up task failed")]
    Task(#[source] tokio::task::JoinError),
}

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
            audit_policy: AuditPolicy::default(),
            api_connections_per_source: DEFAULT_API_CONNECTIONS_PER_SOURCE,
            sessions: SessionPolicy::default(),
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
    audit_policy: AuditPolicy,
    api_connections_per_source: usize,
    sessions: SessionPolicy,
}

impl ServerBuilder {
    /// Where keys and the database live (created with mode 0700 if missing). Required.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep the state in PostgreSQL (`postgres://user:password@host:port/dbname`) instead of
    /// `sdm.db` in the data directory, so that several control planes can share it. The keys
    /// still come from the data directory (or `SDM_SECRET_KEY`): every control plane on one
    /// database needs the same `ca.pem`, `ca.key`, `lease.key` and `secret.key`.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(DatabaseUrl::parse(url).map_err(|e| one_line(&e)));
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
    /// connections at once and close open ones after [`DEFAULT_GRACE`](crate::gateway::DEFAULT_GRACE)).
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
    gateway: Option<Gateway>,
    audit_task: Option<JoinHandle<()>>,
    /// What another gateway of this installation needs (see [`RunningServer::start_gateway`]).
    kit: Option<GatewayKit>,
}

/// The parts every gateway of one installation shares.
#[derive(Clone)]
struct GatewayKit {
    store: Arc<dyn Store>,
    tls: Arc<rustls::ServerConfig>,
    leases: LeaseVerifier,
    directory: Arc<dyn crate::gateway::Directory>,
    audit: Arc<dyn AuditSink>,
    handshake_timeout: Duration,
}

/// Another gateway started by [`RunningServer::start_gateway`], registered like the first.
pub struct ExtraGateway {
    gateway: Gateway,
    heartbeat: JoinHandle<()>,
    record: GatewayRecord,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ExtraGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraGateway")
            .field("name", &self.record.name)
            .field("address", &self.record.address)
            .finish()
    }
}

impl ExtraGateway {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// Stops it and withdraws it from the gateways offered to clients at once.
    pub async fn stop(mut self) {
        self.heartbeat.abort();
        self.record.last_seen = 0;
        if let Err(e) = self.store.upsert_gateway(self.record.clone()).await {
            tracing::warn!(error = %e, "could not withdraw the gateway");
        }
        self.gateway.shutdown().await;
    }

    /// Stops it as a crash would: no goodbye, its registration stays until it goes stale.
    pub async fn kill(self) {
        self.heartbeat.abort();
        self.gateway.shutdown().await;
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
        interrupt_left_open(kit.store.as_ref(), name).await?;
        let gateway = Gateway::start(GatewayConfig {
            name: name.to_owned(),
            listen,
            tls: kit.tls,
            leases: kit.leases,
            directory: kit.directory,
            audit: kit.audit,
            handshake_timeout: kit.handshake_timeout,
        })
        .await
        .map_err(|source| ServerError::Bind {
            what: "gateway",
            addr: listen,
            source,
        })?;
        let addr = gateway.local_addr();
        let record = GatewayRecord {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            address: addr.to_string(),
            server_name: addr.ip().to_string(),
            last_seen: sdm_proto::unix_now(),
        };
        let record =
            kit.store
                .upsert_gateway(record)
                .await
                .map_err(|source| ServerError::State {
                    what: "register the gateway",
                    source,
                })?;
        let heartbeat = tokio::spawn(heartbeat(kit.store.clone(), record.clone()));
        Ok(ExtraGateway {
            gateway,
            heartbeat,
            record,
            store: kit.store,
        })
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
        if let Some(gateway) = self.gateway.take()
            && tokio::time::timeout(SHUTDOWN_DRAIN, gateway.shutdown())
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

fn secret_key_from_env() -> Result<Option<String>, ServerError> {
    match std::env::var(SECRET_KEY_ENV) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ServerError::Config(format!(
            "{SECRET_KEY_ENV} is not valid text; it must be a base64 key"
        ))),
    }
}

/// The setting that records the lease-signing public key of the installation.
const LEASE_KEY_SETTING: &str = "keys.lease_public_key";

/// Control planes sharing a database must sign with one key. The first start records its
/// public key; a later start with another key is refused on a shared database. On an embedded
/// one (a single control plane) a lost and regenerated key simply replaces the record.
async fn check_lease_key(
    store: &dyn Store,
    public_key: &[u8],
    shared: bool,
) -> Result<(), ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    if store
        .put_setting_if_absent(LEASE_KEY_SETTING, public_key.to_vec())
        .await
        .map_err(state("record the lease key"))?
    {
        return Ok(());
    }
    let recorded = store
        .get_setting(LEASE_KEY_SETTING)
        .await
        .map_err(state("read the lease key"))?;
    if recorded.as_deref() == Some(public_key) {
        return Ok(());
    }
    if shared {
        return Err(ServerError::LeaseKeyMismatch);
    }
    tracing::warn!(
        "lease.key was replaced; leases signed with the old key are refused from now on"
    );
    store
        .set_setting(LEASE_KEY_SETTING, public_key.to_vec())
        .await
        .map_err(state("record the lease key"))
}

async fn check_secret_key(store: &dyn Store, secrets: &SecretBox) -> Result<(), ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    match store
        .get_setting(SECRET_KEY_CHECK)
        .await
        .map_err(state("read the key check"))?
    {
        Some(sealed) => match secrets.open(&sealed) {
            Ok(text) if text == SECRET_KEY_CHECK_TEXT => Ok(()),
            _ => Err(ServerError::SecretKeyMismatch),
        },
        None => {
            let sealed = secrets.seal(SECRET_KEY_CHECK_TEXT).map_err(|_| {
                ServerError::Config("cannot use the credential-encryption key".into())
            })?;
            let stored = store
                .put_setting_if_absent(SECRET_KEY_CHECK, sealed)
                .await
                .map_err(state("store the key check"))?;
            if stored {
                return Ok(());
            }
            // Another control plane sharing the database stored its check first: ours must
            // open it, never replace it.
            match store
                .get_setting(SECRET_KEY_CHECK)
                .await
                .map_err(state("read the key check"))?
                .map(|sealed| secrets.open(&sealed))
            {
                Some(Ok(text)) if text == SECRET_KEY_CHECK_TEXT => Ok(()),
                _ => Err(ServerError::SecretKeyMismatch),
            }
        }
    }
}

/// Creates the first admin account and returns its token, if there is no admin yet.
async fn bootstrap_admin(
    store: &dyn Store,
    api_url: &str,
    ca_fingerprint: [u8; 32],
) -> Result<Option<String>, ServerError> {
    let state = |what| move |source| ServerError::State { what, source };
    if store
        .count_admins()
        .await
        .map_err(state("count admin accounts"))?
        > 0
    {
        return Ok(None);
    }
    let now = sdm_proto::unix_now();
    let id = Uuid::new_v4();
    let mut name = FIRST_ADMIN_NAME.to_owned();
    for attempt in 0..2 {
        let (token, record) = api::new_token(api_url, ca_fingerprint, id, AccountKind::Admin, now)
            .map_err(|_| ServerError::Config("cannot generate the admin token".into()))?;
        let account = AccountRecord {
            id,
            name: name.clone(),
            kind: AccountKind::Admin,
            status: AccountStatus::Active,
            created_at: now,
        };
        match store.create_account(account, record).await {
            Ok(()) => {
                tracing::info!(account = %name, "created the first admin account");
                return Ok(Some(token.encode()));
            }
            // Another control plane sharing the database created the first admin meanwhile.
            Err(StoreError::Conflict { .. })
                if store
                    .count_admins()
                    .await
                    .map_err(state("count admin accounts"))?
                    > 0 =>
            {
                return Ok(None);
            }
            // A service account already has the name: use a distinct one.
            Err(StoreError::Conflict { .. }) if attempt == 0 => {
                name = format!("{FIRST_ADMIN_NAME}-{}", &id.simple().to_string()[..8]);
            }
            Err(source) => {
                return Err(ServerError::State {
                    what: "create the first admin account",
                    source,
                });
            }
        }
    }
    Ok(None)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ServerError::Task)?
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
    let secret_key_env = secret_key_from_env()?;

    // Keys and the database. Whether the installation exists already decides whether missing
    // keys may be created: for SQLite the database file tells, for PostgreSQL what it holds.
    let db_path = data_dir.join(crate::store::sqlite::FILE);
    let postgres = match b.database_url.clone() {
        Some(url) => {
            let url = url.map_err(|e| ServerError::Config(format!("--database-url: {e}")))?;
            let fail = |source| ServerError::Postgres {
                url: url.redacted(),
                source,
            };
            let store = PostgresStore::connect(&url).await.map_err(fail)?;
            let existing = store
                .get_setting(SECRET_KEY_CHECK)
                .await
                .map_err(fail)?
                .is_some()
                || store.count_admins().await.map_err(fail)? > 0;
            tracing::info!(database = %url, existing, "using PostgreSQL");
            Some((Arc::new(store) as Arc<dyn Store>, existing))
        }
        None => None,
    };
    let keys = {
        let data_dir = data_dir.clone();
        let db_path = db_path.clone();
        let existing_postgres = postgres.as_ref().map(|(_, existing)| *existing);
        blocking(move || {
            let existing = existing_postgres.unwrap_or_else(|| db_path.exists());
            Keys::load_or_create(&data_dir, existing, secret_key_env.as_deref())
                .map_err(ServerError::Keys)
        })
        .await?
    };
    let store: Arc<dyn Store> = match postgres {
        Some((store, _)) => store,
        None => {
            let db_path = db_path.clone();
            Arc::new(
                blocking(move || {
                    SqliteStore::open(&db_path).map_err(|source| ServerError::Database {
                        path: db_path.clone(),
                        source,
                    })
                })
                .await?,
            )
        }
    };
    let Keys {
        ca,
        lease_signer,
        secret_box,
    } = keys;
    check_secret_key(store.as_ref(), &secret_box).await?;
    let shared_store = b.database_url.is_some();
    check_lease_key(store.as_ref(), &lease_signer.public_key(), shared_store).await?;

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

    // TLS: one leaf for both listeners, reissued daily.
    let names = certificate_names(
        public.as_ref().map(|(_, host)| host.as_str()),
        gateway_public.as_ref().map(|(host, _)| host.as_str()),
        &[b.listen.ip(), b.gateway_listen.ip()],
    );
    let ca = Arc::new(ca);
    let leaf = ca.issue_leaf(&names).map_err(ServerError::Keys)?;
    let resolver = LeafResolver::new(leaf).map_err(ServerError::Keys)?;
    let api_tls = tls::server_config(resolver.clone(), tls::ALPN_API).map_err(ServerError::Keys)?;
    let gateway_tls =
        tls::server_config(resolver.clone(), tls::ALPN_GATEWAY).map_err(ServerError::Keys)?;
    let ca_fingerprint = ca.fingerprint();

    let admin_token = bootstrap_admin(store.as_ref(), &api_url, ca_fingerprint).await?;

    // The gateway, and the audit trail it writes through a background writer.
    let secret_box = Arc::new(secret_box);
    let (audit_writer, audit_task) = store_audit_writer(store.clone(), b.audit_policy);
    let audit_writer: Arc<dyn AuditSink> = Arc::new(audit_writer);
    let lease_public_key = lease_signer.public_key();
    // Connections this gateway carried when its process last stopped without ending them (a
    // crash, a kill) are over: close their records before it serves again.
    interrupt_left_open(store.as_ref(), &b.gateway_name).await?;
    let kit = GatewayKit {
        store: store.clone(),
        tls: gateway_tls,
        leases: LeaseVerifier::new([lease_public_key.clone()]),
        directory: Arc::new(StoreDirectory::new(store.clone(), secret_box.clone())),
        audit: audit_writer.clone(),
        handshake_timeout: b.gateway_handshake_timeout,
    };
    let gateway = Gateway::start(GatewayConfig {
        name: b.gateway_name.clone(),
        listen: b.gateway_listen,
        tls: kit.tls.clone(),
        leases: kit.leases.clone(),
        directory: kit.directory.clone(),
        audit: kit.audit.clone(),
        handshake_timeout: kit.handshake_timeout,
    })
    .await
    .map_err(|source| ServerError::Bind {
        what: "gateway",
        addr: b.gateway_listen,
        source,
    })?;
    let gateway_addr = gateway.local_addr();
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
    let registration = GatewayRecord {
        id: Uuid::new_v4(),
        name: b.gateway_name.clone(),
        address,
        server_name,
        last_seen: sdm_proto::unix_now(),
    };
    let registered = store
        .upsert_gateway(registration.clone())
        .await
        .map_err(|source| ServerError::State {
            what: "register the gateway",
            source,
        })?;

    let (stop, stop_rx) = watch::channel(false);
    let state = Arc::new(ApiState {
        store: store.clone(),
        signer: Arc::new(lease_signer),
        secrets: secret_box,
        api_url: api_url.clone(),
        ca_fingerprint,
        lease_ttl: b.lease_ttl,
        sessions: b.sessions,
        throttle: api::LoginThrottle::default(),
        ca: ca.clone(),
        gateway_tags: Default::default(),
    });
    let api_task = tokio::spawn(api::serve::serve(
        api_listener,
        api_tls,
        api::router(state),
        stop_rx,
        SHUTDOWN_DRAIN,
        b.api_connections_per_source,
    ));
    let background = vec![
        tokio::spawn(heartbeat(store.clone(), registration)),
        tokio::spawn(renew_leaf(ca.clone(), resolver, names)),
        tokio::spawn(sweep_sessions(store.clone(), b.sessions)),
    ];
    tracing::info!(
        api_url = %api_url,
        api_addr = %api_addr,
        gateway = %registered.address,
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
    })
}

/// Closes the audit records that the gateway named `name` left open when its process last
/// stopped without ending them; called before it serves, when none of them can be live.
async fn interrupt_left_open(store: &dyn Store, name: &str) -> Result<(), ServerError> {
    let closed = store
        .interrupt_connections(name, sdm_proto::unix_now())
        .await
        .map_err(|source| ServerError::State {
            what: "close the audit records the gateway left open when it last stopped",
            source,
        })?;
    if closed > 0 {
        tracing::warn!(
            gateway = %name,
            closed,
            "the gateway stopped last time with connections open (a crash or a kill); their \
             audit records are closed as interrupted"
        );
    }
    Ok(())
}

/// Keeps the gateway's registration fresh so that clients are offered it.
async fn heartbeat(store: Arc<dyn Store>, mut record: GatewayRecord) {
    let mut interval = tokio::time::interval(GATEWAY_HEARTBEAT);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        record.last_seen = sdm_proto::unix_now();
        if let Err(e) = store.upsert_gateway(record.clone()).await {
            tracing::warn!(error = %e, "could not refresh the gateway's registration");
        }
    }
}

/// Reissues the TLS leaf daily, so it never gets close to its 90-day expiry.
async fn renew_leaf(
    ca: Arc<CertificateAuthority>,
    resolver: Arc<LeafResolver>,
    names: Vec<String>,
) {
    let mut interval = tokio::time::interval(LEAF_RENEWAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let issued = ca
            .issue_leaf(&names)
            .and_then(|leaf| resolver.replace(leaf));
        match issued {
            Ok(()) => tracing::info!("renewed the TLS certificate"),
            Err(e) => tracing::warn!(error = %e, "could not renew the TLS certificate"),
        }
    }
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
