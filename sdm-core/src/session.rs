//! A logged-in session: the entry point of the library.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sdm_proto::Token;
use sdm_proto::api::{LoginRequest, LoginResponse, LogoutRequest, Settings, routes};
use uuid::Uuid;

use crate::account::Account;
use crate::api::ApiClient;
use crate::dial::DialStream;
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::Connector;
use crate::listener::LocalListener;
use crate::observer::TunnelObserver;
use crate::resource::{Resource, resolve};
use crate::session_core::SessionCore;
use crate::status::{ConnectionState, ResourceStatus, Status, Unreachable};
use crate::tunnel::{Tunnel, TunnelShared};

/// Environment variables read by [`Session::from_env`], in order.
pub const TOKEN_ENV_VARS: [&str; 2] = ["SDM_ADMIN_TOKEN", "SDM_SERVICE_TOKEN"];
/// Environment variable that overrides the control plane URL carried by the token.
pub const API_URL_ENV_VAR: &str = "SDM_API_URL";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const GATEWAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_WARM_CONNECTIONS: usize = 2;

/// Options for [`Session::connect_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Local port to listen on; default: the resource's port override, else a free port.
    pub port: Option<u16>,
    /// Local address to listen on; default 127.0.0.1. Anything but loopback exposes the
    /// resource to other machines and must be asked for explicitly.
    pub bind: Option<IpAddr>,
    /// Listen on a Unix socket at this path instead of TCP (socket 0600; its directory is
    /// created 0700, and an existing directory others can reach is refused).
    pub unix_socket: Option<PathBuf>,
    /// Listen on a Unix socket at a path sdm picks (when `unix_socket` gives none): a new
    /// directory of mode 0700 under `$XDG_RUNTIME_DIR/sdm`, else under `sdm-UID` in the
    /// temporary directory, removed when the tunnel closes. A postgres resource's socket is
    /// named `.s.PGSQL.5432` in it, so libpq takes the directory as `host` and 5432 as `port`.
    pub private_unix_socket: bool,
    /// Refuse local connections from other OS users (Linux; a TCP peer's owner is asked of the
    /// kernel by its four-tuple, a Unix-socket peer's from its credentials).
    pub same_user_only: bool,
}

impl ConnectOptions {
    /// Listen on this local port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Listen on this local address instead of 127.0.0.1.
    pub fn bind(mut self, addr: IpAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Listen on a Unix socket at `path` instead of a TCP port.
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix_socket = Some(path.into());
        self
    }

    /// Listen on a Unix socket at a path sdm picks (see
    /// [`private_unix_socket`](Self::private_unix_socket)) instead of a TCP port.
    pub fn private_unix_socket(mut self) -> Self {
        self.private_unix_socket = true;
        self
    }

    /// Accept local connections only from processes of this OS user.
    pub fn same_user_only(mut self) -> Self {
        self.same_user_only = true;
        self
    }
}

/// Configures a login. Obtain with [`Session::builder`].
#[derive(Clone, Default)]
pub struct SessionBuilder {
    token: Option<String>,
    api_url: Option<String>,
    labels: BTreeMap<String, String>,
    timeout: Option<Duration>,
    warm_connections: Option<usize>,
    observer: Option<Arc<dyn TunnelObserver>>,
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("api_url", &self.api_url)
            .field("labels", &self.labels)
            .field("timeout", &self.timeout)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl SessionBuilder {
    /// The service account token (default: `SDM_ADMIN_TOKEN`, then `SDM_SERVICE_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Overrides the control plane URL in the token (default: `SDM_API_URL`, then the token's).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Job labels recorded with every connection of the session (e.g. `dag_id`, `task_id`).
    pub fn labels<K: Into<String>, V: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Time limit of each control plane call (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gateway connections each tunnel keeps ready so that new local connections skip the TLS
    /// handshake (default 2; 0 turns it off). Connections whose stream ended cleanly come back
    /// for the next local connection, up to four times this many.
    pub fn warm_connections(mut self, n: usize) -> Self {
        self.warm_connections = Some(n);
        self
    }

    /// Tells `observer` what this session's tunnels do (for metrics); by default nobody is
    /// told, at no cost.
    pub fn observer(mut self, observer: Arc<dyn TunnelObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Logs in.
    pub async fn login(self) -> Result<Session> {
        let token_text = match self.token {
            Some(t) => t,
            None => token_from_env()?,
        };
        let token = Token::parse(&token_text).map_err(|e| {
            Error::new(ErrorKind::InvalidToken, format!("invalid token: {e}")).with_source(e)
        })?;
        let url_override = self.api_url.or_else(|| {
            std::env::var(API_URL_ENV_VAR)
                .ok()
                .filter(|u| !u.trim().is_empty())
        });
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::invalid_argument("timeout must be more than zero"));
        }
        let api = ApiClient::new(&token, url_override.as_deref(), timeout)?;
        let connector = Connector::new(token.ca_fingerprint, GATEWAY_CONNECT_TIMEOUT.min(timeout))?;
        let request = LoginRequest {
            labels: self.labels,
            client: format!("sdm-core/{}", env!("CARGO_PKG_VERSION")),
        };
        let response: LoginResponse = api.post(routes::LOGIN, &request).await?;
        tracing::debug!(account = %response.account.name, session = %response.session_id, "logged in");
        Ok(Session {
            core: Arc::new(SessionCore::new(
                api,
                connector,
                request,
                response,
                self.warm_connections.unwrap_or(DEFAULT_WARM_CONNECTIONS),
                self.observer,
            )),
            tunnels: Arc::default(),
        })
    }
}

fn token_from_env() -> Result<String> {
    TOKEN_ENV_VARS
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidToken,
                "no token given and neither SDM_ADMIN_TOKEN nor SDM_SERVICE_TOKEN is set",
            )
        })
}

