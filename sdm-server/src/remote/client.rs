//! [`ControlPlane`]: the standalone gateway's client of the `/v1/gateway/…` routes, over one or
//! more control plane URLs: `sdm-api-client`'s [`Failover`] with the gateway's limits.
//!
//! Every request carries the gateway token. Keep-alive connections are reused per control
//! plane. When a control plane cannot be reached, times out or answers with a server error (or
//! rate-limits this gateway), the next URL is tried, and the one that answered is used first
//! from then on. A client error (4xx) is an answer, not a failure of the control plane, and is
//! returned as it is.

use std::sync::Arc;
use std::time::Duration;

use sdm_api_client::{Failover, Options};
use sdm_proto::Token;

pub(crate) use sdm_api_client::CallError;

/// Answers larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// An idle connection older than this is not reused (the control plane closes them at 45 s).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per control plane.
const MAX_IDLE_CONNECTIONS: usize = 16;
/// TLS resumption tickets kept (a few per control plane URL suffice).
const TLS_SESSIONS: usize = 256;
/// TCP and TLS to one control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The control planes a gateway talks to.
#[derive(Debug)]
pub(crate) struct ControlPlane(Failover);

impl ControlPlane {
    /// A client for these control plane URLs (tried in order), authenticating with `token`.
    pub(crate) fn new(urls: &[String], token: &Token) -> Result<ControlPlane, String> {
        let options = Options::default()
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .idle_timeout(MAX_IDLE)
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .tls_sessions(TLS_SESSIONS)
            .connect_timeout(CONNECT_TIMEOUT);
        Failover::new(urls, token, &options)
            .map(ControlPlane)
            .map_err(|e| sdm_proto::error::one_line(&e))
    }
}

impl std::ops::Deref for ControlPlane {
    type Target = Failover;

    fn deref(&self) -> &Failover {
        &self.0
    }
}

/// Shared between the gateway's parts.
pub(crate) type SharedControlPlane = Arc<ControlPlane>;
