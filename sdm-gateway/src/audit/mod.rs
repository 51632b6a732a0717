//! Where the gateway reports what passes through it. Reporting never blocks the data path: a
//! sink queues events and a background task writes them elsewhere (the store, or the control
//! plane of a standalone gateway), in batches.
//!
//! The audit trail fails closed: a connection is served only while its events can be kept.
//! When the writer cannot write (disk full, store or control plane down), it keeps its events
//! and retries; meanwhile new connections are refused, and open ones are closed once the
//! failure has lasted [`AuditPolicy::grace`]. The queue is bounded; an event that does not fit
//! refuses what it describes (the statement is not sent on). Only an installation that says so
//! ([`AuditPolicy::fail_open`]) keeps serving instead, and then counts and logs what it loses.
//!
//! The queue ([`AuditQueue`], in `queue.rs`) and the task that empties it (`writer.rs`: batching,
//! retries with backoff, giving up only what cannot be written) are the gateway's; where the
//! events go is an [`AuditWriter`], which only writes one batch.

use std::time::Duration;

use sdm_proto::audit::AuditEvent;

#[cfg(test)]
pub(crate) mod collect;
mod queue;
mod writer;

pub use queue::AuditQueue;
pub use writer::{AuditWriter, Retry, WriteError, spawn_audit_writer};

/// Why the audit trail cannot take more now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written: {0}")]
pub struct AuditUnavailable(pub String);

/// Receives audit events from the gateway.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event, at once. An error means the event cannot be kept: the gateway then
    /// does not carry on with what it describes (the statement is not sent on, the connection
    /// is refused).
    fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable>;

    /// Whether a new connection may start now.
    fn admit(&self) -> Result<(), AuditUnavailable> {
        Ok(())
    }

    /// Why open connections must close now (the trail has failed for too long), if they must.
    fn must_close(&self) -> Option<AuditUnavailable> {
        None
    }

    /// Whether bulk events (terminal recordings, which come as fast as a terminal prints) may
    /// be queued now. False while the queue is half full: a recorded session then waits, so
    /// that one terminal printing a large file slows down rather than filling the queue that
    /// every connection's statements need.
    fn has_room_for_bulk(&self) -> bool {
        true
    }
}

/// Drops every event (for gateways whose owner keeps no audit trail, and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, _event: AuditEvent) -> Result<(), AuditUnavailable> {
        Ok(())
    }
}

/// What a gateway does when its audit trail cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Keep serving, losing (and counting) events that do not fit the queue. Off by default:
    /// only an installation that prefers availability to a complete trail turns it on.
    pub fail_open: bool,
    /// How long open connections are kept while the writer fails (events keep being queued
    /// and are written when it recovers).
    pub grace: Duration,
}

impl Default for AuditPolicy {
    fn default() -> AuditPolicy {
        AuditPolicy {
            fail_open: false,
            grace: DEFAULT_GRACE,
        }
    }
}

/// See [`AuditPolicy::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
