//! [`RemoteRegistry`]: a standalone gateway's registration, heartbeats and withdrawal, over the
//! control plane's `/v1/gateway/…` routes.

use std::time::Duration;

use sdm_gateway::registration::{Registry, RegistryError};
use sdm_proto::api::routes;
use sdm_proto::gateway::{GatewayRegistration, HeartbeatReply, RegisterGateway};

use super::client::{CallError, SharedControlPlane};

/// Time for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane as a [`Registry`].
#[derive(Debug)]
pub(super) struct RemoteRegistry(pub(super) SharedControlPlane);

fn registry_error(e: CallError) -> RegistryError {
    match e {
        CallError::Refused { message, .. } => RegistryError::Refused(message),
        CallError::Unavailable(why) => RegistryError::Unavailable(why),
    }
}

#[async_trait::async_trait]
impl Registry for RemoteRegistry {
    async fn register(
        &self,
        request: &RegisterGateway,
    ) -> Result<GatewayRegistration, RegistryError> {
        self.0
            .post(routes::GATEWAY_REGISTER, request, CALL_TIMEOUT)
            .await
            .map_err(registry_error)
    }

    async fn heartbeat(&self, request: &RegisterGateway) -> Result<HeartbeatReply, RegistryError> {
        self.0
            .post(routes::GATEWAY_HEARTBEAT, request, CALL_TIMEOUT)
            .await
            .map_err(registry_error)
    }

    async fn withdraw(&self) -> Result<(), RegistryError> {
        self.0
            .post_raw(routes::GATEWAY_WITHDRAW, None, CALL_TIMEOUT)
            .await
            .map_err(registry_error)
    }
}
