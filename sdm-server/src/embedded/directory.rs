//! [`EmbeddedDirectory`]: an embedded gateway asks the control plane of its own process where
//! a lease goes, as a standalone gateway asks over `/v1/gateway/authorize`.

use sdm_control::StoreDirectory;
use sdm_gateway::{Denied, Directory, Upstream};
use sdm_proto::Lease;

/// The control plane's [`StoreDirectory`] as the gateway's [`Directory`].
#[derive(Debug)]
pub(crate) struct EmbeddedDirectory(pub(crate) StoreDirectory);

#[async_trait::async_trait]
impl Directory for EmbeddedDirectory {
    async fn authorize(&self, lease: &Lease, _signed: &[u8]) -> Result<Upstream, Denied> {
        // The signature was checked by the gateway with this process's own key.
        self.0.authorize(lease).await
    }

    async fn revocation_epoch(&self) -> Option<i64> {
        self.0.revocation_epoch().await
    }
    async fn record_host_key(
        &self,
        lease: &Lease,
        _signed: &[u8],
        host_key: &str,
    ) -> Result<(), Denied> {
        // The gateway verified the lease's signature and expiry before connecting upstream.
        self.0
            .record_host_key(lease, self.0.gateway_tags(), host_key)
            .await
    }
}
