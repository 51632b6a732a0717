//! What every page shares: the frame around it ([`Chrome`]), rendering, redirects, error pages
//! and the 404 page.

use askama::Template;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sdm_proto::ErrorKind;

use super::session::Console;
use crate::api::ApiError;

/// The frame of a signed-in page: the navigation, who is signed in, and the CSRF token of the
/// sign-out form.
pub(crate) struct Chrome {
    /// The signed-in admin's name.
    pub(crate) admin: String,
    /// The session's CSRF token, for every form on the page.
    pub(crate) csrf: String,
    /// The navigation entry of this page (`users`, `resources`, …).
    pub(crate) active: &'static str,
}

impl Chrome {
    /// The frame for `console`'s pages under the navigation entry `active`.
    pub(crate) fn new(console: &Console, active: &'static str) -> Chrome {
        Chrome {
            admin: console.name().to_owned(),
            csrf: console.csrf.clone(),
            active,
        }
    }
}

/// A page, answered with `status`.
pub(crate) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a console page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                "the console could not render this page; the server log has the details",
            )
                .into_response()
        }
    }
}

/// A page, answered with 200.
pub(crate) fn ok(page: &impl Template) -> Response {
    html(StatusCode::OK, page)
}

/// `303 See Other` to `to` (a path on this server): what a form's POST answers, so that a
/// reload never posts it again.
pub(crate) fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/console/"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// A page that says what went wrong.
#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub(crate) chrome: Option<Chrome>,
    pub(crate) title: String,
    pub(crate) message: String,
}

/// An error page with `status`.
pub(crate) fn error(
    status: StatusCode,
    chrome: Option<Chrome>,
    title: &str,
    message: impl Into<String>,
) -> Response {
    html(
        status,
        &ErrorPage {
            chrome,
            title: title.to_owned(),
            message: message.into(),
        },
    )
}

/// An API error that no form field explains, as a page.
pub(crate) fn api_error_page(e: ApiError) -> Response {
    let title = match e.kind() {
        ErrorKind::Forbidden => "Not allowed",
        ErrorKind::ResourceNotFound => "Not found",
        _ if e.status() == StatusCode::NOT_FOUND => "Not found",
        _ if e.status().is_server_error() => "The console cannot do this right now",
        _ => "That did not work",
    };
    error(e.status(), None, title, e.message())
}

/// The page of every console path that does not exist.
pub(crate) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        None,
        "Page not found",
        "There is no console page at this address.",
    )
}

/// Unix seconds as the console shows them.
pub(crate) fn when(secs: i64) -> String {
    sdm_proto::utc(secs)
}
