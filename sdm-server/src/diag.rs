//! The diagnostics listener (`--diag-listen ADDR`) of `serve` and `gateway`: the listener,
//! its routes and the text encoding are `sdm_diag`'s; what is the server's own is here: the
//! flags, and the [`Metrics`] registry of the gateway's and the control plane's metrics.
//!
//! Readiness checks: `keys`, `store` for `serve`; `registration` for a standalone gateway;
//! `shutdown` for both once SIGTERM or SIGINT arrived. The listener is bound before the server
//! starts, so that a taken port is refused before anything else happens and `/readyz` answers
//! (503) during start-up.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use prometheus_client::registry::Registry;
use sdm_control::ControlMetrics;
use sdm_gateway::GatewayMetrics;

pub use sdm_diag::{Probes, Readiness, bind, serve};

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
    registry: Arc<Registry>,
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
            registry: Arc::new(registry),
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

    /// The registry holding them, what `/metrics` serves.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }
}
