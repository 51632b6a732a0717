//! Tunnels: a local listener whose connections are carried through a gateway to a resource.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::gateway::{WarmPool, error_from_io};
use crate::lease::LeaseSlot;
use crate::listener::{ListenAddr, LocalListener, LocalStream};
use crate::observer::TunnelObserver;
use crate::refusal;
use crate::resource::{Resource, ResourceKind};
use crate::session_core::SessionCore;

/// The first pause after a failed renewal; it doubles (with jitter) while renewals fail.
const FIRST_RENEW_BACKOFF: Duration = Duration::from_secs(1);
/// Renewal retries back off up to this long between attempts.
const MAX_RENEW_BACKOFF: Duration = Duration::from_secs(30);
/// Access is checked at most this often after connections end.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Refused peers (other OS users) being told why at once, per tunnel; more are just closed.
const MAX_REFUSALS: usize = 16;
/// When this library learns of a revocation before the gateway does, how long a PostgreSQL or
/// MySQL connection is left to the gateway, which tells the client why (57P01, MySQL error 1927)
/// within its revocation poll (about a second), before it is cut without a word.
const REVOCATION_GRACE: Duration = Duration::from_secs(5);

/// An open tunnel: connect any client to [`local_addr`](Tunnel::local_addr).
///
/// The tunnel closes when dropped, when [`close`](Tunnel::close) is called, when its session
/// logs out, or when the control plane refuses to renew its lease (access revoked).
#[must_use = "a tunnel closes when it is dropped"]
pub struct Tunnel {
    shared: Arc<TunnelShared>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("resource", &self.shared.resource.name)
            .field("local_addr", &self.shared.listen)
            .field("open", &self.shared.is_open())
            .finish()
    }
}

pub(crate) struct TunnelShared {
    pub(crate) resource: Resource,
    /// Where it listens: a TCP address or a Unix socket path.
    pub(crate) listen: ListenAddr,
    shutdown: watch::Sender<bool>,
    reason: Mutex<Option<Error>>,
    connections: AtomicUsize,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    pool: Arc<WarmPool>,
    /// The last failure to renew the lease, while renewal keeps being retried.
    last_error: Mutex<Option<Error>>,
    /// Asks the renewal task to check access now (a connection ended: maybe access was revoked).
    check: Notify,
    last_check: Mutex<Option<Instant>>,
    /// A gateway refused the current lease (its session may have ended on the server): the
    /// check renews the lease instead of waiting for its half-life.
    lease_refused: AtomicBool,
    /// The session's observer, told when the tunnel opens and closes and about each connection.
    observer: Option<Arc<dyn TunnelObserver>>,
}

impl Tunnel {
    pub(crate) fn start(
        core: Arc<SessionCore>,
        resource: Resource,
        slot: Arc<LeaseSlot>,
        listener: LocalListener,
        same_user_only: bool,
    ) -> Result<Tunnel> {
        let listen = listener.addr()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(TunnelShared {
            resource,
            listen: listen.clone(),
            shutdown,
            reason: Mutex::new(None),
            connections: AtomicUsize::new(0),
            accept_task: Mutex::new(None),
            pool: Arc::new(WarmPool::new(core.warm_connections)),
            last_error: Mutex::new(None),
            check: Notify::new(),
            last_check: Mutex::new(None),
            lease_refused: AtomicBool::new(false),
            observer: core.observer.clone(),
        });
        if let Some(observer) = &shared.observer {
            observer.tunnel_opened(&shared.resource);
        }
        let accept = tokio::spawn(accept_loop(
            listener,
            same_user_only,
            core.clone(),
            slot.clone(),
            Arc::downgrade(&shared),
            shared.shutdown.subscribe(),
        ));
        if let Ok(mut task) = shared.accept_task.lock() {
            *task = Some(accept);
        }
        tokio::spawn(renew_loop(
            core.clone(),
            slot.clone(),
            Arc::downgrade(&shared),
        ));
        // Warm the pool now so that the first local connection skips the handshake too.
        if shared.pool.claim_fill() {
            let (pool, name) = (shared.pool.clone(), shared.resource.name.clone());
            tokio::spawn(async move {
                if let Ok(lease) = core.lease(&slot, false).await {
                    pool.fill(&core.connector, &lease, &name).await;
                }
            });
        }
        tracing::info!(resource = %shared.resource.name, listen = %listen, "tunnel open");
        Ok(Tunnel { shared })
    }

