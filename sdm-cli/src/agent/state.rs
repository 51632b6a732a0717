//! What the agent holds: one `sdm_core::Session` and its tunnels, and how each request acts on
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sdm_core::{ConnectOptions, ConnectionState, ResourceClass, Session, Status, Tunnel};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::metrics::AgentMetrics;
use crate::protocol::{
    AccountInfo, AgentInfo, AutoConnect, ErrorReply, Failure, NOT_LOGGED_IN, PROTOCOL_VERSION,
    Reply, Request, ResourceRow, SessionInfo, StatusReport, TunnelInfo, UnreachableInfo,
};

/// Bound on telling the server about a logout when the agent stops.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for a request in progress before the agent stops anyway.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The agent's state, shared by every connection.
pub(crate) struct Agent {
    started_at: i64,
    inner: Mutex<Inner>,
    /// What `ping` reports, readable while a long request holds `inner`.
    snapshot: StdMutex<(Option<SessionInfo>, usize)>,
    stop: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    /// The session, readable while a long request holds `inner` (for `/readyz`).
    current: StdMutex<Option<Session>>,
    /// Counted into when `--diag-listen` serves them; `None` counts nothing.
    metrics: Option<AgentMetrics>,
}

#[derive(Default)]
struct Inner {
    session: Option<Active>,
    tunnels: Vec<Open>,
    /// Why auto-connect at login could not connect a resource, by resource id; forgotten once
    /// the resource is connected, and at the next login.
    auto_failures: HashMap<Uuid, ErrorReply>,
    /// The login asked for private Unix sockets unless a connect asks for TCP.
    unix_socket: bool,
}

/// An open tunnel, whether the login opened it on its own (auto-connect), and whether it
/// serves only the agent's OS user.
struct Open {
    tunnel: Tunnel,
    auto: bool,
    owner_only: bool,
}

/// The options of every tunnel the agent opens: on loopback, and unless `allow_other_users`,
/// refusing local connections from other OS users (the agent is one user's; the tunnel logs
/// in as its account).
fn tunnel_options(allow_other_users: bool) -> ConnectOptions {
    if allow_other_users {
        ConnectOptions::default()
    } else {
        ConnectOptions::default().same_user_only()
    }
}

/// [`tunnel_options`] on a private Unix socket (only the agent's user can enter its
/// directory) when `unix_socket`, else on a TCP port.
fn tunnel_options_for(allow_other_users: bool, unix_socket: bool) -> ConnectOptions {
    let options = tunnel_options(allow_other_users);
    if unix_socket {
        options.private_unix_socket()
    } else {
        options
    }
}

/// A connect that asks for another kind of tunnel than the open one: `(now, asked)` say what the
/// open tunnel does and what was asked for.
fn already_connected(name: &str, open: &Tunnel, (now, asked): (&str, &str)) -> ErrorReply {
    ErrorReply::new(
        sdm_core::ErrorKind::InvalidArgument.as_str(),
        format!(
            "{name} is already connected on {} and {now}; run `sdm disconnect {name}` first to \
             open it {asked}",
            open.local_addr()
        ),
    )
}

/// Says, in the log, that a tunnel serves everyone on the machine.
fn warn_if_open_to_all(tunnel: &Tunnel, allow_other_users: bool) {
    if allow_other_users {
        tracing::warn!(resource = %tunnel.resource().name, addr = %tunnel.local_addr(), "the tunnel accepts connections from every OS user on this machine (--allow-other-users)");
    }
}

/// What a login did besides logging in.
pub(crate) struct LoggedIn {
    /// The account of the session it replaced, if any.
    pub(crate) replaced: Option<AccountInfo>,
    /// What it connected on its own.
    pub(crate) auto_connect: AutoConnect,
}

struct Active {
    session: Session,
    info: SessionInfo,
}

impl Agent {
    /// An agent without a session; with `metrics`, its logins and tunnels are counted there.
    pub(crate) fn new(metrics: Option<AgentMetrics>) -> Agent {
        Agent {
            started_at: now(),
            inner: Mutex::new(Inner::default()),
            snapshot: StdMutex::new((None, 0)),
            stop: watch::channel(false).0,
            stopped: watch::channel(false).0,
            current: StdMutex::new(None),
            metrics,
        }
    }

    /// The current session, if any.
    pub(crate) fn session(&self) -> Option<Session> {
        self.current.lock().ok().and_then(|s| s.clone())
    }

