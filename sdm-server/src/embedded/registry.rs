//! [`EmbeddedRegistry`]: the gateways `sdm-server serve` runs register with the control plane
//! of the same process, through the same [`Registry`] a standalone gateway uses over HTTP: the
//! registration issues the certificate (renewed by the gateway's loop), heartbeats keep the
//! gateway's record fresh, and a process's first registration closes the audit records an
//! earlier process of that gateway left open.

use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_control::GATEWAY_HEARTBEAT;
use sdm_control::keys::CertificateAuthority;
use sdm_control::store::{GatewayRecord, Store, StoreError};
use sdm_gateway::registration::{Registry, RegistryError};
use sdm_proto::error::one_line;
use sdm_proto::gateway::{GatewayRegistration, HeartbeatReply, RegisterGateway};
use uuid::Uuid;

/// One gateway of this process, registered in the store.
pub(crate) struct EmbeddedRegistry {
    store: Arc<dyn Store>,
    ca: Arc<CertificateAuthority>,
    /// What its certificate is issued for (in `serve`, the API's names as well: one leaf
    /// serves both listeners).
    names: Vec<String>,
    /// The name its clients check the certificate for.
    server_name: String,
    name: String,
    id: Uuid,
    lease_key: String,
    /// The address last registered (what a withdrawal keeps).
    address: Mutex<Option<String>>,
}

impl EmbeddedRegistry {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        ca: Arc<CertificateAuthority>,
        names: Vec<String>,
        server_name: String,
        name: String,
        lease_public_key: &[u8],
    ) -> EmbeddedRegistry {
        EmbeddedRegistry {
            store,
            ca,
            names,
            server_name,
            name,
            id: Uuid::new_v4(),
            lease_key: URL_SAFE_NO_PAD.encode(lease_public_key),
            address: Mutex::new(None),
        }
    }

    /// Writes the record with `last_seen` (0: withdrawn).
    async fn save(&self, address: &str, last_seen: i64) -> Result<GatewayRecord, RegistryError> {
        *self.address.lock().unwrap_or_else(PoisonError::into_inner) = Some(address.to_owned());
        self.store
            .upsert_gateway(GatewayRecord {
                id: self.id,
                name: self.name.clone(),
                address: address.to_owned(),
                server_name: self.server_name.clone(),
                last_seen,
            })
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: StoreError) -> RegistryError {
    RegistryError::Unavailable(one_line(&e))
}

#[async_trait::async_trait]
impl Registry for EmbeddedRegistry {
    async fn register(
        &self,
        request: &RegisterGateway,
    ) -> Result<GatewayRegistration, RegistryError> {
        if request.starting {
            // This process serves nothing yet: records its name left open are an earlier one's.
            let closed = self
                .store
                .interrupt_connections(&self.name, sdm_proto::unix_now())
                .await
                .map_err(unavailable)?;
            if closed > 0 {
                tracing::warn!(
                    gateway = %self.name,
                    closed,
                    "the gateway stopped last time with connections open (a crash or a kill); \
                     their audit records are closed as interrupted"
                );
            }
        }
        let row = self.save(&request.address, sdm_proto::unix_now()).await?;
        let leaf = self
            .ca
            .issue_leaf(&self.names)
            .map_err(|e| RegistryError::Unavailable(one_line(&e)))?;
        let (certificate_chain_pem, private_key_pem) = leaf.to_pem();
        Ok(GatewayRegistration {
            id: row.id,
            name: row.name,
            tags: Default::default(),
            lease_keys: vec![self.lease_key.clone()],
            certificate_chain_pem,
            private_key_pem,
            heartbeat_secs: GATEWAY_HEARTBEAT.as_secs(),
            revocation_epoch: self.store.revocation_epoch().await.map_err(unavailable)?,
        })
    }

    async fn heartbeat(&self, request: &RegisterGateway) -> Result<HeartbeatReply, RegistryError> {
        self.save(&request.address, sdm_proto::unix_now()).await?;
        Ok(HeartbeatReply {
            revocation_epoch: self.store.revocation_epoch().await.map_err(unavailable)?,
            lease_keys: vec![self.lease_key.clone()],
        })
    }

    async fn withdraw(&self) -> Result<(), RegistryError> {
        // A record not seen for long is offered to no one; 0 is as long ago as it gets.
        let address = self
            .address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(address) = address {
            self.save(&address, 0).await?;
        }
        Ok(())
    }
}
