#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod diag;
mod embedded;
mod open_files;
pub mod remote;
mod server;

/// The control plane (the `sdm-control` crate).
pub use sdm_control as control;
pub use sdm_control::{keys, migrate, store};
/// The data plane (the `sdm-gateway` crate).
pub use sdm_gateway as gateway;

pub use open_files::raise_open_file_limit;
pub use sdm_control::{FIRST_ADMIN_NAME, ServerError, SessionPolicy};
pub use server::{
    DEFAULT_API_CONNECTIONS_PER_SOURCE, DEFAULT_GATEWAY_LISTEN, DEFAULT_LEASE_TTL, DEFAULT_LISTEN,
    ExtraGateway, LEASE_TTL_RANGE, RunningServer, STORE_PROBE_TIMEOUT, Server, ServerBuilder,
};
