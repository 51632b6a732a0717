//! The agent's Prometheus metrics (`sdm_agent_…`, served by `--diag-listen` at `/metrics`):
//! logins, and what its tunnels do, counted through sdm-core's [`TunnelObserver`]. They exist
//! only when `--diag-listen` is given; otherwise the session has no observer and counts nothing.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sdm_core::{Resource, TunnelObserver};

/// Connection set-up buckets, in seconds, as the gateway's: a warm gateway connection to a
/// resource on the same network takes a millisecond or two, a new TLS handshake across a
/// region tens of milliseconds, a resource that is slow to accept seconds.
const SETUP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabel {
    resource: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Handles on the agent's metrics; clones share them.
#[derive(Clone, Debug)]
pub(crate) struct AgentMetrics {
    logins: Family<OutcomeLabel, Counter>,
    tunnels_open: Family<ResourceLabel, Gauge>,
    connections: Family<ResourceLabel, Counter>,
    connections_open: Family<ResourceLabel, Gauge>,
    connection_failures: Family<ResourceLabel, Counter>,
    bytes: Family<TrafficLabel, Counter>,
    setup: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let metrics = AgentMetrics {
            logins: Family::default(),
            tunnels_open: Family::default(),
            connections: Family::default(),
            connections_open: Family::default(),
            connection_failures: Family::default(),
            bytes: Family::default(),
            setup: Histogram::new(SETUP_BUCKETS),
        };
        // Shown from the start, at 0, so that a rate needs no guessing.
        let _ = metrics
            .logins
            .get_or_create(&OutcomeLabel { outcome: "ok" });
        metrics
    }
}

impl AgentMetrics {
    /// A registry (prefix `sdm_agent`) holding these metrics, under the names
    /// docs/OPERATIONS.md lists.
    pub(crate) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("sdm_agent");
        registry.register(
            "logins",
            "Logins the agent made (at start with a token, or asked by `sdm login`), by outcome: \
             ok or the error kind",
            self.logins.clone(),
        );
        registry.register(
            "tunnels_open",
            "Tunnels open now, by resource",
            self.tunnels_open.clone(),
        );
        registry.register(
            "connections",
            "Local connections accepted by a tunnel, by resource",
            self.connections.clone(),
        );
        registry.register(
            "connections_open",
            "Local connections a tunnel carries now, by resource",
            self.connections_open.clone(),
        );
        registry.register(
            "connection_failures",
            "Local connections that ended without reaching their resource (lease, gateway or \
             resource refused or failed), by resource",
            self.connection_failures.clone(),
        );
        registry.register_with_unit(
            "tunnel",
            "Bytes carried by tunnels, counted when a connection ends, by resource and direction: \
             up is local client to resource, down is resource to local client",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register_with_unit(
            "connection_setup",
            "From accepting a local connection to its gateway's CONNECTED (lease, gateway \
             connection and the resource's connect)",
            Unit::Seconds,
            self.setup.clone(),
        );
        registry
    }

    /// A login ended with `outcome`: `ok`, or the error kind (a bounded set).
    pub(crate) fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

fn resource_label(resource: &Resource) -> ResourceLabel {
    ResourceLabel {
        resource: resource.name.clone(),
    }
}

impl TunnelObserver for AgentMetrics {
    fn tunnel_opened(&self, resource: &Resource) {
        let label = resource_label(resource);
        self.tunnels_open.get_or_create(&label).inc();
        // The resource's series show from now on, at 0, so that a rate (of failures, say)
        // has a series before the first event.
        let _ = self.connections.get_or_create(&label);
        let _ = self.connections_open.get_or_create(&label);
        let _ = self.connection_failures.get_or_create(&label);
        for direction in ["up", "down"] {
            let _ = self.bytes.get_or_create(&TrafficLabel {
                resource: resource.name.clone(),
                direction,
            });
        }
    }

    fn tunnel_closed(&self, resource: &Resource) {
        self.tunnels_open
            .get_or_create(&resource_label(resource))
            .dec();
    }

    fn connection_opened(&self, resource: &Resource) {
        let label = resource_label(resource);
        self.connections.get_or_create(&label).inc();
        self.connections_open.get_or_create(&label).inc();
    }

    fn connection_reached(&self, _resource: &Resource, took: Duration) {
        self.setup.observe(took.as_secs_f64());
    }

    fn connection_closed(&self, resource: &Resource, sent: u64, received: u64, reached: bool) {
        let label = resource_label(resource);
        self.connections_open.get_or_create(&label).dec();
        if !reached {
            self.connection_failures.get_or_create(&label).inc();
        }
        for (direction, bytes) in [("up", sent), ("down", received)] {
            self.bytes
                .get_or_create(&TrafficLabel {
                    resource: resource.name.clone(),
                    direction,
                })
                .inc_by(bytes);
        }
    }
}
