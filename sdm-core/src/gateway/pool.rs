//! Warm connections: a tunnel keeps a few gateway connections with TLS done and the lease
//! accepted, so a new local connection costs one OPEN byte instead of a handshake. A connection
//! whose stream ended cleanly both ways (framed streams) comes back to the pool, so short
//! connections one after another cost no handshake at all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Connector, GatewayStream};
use crate::error::Result;
use crate::lease::ActiveLease;

/// Warm connections are used within this age; gateways drop unopened connections after 60 s.
const MAX_AGE: Duration = Duration::from_secs(20);
/// Connections that came back are kept up to this many times the warm target: enough for a
/// burst of short connections to come back without a handshake each, and bounded.
const KEPT_PER_WARM: usize = 4;

struct Warm {
    stream: GatewayStream,
    lease_id: Uuid,
    since: Instant,
}

/// A small queue of ready gateway connections for one tunnel.
pub(crate) struct WarmPool {
    idle: Mutex<VecDeque<Warm>>,
    target: usize,
    filling: AtomicBool,
    /// Set when the tunnel closes: a refill still in flight then keeps nothing.
    closed: AtomicBool,
}

impl WarmPool {
    pub(crate) fn new(target: usize) -> WarmPool {
        WarmPool {
            idle: Mutex::new(VecDeque::new()),
            target,
            filling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// A ready connection for the current lease, if one is waiting, still alive and to a gateway
    /// the connector is not avoiding.
    pub(crate) fn take(&self, lease: &ActiveLease, connector: &Connector) -> Option<GatewayStream> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut warm) = idle.pop_front() {
            if warm.lease_id == lease.lease_id
                && warm.since.elapsed() < MAX_AGE
                && !connector.avoided(warm.stream.gateway())
                && !warm.stream.looks_closed()
            {
                return Some(warm.stream);
            }
        }
        None
    }

    /// Keeps a connection whose stream ended cleanly both ways for the next local connection
    /// (the caller checked with `GatewayStream::end_stream`).
    pub(crate) fn give_back(&self, stream: GatewayStream) {
        if let Ok(mut idle) = self.idle.lock()
            && !self.closed.load(Ordering::Acquire)
            && idle.len() < self.target * KEPT_PER_WARM
        {
            idle.push_back(Warm {
                lease_id: stream.lease_id(),
                stream,
                since: Instant::now(),
            });
        }
    }

    fn len(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(usize::MAX)
    }

    /// Whether a refill should start: nobody is filling and fewer than half the target
    /// (rounded up) are left. Not as soon as one is taken: it usually comes back when its
    /// stream ends, and a refill would be a handshake spent.
    pub(crate) fn claim_fill(&self) -> bool {
        self.target > 0
            && self.len() < self.target.div_ceil(2)
            && self
                .filling
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Tops the pool up; call only after [`claim_fill`](Self::claim_fill) returned true.
    pub(crate) async fn fill(
        &self,
        connector: &Connector,
        lease: &Arc<ActiveLease>,
        resource: &str,
    ) {
        let result: Result<()> = async {
            while !self.closed.load(Ordering::Acquire) && self.len() < self.target {
                let mut stream = connector.connect(lease, resource, false).await?;
                stream.wait_ready().await?;
                if let Ok(mut idle) = self.idle.lock() {
                    // Checked under the lock that `close` takes after setting the flag, so a
                    // connection made while the tunnel closed is dropped, not kept.
                    if self.closed.load(Ordering::Acquire) {
                        break;
                    }
                    idle.push_back(Warm {
                        stream,
                        lease_id: lease.lease_id,
                        since: Instant::now(),
                    });
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, resource, "could not warm a gateway connection");
        }
        self.filling.store(false, Ordering::Release);
    }

    /// Drops every idle connection and keeps none from now on (the tunnel closed).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
