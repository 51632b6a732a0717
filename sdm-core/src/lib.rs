#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod account;
pub mod admin;
mod api;
pub mod blocking;
mod dial;
mod error;
mod gateway;
mod lease;
mod listener;
mod observer;
mod refusal;
mod resource;
pub mod runtime;
mod session;
mod session_core;
mod sigpipe;
mod sock_diag;
mod status;
mod tls;
mod tunnel;

pub use account::Account;
pub use dial::DialStream;
pub use error::{Error, ErrorKind, Result};
pub use listener::ListenAddr;
pub use observer::TunnelObserver;
pub use resource::{Resource, ResourceClass, ResourceKind};
pub use sdm_proto::api::{AccountKind, Settings};
/// Durations as typed on a command line (`300`, `5m`, `1h`, `7d`).
pub use sdm_proto::duration;
/// Tag lists as typed on a command line (`env=prod,team=data`).
pub use sdm_proto::tags;
/// Text from a server on a terminal: which characters are escaped, and how.
pub use sdm_proto::text;
pub use session::{API_URL_ENV_VAR, ConnectOptions, Session, SessionBuilder, TOKEN_ENV_VARS};
pub use status::{ConnectionState, ResourceStatus, Status, Unreachable};
pub use tunnel::Tunnel;