    /// The resource this tunnel reaches.
    pub fn resource(&self) -> &crate::Resource {
        &self.shared.resource
    }

    /// Where clients connect: a TCP address (e.g. `127.0.0.1:5432`) or, for a tunnel opened
    /// with [`ConnectOptions::unix_socket`](crate::ConnectOptions::unix_socket), a Unix socket
    /// path. [`ListenAddr::tcp`] and [`ListenAddr::unix_path`] pick one.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.shared.listen
    }

    /// The local IP address as text (`"127.0.0.1"`); `None` for a Unix-socket tunnel.
    pub fn host(&self) -> Option<String> {
        self.shared.listen.host()
    }

    /// The local TCP port; `None` for a Unix-socket tunnel.
    pub fn port(&self) -> Option<u16> {
        self.shared.listen.port()
    }

    /// Whether the tunnel still accepts connections.
    pub fn is_open(&self) -> bool {
        self.shared.is_open()
    }

    /// Why the tunnel closed, when something other than the owner closed it (for example
    /// [`ErrorKind::Unauthenticated`] after the account was suspended).
    pub fn close_reason(&self) -> Option<Error> {
        self.shared
            .reason
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(Error::detached))
    }

    /// Local connections currently being carried.
    pub fn active_connections(&self) -> usize {
        self.shared.active_connections()
    }

    /// While the tunnel is open but cannot renew its lease (the control plane is unreachable,
    /// say), the last failure; `None` when all is well. New connections keep working until the
    /// current lease expires.
    pub fn last_error(&self) -> Option<Error> {
        self.shared
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(Error::detached))
    }

    /// Stops listening and closes every connection of this tunnel. Returns at once; use
    /// [`closed`](Self::closed) to wait until the local port is released.
    pub fn close(&self) {
        self.shared.close(None);
    }

    /// Waits until the tunnel is closed and its local port released.
    pub async fn closed(&self) {
        let mut rx = self.shared.shutdown.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
        self.shared.wait_closed().await;
    }

    pub(crate) fn downgrade(&self) -> Weak<TunnelShared> {
        Arc::downgrade(&self.shared)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shared.close(None);
    }
}

impl TunnelShared {
    pub(crate) fn is_open(&self) -> bool {
        !*self.shutdown.borrow()
    }

    pub(crate) fn active_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// A carried connection ended; if the gateway ended it because access was revoked, the
    /// tunnel should learn why. The renewal task checks at most every [`CHECK_INTERVAL`]; a
    /// request inside the interval is served when it ends (requests meanwhile coalesce), so a
    /// connection cut just after another one closed normally is still explained.
    fn request_check(&self) {
        self.check.notify_one();
    }

    /// How long the requested check must wait to keep to [`CHECK_INTERVAL`]; it is recorded
    /// as done at the end of that wait.
    fn next_check_in(&self) -> Duration {
        let Ok(mut last) = self.last_check.lock() else {
            return Duration::ZERO;
        };
        let wait = last.map_or(Duration::ZERO, |at| {
            CHECK_INTERVAL.saturating_sub(at.elapsed())
        });
        *last = Some(Instant::now() + wait);
        wait
    }

