//! Why the diagnostics listener could not be started.

use std::net::SocketAddr;

/// A refusal to start the diagnostics listener; the message names the address and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is off loopback and remote access was not allowed.
    #[error(
        "--diag-listen {addr} is not a loopback address, and the diagnostics listener has no \
         authentication; pass --diag-allow-remote as well to serve it there"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding failed (the port is taken, the address is not this host's, …).
    // The cause is written into the message (as a person reads it, with the hint after it)
    // rather than chained, so that the one line says what, why and what next in that order.
    #[error("cannot listen for diagnostics on {addr}: {}{}", sdm_proto::error::describe_io(.cause), hint(.cause))]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        cause: std::io::Error,
    },
}

/// What kind of refusal an [`Error`] is, for a caller's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Off loopback without the caller's permission: a usage error.
    NotLoopback,
    /// Another process holds the port.
    PortInUse,
    /// Any other failure to bind.
    Bind,
}

impl Error {
    /// The kind of refusal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotLoopback { .. } => ErrorKind::NotLoopback,
            Error::Bind { cause, .. } if cause.kind() == std::io::ErrorKind::AddrInUse => {
                ErrorKind::PortInUse
            }
            Error::Bind { .. } => ErrorKind::Bind,
        }
    }
}

fn hint(cause: &std::io::Error) -> &'static str {
    if cause.kind() == std::io::ErrorKind::AddrInUse {
        " (another process holds the port; choose another --diag-listen)"
    } else {
        ""
    }
}
