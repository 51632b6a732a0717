//! The control plane's HTTPS JSON API (routes in `docs/PROTOCOL.md` and
//! [`sdm_proto::api::routes`]).
//!
//! Every error, including a route that does not exist, a wrong method, a malformed or oversized
//! body, comes back as `{"error":{"kind":…,"message":…}}` with a 4xx or 5xx status.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use sdm_proto::ErrorKind;
use sdm_proto::api::{MAX_BODY_BYTES, routes};
use sdm_proto::lease::LeaseSigner;

use crate::gateway_identities::TagCache;
use crate::keys::{CertificateAuthority, SecretBox, SshCa};
use crate::store::Store;

pub(crate) mod accounts;
pub(crate) mod audit;
mod auth;
mod error;
mod gateway_routes;
pub(crate) mod gateways;
pub(crate) mod grants;
mod json;
mod leases;
mod query;
pub(crate) mod resources;
mod serve;

pub use serve::DEFAULT_CONNECTIONS_PER_SOURCE;
mod sessions;
pub(crate) mod settings;
mod throttle;
mod validate;

pub(crate) use throttle::{LoginThrottle, PeerAddr};

pub(crate) use accounts::new_token;
pub(crate) use auth::{Admin, Caller, authenticate_text};
pub(crate) use error::ApiError;
pub(crate) use json::Json;

/// How long one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest error text from a lower layer that is carried into a JSON error body.
const MAX_PLAIN_ERROR_BYTES: usize = 4096;

/// What the API serves with.
pub struct ApiConfig {
    /// Accounts, resources, grants, sessions, gateways.
    pub store: Arc<dyn Store>,
    /// Signs leases.
    pub signer: Arc<LeaseSigner>,
    /// Seals stored credentials.
    pub secrets: Arc<SecretBox>,
    /// The URL new tokens carry.
    pub api_url: String,
    /// Issues standalone gateways their TLS certificates; tokens carry its fingerprint.
    pub ca: Arc<CertificateAuthority>,
    /// Signs ssh login certificates; gateway host keys derive from it.
    pub ssh_ca: Arc<SshCa>,
    /// Lifetime of issued leases.
    pub lease_ttl: Duration,
    /// How many sessions an account may hold, and how long they live.
    pub sessions: crate::SessionPolicy,
    /// Connections one source may hold at once.
    pub connections_per_source: usize,
    /// Where the API counts logins and leases.
    pub metrics: crate::ControlMetrics,
}

/// Serves the API on `listener` until `stop` turns true, then lets requests in flight finish
/// for up to `drain`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: ApiConfig,
    stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> tokio::task::JoinHandle<()> {
    let state = Arc::new(ApiState {
        store: config.store,
        signer: config.signer,
        secrets: config.secrets,
        api_url: config.api_url,
        ca_fingerprint: config.ca.fingerprint(),
        lease_ttl: config.lease_ttl,
        sessions: config.sessions,
        throttle: LoginThrottle::default(),
        ca: config.ca,
        ssh_ca: config.ssh_ca,
        gateway_tags: TagCache::default(),
        metrics: config.metrics,
    });
    tokio::spawn(serve::serve(
        listener,
        tls,
        router(state),
        stop,
        drain,
        config.connections_per_source,
    ))
}

/// What the handlers share.
pub(crate) struct ApiState {
    /// Accounts, resources, grants, sessions, gateways.
    pub(crate) store: Arc<dyn Store>,
    /// Signs leases.
    pub(crate) signer: Arc<LeaseSigner>,
    /// Seals stored credentials.
    pub(crate) secrets: Arc<SecretBox>,
    /// The URL new tokens carry.
    pub(crate) api_url: String,
    /// The CA fingerprint new tokens carry.
    pub(crate) ca_fingerprint: [u8; 32],
    /// Lifetime of issued leases.
    pub(crate) lease_ttl: Duration,
    /// How many sessions an account may hold, and how long they live.
    pub(crate) sessions: crate::SessionPolicy,
    /// Failed token checks per source.
    pub(crate) throttle: LoginThrottle,
    /// Issues standalone gateways their TLS certificates.
    pub(crate) ca: Arc<CertificateAuthority>,
    /// Signs ssh login certificates; gateway host keys derive from it.
    pub(crate) ssh_ca: Arc<SshCa>,
    /// The tags of gateways, for pinned resources.
    pub(crate) gateway_tags: TagCache,
    /// Logins and leases counted.
    pub(crate) metrics: crate::ControlMetrics,
}

