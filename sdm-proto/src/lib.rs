#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod addr;
pub mod api;
pub mod audit;
pub mod backoff;
pub mod duration;
pub mod error;
pub mod gateway;
pub mod handshake;
pub mod lease;
#[cfg(feature = "tls")]
pub mod pinned_ca;
pub mod port_range;
#[cfg(feature = "tls")]
pub mod postgres_tls;
pub mod resource;
#[cfg(feature = "tls")]
pub mod server_tls;
pub mod tags;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls_provider;
pub mod token;

pub use error::ErrorKind;
pub use lease::Lease;
pub use resource::ResourceKind;
pub use token::{Token, TokenKind};

/// Seconds since the Unix epoch, as every timestamp on the wire is expressed.
pub fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// SHA-256 of `data`, the one hash used for token secrets and CA fingerprints.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
