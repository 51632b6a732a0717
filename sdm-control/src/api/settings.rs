//! `GET`/`PATCH /v1/admin/settings`: organisation settings that clients act on; logins carry them.

use std::sync::Arc;

use axum::extract::State;
use sdm_proto::api::{Settings, UpdateSettings};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use crate::store::Store;

const AUTO_CONNECT: &str = "org.auto_connect";

/// The current settings (defaults where never set).
pub(crate) async fn load(store: &dyn Store) -> Result<Settings, ApiError> {
    let auto_connect = store.get_setting(AUTO_CONNECT).await?.as_deref() == Some(b"1");
    Ok(Settings { auto_connect })
}

pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
) -> Result<axum::Json<Settings>, ApiError> {
    Ok(axum::Json(load(state.store.as_ref()).await?))
}

pub(crate) async fn update(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Json(request): Json<UpdateSettings>,
) -> Result<axum::Json<Settings>, ApiError> {
    if let Some(on) = request.auto_connect {
        let value = if on { b"1".to_vec() } else { b"0".to_vec() };
        state.store.set_setting(AUTO_CONNECT, value).await?;
        tracing::info!(admin = %admin.0.account.name, auto_connect = on, "settings changed");
    }
    Ok(axum::Json(load(state.store.as_ref()).await?))
}