    /// Resolves once something asked the agent to stop (a logout).
    pub(crate) async fn stop_requested(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A receiver that turns true when the agent stops.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Asks the main loop to stop.
    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Called by the main loop once the socket is gone and the lock released.
    pub(crate) fn mark_stopped(&self) {
        self.stop.send_replace(true);
        self.stopped.send_replace(true);
    }

    /// The agent and its session, as `ping` reports it.
    pub(crate) fn info(&self) -> AgentInfo {
        let (session, tunnels) = self.snapshot.lock().map(|s| s.clone()).unwrap_or((None, 0));
        AgentInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
            started_at: self.started_at,
            session,
            tunnels,
        }
    }

    /// Logs in, replacing the current session (whose tunnels close) only once the new one works.
    /// When the organisation's auto-connect setting is on, then connects every granted resource
    /// that has a fixed port, on that port; a resource that cannot be connected is reported,
    /// not an error of the login.
    pub(crate) async fn login(
        &self,
        token: String,
        api_url: Option<String>,
        allow_other_users: bool,
        unix_socket: bool,
    ) -> Result<LoggedIn, sdm_core::Error> {
        let mut builder = Session::builder().token(token);
        if let Some(url) = api_url {
            builder = builder.api_url(url);
        }
        if let Some(metrics) = &self.metrics {
            builder = builder.observer(Arc::new(metrics.clone()));
        }
        let session = builder.login().await;
        if let Some(metrics) = &self.metrics {
            metrics.login(match &session {
                Ok(_) => "ok",
                Err(e) => e.kind().as_str(),
            });
        }
        let session = session?;
        let info = SessionInfo {
            account: account_info(&session),
            id: session.id(),
            api_url: session.api_url().to_owned(),
            logged_in_at: now(),
        };
        tracing::info!(account = %info.account.name, session = %info.id, api = %info.api_url, "logged in");
        let mut inner = self.inner.lock().await;
        // The old tunnels close before anything is connected, so that their fixed ports are
        // free for the new session's.
        for open in inner.tunnels.drain(..) {
            open.tunnel.close();
            open.tunnel.closed().await;
        }
        inner.auto_failures.clear();
        inner.unix_socket = unix_socket;
        let old = inner.session.replace(Active {
            session: session.clone(),
            info,
        });
        let auto_connect = if session.settings().auto_connect {
            auto_connect(&session, &mut inner, allow_other_users).await
        } else {
            AutoConnect::default()
        };
        self.publish(&inner);
        drop(inner);
        let replaced = match old {
            Some(old) => {
                end(old.session).await;
                Some(old.info.account)
            }
            None => None,
        };
        Ok(LoggedIn {
            replaced,
            auto_connect,
        })
    }

    /// Ends the session (if any) on the server and closes every tunnel. Returns a warning when
    /// the server could not be told.
    pub(crate) async fn end_session(&self) -> Option<String> {
        let mut inner = match tokio::time::timeout(BUSY_TIMEOUT, self.inner.lock()).await {
            Ok(inner) => inner,
            Err(_) => {
                return Some(
                    "a request in progress did not finish; the session was not ended on the server"
                        .into(),
                );
            }
        };
        inner.tunnels.clear();
        inner.auto_failures.clear();
        let active = inner.session.take();
        self.publish(&inner);
        drop(inner);
        match active {
            Some(active) => end(active.session).await,
            None => None,
        }
    }

    /// Answers every request but `Logout` (which the connection handles with the main loop).
    pub(crate) async fn handle(&self, request: Request) -> Reply {
        let result = match request {
            Request::Ping => Ok(Reply::Agent(self.info())),
            Request::Login {
                token,
                api_url,
                allow_other_users,
                unix_socket,
            } => match self
                .login(token, api_url, allow_other_users, unix_socket)
                .await
            {
                Ok(done) => Ok(Reply::LoggedIn {
                    agent: self.info(),
                    replaced: done.replaced,
                    auto_connect: done.auto_connect,
                }),
                Err(e) => Err(ErrorReply::from(&e)),
            },
            Request::Status => self.status().await,
            Request::Connect {
                name,
                port,
                allow_other_users,
                unix_socket,
            } => {
                self.connect(&name, port, allow_other_users, unix_socket)
                    .await
            }
            Request::ConnectAll {
                allow_other_users,
                unix_socket,
            } => self.connect_all(allow_other_users, unix_socket).await,
            Request::Disconnect { name } => self.disconnect(Some(&name)).await,
            Request::DisconnectAll => self.disconnect(None).await,
            Request::Logout => Ok(Reply::LoggedOut {
                warning: self.end_session().await,
            }),
        };
        result.unwrap_or_else(Reply::Error)
    }

