//! `POST /v1/leases`: a signed, short-lived permission to reach one granted resource.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::api::{GatewayInfo, LeaseGrant, LeaseRequest};
use sdm_proto::{ErrorKind, Lease};
use uuid::Uuid;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::json::Json;
use crate::{GATEWAY_LIVENESS, access, pinning};

/// The gateways that reported within [`GATEWAY_LIVENESS`], most recently seen first.
pub(crate) async fn live_gateways(
    state: &ApiState,
    now: i64,
) -> Result<Vec<GatewayInfo>, ApiError> {
    let window = i64::try_from(GATEWAY_LIVENESS.as_secs()).unwrap_or(i64::MAX);
    let mut gateways: Vec<_> = state
        .store
        .list_gateways()
        .await?
        .into_iter()
        .filter(|g| now.saturating_sub(g.last_seen) <= window)
        .collect();
    gateways.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.name.cmp(&b.name)));
    Ok(gateways
        .into_iter()
        .map(|g| GatewayInfo {
            id: g.id,
            name: g.name,
            address: g.address,
            server_name: g.server_name,
        })
        .collect())
}

/// Of the `live` gateways, those that may serve a resource with `resource_tags` (see
/// [`pinning`](crate::pinning)).
pub(crate) async fn serving_gateways(
    state: &ApiState,
    live: Vec<GatewayInfo>,
    resource_tags: &BTreeMap<String, String>,
) -> Result<Vec<GatewayInfo>, ApiError> {
    if pinning::pin_of(resource_tags).is_none() {
        return Ok(live);
    }
    let mut serving = Vec::with_capacity(live.len());
    for gateway in live {
        let tags = state
            .gateway_tags
            .tags_of(state.store.as_ref(), &gateway.name)
            .await?;
        if pinning::serves(resource_tags, &tags) {
            serving.push(gateway);
        }
    }
    Ok(serving)
}

/// Signs a lease for a resource granted to the caller, in one of the caller's open sessions.
pub(crate) async fn issue(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Json(request): Json<LeaseRequest>,
) -> Result<axum::Json<LeaseGrant>, ApiError> {
    let facts = state
        .store
        .access_facts(caller.account.id, request.session_id, request.resource_id)
        .await?;
    let access::Allowed {
        session, resource, ..
    } = access::judge(
        facts,
        access::Request {
            account_id: caller.account.id,
            session_id: request.session_id,
            resource_id: request.resource_id,
            gateway_tags: None,
            moment: access::Moment::Lease,
        },
    )
    .map_err(|refused| ApiError::new(refused.kind, refused.message))?;
    let now = sdm_proto::unix_now();
    if let Some(why) = state.sessions.too_old(&session, now) {
        // As a logout: gateways cut what the session still carries.
        if state.store.end_session(session.id, now).await? {
            tracing::info!(account = %caller.account.name, session = %session.id, %why, "session expired");
        }
        return Err(ApiError::unauthenticated(format!(
            "session {} has expired ({why}); log in again: the token is still valid",
            session.id
        )));
    }
    let live = live_gateways(&state, now).await?;
    let any_live = !live.is_empty();
    let gateways = serving_gateways(&state, live, &resource.tags).await?;
    if any_live && gateways.is_empty() {
        return Err(ApiError::new(
            ErrorKind::GatewayUnreachable,
            format!(
                "no live gateway serves resource {}: it is pinned to gateways matching {}={}; \
                 check that such a gateway is running",
                resource.name,
                pinning::PIN_TAG,
                pinning::pin_of(&resource.tags).unwrap_or_default()
            ),
        ));
    }
    if gateways.is_empty() {
        return Err(ApiError::new(
            ErrorKind::GatewayUnreachable,
            format!(
                "no gateway has reported in the last {} s; check that the sdm-server gateway is running",
                GATEWAY_LIVENESS.as_secs()
            ),
        ));
    }
    // The session is in use (idle expiry counts from here). A session that ended meanwhile
    // (the account's limit) gets no lease.
    if state.sessions.should_touch(&session, now)
        && !state.store.touch_session(session.id, now).await?
    {
        return Err(ApiError::unauthenticated(format!(
            "session {} has just ended; log in again",
            session.id
        )));
    }
    let ttl = state.lease_ttl.as_secs();
    let lease_id = Uuid::new_v4();
    // Clients try gateways in the order given; starting each lease at a different one spreads
    // connections over all of them.
    let mut gateways = gateways;
    let first = usize::from(lease_id.as_bytes()[0]) % gateways.len();
    gateways.rotate_left(first);
    let lease = Lease {
        id: lease_id,
        account_id: caller.account.id,
        resource_id: resource.id,
        session_id: request.session_id,
        issued_at: now,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
    };
    let signed = state.signer.sign(&lease);
    tracing::info!(
        account = %caller.account.name,
        resource = %resource.name,
        session = %lease.session_id,
        lease = %lease.id,
        "lease issued"
    );
    state.metrics.lease_issued();
    Ok(axum::Json(LeaseGrant {
        lease: URL_SAFE_NO_PAD.encode(signed),
        lease_id: lease.id,
        ttl_secs: ttl,
        gateways,
    }))
}
