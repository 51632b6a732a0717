//! The admin gateway routes: create a standalone gateway's identity (with a token shown once),
//! list, show, delete.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use sdm_proto::gateway::{CreateGateway, CreatedGateway, GatewayDetails, GatewayDetailsList};
use sdm_proto::{Token, TokenKind};

use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, validate};
use crate::GATEWAY_LIVENESS;
use crate::gateway_identities::{self, CreateError, GatewayIdentity};
use crate::store::GatewayRecord;

fn details(identity: GatewayIdentity, row: GatewayRecord, now: i64) -> GatewayDetails {
    let window = i64::try_from(GATEWAY_LIVENESS.as_secs()).unwrap_or(i64::MAX);
    let seen = (row.last_seen > 0).then_some(row.last_seen);
    GatewayDetails {
        id: row.id,
        name: identity.name,
        tags: identity.tags,
        registered_tags: identity.registered_tags,
        address: (!row.address.is_empty()).then_some(row.address),
        last_seen: seen,
        live: seen.is_some_and(|s| now.saturating_sub(s) <= window),
        created_at: identity.created_at,
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::invalid(format!(
        "no gateway is named {name:?}; list them with GET /v1/admin/gateways"
    ))
    .with_status(StatusCode::NOT_FOUND)
}

/// Every gateway identity, sorted by name.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
) -> Result<axum::Json<GatewayDetailsList>, ApiError> {
    let now = sdm_proto::unix_now();
    let gateways = gateway_identities::list(state.store.as_ref())
        .await?
        .into_iter()
        .map(|(identity, row)| details(identity, row, now))
        .collect();
    Ok(axum::Json(GatewayDetailsList { gateways }))
}

/// One gateway identity.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<axum::Json<GatewayDetails>, ApiError> {
    let now = sdm_proto::unix_now();
    gateway_identities::list(state.store.as_ref())
        .await?
        .into_iter()
        .find(|(identity, _)| identity.name == name)
        .map(|(identity, row)| axum::Json(details(identity, row, now)))
        .ok_or_else(|| not_found(&name))
}

/// Creates a gateway identity and returns its token, once.
pub(crate) async fn create(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Json(request): Json<CreateGateway>,
) -> Result<axum::Json<CreatedGateway>, ApiError> {
    validate::name("gateway", &request.name)?;
    validate::labels("gateway tag", &request.tags)?;
    let token = Token::generate(TokenKind::Gateway, &state.api_url, state.ca_fingerprint)
        .map_err(|e| ApiError::internal("generating a token failed", &e))?;
    let now = sdm_proto::unix_now();
    let identity = GatewayIdentity::new(
        token.id,
        &token.secret_hash(),
        request.name.clone(),
        request.tags,
        now,
    );
    let row = match gateway_identities::create(state.store.as_ref(), &identity).await {
        Ok(row) => row,
        Err(CreateError::Taken(message)) => {
            return Err(ApiError::invalid(message).with_status(StatusCode::CONFLICT));
        }
        Err(CreateError::Store(e)) => return Err(e.into()),
    };
    state.gateway_tags.forget(&identity.name);
    tracing::info!(admin = %admin.0.account.name, gateway = %identity.name, "gateway created");
    Ok(axum::Json(CreatedGateway {
        gateway: details(identity, row, now),
        token: token.encode(),
    }))
}

/// Deletes a gateway identity: its token is refused and it is no longer offered to clients.
pub(crate) async fn delete(
    State(state): State<Arc<ApiState>>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !gateway_identities::delete(state.store.as_ref(), &name, sdm_proto::unix_now()).await? {
        return Err(not_found(&name));
    }
    state.gateway_tags.forget(&name);
    tracing::info!(admin = %admin.0.account.name, gateway = %name, "gateway deleted");
    Ok(StatusCode::NO_CONTENT)
}