    /// Waits until the main loop has stopped listening and let go of the lock.
    pub(crate) async fn wait_stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    async fn status(&self) -> Result<Reply, ErrorReply> {
        let mut inner = self.inner.lock().await;
        prune(&mut inner);
        let active = logged_in(&inner)?;
        let status = active.session.status().await.map_err(|e| err(&e))?;
        let report = report(&active.info, &status, &inner);
        let table = crate::render::status_table(&report);
        self.publish(&inner);
        Ok(Reply::Status {
            status: report,
            table,
        })
    }

    async fn connect(
        &self,
        name: &str,
        port: Option<u16>,
        allow_other_users: bool,
        unix_socket: Option<bool>,
    ) -> Result<Reply, ErrorReply> {
        let mut inner = self.inner.lock().await;
        // A port asks for TCP; otherwise the request's choice, else the login's.
        let asked = if port.is_some() {
            Some(false)
        } else {
            unix_socket
        };
        let unix_socket = asked.unwrap_or(inner.unix_socket);
        prune(&mut inner);
        let session = logged_in(&inner)?.session.clone();
        let resource = session.resolve(name).await.map_err(|e| err(&e))?;
        if let Some(Open {
            tunnel: open,
            owner_only,
            ..
        }) = inner
            .tunnels
            .iter()
            .find(|o| o.tunnel.resource().id == resource.id)
        {
            if let Some(p) = port.filter(|p| Some(*p) != open.port()) {
                return Err(ErrorReply::new(
                    sdm_core::ErrorKind::InvalidArgument.as_str(),
                    format!(
                        "{} is already connected on {}; run `sdm disconnect {}` first to move it \
                         to port {p}",
                        resource.name,
                        open.local_addr(),
                        resource.name
                    ),
                ));
            }
            let on_socket = open.local_addr().unix_path().is_some();
            if asked.is_some_and(|asked| asked != on_socket) {
                return Err(already_connected(
                    &resource.name,
                    open,
                    if on_socket {
                        ("listens on a Unix socket", "on a TCP port (--tcp)")
                    } else {
                        ("listens on a TCP port", "on a Unix socket (--unix-socket)")
                    },
                ));
            }
            if *owner_only == allow_other_users {
                return Err(already_connected(
                    &resource.name,
                    open,
                    if *owner_only {
                        ("serves only this OS user", "for every user")
                    } else {
                        ("serves every OS user", "for this user only")
                    },
                ));
            }
            return Ok(Reply::Connected {
                tunnel: tunnel_info(open, *owner_only),
                already: true,
            });
        }
        let mut options = tunnel_options_for(allow_other_users, unix_socket);
        if let Some(p) = port {
            options = options.port(p);
        }
        let tunnel = session
            .connect_with(&resource.id.to_string(), options)
            .await
            .map_err(|e| err(&e))?;
        tracing::info!(resource = %resource.name, addr = %tunnel.local_addr(), owner_only = !allow_other_users, "connected");
        warn_if_open_to_all(&tunnel, allow_other_users);
        let info = tunnel_info(&tunnel, !allow_other_users);
        inner.auto_failures.remove(&resource.id);
        inner.tunnels.push(Open {
            tunnel,
            auto: false,
            owner_only: !allow_other_users,
        });
        self.publish(&inner);
        Ok(Reply::Connected {
            tunnel: info,
            already: false,
        })
    }

