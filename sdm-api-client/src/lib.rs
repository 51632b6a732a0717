#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod api_client;
mod error;
mod failover;
mod transport;

pub use api_client::{ApiClient, BUSY_ATTEMPTS};
pub use error::{Error, Result};
pub use failover::{CallError, Failover, REFUSED_PAUSE};
pub use transport::Options;

#[cfg(test)]
mod tests;
