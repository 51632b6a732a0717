//! A new token, carried from the form that made it to the one page that shows it.
//!
//! The form's answer is a redirect (so that reloading never posts the form again); the token
//! rides along in a short-lived cookie sealed with the credential key and bound to the session.
//! The page that shows it removes the cookie in the same answer, so a reload shows nothing: the
//! server keeps only the token's hash, and the browser no longer has it either.

use super::session::{self, Console};
use crate::api::{ApiError, ApiState};
use axum::http::HeaderValue;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::response::Response;

const COOKIE_NAME: &str = "__Host-sdm-console-token";
const PURPOSE: &str = "sdm-console-token-v1";
/// How long the cookie may wait for its page (a redirect's round trip, normally).
const LIFETIME_SECS: u32 = 120;

/// A token to show once, and whose it is.
pub(crate) struct NewToken {
    /// The account's name.
    pub(crate) account: String,
    /// The token.
    pub(crate) token: String,
}

/// `redirect` carrying `token` for `console`'s next page.
pub(crate) fn carry(
    state: &ApiState,
    console: &Console,
    token: &NewToken,
    mut redirect: Response,
) -> Result<Response, ApiError> {
    let text = format!(
        "{PURPOSE} {} {} {}",
        console.session, token.account, token.token
    );
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}",
        session::seal(state, &text)?
    );
    let value = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::invalid("the token cookie is not a header value"))?;
    redirect.headers_mut().append(SET_COOKIE, value);
    Ok(redirect)
}

/// The token the request carries for `console`, if any. Call [`forget`] on the answer.
pub(crate) fn take(state: &ApiState, console: &Console, parts: &Parts) -> Option<NewToken> {
    let text = session::open(state, session::cookie(parts, COOKIE_NAME)?)?;
    let mut words = text.split(' ');
    if words.next() != Some(PURPOSE) || words.next() != Some(&console.session.to_string()) {
        return None;
    }
    Some(NewToken {
        account: words.next()?.to_owned(),
        token: words.next()?.to_owned(),
    })
}

/// Removes the token cookie with `response` (whether or not the request had one).
pub(crate) fn forget(mut response: Response) -> Response {
    response.headers_mut().append(
        SET_COOKIE,
        HeaderValue::from_static(
            "__Host-sdm-console-token=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}
