#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod container;
pub mod dockerfile;
pub mod echo;
mod error;
pub mod help;
pub mod mariadb;
pub mod pg;
mod process;
pub mod promtool;
pub mod relay;
pub mod sshd;

pub use container::Container;
pub use dockerfile::Dockerfile;
pub use echo::EchoServer;
pub use error::TestkitError;
pub use mariadb::MariaDb;
pub use pg::{HbaAuth, PgCluster, PgConfig};
pub use relay::Relay;
pub use sshd::{KeyPair, Sshd, SshdConfig};

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// An unprivileged OS user other than root, for tests that play another user of the same host
/// (a tunnel must refuse it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// Its name.
    pub name: &'static str,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// When the tests run as root: the system user that root runs PostgreSQL as (`sdmtest`),
/// created if missing exactly as [`PgCluster`] does. `None` when not root: an unprivileged
/// process cannot act as another user, so such a test has to be skipped.
pub fn other_os_user() -> Result<Option<OsUser>, TestkitError> {
    Ok(pg::os_user::run_as()?.map(|r| OsUser {
        name: pg::os_user::USER,
        uid: r.uid,
        gid: r.gid,
    }))
}

/// A TCP port on 127.0.0.1 that was free a moment ago, picked below the kernel's ephemeral range
/// when there is room there (`/proc/sys/net/ipv4/ip_local_port_range`): a port handed out by
/// binding port 0 lies inside that range, where the kernel may give it to any outgoing
/// connection as its source port before the caller binds it (seen as a flaky "port in use").
///
/// Another process may still take it before the caller binds it; callers that can retry should
/// (the PostgreSQL fixture does).
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
    let below = ephemeral_start().unwrap_or(0);
    if below > PICK_FROM + 1_000 {
        for _ in 0..64 {
            let port = PICK_FROM + (random() % u64::from(below - PICK_FROM)) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Picked ports start here, above the registered services tests might meet.
const PICK_FROM: u16 = 20_000;

/// The first port of the kernel's ephemeral range, where Linux tells.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A different random number on every call (std's per-map hash keys, fed a counter).
fn random() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(CALLS.fetch_add(1, Ordering::Relaxed))
}
