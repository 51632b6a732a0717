//! The control plane's Prometheus metrics: handles the API updates, registered by whoever
//! serves `/metrics` (no global registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sdm_proto::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Handles on the control plane's metrics; clones share them.
#[derive(Clone, Debug)]
pub struct ControlMetrics {
    logins: Family<OutcomeLabel, Counter>,
    leases: Counter,
    store_calls: Histogram,
}

/// Store call buckets, in seconds: a SQLite read takes tens of microseconds, a PostgreSQL round
/// trip a millisecond or more, a call waiting for a busy pool far longer.
const STORE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

impl Default for ControlMetrics {
    fn default() -> Self {
        let metrics = ControlMetrics {
            logins: Family::default(),
            leases: Counter::default(),
            store_calls: Histogram::new(STORE_BUCKETS),
        };
        // The common outcomes show from the start, at 0, so that rates need no guessing.
        for outcome in [
            "ok",
            ErrorKind::InvalidToken.as_str(),
            ErrorKind::Unauthenticated.as_str(),
        ] {
            let _ = metrics.logins.get_or_create(&OutcomeLabel { outcome });
        }
        metrics
    }
}

impl ControlMetrics {
    /// Adds these metrics to `registry` (names as docs/OPERATIONS.md lists them, under the
    /// registry's prefix, `sdm`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "logins",
            "Logins (POST /v1/login), by outcome: ok, or the error kind (invalid_token, \
             unauthenticated, invalid_argument, …)",
            self.logins.clone(),
        );
        registry.register(
            "leases_issued",
            "Leases signed for a client",
            self.leases.clone(),
        );
        registry.register_with_unit(
            "store_query",
            "How long each call to the store (one transaction) takes, waiting for a connection \
             included",
            Unit::Seconds,
            self.store_calls.clone(),
        );
    }

    /// Times every call `store` makes from now on.
    pub fn time_store(&self, store: &dyn crate::store::Store) {
        store.time_calls(self.store_calls.clone());
    }

    /// A login was answered: `Ok`, or refused with `kind`.
    pub(crate) fn login(&self, outcome: Result<(), ErrorKind>) {
        // The kind's name, never the caller's input: a bounded set of label values.
        let outcome = outcome.err().map_or("ok", ErrorKind::as_str);
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A lease was issued.
    pub(crate) fn lease_issued(&self) {
        self.leases.inc();
    }
}
