//! The local agent (`sdm listen`): holds the session and its tunnels and answers the other
//! commands over `SDM_HOME/agent.sock`.

mod diag;
pub mod launch;
mod metrics;
mod state;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::exit::CliError;
use crate::home::{AgentLock, Home};
use crate::protocol::{BAD_REQUEST, ErrorReply, MAX_LINE, PROTOCOL_VERSION, Reply, Request};
use diag::Diag;
pub use diag::DiagOptions;
use state::Agent;

/// A connection that sends no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the agent checks that its socket is still in place.
const SOCKET_CHECK: Duration = Duration::from_secs(2);
/// Bound on connections finishing their current request once the agent stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A login to perform at start (`sdm listen` with a token).
pub struct InitialLogin {
    /// The token.
    pub token: String,
    /// An API URL override.
    pub api_url: Option<String>,
    /// Let every OS user use the tunnels this login opens (auto-connect).
    pub allow_other_users: bool,
    /// The session's tunnels listen on private Unix sockets unless a connect asks for TCP.
    pub unix_socket: bool,
}

/// Runs the agent in this process until logout or a signal; with `diag`, serving its probes and
/// metrics there.
pub fn run(
    home: &Home,
    login: Option<InitialLogin>,
    diag: Option<DiagOptions>,
) -> Result<(), CliError> {
    // One thread carries every tunnel, so a socket event wakes the task on the thread that saw
    // it; with two workers most messages also woke the other thread. Measured through a gateway
    // (medians of 3 interleaved runs): pgbench select-only 14,146 → 14,663 TPS, a new
    // connection's first byte 0.826 → 0.734 ms. One thread still moves over 1 GB/s of TLS.
    // Unlike a busy gateway's threads it keeps the default scheduling policy: as `SCHED_BATCH`
    // (`sdm_relay::scheduling`) it waited behind the client that had just woken it, and a new
    // connection's first byte took 12 % longer, for no throughput a gateway as `SCHED_BATCH`
    // did not already give (docs/BENCHMARKS.md, "Lever: relaying threads that do not preempt").
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("sdm-agent")
        .enable_all()
        .build()
        .map_err(|e| CliError::internal(format!("cannot start the async runtime: {e}")))?;
    // The diagnostics port first: taken or off loopback, the agent stops before it touches
    // its home or logs in.
    let bound = match diag {
        Some(options) => Some(runtime.block_on(diag::bind(options))?),
        None => None,
    };
    let result = runtime.block_on(async {
        let diag = bound.map(Diag::serve);
        run_in(home, login, diag).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// [`run`] inside the runtime: the lock, then the socket.
async fn run_in(
    home: &Home,
    login: Option<InitialLogin>,
    diag: Option<Diag>,
) -> Result<(), CliError> {
    home.ensure()?;
    let lock = AgentLock::try_acquire(home)
        .map_err(|e| CliError::agent(format!("cannot lock {}: {e}", home.lock_file().display())))?;
    let Some(lock) = lock else {
        let pid = home
            .read_pid()
            .map_or_else(String::new, |p| format!(" (pid {p})"));
        return Err(CliError::agent(format!(
            "an sdm agent is already running for {}{pid}; `sdm logout` stops it",
            home.dir().display()
        )));
    };
    serve(home, lock, login, diag).await
}

/// Why the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Logout,
    Signal(&'static str),
    SocketGone,
}

async fn serve(
    home: &Home,
    mut lock: AgentLock,
    login: Option<InitialLogin>,
    diag: Option<Diag>,
) -> Result<(), CliError> {
    let socket = home.socket();
    // We hold the lock, so a socket file here is a dead agent's.
    match fs::remove_file(&socket) {
        Ok(()) => tracing::info!(path = %socket.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::agent(format!(
                "cannot remove the stale socket {}: {e}",
                socket.display()
            )));
        }
    }
    let listener = UnixListener::bind(&socket)
        .map_err(|e| CliError::agent(format!("cannot listen on {}: {e}", socket.display())))?;
    let socket_ino = fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::metadata(&socket))
        .map(|m| m.ino())
        .map_err(|e| CliError::agent(format!("cannot secure {}: {e}", socket.display())))?;
    let pid = std::process::id();
    if let Err(e) = home.write_pid(pid) {
        remove_own_files(home, socket_ino, pid);
        return Err(CliError::agent(format!(
            "cannot write {}: {e}",
            home.pid_file().display()
        )));
    }
    let mut signals =
        Signals::install().inspect_err(|_| remove_own_files(home, socket_ino, pid))?;
    let agent = Arc::new(Agent::new(diag.as_ref().map(Diag::metrics)));
    if let Some(diag) = &diag {
        diag.running(agent.clone());
    }
    if let Some(InitialLogin {
        token,
        api_url,
        allow_other_users,
        unix_socket,
    }) = login
        && let Err(e) = agent
            .login(token, api_url, allow_other_users, unix_socket)
            .await
    {
        remove_own_files(home, socket_ino, pid);
        return Err(CliError::from(e));
    }
    tracing::info!(pid, socket = %socket.display(), "sdm agent listening");

    let mut connections = JoinSet::new();
    let mut check = tokio::time::interval(SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(agent.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = agent.stop_requested() => break StopReason::Logout,
            name = signals.next() => break StopReason::Signal(name),
            _ = check.tick() => {
                if !socket_in_place(&socket, socket_ino) {
                    break StopReason::SocketGone;
                }
            }
        }
    };
    tracing::info!(?reason, "sdm agent stopping");
    if let Some(diag) = &diag {
        diag.stopping();
    }
    drop(listener);
    remove_own_files(home, socket_ino, pid);
    if reason != StopReason::Logout
        && let Some(warning) = agent.end_session().await
    {
        tracing::warn!("{warning}");
    }
    lock.release();
    agent.mark_stopped();
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("connections did not finish in time");
    }
    tracing::info!("sdm agent stopped");
    Ok(())
}