    async fn connect_all(
        &self,
        allow_other_users: bool,
        unix_socket: Option<bool>,
    ) -> Result<Reply, ErrorReply> {
        let mut inner = self.inner.lock().await;
        let unix_socket = unix_socket.unwrap_or(inner.unix_socket);
        prune(&mut inner);
        let session = logged_in(&inner)?.session.clone();
        let resources = session.list_resources().await.map_err(|e| err(&e))?;
        let mut tasks = JoinSet::new();
        for resource in resources {
            if inner
                .tunnels
                .iter()
                .any(|o| o.tunnel.resource().id == resource.id)
            {
                continue;
            }
            let session = session.clone();
            tasks.spawn(async move {
                let result = session
                    .connect_with(
                        &resource.id.to_string(),
                        tunnel_options_for(allow_other_users, unix_socket),
                    )
                    .await;
                (resource.name, result)
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(tunnel))) => {
                    tracing::info!(resource = %tunnel.resource().name, addr = %tunnel.local_addr(), owner_only = !allow_other_users, "connected");
                    warn_if_open_to_all(&tunnel, allow_other_users);
                    inner.auto_failures.remove(&tunnel.resource().id);
                    inner.tunnels.push(Open {
                        tunnel,
                        auto: false,
                        owner_only: !allow_other_users,
                    });
                }
                Ok((resource, Err(e))) => failures.push(Failure {
                    resource,
                    error: err(&e),
                }),
                Err(e) => failures.push(Failure {
                    resource: String::new(),
                    error: ErrorReply::new("internal", format!("a connect task failed: {e}")),
                }),
            }
        }
        sort_tunnels(&mut inner.tunnels);
        failures.sort_by(|a, b| a.resource.cmp(&b.resource));
        self.publish(&inner);
        Ok(Reply::ConnectedAll {
            tunnels: inner
                .tunnels
                .iter()
                .map(|o| tunnel_info(&o.tunnel, o.owner_only))
                .collect(),
            failures,
        })
    }

    async fn disconnect(&self, name: Option<&str>) -> Result<Reply, ErrorReply> {
        let mut inner = self.inner.lock().await;
        prune(&mut inner);
        let session = logged_in(&inner)?.session.clone();
        match name {
            Some(name) => session.disconnect(name).await.map_err(|e| err(&e))?,
            None => session.disconnect_all().await,
        }
        let mut resources = Vec::new();
        inner.tunnels.retain(|o| {
            if o.tunnel.is_open() {
                true
            } else {
                resources.push(o.tunnel.resource().name.clone());
                false
            }
        });
        for r in &resources {
            tracing::info!(resource = %r, "disconnected");
        }
        self.publish(&inner);
        Ok(Reply::Disconnected { resources })
    }

    fn publish(&self, inner: &Inner) {
        if let Ok(mut current) = self.current.lock() {
            *current = inner.session.as_ref().map(|a| a.session.clone());
        }
        if let Ok(mut snapshot) = self.snapshot.lock() {
            *snapshot = (
                inner.session.as_ref().map(|a| a.info.clone()),
                inner.tunnels.iter().filter(|o| o.tunnel.is_open()).count(),
            );
        }
    }
}

/// Ends a session on the server, within [`LOGOUT_TIMEOUT`]; a warning when that failed.
async fn end(session: Session) -> Option<String> {
    let account = session.account().name.clone();
    match tokio::time::timeout(LOGOUT_TIMEOUT, session.logout()).await {
        Ok(Ok(())) => {
            tracing::info!(%account, "logged out");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%account, error = %e, "the server could not be told about the logout");
            Some(format!(
                "the session of {account} could not be ended on the server: {}",
                e.message()
            ))
        }
        Err(_) => {
            tracing::warn!(%account, "logging out on the server timed out");
            Some(format!(
                "the session of {account} could not be ended on the server: no answer within {} s",
                LOGOUT_TIMEOUT.as_secs()
            ))
        }
    }
}

