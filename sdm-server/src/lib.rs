#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod accept;
mod api;
mod bootstrap;
pub mod control;
mod embedded;
pub mod gateway;
pub mod keys;
pub mod migrate;
mod open_files;
pub mod remote;
mod server;
pub mod store;

pub use bootstrap::{FIRST_ADMIN_NAME, ServerError};
pub use control::SessionPolicy;
pub use open_files::raise_open_file_limit;
pub use server::{
    DEFAULT_API_CONNECTIONS_PER_SOURCE, DEFAULT_GATEWAY_LISTEN, DEFAULT_LEASE_TTL, DEFAULT_LISTEN,
    ExtraGateway, LEASE_TTL_RANGE, RunningServer, Server, ServerBuilder,
};
