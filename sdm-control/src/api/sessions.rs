//! `POST /v1/login` and `POST /v1/logout`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use sdm_proto::api::{AccountSummary, LoginRequest, LoginResponse, LogoutRequest};
use uuid::Uuid;

use super::auth::Caller;
use super::error::ApiError;
use super::json::Json;
use super::{ApiState, validate};
use crate::store::SessionRecord;

/// Opens a session for the caller, recording the job's labels and client. When the account
/// then holds more open sessions than the limit, its oldest make room (see
/// [`Store::open_session`](crate::store::Store::open_session)).
pub(crate) async fn login(
    State(state): State<Arc<ApiState>>,
    caller: Result<Caller, ApiError>,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<LoginResponse>, ApiError> {
    // The token is checked here rather than before the handler so that refusals are counted.
    let answer = match caller {
        Ok(caller) => open_session(&state, caller, request).await,
        Err(refused) => Err(refused),
    };
    state
        .metrics
        .login(answer.as_ref().map(|_| ()).map_err(ApiError::kind));
    answer
}

async fn open_session(
    state: &ApiState,
    caller: Caller,
    request: LoginRequest,
) -> Result<axum::Json<LoginResponse>, ApiError> {
    validate::labels("label", &request.labels)?;
    validate::text("client", &request.client, validate::MAX_TEXT_LEN)?;
    let now = sdm_proto::unix_now();
    let session = SessionRecord {
        id: Uuid::new_v4(),
        account_id: caller.account.id,
        labels: request.labels,
        client: request.client,
        created_at: now,
        ended_at: None,
        last_used_at: None,
    };
    let session_id = session.id;
    tracing::info!(
        account = %caller.account.name,
        session = %session_id,
        client = %session.client,
        "login"
    );
    let max = state.sessions.max_per_account;
    let made_room = state.store.open_session(session, max).await?;
    if made_room > 0 {
        tracing::info!(
            account = %caller.account.name,
            ended = made_room,
            max,
            "the account's oldest sessions were ended to stay within its session limit"
        );
    }
    Ok(axum::Json(LoginResponse {
        session_id,
        account: AccountSummary {
            id: caller.account.id,
            name: caller.account.name,
            kind: caller.account.kind,
        },
        server_time: now,
        settings: super::settings::load(state.store.as_ref()).await?,
    }))
}

/// Ends one of the caller's sessions (again is fine).
pub(crate) async fn logout(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Json(request): Json<LogoutRequest>,
) -> Result<StatusCode, ApiError> {
    match state.store.get_session(request.session_id).await? {
        Some(session) if session.account_id == caller.account.id => {
            if state
                .store
                .end_session(session.id, sdm_proto::unix_now())
                .await?
            {
                tracing::info!(account = %caller.account.name, session = %session.id, "logout");
            }
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::unauthenticated(format!(
            "session {} does not belong to this account; log in again",
            request.session_id
        ))),
    }
}
