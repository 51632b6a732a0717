//! The web console: the admin half of the service-account guide in a browser, served by the
//! API listener under `/console/` (same TLS, same process; pages rendered on the server from
//! templates compiled into the binary, a little script for what only a script can do: copy a
//! token, close a dialog).
//!
//! Every action calls the API handler of the same action with the signed-in admin as its
//! caller, so the console has no path of its own to the store and no rules of its own: what the
//! API refuses, the console refuses, with the API's message shown beside the form.
//!
//! Security (docs/SECURITY.md, "The web console"): sign-in with a pasted admin token counted by
//! the API's login throttle ([`sign_in`]); a session cookie that is `HttpOnly`, `Secure`,
//! `SameSite=Strict`, with idle and absolute expiry and server-side sign-out ([`session`]); every
//! form checked against cross-site use and for the session's CSRF token ([`form`]); a
//! `Content-Security-Policy` without inline script, no framing, no sniffing, no caching
//! ([`security_headers`]); every rendered value HTML-escaped by the templates.

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware;
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::api::ApiState;

mod account;
mod assets;
mod audit;
mod form;
mod gateways;
mod page;
mod resource;
mod resource_form;
mod resources;
mod session;
mod settings;
mod shown_once;
mod sign_in;
mod users;

/// Scripts and styles only from the console's own files; forms only to itself; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (the API's router merges them).
pub(crate) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(|| async { page::redirect("/console/users") }))
        .route(
            "/console",
            get(|| async { page::redirect("/console/users") }),
        )
        .route(
            "/console/",
            get(|| async { page::redirect("/console/users") }),
        )
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/sign-in", get(sign_in::show).post(sign_in::submit))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/users", get(users::list).post(users::create))
        .route("/console/new/service", get(users::new))
        .route("/console/users/{name}", get(account::show))
        .route("/console/users/{name}/suspend", post(account::suspend))
        .route("/console/users/{name}/unsuspend", post(account::unsuspend))
        .route("/console/users/{name}/rotate", post(account::rotate))
        .route(
            "/console/users/{name}/delete",
            get(account::confirm_delete).post(account::delete),
        )
        .route("/console/users/{name}/grants", post(account::grant))
        .route(
            "/console/users/{name}/grants/{resource}/revoke",
            post(account::revoke),
        )
        .route(
            "/console/resources",
            get(resources::list).post(resources::create),
        )
        .route("/console/new/resource", get(resources::new))
        .route(
            "/console/resources/{name}",
            get(resource::show).post(resource::update),
        )
        .route(
            "/console/resources/{name}/delete",
            get(resource::confirm_delete).post(resource::delete),
        )
        .route("/console/resources/{name}/grants", post(resource::grant))
        .route(
            "/console/resources/{name}/grants/{account}/revoke",
            post(resource::revoke),
        )
        .route(
            "/console/settings",
            get(settings::show).post(settings::update),
        )
        .route(
            "/console/settings/regenerate-ports",
            post(settings::regenerate_ports),
        )
        .route("/console/audit", get(audit::list))
        .route("/console/audit/{id}", get(audit::show))
        .route("/console/gateways", get(gateways::list))
        .route("/console/{*rest}", any(page::not_found))
        .layer(middleware::map_response(security_headers))
}

/// The headers every console answer carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it Chromium sends `Origin: null` with the console's own forms,
    // which the cross-site check must refuse.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // Pages show tokens and account data: never kept by the browser or a proxy.
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
