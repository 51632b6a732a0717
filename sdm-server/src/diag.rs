//! The diagnostics listener (`--diag-listen ADDR`): plain HTTP, no authentication, loopback
//! unless `--diag-allow-remote`. It serves
//!
//! - `/livez`: 200 `ok` while the process runs its event loop;
//! - `/readyz`: 200 `ok` when ready, else 503 with one line per failing check, `NAME: why`
//!   (`keys`, `store` for `serve`; `registration` for a standalone gateway; `shutdown` for
//!   both once SIGTERM or SIGINT arrived);
//! - `/metrics`: the process's [`Metrics`] in the Prometheus text format (OpenMetrics to a
//!   scraper whose `Accept` asks for it).
//!
//! It is bound before the server starts, so that a taken port is refused before anything else
//! happens and `/readyz` answers (503) during start-up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use prometheus_client::registry::Registry;
use sdm_control::ControlMetrics;
use sdm_gateway::GatewayMetrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// `--diag-listen` and `--diag-allow-remote`, for `serve` and `gateway`.
#[derive(Debug, Clone, Args)]
pub struct DiagArgs {
    /// Serve /livez, /readyz and /metrics over plain HTTP on this address (off by default).
    /// It has no authentication: keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR", env = "SDM_DIAG_LISTEN")]
    pub diag_listen: Option<SocketAddr>,
    /// Allow --diag-listen on an address other than loopback (127.0.0.0/8, ::1).
    #[arg(long, requires = "diag_listen")]
    pub diag_allow_remote: bool,
}

/// The process's metrics: one registry, prefix `sdm`, holding the handles the control plane
/// and the gateway count into.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    gateway: GatewayMetrics,
    control: ControlMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric of this crate's servers, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sdm");
        let gateway = GatewayMetrics::default();
        gateway.register(&mut registry);
        let control = ControlMetrics::default();
        control.register(&mut registry);
        Metrics {
            registry,
            gateway,
            control,
        }
    }

    /// The gateway's handles.
    pub fn gateway(&self) -> GatewayMetrics {
        self.gateway.clone()
    }

    /// The control plane's handles.
    pub fn control(&self) -> ControlMetrics {
        self.control.clone()
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Every metric in the Prometheus text format (0.0.4), what `promtool check metrics` and
    /// most scrapers read.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_prometheus(&self.encode_openmetrics()?))
    }
}

/// OpenMetrics text differs from Prometheus text in three ways that matter here: a counter's
/// HELP and TYPE name the family without `_total` (Prometheus names the sample), `# UNIT`
/// lines, and the closing `# EOF`.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_owned());
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// What `/readyz` asks a running server.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// The checks failing now, each as `NAME: why`; empty when ready.
    async fn failing(&self) -> Vec<String>;
}

/// What the listener serves: the metrics, and the readiness of a server once it runs.
pub struct Probes {
    metrics: Arc<Metrics>,
    /// Until the server runs, `/readyz` answers with `starting`.
    ready: RwLock<Option<Arc<dyn Readiness>>>,
    starting: String,
    /// Set at SIGTERM: a load balancer stops sending work while connections drain.
    stopping: AtomicBool,
}

impl Probes {
    /// Probes of a server that is starting: `/readyz` fails with `starting` (`NAME: why`)
    /// until [`Probes::running`].
    pub fn new(metrics: Arc<Metrics>, starting: impl Into<String>) -> Arc<Probes> {
        Arc::new(Probes {
            metrics,
            ready: RwLock::new(None),
            starting: starting.into(),
            stopping: AtomicBool::new(false),
        })
    }

    /// The server is stopping: `/readyz` fails with `shutdown` from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The server runs: `/readyz` asks `readiness` from now on.
    pub fn running(&self, readiness: Arc<dyn Readiness>) {
        // A poisoned lock still holds a usable value.
        *self.ready.write().unwrap_or_else(|e| e.into_inner()) = Some(readiness);
    }

    async fn failing(&self) -> Vec<String> {
        if self.stopping.load(Ordering::Relaxed) {
            return vec!["shutdown: the process is stopping (open connections drain)".to_owned()];
        }
        let ready = self.ready.read().unwrap_or_else(|e| e.into_inner()).clone();
        match ready {
            Some(ready) => ready.failing().await,
            None => vec![self.starting.clone()],
        }
    }
}

/// Binds the diagnostics listener, refusing an address off loopback unless `allow_remote`.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener, String> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "--diag-listen {addr} is not a loopback address, and the diagnostics listener has no \
             authentication; pass --diag-allow-remote as well to serve it there"
        ));
    }
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process holds the port; choose another --diag-listen)"
        } else {
            ""
        };
        format!(
            "cannot listen for diagnostics on {addr}: {}{hint}",
            sdm_proto::error::describe_io(&e)
        )
    })?;
    Ok(listener)
}

/// Serves the probes on `listener` until the task is aborted.
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
            probes.metrics.encode_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            probes.metrics.encode(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let openmetrics = "# HELP sdm_x Things.\n# TYPE sdm_x counter\nsdm_x_total 3\n\
                           # HELP sdm_open Now.\n# TYPE sdm_open gauge\n# UNIT sdm_open seconds\n\
                           sdm_open 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(openmetrics),
            "# HELP sdm_x_total Things.\n# TYPE sdm_x_total counter\nsdm_x_total 3\n\
             # HELP sdm_open Now.\n# TYPE sdm_open gauge\nsdm_open 1\n"
        );
    }
}
