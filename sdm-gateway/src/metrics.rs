//! The gateway's Prometheus metrics: handles that connections and the registration loop update,
//! registered by whoever serves `/metrics` (no global registry). A [`GatewayMetrics::default`]
//! that nobody registers counts into the void, which costs an atomic add (and, for a labelled
//! metric, a map lookup).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Connection set-up buckets, in seconds: a loopback set-up takes a millisecond or two, one
/// across a region tens of milliseconds, a resource that is slow to accept seconds.
const SETUP_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Revocation-to-close buckets, in seconds: a stream told to stop ends within milliseconds
/// unless its client or resource is slow to be written to (the stop waits for neither).
const CLOSE_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Handles on the gateway's metrics; clones share them.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    open: Family<ResourceLabel, Gauge>,
    connections: Family<ResourceLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    setup: Histogram,
    heartbeats: Family<OutcomeLabel, Counter>,
    revoked: Counter,
    revoked_close: Histogram,
    audit_queued: Gauge,
    audit_lost: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let metrics = GatewayMetrics {
            open: Family::default(),
            connections: Family::default(),
            bytes: Family::default(),
            setup: Histogram::new(SETUP_BUCKETS),
            heartbeats: Family::default(),
            revoked: Counter::default(),
            revoked_close: Histogram::new(CLOSE_BUCKETS),
            audit_queued: Gauge::default(),
            audit_lost: Counter::default(),
        };
        // Every known label value shows from the start, at 0, so that rates need no guessing.
        for direction in ["up", "down"] {
            let _ = metrics.bytes.get_or_create(&DirectionLabel { direction });
        }
        for outcome in ["ok", "failed"] {
            let _ = metrics.heartbeats.get_or_create(&OutcomeLabel { outcome });
        }
        metrics
    }
}

impl GatewayMetrics {
    /// Adds these metrics to `registry` (names as docs/OPERATIONS.md lists them, under the
    /// registry's prefix, `sdm`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gateway_connections_open",
            "Streams the gateway carries now, by resource (from the resource's connect to the \
             stream's end)",
            self.open.clone(),
        );
        registry.register(
            "gateway_connections",
            "Streams the gateway started carrying, by resource",
            self.connections.clone(),
        );
        registry.register_with_unit(
            "gateway",
            "Bytes carried, by direction: up is client to resource, down is resource to client",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register_with_unit(
            "gateway_connection_setup",
            "From OPEN (the client asking for a stream) to CONNECTED (the resource reached)",
            Unit::Seconds,
            self.setup.clone(),
        );
        registry.register(
            "gateway_heartbeats",
            "Heartbeats to a control plane, by outcome (ok, failed)",
            self.heartbeats.clone(),
        );
        registry.register(
            "gateway_revoked_connections",
            "Open streams closed because access was taken away (revocation, suspension, expiry)",
            self.revoked.clone(),
        );
        registry.register_with_unit(
            "gateway_revoked_connection_close",
            "From the revocation check that finds a stream's access taken away to the stream's \
             end (the check runs every second, so a revocation is found within one more)",
            Unit::Seconds,
            self.revoked_close.clone(),
        );
        registry.register(
            "gateway_audit_queue_events",
            "Audit events waiting in memory to be written (to the store, or uploaded or spooled)",
            self.audit_queued.clone(),
        );
        registry.register(
            "gateway_audit_lost_events",
            "Audit events lost: dropped while the audit fails open, or given up at shutdown",
            self.audit_lost.clone(),
        );
    }

    /// A stream to `resource` started.
    pub(crate) fn connection_opened(&self, resource: &str) {
        let label = ResourceLabel {
            resource: resource.to_owned(),
        };
        self.open.get_or_create(&label).inc();
        self.connections.get_or_create(&label).inc();
    }

    /// A stream to `resource` ended after carrying `up` bytes to the resource and `down` back.
    pub(crate) fn connection_closed(&self, resource: &str, up: u64, down: u64) {
        self.open
            .get_or_create(&ResourceLabel {
                resource: resource.to_owned(),
            })
            .dec();
        self.bytes
            .get_or_create(&DirectionLabel { direction: "up" })
            .inc_by(up);
        self.bytes
            .get_or_create(&DirectionLabel { direction: "down" })
            .inc_by(down);
    }

    /// A stream reached its resource `took` after OPEN.
    pub(crate) fn connection_set_up(&self, took: Duration) {
        self.setup.observe(took.as_secs_f64());
    }

    /// `count` open streams were told to close because access was taken away.
    pub(crate) fn revoked(&self, count: u64) {
        self.revoked.inc_by(count);
    }

    /// A stream told to stop by a revocation ended `took` after being told.
    pub(crate) fn revoked_connection_closed(&self, took: Duration) {
        self.revoked_close.observe(took.as_secs_f64());
    }

    /// `change` events joined (or, negative, left) the audit queue.
    pub(crate) fn audit_queued(&self, change: i64) {
        self.audit_queued.inc_by(change);
    }

    /// `count` audit events were lost.
    pub(crate) fn audit_lost(&self, count: u64) {
        self.audit_lost.inc_by(count);
    }

    /// A heartbeat was answered (`ok`) or not.
    pub(crate) fn heartbeat(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.heartbeats
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}