/// A logged-in service account: lists its resources and opens tunnels to them.
///
/// Cheap to clone; clones share the session. Tunnels keep the session alive while they are open.
#[derive(Clone)]
pub struct Session {
    core: Arc<SessionCore>,
    /// The tunnels opened by this session (and its clones), for `status` and `disconnect`.
    tunnels: Arc<Mutex<Vec<Weak<TunnelShared>>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.core.account.name)
            .field("id", &self.core.id())
            .field("api_url", &self.core.api.url())
            .finish()
    }
}

impl Session {
    /// Logs in with a service account token; everything else comes from the token.
    pub async fn login(token: &str) -> Result<Session> {
        Session::builder().token(token).login().await
    }

    /// Logs in with the token in `SDM_ADMIN_TOKEN` (or `SDM_SERVICE_TOKEN`).
    pub async fn from_env() -> Result<Session> {
        Session::builder().login().await
    }

    /// A login with options (API URL override, job labels, timeouts).
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The account logged in.
    pub fn account(&self) -> &Account {
        &self.core.account
    }

    /// The organisation's settings as of login (for example whether resources with a fixed port
    /// should be connected right away).
    pub fn settings(&self) -> Settings {
        self.core.settings
    }

    /// The session id (audit records carry it). It changes when the server ended the session
    /// (it was idle or old for longer than the server allows, or the account's session limit
    /// was reached by its other logins) and the session logged in again on its own.
    pub fn id(&self) -> Uuid {
        self.core.id()
    }

    /// The control plane URL in use.
    pub fn api_url(&self) -> &str {
        self.core.api.url()
    }

    /// The resources granted to the account, sorted by name.
    pub async fn list_resources(&self) -> Result<Vec<Resource>> {
        self.core.check_open()?;
        self.core.fetch_resources().await
    }

    /// The granted resource `name` picks, by the rules of [`connect`](Self::connect): an exact
    /// name or id, else a unique case-insensitive name, else a unique substring. Reads a fresh
    /// list. Fails with [`ErrorKind::ResourceNotFound`] or [`ErrorKind::AmbiguousResource`]
    /// (with [`Error::candidates`]).
    pub async fn resolve(&self, name: &str) -> Result<Resource> {
        self.core.check_open()?;
        let resources = self.core.fetch_resources().await?;
        resolve(&resources, name).cloned()
    }