    fn set_last_error(&self, error: Option<Error>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    /// Whether the tunnel closed because access was taken away.
    fn closed_by_revocation(&self) -> bool {
        self.reason
            .lock()
            .is_ok_and(|r| r.as_ref().is_some_and(Error::ends_access))
    }

    /// Closes the tunnel, recording `reason` when it was not the owner's decision.
    pub(crate) fn close(&self, reason: Option<Error>) {
        if !self.is_open() {
            return;
        }
        if let Some(reason) = reason {
            tracing::warn!(resource = %self.resource.name, error = %reason, "tunnel closed");
            if let Ok(mut r) = self.reason.lock() {
                *r = Some(reason);
            }
        } else {
            tracing::info!(resource = %self.resource.name, "tunnel closed");
        }
        // The reason is in place before anyone sees the tunnel closed. Two closes may race (a
        // revocation and the owner's): only the one that closes it tells the observer.
        let closed_it = self
            .shutdown
            .send_if_modified(|closed| !std::mem::replace(closed, true));
        self.pool.close();
        if closed_it && let Some(observer) = &self.observer {
            observer.tunnel_closed(&self.resource);
        }
    }

    /// Waits for the accept loop to end (the listener is then dropped and the port free).
    pub(crate) async fn wait_closed(&self) {
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn accept_loop(
    listener: LocalListener,
    same_user_only: bool,
    core: Arc<SessionCore>,
    slot: Arc<LeaseSlot>,
    tunnel: Weak<TunnelShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let owner = unsafe { libc::geteuid() };
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|closed| *closed) => break,
            accepted = listener.accept(same_user_only) => accepted,
        };
        let (socket, peer, uid) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a local connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(shared) = tunnel.upgrade() else {
            break;
        };
        if same_user_only && uid != Some(owner) {
            let why = refusal::message(&shared.resource.name, owner, uid);
            tracing::warn!(resource = %shared.resource.name, %peer, ?uid, "refused a local connection from another OS user: {why}");
            // Told why in its own task (bounded in time and in number), so that a slow or
            // silent peer holds up nobody; past the bound it is just closed.
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                let kind = shared.resource.kind.clone();
                tokio::spawn(async move {
                    refusal::refuse(socket, &kind, refusal::NOT_AUTHORIZED, &why).await;
                    drop(permit);
                });
            }
            continue;
        }
        tokio::spawn(carry(
            socket,
            peer,
            core.clone(),
            slot.clone(),
            shared,
            shutdown.clone(),
        ));
    }
}

/// Carries one local connection through a gateway until either side closes or the tunnel does.
async fn carry(
    local: LocalStream,
    peer: String,
    core: Arc<SessionCore>,
    slot: Arc<LeaseSlot>,
    tunnel: Arc<TunnelShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    tunnel.connections.fetch_add(1, Ordering::Relaxed);
    let observer = tunnel.observer.clone();
    // Read only for an observer: a session without one reads no clock here.
    let accepted = observer.as_ref().map(|observer| {
        observer.connection_opened(&tunnel.resource);
        Instant::now()
    });
    let name = tunnel.resource.name.as_str();
    let kind = &tunnel.resource.kind;
    // A gateway's refusal comes after the client's first bytes went to it: kept, so that the
    // refusal can still be told in the client's protocol.
    let mut local = refusal::Replayable::new(local);
    // Bytes moved (client to resource, back), kept however the connection ends (also when
    // the tunnel closes under it); and, for an observer, whether the resource was reached.
    let mut moved = (0u64, 0u64);
    let reached = accepted.map(|_| Arc::new(AtomicBool::new(false)));
    let outcome = {
        let work = async {
            let mut remote = match core.open_stream(&slot, name, Some(&tunnel.pool)).await {
                Ok(remote) => remote,
                Err(e) => {
                    // Said in the client's protocol where it has one (PostgreSQL: an
                    // ErrorResponse psql prints), not a bare closed socket.
                    let why = format!("sdm: cannot open a connection to {name:?}: {e}");
                    refusal::refuse(&mut local, kind, refusal::CANNOT_CONNECT, &why).await;
                    return Err(e);
                }
            };
            if let (Some(observer), Some(accepted), Some(reached)) = (&observer, accepted, &reached)
            {
                let (observer, tunnel, reached) =
                    (observer.clone(), tunnel.clone(), reached.clone());
                remote.on_reached(Box::new(move || {
                    reached.store(true, Ordering::Relaxed);
                    observer.connection_reached(&tunnel.resource, accepted.elapsed());
                }));
            }
            // Buffers sized by use: up to 64 KiB for bulk, none while idle.
            let relayed = sdm_relay::relay_counted(&mut local, &mut remote, &mut moved).await;
            if let Err(e) = &relayed
                && let Some(refused) = error_from_io(e)
                && local.replay()
            {
                // The gateway refused the stream before the resource said anything.
                let code = if refused.ends_access() {
                    refusal::NOT_AUTHORIZED
                } else {
                    refusal::CANNOT_CONNECT
                };
                let why = format!("sdm: {name:?}: {}", refused.message());
                refusal::refuse(&mut local, kind, code, &why).await;
            }
            relayed.map_err(|e| {
                let e = error_from_io(&e).unwrap_or_else(|| {
                    Error::new(ErrorKind::Closed, format!("connection ended: {e}"))
                });
                // A gateway that refused for a reason of its own (it cannot check the lease or
                // record the connection) is tried last for a while: later connections go to
                // the others.
                if matches!(
                    e.kind(),
                    ErrorKind::GatewayUnreachable | ErrorKind::Internal
                ) {
                    core.connector.avoid(remote.gateway());
                }
                e
            })?;
            if remote.end_stream() {
                tunnel.pool.give_back(remote);
            }
            Ok::<(), Error>(())
        };
        let mut work = std::pin::pin!(work);
        let ended = tokio::select! {
            r = &mut work => Some(r),
            _ = shutdown.wait_for(|closed| *closed) => None,
        };
        match ended {
            Some(r) => r,
            None if matches!(
                tunnel.resource.kind,
                ResourceKind::Postgres | ResourceKind::Mysql
            ) && tunnel.closed_by_revocation() =>
            {
                tokio::time::timeout(REVOCATION_GRACE, work)
                    .await
                    .unwrap_or(Ok(()))
            }
            None => Ok(()),
        }
    };
    if let Err(e) = outcome {
        if e.kind() == ErrorKind::Unauthenticated {
            tunnel.lease_refused.store(true, Ordering::Relaxed);
        }
        match e.kind() {
            ErrorKind::Closed => {
                tracing::debug!(resource = name, %peer, error = %e, "connection ended")
            }
            _ => tracing::warn!(resource = name, %peer, error = %e, "connection failed"),
        }
    }
    if let Some(observer) = &observer {
        let reached = reached.is_some_and(|r| r.load(Ordering::Relaxed));
        observer.connection_closed(&tunnel.resource, moved.0, moved.1, reached);
    }
    tunnel.connections.fetch_sub(1, Ordering::Relaxed);
    tunnel.request_check();
}

