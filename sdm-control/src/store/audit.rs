//! What the store adds to the audit model of `sdm_proto::audit`: which records to list, which
//! events a gateway's upload may apply, and how a record a stopped gateway left open is closed.

use uuid::Uuid;

/// Which connections to list; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this account's.
    pub account_id: Option<Uuid>,
    /// Only this resource's.
    pub resource_id: Option<Uuid>,
    /// Started at or after (Unix seconds).
    pub since: Option<i64>,
    /// Started before (Unix seconds).
    pub until: Option<i64>,
    /// Continue after this position (`started_at`, `id`) of the previous page.
    pub before: Option<(i64, Uuid)>,
    /// Page size.
    pub limit: u32,
}

/// What a gateway's audit upload was not allowed to do (see
/// [`Store::write_gateway_audit`](super::Store::write_gateway_audit)): events about
/// connections it did not open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditRefusals {
    /// Starts of records that exist already, written by another gateway.
    pub starts: u64,
    /// Ends of records that are another gateway's or do not exist.
    pub ends: u64,
    /// Queries of records that are another gateway's or do not exist.
    pub queries: u64,
    /// Recording lines of records that are another gateway's or do not exist.
    pub recording_lines: u64,
}

impl AuditRefusals {
    /// Events left out in all.
    pub fn total(&self) -> u64 {
        self.starts
            .saturating_add(self.ends)
            .saturating_add(self.queries)
            .saturating_add(self.recording_lines)
    }
}

/// Which gateway a batch of audit events may change records of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Writer<'a> {
    /// This process's own gateways: trusted.
    Local,
    /// The authenticated gateway of this name: only its own records.
    Gateway(&'a str),
}

impl Writer<'_> {
    /// The gateway name to check records against, if any.
    pub(super) fn gateway(&self) -> Option<&str> {
        match self {
            Writer::Local => None,
            Writer::Gateway(name) => Some(name),
        }
    }

    /// Whether a record owned by `owner` (`None`: no such record) may be changed.
    pub(super) fn may_change(&self, owner: Option<&str>) -> bool {
        match self {
            Writer::Local => true,
            Writer::Gateway(name) => owner == Some(*name),
        }
    }
}

/// The error text of a record closed as [`Outcome::Interrupted`](sdm_proto::audit::Outcome).
pub(super) fn interrupted_error(gateway: &str) -> String {
    format!(
        "gateway {gateway} stopped while this connection was open (it crashed or was killed); \
         the connection ended at the latest when this record was closed, at the gateway's next start"
    )
}
