//! A form posted by a signed-in admin ([`Action`]), refused unless it comes from the console
//! itself: the browser must not call it cross-site (`Sec-Fetch-Site`, `Origin`), and the form
//! must carry the session's CSRF token (a hidden `csrf` field). The session cookie is
//! `SameSite=Strict` as well; each check alone stops a cross-site form post.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{HOST, ORIGIN};
use axum::http::request::Parts;
use axum::response::Response;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::page::{self, Chrome};
use super::session::Console;
use crate::api::ApiState;

/// The largest form body accepted (the largest field, a CA bundle, is 32 KiB).
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in admin's form of type `T`, from the console itself.
pub(crate) struct Action<T> {
    /// Who posted it.
    pub(crate) console: Console,
    /// What was posted.
    pub(crate) form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Why `parts` looks like a request another site made the browser send, if it does.
pub(crate) fn cross_site(parts: &Parts) -> Option<&'static str> {
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some("the browser says another site sent this form");
    }
    if let Some(origin) = header(ORIGIN.as_str()) {
        let host = header(HOST.as_str()).unwrap_or_default();
        let same = origin
            .strip_prefix("https://")
            .is_some_and(|rest| !host.is_empty() && rest == host);
        if !same {
            return Some("the form's origin is not this console");
        }
    }
    None
}

fn refused(console: &Console, why: &str) -> Response {
    tracing::warn!(admin = %console.name(), why, "console form refused");
    page::error(
        StatusCode::FORBIDDEN,
        Some(Chrome::new(console, "")),
        "Form refused",
        format!(
            "This form was refused ({why}). Nothing was changed. Open the page again from the \
             console and send the form from there."
        ),
    )
}

impl<T: DeserializeOwned> FromRequest<Arc<ApiState>> for Action<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<ApiState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let console = Console::from_request_parts(&mut parts, state).await?;
        if let Some(why) = cross_site(&parts) {
            return Err(refused(&console, why));
        }
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return Err(page::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(Chrome::new(&console, "")),
                "Form too large",
                format!(
                    "A console form holds at most {MAX_FORM_BYTES} bytes. Nothing was changed."
                ),
            ));
        };
        let csrf = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
            .map(|f| f.csrf)
            .unwrap_or_default();
        if !console.csrf_matches(&csrf, state) {
            return Err(refused(
                &console,
                "it does not carry this session's CSRF token",
            ));
        }
        match serde_urlencoded::from_bytes::<T>(&bytes) {
            Ok(form) => Ok(Action { console, form }),
            Err(e) => Err(page::error(
                StatusCode::BAD_REQUEST,
                Some(Chrome::new(&console, "")),
                "Form not understood",
                format!("The form's fields could not be read ({e}). Nothing was changed."),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri("/console/users");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_form_from_the_console_itself_passes() {
        assert_eq!(cross_site(&parts(&[])), None);
        assert_eq!(
            cross_site(&parts(&[
                ("host", "127.0.0.1:8443"),
                ("origin", "https://127.0.0.1:8443"),
                ("sec-fetch-site", "same-origin"),
            ])),
            None
        );
    }

    #[test]
    fn a_form_from_another_origin_is_refused() {
        for headers in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")][..],
            &[
                ("host", "127.0.0.1:8443"),
                ("origin", "https://127.0.0.1:9000"),
            ][..],
            &[
                ("host", "127.0.0.1:8443"),
                ("origin", "http://127.0.0.1:8443"),
            ][..],
            &[("host", "127.0.0.1:8443"), ("origin", "null")][..],
            &[("origin", "https://127.0.0.1:8443")][..],
        ] {
            assert!(cross_site(&parts(headers)).is_some(), "{headers:?}");
        }
    }
}