    /// Opens a tunnel to the resource `name` (an exact name, else a unique substring): a local
    /// listener on 127.0.0.1 that any driver can connect to.
    pub async fn connect(&self, name: &str) -> Result<Tunnel> {
        self.connect_with(name, ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with a chosen local port or address.
    pub async fn connect_with(&self, name: &str, options: ConnectOptions) -> Result<Tunnel> {
        self.core.check_open()?;
        // A fresh list: a tunnel lives long, so it must not start from a stale grant.
        let resources = self.core.fetch_resources().await?;
        let resource = resolve(&resources, name)?.clone();
        let slot = self.core.lease_slot(resource.id);
        // Fail now, not on the first local connection, when the account may not connect.
        self.core.lease(&slot, false).await?;
        let listener = match &options.unix_socket {
            Some(path) => LocalListener::bind_unix(path, &resource.name)?,
            None if options.private_unix_socket => LocalListener::bind_private_unix(&resource)?,
            None => {
                let ip = options.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let port = options.port.or(resource.port_override).unwrap_or(0);
                LocalListener::bind_tcp(SocketAddr::new(ip, port), &resource.name).await?
            }
        };
        let tunnel = Tunnel::start(
            self.core.clone(),
            resource,
            slot,
            listener,
            options.same_user_only,
        )?;
        if let Ok(mut tunnels) = self.tunnels.lock() {
            tunnels.retain(|t| t.strong_count() > 0);
            tunnels.push(tunnel.downgrade());
        }
        Ok(tunnel)
    }

    /// A connection to the resource `name` inside this process, without a local listener.
    /// Returns once the gateway has reached the resource.
    pub async fn dial(&self, name: &str) -> Result<DialStream> {
        self.core.check_open()?;
        let resource = self.core.resolve(name).await?;
        let slot = self.core.lease_slot(resource.id);
        let mut stream = self.core.open_stream(&slot, &resource.name, None).await?;
        match stream.wait_connected().await {
            Ok(()) => {}
            // Refused by the gateway, perhaps with a lease of a session that ended meanwhile: ask
            // the control plane again (which logs in again if that is why) and try once more. If
            // it cannot be asked, the gateway's refusal stands.
            Err(e) if e.kind() == ErrorKind::Unauthenticated => {
                tracing::debug!(error = %e, "the gateway refused the lease; renewing it");
                match self.core.lease(&slot, true).await {
                    Ok(_) => {}
                    Err(renewal) if renewal.ends_access() => return Err(renewal),
                    Err(_) => return Err(e),
                }
                stream = self.core.open_stream(&slot, &resource.name, None).await?;
                stream.wait_connected().await?;
            }
            Err(e) => return Err(e),
        }
        Ok(DialStream::new(stream))
    }

    /// Every granted resource with its connection state, as `sdm status` prints it.
    pub async fn status(&self) -> Result<Status> {
        self.core.check_open()?;
        let open = self.open_tunnels();
        let (resources, unreachable) = match self.core.fetch_resources().await {
            Ok(resources) => (resources, None),
            // The control plane could not be asked (as opposed to refusing): what this session
            // last knew, with its open tunnels, which keep working on their current leases.
            Err(e) if !e.ends_access() => {
                let mut resources = self.core.last_resources();
                for t in &open {
                    if !resources.iter().any(|r| r.id == t.resource.id) {
                        resources.push(t.resource.clone());
                    }
                }
                resources.sort_by(|a, b| a.name.cmp(&b.name));
                let hold = open
                    .iter()
                    .filter_map(|t| self.core.lease_slot(t.resource.id).expires_in())
                    .min();
                (
                    resources,
                    Some(Unreachable::new(e.message().to_owned(), hold)),
                )
            }
            Err(e) => return Err(e),
        };
        let rows = resources
            .into_iter()
            .map(|resource| {
                let tunnel = open.iter().find(|t| t.resource.id == resource.id);
                let state = match tunnel {
                    Some(t) => ConnectionState::Connected {
                        local_addr: t.listen.clone(),
                        connections: t.active_connections(),
                    },
                    None => ConnectionState::NotConnected,
                };
                ResourceStatus::new(resource, state)
            })
            .collect();
        let mut status = Status::new(self.core.account.clone(), rows);
        status.unreachable = unreachable;
        Ok(status)
    }

    /// Closes this session's open tunnels to the resource `name` (exact name or unique
    /// substring among the connected resources) and waits until their ports are released.
    pub async fn disconnect(&self, name: &str) -> Result<()> {
        let open = self.open_tunnels();
        let connected: Vec<Resource> = open.iter().map(|t| t.resource.clone()).collect();
        let target = resolve(&connected, name).map_err(|e| match e.kind() {
            ErrorKind::ResourceNotFound => Error::new(
                ErrorKind::ResourceNotFound,
                format!("no open tunnel matches {name:?}"),
            ),
            _ => e,
        })?;
        for t in open.iter().filter(|t| t.resource.id == target.id) {
            t.close(None);
            t.wait_closed().await;
        }
        Ok(())
    }

    /// Closes every open tunnel of this session.
    pub async fn disconnect_all(&self) {
        for t in self.open_tunnels() {
            t.close(None);
            t.wait_closed().await;
        }
    }

    /// Closes every tunnel and ends the session on the control plane; later calls fail with
    /// [`ErrorKind::Closed`].
    pub async fn logout(&self) -> Result<()> {
        if self.core.logged_out.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.disconnect_all().await;
        let _relogin = self.core.relogin.lock().await;
        match self
            .core
            .api
            .post_no_content(
                routes::LOGOUT,
                &LogoutRequest {
                    session_id: self.core.id(),
                },
            )
            .await
        {
            // The session is no longer open there (it expired and was removed, or the token
            // was revoked): what logout asks for is done.
            Err(e) if e.kind() == ErrorKind::Unauthenticated => {
                tracing::debug!(error = %e, "the session had already ended on the server");
                Ok(())
            }
            other => other,
        }
    }

    fn open_tunnels(&self) -> Vec<Arc<TunnelShared>> {
        match self.tunnels.lock() {
            Ok(tunnels) => tunnels
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|t| t.is_open())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
