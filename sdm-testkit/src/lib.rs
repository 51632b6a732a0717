#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod echo;
mod error;
pub mod pg;
mod process;
pub mod relay;

pub use echo::EchoServer;
pub use error::TestkitError;
pub use pg::{HbaAuth, PgCluster, PgConfig};
pub use relay::Relay;

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago: bound on port 0, read, released.
///
/// Another process may take it before the caller binds it; callers that can retry should (the
/// PostgreSQL fixture does).
///
/// # Panics
///
/// When loopback cannot be bound at all, in which case no test in this workspace can run; use
/// [`try_free_port`] to handle that as an error.
#[allow(clippy::expect_used)] // the signature is fixed by the test suites; try_free_port is the fallible twin
pub fn free_port() -> u16 {
    try_free_port().expect("sdm-testkit: cannot bind a TCP socket on 127.0.0.1")
}

/// Like [`free_port`], but returns the bind error instead of panicking.
pub fn try_free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