/// Renews the tunnel's lease at half its lifetime while the tunnel is open. Failures to ask
/// (unreachable, throttled with 429, a server error) retry with jittered backoff up to
/// [`MAX_RENEW_BACKOFF`] apart (the current lease keeps working meanwhile); only a refusal
/// (account suspended, token revoked, grant removed) closes the tunnel with that reason.
async fn renew_loop(core: Arc<SessionCore>, slot: Arc<LeaseSlot>, tunnel: Weak<TunnelShared>) {
    let Some((mut shutdown, resource)) = tunnel
        .upgrade()
        .map(|t| (t.shutdown.subscribe(), t.resource.clone()))
    else {
        return;
    };
    let mut failures = 0u32;
    let mut due = false;
    loop {
        let result = core.lease(&slot, due).await;
        let wait_until = match result {
            Ok(lease) => {
                failures = 0;
                if let Some(t) = tunnel.upgrade() {
                    t.set_last_error(None);
                }
                tokio::time::Instant::from_std(lease.renew_at())
            }
            // Only a refusal closes the tunnel; a failure to ask (unreachable, throttled, a
            // server error) is asked again while the current lease keeps working.
            Err(e) if !e.ends_access() => {
                let pause =
                    sdm_proto::backoff::jittered(failures, FIRST_RENEW_BACKOFF, MAX_RENEW_BACKOFF);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?pause, "lease renewal failed; retrying");
                if let Some(t) = tunnel.upgrade() {
                    t.set_last_error(Some(e.detached()));
                }
                tokio::time::Instant::now() + pause
            }
            Err(e) => {
                if let Some(t) = tunnel.upgrade() {
                    t.close(Some(e));
                }
                return;
            }
        };
        loop {
            let Some(t) = tunnel.upgrade() else { return };
            tokio::select! {
                _ = shutdown.wait_for(|closed| *closed) => return,
                _ = tokio::time::sleep_until(wait_until) => break,
                _ = t.check.notified() => {}
            }
            let pause = t.next_check_in();
            drop(t);
            if !pause.is_zero() {
                tokio::select! {
                    _ = shutdown.wait_for(|closed| *closed) => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let refused = tunnel
                .upgrade()
                .is_some_and(|t| t.lease_refused.swap(false, Ordering::Relaxed));
            // A connection ended: access may have been revoked; the control plane says.
            match core.verify_access(&resource).await {
                Err(e) if e.ends_access() => {
                    if let Some(t) = tunnel.upgrade() {
                        t.close(Some(e));
                    }
                    return;
                }
                // Access holds but a gateway refused the lease: its session may have ended on
                // the server; renew now (logging in again if so).
                _ if refused => break,
                _ => continue,
            }
        }
        due = true;
    }
}
