//! TLS for the gateways: the pinned-CA rule of
//! [`sdm_proto::pinned_ca`] with the client library's protocols and session cache.

use std::sync::Arc;

use rustls::ClientConfig;

pub(crate) use sdm_proto::pinned_ca::server_name;

pub(crate) use sdm_proto::server_tls::ALPN_GATEWAY;
/// Resumption tickets kept per configuration: enough for a warm pool per tunnel across many
/// tunnels, so refills resume instead of doing full handshakes.
const SESSIONS: usize = 1024;

/// A client configuration that trusts only the pinned CA and speaks `alpn`.
pub(crate) fn client_config(
    ca_fingerprint: [u8; 32],
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    sdm_proto::pinned_ca::client_config(ca_fingerprint, alpn, SESSIONS)
}
