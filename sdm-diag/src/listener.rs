//! Binding the listener with the loopback rule, and routing `/livez`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::encoding::{encode_openmetrics, encode_prometheus};
use crate::error::Error;
use crate::probes::Probes;

/// Binds the diagnostics listener, refusing an address off loopback unless `allow_remote`.
/// Call it before the process starts anything else, so that a taken port stops it at once.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener, Error> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Error::NotLoopback { addr });
    }
    TcpListener::bind(addr)
        .await
        .map_err(|cause| Error::Bind { addr, cause })
}

/// Serves the probes on `listener` until the task is aborted (or its runtime stops). Logs
/// `diagnostics listening` with the bound address as `diag_addr`.
pub fn serve(listener: TcpListener, probes: Arc<Probes>) -> JoinHandle<()> {
    let router = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(diag_addr = %addr, "diagnostics listening");
    }
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the diagnostics listener stopped");
        }
    })
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(probes): State<Arc<Probes>>) -> Response {
    let failing = probes.failing().await;
    if failing.is_empty() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let mut body = failing.join("\n");
    body.push('\n');
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(probes): State<Arc<Probes>>, headers: HeaderMap) -> Response {
    // OpenMetrics to a scraper that asks for it, else the Prometheus text format.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (encoded, content_type) = if openmetrics {
        (
            encode_openmetrics(probes.registry()),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            encode_prometheus(probes.registry()),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}
