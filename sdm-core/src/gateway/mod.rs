//! The client side of the gateway protocol: connecting, the handshake-aware stream, and the
//! pool of warm connections that lets a new local connection skip the TLS handshake.

mod connector;
mod pool;
mod stream;

pub(crate) use connector::Connector;
pub(crate) use pool::WarmPool;
pub(crate) use stream::{GatewayStream, error_from_io};
