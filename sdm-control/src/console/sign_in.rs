//! Signing in with an admin token pasted into a form (never a URL, never browser storage), and
//! signing out.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use sdm_proto::Token;
use sdm_proto::api::AccountKind;
use serde::Deserialize;

use super::form::{self, Action};
use super::page::{self, Chrome};
use super::session;
use crate::api::{ApiState, PeerAddr, authenticate_text};
use crate::sessions::human;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Option<Chrome>,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Ended {
    ended: Option<String>,
}

/// The sign-in form, saying why the last session ended when it did.
pub(crate) async fn show(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<Ended>,
) -> Response {
    let notice = match query.ended.as_deref() {
        Some("idle") => Some(format!(
            "You were signed out after {} without activity.",
            human(state.sessions.console_idle_timeout)
        )),
        Some("expired") => Some(format!(
            "You were signed out: a console session lasts at most {}.",
            human(state.sessions.console_max_age)
        )),
        Some("signed-out") => Some("You are signed out.".to_owned()),
        Some(_) => Some(
            "Your session ended: you signed out, or your account or its token changed \
             (suspended, deleted or rotated)."
                .to_owned(),
        ),
        None => None,
    };
    page::ok(&SignInPage {
        chrome: None,
        notice,
        error: None,
    })
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    page::html(
        status,
        &SignInPage {
            chrome: None,
            notice: None,
            error: Some(message.into()),
        },
    )
}

/// Checks the token (counted by the API's login throttle) and opens a console session.
pub(crate) async fn submit(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(why) = form::cross_site(&parts) {
        return refused(StatusCode::FORBIDDEN, format!("Sign-in refused: {why}."));
    }
    let Ok(bytes) = axum::body::to_bytes(body, form::MAX_FORM_BYTES).await else {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "That is far too long for a token.",
        );
    };
    let text = serde_urlencoded::from_bytes::<SignInForm>(&bytes)
        .map(|f| f.token)
        .unwrap_or_default();
    if text.trim().is_empty() {
        return refused(StatusCode::BAD_REQUEST, "Paste an admin token (sdm_adm_…).");
    }
    let source = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
    let caller = match authenticate_text(&state, &text, source).await {
        Ok(caller) => caller,
        Err(e) => return refused(e.status(), e.message()),
    };
    if caller.account.kind != AccountKind::Admin {
        return refused(
            StatusCode::FORBIDDEN,
            "This is a service account token: service accounts log in with `sdm login` and \
             cannot sign in to the console. Sign in with an admin token (sdm_adm_…).",
        );
    }
    // It parsed, or authentication would have failed.
    let Ok(token) = Token::parse(text.trim()) else {
        return refused(StatusCode::BAD_REQUEST, "The token does not parse.");
    };
    match session::start(&state, &caller, token.id).await {
        Ok(cookie) => {
            let mut to_users = page::redirect("/console/users");
            to_users.headers_mut().insert(SET_COOKIE, cookie);
            to_users
        }
        Err(e) => page::api_error_page(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct NoFields {}

/// Ends the session server-side and removes the cookie.
pub(crate) async fn sign_out(
    State(state): State<Arc<ApiState>>,
    action: Action<NoFields>,
) -> Response {
    if let Err(e) = state
        .store
        .end_session(action.console.session, sdm_proto::unix_now())
        .await
    {
        return page::api_error_page(e.into());
    }
    tracing::info!(admin = %action.console.name(), session = %action.console.session, "console sign-out");
    let mut to_sign_in = page::redirect("/console/sign-in?ended=signed-out");
    to_sign_in
        .headers_mut()
        .insert(SET_COOKIE, session::clear_cookie());
    to_sign_in
}
