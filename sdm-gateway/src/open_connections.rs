//! The connections a gateway carries, so that access taken away (an account suspended, a grant
//! removed, a session ended) also closes connections that are already open.
//!
//! The gateway polls the control plane's revocation epoch every second; when it moves, every
//! distinct lease among the open connections is checked again and the connections whose lease
//! no longer holds are told to stop, with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sdm_proto::{ErrorKind, Lease};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Denied, GatewayConfig, GatewayMetrics};

/// How often the revocation epoch is read.
pub(crate) const POLL: Duration = Duration::from_secs(1);

struct Entry {
    lease: Lease,
    signed: Arc<[u8]>,
    stop: watch::Sender<Option<Denied>>,
    /// When a revocation told this connection to stop: its end is then timed.
    revoked_at: Option<Instant>,
}

/// Open connections by number.
pub(crate) struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    metrics: GatewayMetrics,
}

/// A registered connection; dropping it unregisters.
pub(crate) struct Registration {
    open_connections: Arc<OpenConnections>,
    id: u64,
    stopped: watch::Receiver<Option<Denied>>,
}

impl Registration {
    /// Resolves with the reason when the connection must stop.
    pub(crate) fn stopped(&self) -> impl Future<Output = Denied> + Send + 'static {
        let mut rx = self.stopped.clone();
        async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

impl OpenConnections {
    /// None yet; revoked connections' time to close is observed into `metrics`.
    pub(crate) fn new(metrics: GatewayMetrics) -> OpenConnections {
        OpenConnections {
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    pub(crate) fn register(self: &Arc<Self>, lease: &Lease, signed: &[u8]) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(None);
        if let Ok(mut open) = self.open.lock() {
            open.insert(
                id,
                Entry {
                    lease: lease.clone(),
                    signed: Arc::from(signed),
                    stop,
                    revoked_at: None,
                },
            );
        }
        Registration {
            open_connections: self.clone(),
            id,
            stopped,
        }
    }

    /// The distinct leases of the open connections, with their signed bytes.
    fn leases(&self) -> Vec<(Lease, Arc<[u8]>)> {
        let Ok(open) = self.open.lock() else {
            return Vec::new();
        };
        let mut by_id: HashMap<Uuid, (Lease, Arc<[u8]>)> = HashMap::new();
        for entry in open.values() {
            by_id
                .entry(entry.lease.id)
                .or_insert_with(|| (entry.lease.clone(), entry.signed.clone()));
        }
        by_id.into_values().collect()
    }

    /// Stops every connection not stopped yet; returns how many.
    pub(crate) fn stop_all(&self, reason: &Denied) -> usize {
        let Ok(open) = self.open.lock() else { return 0 };
        let mut stopped = 0;
        for entry in open.values().filter(|e| e.stop.borrow().is_none()) {
            entry.stop.send_replace(Some(reason.clone()));
            stopped += 1;
        }
        stopped
    }

    /// Stops every connection opened with lease `lease_id`, because access was revoked.
    fn revoke(&self, lease_id: Uuid, reason: &Denied) -> usize {
        let Ok(mut open) = self.open.lock() else {
            return 0;
        };
        let now = Instant::now();
        let mut stopped = 0;
        for entry in open.values_mut().filter(|e| e.lease.id == lease_id) {
            entry.stop.send_replace(Some(reason.clone()));
            entry.revoked_at.get_or_insert(now);
            stopped += 1;
        }
        stopped
    }
}

impl Drop for Registration {
    /// The connection has ended: it leaves the set, and a revoked one's time to close counts.
    fn drop(&mut self) {
        let removed = match self.open_connections.open.lock() {
            Ok(mut open) => open.remove(&self.id),
            Err(_) => None,
        };
        if let Some(revoked_at) = removed.and_then(|entry| entry.revoked_at) {
            self.open_connections
                .metrics
                .revoked_connection_closed(revoked_at.elapsed());
        }
    }
}

/// Closes every open connection while the audit trail has been failing for longer than its
/// grace (new ones are refused meanwhile, see `connection`).
fn close_unrecorded(config: &GatewayConfig, open_connections: &OpenConnections) {
    let Some(why) = config.audit.must_close() else {
        return;
    };
    let reason = Denied {
        kind: ErrorKind::GatewayUnreachable,
        message: format!(
            "gateway {} closed the connection: its audit trail cannot be written ({})",
            config.name, why.0
        ),
    };
    let n = open_connections.stop_all(&reason);
    if n > 0 {
        tracing::warn!(connections = n, reason = %why, "closing connections: the audit trail cannot be written");
    }
}

/// Re-checks open connections whenever the revocation epoch moves, and closes them all while
/// the audit trail cannot be written, until shutdown.
pub(crate) async fn watch_revocations(
    config: Arc<GatewayConfig>,
    open_connections: Arc<OpenConnections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = config.directory.revocation_epoch().await;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        close_unrecorded(&config, &open_connections);
        let Some(epoch) = config.directory.revocation_epoch().await else {
            continue;
        };
        if seen == Some(epoch) {
            continue;
        }
        seen = Some(epoch);
        for (lease, signed) in open_connections.leases() {
            match config.directory.authorize(&lease, &signed).await {
                Err(denied) if is_revocation(denied.kind) => {
                    let n = open_connections.revoke(lease.id, &denied);
                    config.metrics.revoked(n as u64);
                    tracing::info!(lease = %lease.id, account = %lease.account_id, connections = n, reason = %denied.message, "closing connections: access was revoked");
                }
                // The state could not be read: keep serving, check again next time.
                Err(_) => seen = None,
                Ok(_) => {}
            }
        }
    }
}

/// Whether a refusal means access was taken away (not that the state could not be read).
pub(crate) fn is_revocation(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::ResourceNotFound
    )
}