/// Removes the socket (if it is still ours) and the pid file (if it still names us).
fn remove_own_files(home: &Home, socket_ino: u64, pid: u32) {
    if socket_in_place(&home.socket(), socket_ino) {
        let _ = fs::remove_file(home.socket());
    }
    if home.read_pid() == Some(pid) {
        let _ = fs::remove_file(home.pid_file());
    }
}

fn socket_in_place(path: &std::path::Path, ino: u64) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.ino() == ino)
}

/// SIGTERM, SIGINT and SIGHUP: each stops the agent cleanly.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        let make = |kind: SignalKind| {
            signal(kind).map_err(|e| CliError::internal(format!("cannot handle signals: {e}")))
        };
        Ok(Signals {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Answers the requests of one connection, in order, until it closes or the agent stops.
async fn serve_connection(agent: Arc<Agent>, stream: UnixStream) {
    // The socket is 0600 in a 0700 directory; checking the peer too costs nothing.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), "refused a connection from another user");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot identify a connecting process");
            return;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut stop = agent.stop_signal();
    loop {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let mut bounded = (&mut reader).take(limit);
        let read = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            read = tokio::time::timeout(IDLE_TIMEOUT, bounded.read_until(b'\n', &mut line)) => read,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let (reply, last) = if line.last() != Some(&b'\n') {
            let e = ErrorReply::new(BAD_REQUEST, format!("request longer than {MAX_LINE} bytes"));
            (Reply::Error(e), true)
        } else {
            match parse(&line) {
                Err(e) => (Reply::Error(e), false),
                Ok(Request::Logout) => (logout(&agent).await, true),
                Ok(request) => {
                    tracing::debug!(?request, "request");
                    (agent.handle(request).await, false)
                }
            }
        };
        let mut text = match serde_json::to_vec(&reply) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a reply");
                return;
            }
        };
        text.push(b'\n');
        if write.write_all(&text).await.is_err() || last {
            return;
        }
    }
}

/// A request line: the version first, so that a newer client gets a clear answer.
fn parse(line: &[u8]) -> Result<Request, ErrorReply> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|_| ErrorReply::new(BAD_REQUEST, "the request is not a JSON object"))?;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(ErrorReply::new(
            BAD_REQUEST,
            format!(
                "agent protocol version mismatch (the agent speaks {PROTOCOL_VERSION}); restart \
                 the agent with `sdm logout` and `sdm login`"
            ),
        ));
    }
    serde_json::from_value::<crate::protocol::RequestLine>(value)
        .map(|l| l.request)
        .map_err(|e| {
            // Sent back to the caller only (serde may quote a value); never logged.
            ErrorReply::new(BAD_REQUEST, format!("not a request this agent knows: {e}"))
        })
}

/// Logout: end the session, stop listening, and answer once the socket is gone.
async fn logout(agent: &Agent) -> Reply {
    let warning = agent.end_session().await;
    agent.request_stop();
    agent.wait_stopped().await;
    Reply::LoggedOut { warning }
}
