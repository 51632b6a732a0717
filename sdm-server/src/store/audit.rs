//! Audit records as the store keeps them: one per connection through a gateway, plus the
//! queries sent through it (postgres).

use std::collections::BTreeMap;

use uuid::Uuid;

/// The outcome of a record closed because its gateway stopped without ending it (see
/// [`Store::interrupt_connections`](super::Store::interrupt_connections)).
pub const INTERRUPTED: &str = "interrupted";

/// A connection through a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Record id.
    pub id: Uuid,
    /// The account.
    pub account_id: Uuid,
    /// Its name when the connection started.
    pub account_name: String,
    /// The resource.
    pub resource_id: Uuid,
    /// Its name when the connection started.
    pub resource_name: String,
    /// The gateway's name.
    pub gateway: String,
    /// The login session.
    pub session_id: Uuid,
    /// The lease presented.
    pub lease_id: Uuid,
    /// The session's job labels.
    pub labels: BTreeMap<String, String>,
    /// The client's address as the gateway saw it.
    pub client_addr: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while open.
    pub ended_at: Option<i64>,
    /// Client → resource bytes.
    pub bytes_up: u64,
    /// Resource → client bytes.
    pub bytes_down: u64,
    /// `open`, `ok`, or an error kind name.
    pub outcome: String,
    /// What failed.
    pub error: Option<String>,
    /// Queries recorded.
    pub query_count: u64,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEnd {
    /// Record id.
    pub id: Uuid,
    /// Unix seconds.
    pub ended_at: i64,
    /// Client → resource bytes.
    pub bytes_up: u64,
    /// Resource → client bytes.
    pub bytes_down: u64,
    /// `ok` or an error kind name.
    pub outcome: String,
    /// What failed.
    pub error: Option<String>,
    /// Queries recorded.
    pub query_count: u64,
}

/// A query sent through a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    /// The connection.
    pub connection_id: Uuid,
    /// Position within the connection, from 1.
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// The SQL text.
    pub text: String,
}

/// One thing to write to the audit trail; written in batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A connection started (or failed at once: then `ended_at` is set).
    Started(ConnectionRecord),
    /// A connection ended.
    Ended(ConnectionEnd),
    /// Queries sent through a connection.
    Query(QueryRecord),
}

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
}

impl AuditRefusals {
    /// Events left out in all.
    pub fn total(&self) -> u64 {
        self.starts
            .saturating_add(self.ends)
            .saturating_add(self.queries)
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

/// The error text of a record closed as [`INTERRUPTED`].
pub(super) fn interrupted_error(gateway: &str) -> String {
    format!(
        "gateway {gateway} stopped while this connection was open (it crashed or was killed); \
         the connection ended at the latest when this record was closed, at the gateway's next start"
    )
}
