//! Leases on the client side: obtained from the control plane per resource, shared by the
//! resource's tunnel and `dial`, renewed at half their lifetime.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::api::{GatewayInfo, LeaseGrant, LeaseRequest, routes};
use uuid::Uuid;

use crate::api::ApiClient;
use crate::error::{Error, Result};

/// A lease ready to present: the HELLOs are encoded once.
#[derive(Debug)]
pub(crate) struct ActiveLease {
    /// For a connection used at once (HELLO, OPEN and the first bytes in one write).
    pub(crate) hello: Vec<u8>,
    /// For a warm connection, which waits for READY and so can ask for framed streams.
    pub(crate) hello_framed: Vec<u8>,
    pub(crate) lease_id: Uuid,
    pub(crate) gateways: Vec<GatewayInfo>,
    obtained: Instant,
    ttl: Duration,
}

impl ActiveLease {
    /// When to renew: half the lifetime, measured on this machine's monotonic clock, so clock
    /// skew with the control plane does not matter.
    pub(crate) fn renew_at(&self) -> Instant {
        self.obtained + self.ttl / 2
    }

    /// Whether it can still be presented (with a margin for the trip to the gateway).
    pub(crate) fn usable(&self) -> bool {
        let margin = (self.ttl / 10).min(Duration::from_secs(5));
        self.obtained.elapsed() + margin < self.ttl
    }
}

/// The lease for one resource.
#[derive(Debug)]
pub(crate) struct LeaseSlot {
    resource_id: Uuid,
    current: RwLock<Option<Arc<ActiveLease>>>,
    /// Single flight: one renewal at a time per resource.
    renewing: tokio::sync::Mutex<()>,
}

impl LeaseSlot {
    pub(crate) fn new(resource_id: Uuid) -> LeaseSlot {
        LeaseSlot {
            resource_id,
            current: RwLock::new(None),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<Arc<ActiveLease>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// How long the current lease still holds, if there is one.
    pub(crate) fn expires_in(&self) -> Option<Duration> {
        self.cached()
            .map(|l| l.ttl.saturating_sub(l.obtained.elapsed()))
    }

    /// Drops the cached lease (its session was replaced), so that the next use asks anew.
    pub(crate) fn forget(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
    }

    /// A lease to present now: the cached one while it is fresh; otherwise a renewed one; if
    /// renewal fails for any reason but a refusal, the old one as long as it is still valid.
    pub(crate) async fn get(&self, api: &ApiClient, session_id: Uuid) -> Result<Arc<ActiveLease>> {
        if let Some(lease) = self.cached()
            && Instant::now() < lease.renew_at()
        {
            return Ok(lease);
        }
        match self.renew(api, session_id).await {
            Ok(lease) => Ok(lease),
            Err(e) if !e.ends_access() => match self.cached() {
                Some(old) if old.usable() => {
                    tracing::warn!(error = %e, "lease renewal failed; using the current lease until it expires");
                    Ok(old)
                }
                Some(_) => Err(Error::new(
                    e.kind(),
                    format!("the lease expired and a new one cannot be had: {e}"),
                )),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Asks the control plane for a new lease (unless another caller just did).
    pub(crate) async fn renew(
        &self,
        api: &ApiClient,
        session_id: Uuid,
    ) -> Result<Arc<ActiveLease>> {
        let started = Instant::now();
        let _guard = self.renewing.lock().await;
        if let Some(lease) = self.cached()
            && lease.obtained >= started
        {
            return Ok(lease);
        }
        let request = LeaseRequest {
            session_id,
            resource_id: self.resource_id,
        };
        let grant: LeaseGrant = api.post(routes::LEASES, &request).await?;
        let bytes = URL_SAFE_NO_PAD
            .decode(grant.lease.as_bytes())
            .map_err(|_| Error::internal("the control plane sent a lease that is not base64url"))?;
        let lease = Arc::new(ActiveLease {
            hello: sdm_proto::handshake::encode_hello(&bytes, false),
            hello_framed: sdm_proto::handshake::encode_hello(&bytes, true),
            lease_id: grant.lease_id,
            gateways: grant.gateways,
            obtained: started,
            ttl: Duration::from_secs(grant.ttl_secs.max(1)),
        });
        if let Ok(mut current) = self.current.write() {
            *current = Some(lease.clone());
        }
        tracing::debug!(lease = %lease.lease_id, ttl = ?lease.ttl, "lease obtained");
        Ok(lease)
    }
}
