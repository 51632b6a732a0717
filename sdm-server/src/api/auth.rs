//! Who is calling: `Authorization: Bearer <token>` checked against the stored hash.
//!
//! A token that does not parse is `invalid_token` (with the parser's reason, which helps fix a
//! bad copy). A token that parses but is unknown, revoked, of a deleted or suspended account, or
//! whose secret does not match is `unauthenticated` with one message, never saying which.
//! Tokens are never logged.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::{ErrorKind, Token, TokenKind};

use axum::http::StatusCode;

use super::ApiState;
use super::error::{ApiError, TOKEN_NOT_VALID};
use super::throttle::PeerAddr;
use crate::control::gateway_identities::{self, GatewayIdentity};
use crate::store::AccountRecord;

/// An authenticated caller (service account or admin).
#[derive(Debug)]
pub(crate) struct Caller {
    /// The caller's account, as stored.
    pub(crate) account: AccountRecord,
}

/// An authenticated caller whose account is an admin.
#[derive(Debug)]
pub(crate) struct Admin(pub(crate) Caller);

/// An authenticated standalone gateway (gateway token, `/v1/gateway/…` routes only).
#[derive(Debug)]
pub(crate) struct GatewayCaller {
    /// Its identity, as stored.
    pub(crate) identity: GatewayIdentity,
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthenticated(
            "no token: send the request with the header Authorization: Bearer <token>",
        )
    })?;
    let value = header.to_str().map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidToken,
            "the Authorization header is not text",
        )
    })?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::unauthenticated("the Authorization header must be: Bearer <token>")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthenticated(
            "the Authorization header must be: Bearer <token>",
        ));
    }
    Ok(token.trim())
}

async fn authenticate(parts: &Parts, state: &ApiState) -> Result<Caller, ApiError> {
    throttled(parts, state, check_token(parts, state)).await
}

/// Refuses callers from a source that failed too many token checks, and counts failures.
async fn throttled<T>(
    parts: &Parts,
    state: &ApiState,
    check: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
    if let Some(peer) = peer
        && let Err(wait) = state.throttle.check(peer.ip())
    {
        return Err(ApiError::unauthenticated(format!(
            "too many failed token checks from {}; try again in {} s",
            peer.ip(),
            wait.as_secs().max(1)
        ))
        .with_status(StatusCode::TOO_MANY_REQUESTS));
    }
    let result = check.await;
    if let (Err(e), Some(peer)) = (&result, peer)
        && matches!(
            e.kind(),
            ErrorKind::InvalidToken | ErrorKind::Unauthenticated
        )
    {
        let failures = state.throttle.failed(peer.ip());
        // Logged, but not once per attempt: the first, then at powers of two.
        if failures.is_power_of_two() {
            tracing::warn!(source = %peer.ip(), failures, "failed token check");
        }
    }
    result
}

async fn check_token(parts: &Parts, state: &ApiState) -> Result<Caller, ApiError> {
    let text = bearer(parts)?;
    let token =
        Token::parse(text).map_err(|e| ApiError::new(ErrorKind::InvalidToken, e.to_string()))?;
    if token.kind == TokenKind::Gateway {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "this is a gateway token: it is only for `sdm-server gateway`; jobs log in with a \
             service account token (sdm_svc_…), admins with an admin token (sdm_adm_…)",
        ));
    }
    let not_valid = || ApiError::unauthenticated(TOKEN_NOT_VALID);
    let record = state
        .store
        .get_token(token.id)
        .await?
        .ok_or_else(not_valid)?;
    if record.revoked_at.is_some() || !token.matches_hash(&record.secret_hash) {
        return Err(not_valid());
    }
    let account = state
        .store
        .get_account(record.account_id)
        .await?
        .ok_or_else(not_valid)?;
    let kind_matches = matches!(
        (token.kind, account.kind),
        (TokenKind::Service, AccountKind::Service) | (TokenKind::Admin, AccountKind::Admin)
    );
    if account.status != AccountStatus::Active || !kind_matches {
        return Err(not_valid());
    }
    Ok(Caller { account })
}

/// The message of every failed gateway token check.
const GATEWAY_TOKEN_NOT_VALID: &str = "gateway token is not valid: it was deleted or replaced; \
     ask an admin for a new one (POST /v1/admin/gateways)";

async fn check_gateway_token(parts: &Parts, state: &ApiState) -> Result<GatewayCaller, ApiError> {
    let text = bearer(parts)?;
    let token =
        Token::parse(text).map_err(|e| ApiError::new(ErrorKind::InvalidToken, e.to_string()))?;
    if token.kind != TokenKind::Gateway {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "the /v1/gateway/ routes need a gateway token (sdm_gw_…)",
        ));
    }
    let identity = gateway_identities::authenticate(state.store.as_ref(), &token)
        .await?
        .ok_or_else(|| ApiError::unauthenticated(GATEWAY_TOKEN_NOT_VALID))?;
    Ok(GatewayCaller { identity })
}

impl FromRequestParts<Arc<ApiState>> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        throttled(parts, state, check_gateway_token(parts, state)).await
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        if caller.account.kind != AccountKind::Admin {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "this endpoint needs an admin token",
            ));
        }
        Ok(Admin(caller))
    }
}