impl ApiState {
    /// Where leases go, decided on this state (standalone gateways' questions).
    pub(crate) fn directory(&self) -> crate::StoreDirectory {
        crate::StoreDirectory::new(
            self.store.clone(),
            self.secrets.clone(),
            self.ssh_ca.clone(),
        )
    }
}

/// The API's routes.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::LOGIN, post(sessions::login))
        .route(routes::LOGOUT, post(sessions::logout))
        .route(routes::RESOURCES, get(resources::list_granted))
        .route(routes::LEASES, post(leases::issue))
        .route(
            routes::ADMIN_ACCOUNTS,
            get(accounts::list).post(accounts::create),
        )
        .route(
            "/v1/admin/accounts/{account}",
            get(accounts::show).delete(accounts::delete),
        )
        .route(
            "/v1/admin/accounts/{account}/suspend",
            post(accounts::suspend),
        )
        .route(
            "/v1/admin/accounts/{account}/unsuspend",
            post(accounts::unsuspend),
        )
        .route(
            "/v1/admin/accounts/{account}/tokens",
            post(accounts::rotate_token),
        )
        .route(
            "/v1/admin/accounts/{account}/grants",
            get(grants::list).post(grants::create),
        )
        .route(
            "/v1/admin/accounts/{account}/grants/{resource}",
            delete(grants::delete),
        )
        .route(
            routes::ADMIN_RESOURCES,
            get(resources::list_all).post(resources::create),
        )
        .route(
            "/v1/admin/resources/{resource}",
            get(resources::show)
                .delete(resources::delete)
                .patch(resources::update),
        )
        .route(
            "/v1/admin/resources/{resource}/grants",
            get(grants::list_for_resource),
        )
        .route(
            routes::ADMIN_SETTINGS,
            get(settings::show).patch(settings::update),
        )
        .route(
            routes::ADMIN_REGENERATE_PORTS,
            post(settings::regenerate_ports),
        )
        .route(
            routes::ADMIN_GATEWAYS,
            get(gateways::list).post(gateways::create),
        )
        .route(
            "/v1/admin/gateways/{gateway}",
            get(gateways::show).delete(gateways::delete),
        )
        .route(routes::GATEWAY_REGISTER, post(gateway_routes::register))
        .route(routes::GATEWAY_HEARTBEAT, post(gateway_routes::heartbeat))
        .route(routes::GATEWAY_WITHDRAW, post(gateway_routes::withdraw))
        .route(routes::GATEWAY_AUTHORIZE, post(gateway_routes::authorize))
        .route(
            routes::GATEWAY_SSH_HOST_KEY,
            post(gateway_routes::record_host_key),
        )
        .route(routes::ADMIN_SSH_CA, get(resources::ssh_ca))
        .route(
            routes::GATEWAY_REVOCATIONS,
            get(gateway_routes::revocations),
        )
        .route(
            routes::GATEWAY_AUDIT,
            post(gateway_routes::audit).layer(DefaultBodyLimit::max(
                sdm_proto::gateway::MAX_AUDIT_BODY_BYTES,
            )),
        )
        .route(routes::ADMIN_AUDIT, get(audit::list))
        .route("/v1/admin/audit/{id}", get(audit::show))
        .route("/v1/admin/audit/{id}/queries", get(audit::queries))
        .route("/v1/admin/audit/{id}/recording", get(audit::recording))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(json_errors))
        // Merged after the API's layers: its pages are HTML, not JSON errors.
        .merge(crate::console::router())
        .layer(middleware::from_fn(deadline_and_log))
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found(request: Request) -> error::ApiError {
    error::ApiError::invalid(format!(
        "no such API route: {} {}; see docs/PROTOCOL.md for the routes",
        request.method(),
        request.uri().path()
    ))
    .with_status(StatusCode::NOT_FOUND)
}

/// Turns any error response that lower layers made in plain text (wrong method, bad path
/// parameters) into the JSON error body.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this route does not accept that HTTP method; see docs/PROTOCOL.md".to_owned()
        }
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    let kind = if status.is_server_error() {
        ErrorKind::Internal
    } else {
        ErrorKind::InvalidArgument
    };
    let mut json = error::error_response(status, kind, message);
    // Keep headers such as `Allow` on a 405.
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    json
}

/// Bounds each request's time and logs its outcome (method, path and status; never headers or
/// bodies, which carry tokens and passwords).
async fn deadline_and_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::new(
            ErrorKind::Timeout,
            format!(
                "the request took longer than {} s and was abandoned; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    };
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), "request");
    }
    response
}
