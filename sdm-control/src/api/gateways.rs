//! The admin gateway routes: create a standalone gateway's identity (with a token shown once),
//! list, show, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use sdm_proto::gateway::{CreateGateway, CreatedGateway, GatewayDetails, GatewayDetailsList};
use sdm_proto::{Token, TokenKind};

use super::auth::Admin;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, query, validate};
use crate::GATEWAY_LIVENESS;
use crate::gateway_identities::{self, CreateError, GatewayIdentity};
use crate::store::GatewayRecord;

fn details(identity: GatewayIdentity, row: GatewayRecord, now: i64) -> GatewayDetails {
    GatewayDetails {
        name: identity.name,
        tags: identity.tags,
        registered_tags: identity.registered_tags,
        created_at: identity.created_at,
        ..built_in(row, now)
    }
}

/// A gateway built into a control plane: no identity, no tags, and what its registration row
/// says. Live when it reported within [`GATEWAY_LIVENESS`].
fn built_in(row: GatewayRecord, now: i64) -> GatewayDetails {
    let window = i64::try_from(GATEWAY_LIVENESS.as_secs()).unwrap_or(i64::MAX);
    let seen = (row.last_seen > 0).then_some(row.last_seen);
    GatewayDetails {
        id: row.id,
        name: row.name,
        tags: BTreeMap::new(),
        registered_tags: None,
        address: (!row.address.is_empty()).then_some(row.address),
        last_seen: seen,
        live: seen.is_some_and(|s| now.saturating_sub(s) <= window),
        created_at: 0,
        built_in: true,
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::invalid(format!(
        "no gateway is named {name:?}; list them with GET /v1/admin/gateways"
    ))
    .with_status(StatusCode::NOT_FOUND)
}

/// Every gateway identity, sorted by name; with `built_in=true`, the gateways built into
/// control planes too.
pub(crate) async fn list(
    State(state): State<Arc<ApiState>>,
    _admin: Admin,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<GatewayDetailsList>, ApiError> {
    let params = query::parse(raw.as_deref(), &["built_in"])?;
    let with_built_in = match params.get("built_in").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("built_in must be true or false")),
    };
    let now = sdm_proto::unix_now();
    let store = state.store.as_ref();
    let mut gateways: Vec<GatewayDetails> = gateway_identities::list(store)
        .await?
        .into_iter()
        .map(|(identity, row)| details(identity, row, now))
        .collect();
    if with_built_in {
        gateways.extend(
            gateway_identities::list_built_in(store)
                .await?
                .into_iter()
                .map(|row| built_in(row, now)),
        );
        gateways.sort_by(|a, b| a.name.cmp(&b.name));
    }
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
