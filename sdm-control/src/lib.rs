//! The sdm control plane: service accounts and their tokens, resources, grants, login
//! sessions and signed leases, behind an HTTPS JSON API ([`api`]), on a [`store`] (embedded
//! SQLite or a shared PostgreSQL), with the installation's [`keys`].
//!
//! It also answers gateways: where a lease goes ([`StoreDirectory`], the one [`access`]
//! decision), which gateways are alive ([`GATEWAY_LIVENESS`]) and which tags they serve
//! ([`pinning`], [`gateway_identities`]). It knows nothing of the gateway's code: `sdm-server`
//! wires its own gateways to it in process, standalone gateways reach it over HTTPS.
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::time::Duration;

mod accept;
pub mod access;
mod answer_cache;
pub mod api;
pub mod audit_retention;
pub mod bootstrap;
mod console;
mod directory;
pub mod gateway_identities;
pub mod keys;
mod metrics;
pub mod migrate;
pub mod pinning;
pub mod sessions;
pub mod ssh_upstream;
pub mod store;

pub use bootstrap::{FIRST_ADMIN_NAME, Installation, ServerError};
pub use directory::StoreDirectory;
pub use metrics::ControlMetrics;
pub use sessions::SessionPolicy;

/// A gateway that has not reported for longer than this is not offered to clients, and a
/// resource with no such gateway is listed as unhealthy.
pub const GATEWAY_LIVENESS: Duration = Duration::from_secs(60);

/// How often a running gateway reports (well within [`GATEWAY_LIVENESS`]).
pub const GATEWAY_HEARTBEAT: Duration = Duration::from_secs(20);
