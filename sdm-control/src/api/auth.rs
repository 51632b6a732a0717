//! Who is calling: `Authorization: Bearer <token>` checked against the stored hash.
//!
//! A token that does not parse is `invalid_token` (with the parser's reason, which helps fix a
//! bad copy). A token that parses but is unknown, revoked, of a deleted or suspended account, or
//! whose secret does not match is `unauthenticated` with one message, never saying which.
//! Failed checks are counted per source and per token id ([`super::throttle`]); past a limit
//! they are answered with 429 and the retryable kind `api_unreachable`, never a valid token.
//! Tokens are never logged (token ids, which are not secret, may be).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sdm_proto::api::{AccountKind, AccountStatus};
use sdm_proto::{ErrorKind, Token, TokenKind};

use axum::http::StatusCode;

use super::ApiState;
use super::error::{ApiError, TOKEN_NOT_VALID};
use super::throttle::{LoginThrottle, PeerAddr};
use crate::gateway_identities::{self, GatewayIdentity};
use crate::store::{AccountRecord, TokenRecord};
use uuid::Uuid;

/// An authenticated caller (service account or admin).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The caller's account, as stored.
    pub(crate) account: AccountRecord,
}

/// An authenticated caller whose account is an admin.
#[derive(Debug, Clone)]
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
    let attempt = Attempt::start(source(parts), state);
    let token = presented(parts).map_err(|e| attempt.refused(e))?;
    check_presented(state, &attempt, token).await
}

/// Checks a token typed into the console's sign-in form, counted by the same throttle as
/// bearer tokens (its source is the browser's address).
pub(crate) async fn authenticate_text(
    state: &ApiState,
    text: &str,
    source: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let attempt = Attempt::start(source, state);
    let token = Token::parse(text.trim())
        .map_err(|e| attempt.refused(ApiError::new(ErrorKind::InvalidToken, e.to_string())))?;
    check_presented(state, &attempt, token).await
}

/// The client address of the request, when the server recorded it.
fn source(parts: &Parts) -> Option<IpAddr> {
    parts.extensions.get::<PeerAddr>().map(|p| p.0.ip())
}

async fn check_presented(
    state: &ApiState,
    attempt: &Attempt<'_>,
    token: Token,
) -> Result<Caller, ApiError> {
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
        .ok_or_else(|| attempt.refused(not_valid()))?;
    attempt.verdict(token.id, check_token(state, &token, record).await)
}

/// The `Authorization: Bearer` text, parsed.
fn presented(parts: &Parts) -> Result<Token, ApiError> {
    Token::parse(bearer(parts)?).map_err(|e| ApiError::new(ErrorKind::InvalidToken, e.to_string()))
}

/// Whether `e` is the answer to a token that is not valid (which the throttle counts).
fn is_failed_check(e: &ApiError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidToken | ErrorKind::Unauthenticated
    )
}

/// One token check as the throttle sees it: where it comes from, and whether that source is
/// throttled (see [`super::throttle`]).
struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    source: Option<IpAddr>,
    /// While the source is throttled: how long it stays so.
    source_wait: Option<Duration>,
}

impl<'a> Attempt<'a> {
    fn start(source: Option<IpAddr>, state: &'a ApiState) -> Attempt<'a> {
        Attempt {
            throttle: &state.throttle,
            source,
            source_wait: source.and_then(|ip| state.throttle.source_wait(ip)),
        }
    }

    /// No usable token, or one whose id the store does not know: counted against the source;
    /// from a throttled source answered with 429 instead of `error`. No secret was compared.
    fn refused(&self, error: ApiError) -> ApiError {
        if !is_failed_check(&error) {
            return error;
        }
        self.count_source();
        match (self.source, self.source_wait) {
            (Some(ip), Some(wait)) => throttled(
                format!(
                    "too many failed token checks from {ip}: for now only tokens the sdm API \
                     knows are checked from this address, and this one is not known (a valid \
                     token is still accepted)"
                ),
                wait,
            ),
            _ => error,
        }
    }

    /// The verdict on a token whose id exists (its secret was compared): a failure counts
    /// against the source and the token id, and past the id's limit is answered with 429.
    fn verdict<T>(&self, id: Uuid, result: Result<T, ApiError>) -> Result<T, ApiError> {
        let error = match result {
            Err(e) if is_failed_check(&e) => e,
            other => return other,
        };
        // Past the limit already before this failure (as for sources: the 11th is refused).
        let wait = self.throttle.token_wait(id);
        self.count_source();
        let failures = self.throttle.token_failed(id);
        // Logged, but not once per attempt: the first, then at powers of two.
        if failures.is_power_of_two() {
            tracing::warn!(token_id = %id, source = ?self.source, failures, "failed check of an existing token");
        }
        match wait {
            Some(wait) => Err(throttled(
                "too many failed checks of this token id: it was presented with a wrong \
                 secret, or after it was revoked, too often (someone may be guessing its \
                 secret); the right secret is still accepted"
                    .to_owned(),
                wait,
            )),
            None => Err(error),
        }
    }

    fn count_source(&self) {
        if let Some(ip) = self.source {
            let failures = self.throttle.source_failed(ip);
            // Logged, but not once per attempt: the first, then at powers of two.
            if failures.is_power_of_two() {
                tracing::warn!(source = %ip, failures, "failed token check");
            }
        }
    }
}

/// 429 with a retryable kind: the request may succeed later, and nothing says the token was
/// revoked (clients must not give up on it).
fn throttled(why: String, wait: Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::new(
        ErrorKind::ApiUnreachable,
        format!("{why}; try again in {secs} s"),
    )
    .with_status(StatusCode::TOO_MANY_REQUESTS)
    .with_retry_after(secs)
}

/// Whether the token, whose id exists, is the live token of an active account of its kind.
async fn check_token(
    state: &ApiState,
    token: &Token,
    record: TokenRecord,
) -> Result<Caller, ApiError> {
    let not_valid = || ApiError::unauthenticated(TOKEN_NOT_VALID);
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
    let attempt = Attempt::start(source(parts), state);
    let token = presented(parts).map_err(|e| attempt.refused(e))?;
    if token.kind != TokenKind::Gateway {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "the /v1/gateway/ routes need a gateway token (sdm_gw_…)",
        ));
    }
    let not_valid = || ApiError::unauthenticated(GATEWAY_TOKEN_NOT_VALID);
    let identity = gateway_identities::read(state.store.as_ref(), token.id)
        .await?
        .ok_or_else(|| attempt.refused(not_valid()))?;
    let verdict = if identity.accepts(&token) {
        Ok(GatewayCaller { identity })
    } else {
        Err(not_valid())
    };
    attempt.verdict(token.id, verdict)
}

impl FromRequestParts<Arc<ApiState>> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        check_gateway_token(parts, state).await
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