/// Auto-connect: opens a tunnel to every granted resource that has a fixed port, on that port,
/// in parallel. Failures are logged, remembered for `status` and reported; resources without
/// a fixed port are listed as skipped.
async fn auto_connect(
    session: &Session,
    inner: &mut Inner,
    allow_other_users: bool,
) -> AutoConnect {
    let mut report = AutoConnect {
        enabled: true,
        ..AutoConnect::default()
    };
    let resources = match session.list_resources().await {
        Ok(resources) => resources,
        Err(e) => {
            tracing::warn!(error = %e, "auto-connect: cannot list the granted resources");
            report.error = Some(err(&e));
            return report;
        }
    };
    let mut tasks = JoinSet::new();
    for resource in resources {
        let Some(port) = resource.port_override else {
            report.skipped.push(resource.name);
            continue;
        };
        let session = session.clone();
        tasks.spawn(async move {
            let result = session
                .connect_with(
                    &resource.id.to_string(),
                    tunnel_options(allow_other_users).port(port),
                )
                .await;
            (resource, port, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, _, Ok(tunnel))) => {
                tracing::info!(resource = %tunnel.resource().name, addr = %tunnel.local_addr(), owner_only = !allow_other_users, "auto-connected");
                warn_if_open_to_all(&tunnel, allow_other_users);
                report
                    .tunnels
                    .push(tunnel_info(&tunnel, !allow_other_users));
                inner.tunnels.push(Open {
                    tunnel,
                    auto: true,
                    owner_only: !allow_other_users,
                });
            }
            Ok((resource, port, Err(e))) => {
                tracing::warn!(resource = %resource.name, port, error = %e, "auto-connect failed");
                let error = err(&e);
                inner.auto_failures.insert(resource.id, error.clone());
                report.failures.push(Failure {
                    resource: resource.name,
                    error,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "an auto-connect task failed");
                report.failures.push(Failure {
                    resource: String::new(),
                    error: ErrorReply::new("internal", format!("a connect task failed: {e}")),
                });
            }
        }
    }
    sort_tunnels(&mut inner.tunnels);
    report.tunnels.sort_by(|a, b| a.resource.cmp(&b.resource));
    report.failures.sort_by(|a, b| a.resource.cmp(&b.resource));
    report
}

fn sort_tunnels(tunnels: &mut [Open]) {
    tunnels.sort_by(|a, b| a.tunnel.resource().name.cmp(&b.tunnel.resource().name));
}

/// Forgets tunnels that closed on their own (access revoked), logging why.
fn prune(inner: &mut Inner) {
    inner.tunnels.retain(|Open { tunnel: t, .. }| {
        if t.is_open() {
            return true;
        }
        match t.close_reason() {
            Some(reason) => {
                tracing::warn!(resource = %t.resource().name, error = %reason, "tunnel closed")
            }
            None => tracing::info!(resource = %t.resource().name, "tunnel closed"),
        }
        false
    });
}

fn logged_in(inner: &Inner) -> Result<&Active, ErrorReply> {
    inner.session.as_ref().ok_or_else(|| {
        ErrorReply::new(
            NOT_LOGGED_IN,
            "not logged in: the sdm agent runs but has no session; run `sdm login`",
        )
    })
}

fn err(e: &sdm_core::Error) -> ErrorReply {
    ErrorReply::from(e)
}

fn account_info(session: &Session) -> AccountInfo {
    let a = session.account();
    AccountInfo {
        id: a.id,
        name: a.name.clone(),
        kind: a.kind,
    }
}

fn tunnel_info(t: &Tunnel, owner_only: bool) -> TunnelInfo {
    TunnelInfo {
        resource: t.resource().name.clone(),
        kind: t.resource().kind.clone(),
        local_address: t.local_addr().to_string(),
        port: t.port(),
        owner_only,
    }
}

/// The data behind the status table; `inner` tells which tunnels auto-connect opened and what
/// it could not connect.
fn report(session: &SessionInfo, status: &Status, inner: &Inner) -> StatusReport {
    let resources = status
        .resources
        .iter()
        .map(|row| {
            let (local_address, connections) = match &row.state {
                ConnectionState::Connected {
                    local_addr,
                    connections,
                } => (Some(local_addr.to_string()), *connections),
                _ => (None, 0),
            };
            let r = &row.resource;
            let connected = row.is_connected();
            let open = inner
                .tunnels
                .iter()
                .find(|o| o.tunnel.is_open() && o.tunnel.resource().id == r.id);
            let auto = connected && open.is_some_and(|o| o.auto);
            let owner_only = if connected {
                open.map(|o| o.owner_only)
            } else {
                None
            };
            ResourceRow {
                id: r.id,
                name: r.name.clone(),
                kind: r.kind.clone(),
                class: match r.kind.class() {
                    ResourceClass::Server => "server".to_owned(),
                    ResourceClass::Datasource => "datasource".to_owned(),
                },
                tags: r.tags.clone(),
                healthy: r.healthy,
                status: if connected {
                    "connected".to_owned()
                } else {
                    "not_connected".to_owned()
                },
                auto,
                auto_error: if connected {
                    None
                } else {
                    inner.auto_failures.get(&r.id).cloned()
                },
                port: row.port(),
                port_override: r.port_override,
                local_address,
                owner_only,
                connections,
                ssh_host_key: r.ssh_host_key.clone(),
            }
        })
        .collect();
    StatusReport {
        account: session.account.clone(),
        api_url: session.api_url.clone(),
        resources,
        control_plane_unreachable: status.unreachable.as_ref().map(|u| UnreachableInfo {
            message: u.to_string(),
            reason: u.reason.clone(),
            leases_hold_for_secs: u.leases_hold_for.map(|d| d.as_secs()),
        }),
    }
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
