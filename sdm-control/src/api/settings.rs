//! `GET`/`PATCH /v1/admin/settings`: organisation settings that clients act on; logins carry
//! them. `POST /v1/admin/settings/regenerate-ports` assigns the port-overrides setting's ports
//! again.

use std::sync::Arc;

use axum::extract::State;
use sdm_proto::api::{PortRange, Settings, UpdateSettings};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use crate::store::{PortOverridesChange, Store, StoreError};

const AUTO_CONNECT: &str = "org.auto_connect";

/// The current settings (defaults where never set).
pub(crate) async fn load(store: &dyn Store) -> Result<Settings, ApiError> {
    let auto_connect = store.get_setting(AUTO_CONNECT).await?.as_deref() == Some(b"1");
    let ports = store.port_overrides().await?;
    Ok(Settings {
        auto_connect,
        assign_ports: ports.assign,
        port_range: ports.range,
    })
}

pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
) -> Result<axum::Json<Settings>, ApiError> {
    Ok(axum::Json(load(state.store.as_ref()).await?))
}

/// Port changes go first: when the store refuses them (too small a range), nothing changes.
pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Json(request): Json<UpdateSettings>,
) -> Result<axum::Json<Settings>, ApiError> {
    if request.assign_ports.is_some() || request.port_range.is_some() {
        let change = PortOverridesChange {
            assign: request.assign_ports,
            range: request.port_range.map(checked).transpose()?,
            regenerate: false,
        };
        let (ports, moved) =
            state
                .store
                .change_port_overrides(change)
                .await
                .map_err(|e| match e {
                    // The range holds too few free ports for the resources that need one.
                    StoreError::PortsExhausted { .. } => ApiError::from(e).in_field("port_range"),
                    e => ApiError::from(e),
                })?;
        tracing::info!(
            admin = %admin.0.account.name,
            assign_ports = ports.assign,
            port_range = %ports.range,
            ports_changed = moved,
            "settings changed"
        );
    }
    if let Some(on) = request.auto_connect {
        let value = if on { b"1".to_vec() } else { b"0".to_vec() };
        state.store.set_setting(AUTO_CONNECT, value).await?;
        tracing::info!(admin = %admin.0.account.name, auto_connect = on, "settings changed");
    }
    Ok(axum::Json(load(state.store.as_ref()).await?))
}

/// Assigns every port the setting assigned again, lowest first in name order; explicit ports
/// stay.
pub(crate) async fn regenerate_ports(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
) -> Result<axum::Json<Settings>, ApiError> {
    // Off, nothing was assigned: say so rather than answer "done".
    if !state.store.port_overrides().await?.assign {
        return Err(ApiError::invalid(
            "port overrides are off, so no port was assigned and none can be regenerated; \
             switch them on first (assign_ports: true)",
        ));
    }
    let change = PortOverridesChange {
        regenerate: true,
        ..PortOverridesChange::default()
    };
    let (ports, moved) = state.store.change_port_overrides(change).await?;
    tracing::info!(
        admin = %admin.0.account.name,
        port_range = %ports.range,
        ports_changed = moved,
        "assigned ports regenerated"
    );
    Ok(axum::Json(load(state.store.as_ref()).await?))
}

/// A range from the wire, which JSON alone does not check (1 to 65535 is u16's, first <= last
/// is not).
fn checked(range: PortRange) -> Result<PortRange, ApiError> {
    PortRange::new(range.first, range.last).map_err(|e| ApiError::invalid(e).in_field("port_range"))
}
