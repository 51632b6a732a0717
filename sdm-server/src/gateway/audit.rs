//! Where the gateway reports what passes through it. Reporting never blocks the data path: a
//! sink queues events and writes them elsewhere.

use crate::store::AuditEvent;

/// Receives audit events from the gateway.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one event; must return at once.
    fn record(&self, event: AuditEvent);
}

/// Drops every event (for gateways whose owner keeps no audit trail, and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, _event: AuditEvent) {}
}
