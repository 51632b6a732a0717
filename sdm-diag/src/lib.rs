#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod encoding;
mod error;
mod listener;
mod probe;
mod probes;

pub use encoding::{encode_openmetrics, encode_prometheus};
pub use error::{Error, ErrorKind};
pub use listener::{bind, serve};
pub use probe::{ProbeError, probe};
pub use probes::{Probes, Readiness};
