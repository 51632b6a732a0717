//! Who is signed in to the console: a login session of the admin's account in the store (so
//! every control-plane instance sees it, and signing out ends it server-side), named in the
//! browser by a cookie that holds the session id and the admin token's id, sealed with the
//! credential key (so it cannot be made up or altered).
//!
//! Every page load checks, in the store: the session is open and within its idle and absolute
//! limits, the token it was opened with is not revoked (rotating it signs the browser out), and
//! the account is an active admin (suspending or deleting it ends its sessions at once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sdm_proto::api::{AccountKind, AccountStatus};
use uuid::Uuid;

use super::page;
use crate::api::{Admin, ApiError, ApiState, Caller};
use crate::store::SessionRecord;

/// The cookie's name. `__Host-` makes the browser insist on `Secure`, `Path=/` and no `Domain`.
pub(crate) const COOKIE_NAME: &str = "__Host-sdm-console";
/// The `client` recorded on console sessions (shown beside job sessions).
pub(crate) const CLIENT: &str = "sdm console";
/// A session's last use is written at most this often (or a quarter of the idle timeout).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What a sealed value is for, so that a cookie cannot pass as a CSRF token or the reverse.
const SESSION_PURPOSE: &str = "sdm-console-session-v1";
const CSRF_PURPOSE: &str = "sdm-console-csrf-v1";

/// A signed-in admin, as a handler sees it.
pub(crate) struct Console {
    /// The admin, as the API's handlers take it.
    pub(crate) admin: Admin,
    /// The console session.
    pub(crate) session: Uuid,
    /// The token every form of this session carries (see [`super::form`]).
    pub(crate) csrf: String,
}

impl Console {
    /// The admin, for one API handler call.
    pub(crate) fn admin(&self) -> Admin {
        self.admin.clone()
    }

    /// The admin's account name.
    pub(crate) fn name(&self) -> &str {
        &self.admin.0.account.name
    }

    /// Whether `given` is this session's CSRF token.
    pub(crate) fn csrf_matches(&self, given: &str, state: &ApiState) -> bool {
        open(state, given).is_some_and(|text| text == csrf_text(self.session))
    }
}

/// Why a request is not signed in (shown on the sign-in page it is sent to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// No cookie, or one that does not open.
    Missing,
    /// Signed out, or ended by an admin action (suspension, deletion, token rotation).
    Closed,
    /// Not used for the console idle timeout ([`SessionPolicy`](crate::SessionPolicy)).
    Idle,
    /// Older than the console's maximum session age.
    Expired,
}

impl Ended {
    /// The sign-in page's query for this reason.
    pub(crate) fn query(self) -> &'static str {
        match self {
            Ended::Missing => "",
            Ended::Closed => "?ended=ended",
            Ended::Idle => "?ended=idle",
            Ended::Expired => "?ended=expired",
        }
    }
}

/// Opens a console session for `caller` (an active admin who just gave token `token_id`);
/// returns the `Set-Cookie` value naming it.
pub(crate) async fn start(
    state: &ApiState,
    caller: &Caller,
    token_id: Uuid,
) -> Result<HeaderValue, ApiError> {
    let session = SessionRecord {
        id: Uuid::new_v4(),
        account_id: caller.account.id,
        labels: BTreeMap::from([("via".to_owned(), "console".to_owned())]),
        client: CLIENT.to_owned(),
        created_at: sdm_proto::unix_now(),
        ended_at: None,
        last_used_at: None,
    };
    let id = session.id;
    state
        .store
        .open_session(session, state.sessions.max_per_account)
        .await?;
    tracing::info!(admin = %caller.account.name, session = %id, "console sign-in");
    let value = seal(state, &format!("{SESSION_PURPOSE} {id} {token_id}"))?;
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(|_| ApiError::invalid("the session cookie is not a header value"))
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-sdm-console=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// The signed-in admin of the request, or why there is none.
async fn resume(state: &ApiState, parts: &Parts) -> Result<Result<Console, Ended>, ApiError> {
    let Some((session_id, token_id)) = ticket(state, parts) else {
        return Ok(Err(Ended::Missing));
    };
    let store = state.store.as_ref();
    let Some(session) = store.get_session(session_id).await? else {
        return Ok(Err(Ended::Closed));
    };
    if session.ended_at.is_some() {
        return Ok(Err(Ended::Closed));
    }
    let now = sdm_proto::unix_now();
    let last_use = session.last_used_at.unwrap_or(session.created_at);
    let over = |since: i64, limit: Duration| now.saturating_sub(since) > secs(limit);
    let expired = if over(session.created_at, state.sessions.console_max_age) {
        Some(Ended::Expired)
    } else if over(last_use, state.sessions.console_idle_timeout) {
        Some(Ended::Idle)
    } else {
        None
    };
    let token_live = store
        .get_token(token_id)
        .await?
        .is_some_and(|t| t.revoked_at.is_none() && t.account_id == session.account_id);
    let account = store
        .get_account(session.account_id)
        .await?
        .filter(|a| a.kind == AccountKind::Admin && a.status == AccountStatus::Active);
    let why = match (expired, token_live, account) {
        (Some(why), _, _) => why,
        (None, true, Some(account)) => {
            let every = TOUCH_EVERY.min(state.sessions.console_idle_timeout / 4);
            if now.saturating_sub(last_use) >= secs(every) {
                store.touch_session(session.id, now).await?;
            }
            return Ok(Ok(Console {
                admin: Admin(Caller { account }),
                session: session.id,
                csrf: seal(state, &csrf_text(session.id))?,
            }));
        }
        (None, _, _) => Ended::Closed,
    };
    store.end_session(session.id, now).await?;
    tracing::info!(session = %session.id, reason = ?why, "console session ended");
    Ok(Err(why))
}

/// The session and token ids sealed in the request's cookie, when it has a valid one.
fn ticket(state: &ApiState, parts: &Parts) -> Option<(Uuid, Uuid)> {
    let text = open(state, cookie(parts, COOKIE_NAME)?)?;
    let mut words = text.split(' ');
    if words.next() != Some(SESSION_PURPOSE) {
        return None;
    }
    let session = Uuid::parse_str(words.next()?).ok()?;
    let token = Uuid::parse_str(words.next()?).ok()?;
    Some((session, token))
}

/// The value of the request's cookie `name`.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn csrf_text(session: Uuid) -> String {
    format!("{CSRF_PURPOSE} {session}")
}

/// `text` sealed with the credential key, as cookie-safe text.
pub(crate) fn seal(state: &ApiState, text: &str) -> Result<String, ApiError> {
    let sealed = state
        .secrets
        .seal(text)
        .map_err(|e| ApiError::internal("sealing a console value failed", &e))?;
    Ok(URL_SAFE_NO_PAD.encode(sealed))
}

/// What [`seal`] sealed, if `value` is such a value.
pub(crate) fn open(state: &ApiState, value: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
    state.secrets.open(&bytes).ok()
}

impl FromRequestParts<Arc<ApiState>> for Console {
    /// The sign-in page (a redirect), or an error page when the store fails.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match resume(state, parts).await {
            Ok(Ok(console)) => Ok(console),
            Ok(Err(why)) => {
                let mut to_sign_in = page::redirect(&format!("/console/sign-in{}", why.query()));
                if why != Ended::Missing {
                    to_sign_in
                        .headers_mut()
                        .insert(axum::http::header::SET_COOKIE, clear_cookie());
                }
                Err(to_sign_in)
            }
            Err(e) => Err(page::api_error_page(e).into_response()),
        }
    }
}
