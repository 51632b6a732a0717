//! The control plane's decisions that other parts consult: the gateway's [`Directory`] (where a
//! verified lease may go), the gateway liveness rules, the identities of standalone gateways,
//! the pinning of resources to gateways by tag, and the limits on login sessions.
//!
//! [`Directory`]: crate::gateway::Directory

use std::time::Duration;

pub(crate) mod access;
mod answer_cache;
mod audit_writer;
mod directory;
pub mod gateway_identities;
pub mod pinning;
pub mod sessions;

pub use audit_writer::store_audit_writer;
pub use directory::StoreDirectory;
pub use sessions::SessionPolicy;

/// A gateway that has not reported for longer than this is not offered to clients, and a
/// resource with no such gateway is listed as unhealthy.
pub const GATEWAY_LIVENESS: Duration = Duration::from_secs(60);

/// How often a running gateway reports (well within [`GATEWAY_LIVENESS`]).
pub const GATEWAY_HEARTBEAT: Duration = Duration::from_secs(20);
