//! TLS 1.3 server configuration for the API (ALPN `http/1.1`) and the gateway (ALPN `sdm/1`).
//!
//! Both present the chain `[leaf, CA]` from one [`LeafResolver`], whose leaf can be replaced
//! while the server runs (it is reissued daily, long before its 90 days run out).

use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::KeyError;
use super::ca::Leaf;

/// ALPN protocol of the HTTPS API.
pub const ALPN_API: &[u8] = b"http/1.1";
/// ALPN protocol of the gateway.
pub const ALPN_GATEWAY: &[u8] = b"sdm/1";

/// Hands rustls the current leaf certificate.
pub struct LeafResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafResolver").finish_non_exhaustive()
    }
}

fn certified(leaf: Leaf) -> Result<Arc<CertifiedKey>, KeyError> {
    let key = rustls::crypto::ring::sign::any_supported_type(&leaf.key).map_err(KeyError::Tls)?;
    Ok(Arc::new(CertifiedKey::new(leaf.chain, key)))
}

impl LeafResolver {
    /// A resolver serving `leaf`.
    pub fn new(leaf: Leaf) -> Result<Arc<LeafResolver>, KeyError> {
        Ok(Arc::new(LeafResolver {
            current: RwLock::new(certified(leaf)?),
        }))
    }

    /// Serves `leaf` to new handshakes from now on.
    pub fn replace(&self, leaf: Leaf) -> Result<(), KeyError> {
        let key = certified(leaf)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A TLS 1.3-only server configuration (ring provider, AES-128-GCM first, whatever order the
/// client offers) advertising `alpn`, issuing resumption tickets so that clients resume instead
/// of doing a full handshake per connection.
///
/// Tickets are stateless (the session sealed with a key that rustls rotates every 6 hours)
/// rather than kept in a session cache: finding a session in rustls's cache scans its list of
/// keys, which with thousands of sessions cost 3 % of the gateway's CPU time when every
/// transaction opened a new connection. Resumed handshakes still run an ECDHE key exchange, so
/// traffic stays forward secret; early data is not accepted.
pub fn server_config(
    resolver: Arc<LeafResolver>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, KeyError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(sdm_proto::tls_provider::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(KeyError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![alpn.to_vec()];
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(KeyError::Tls)?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rustls::{CipherSuite, HandshakeKind};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::keys::ca::CertificateAuthority;

    /// One connection over an in-memory pipe: handshake, then one byte from the server (as a
    /// gateway's READY), which brings the client the tickets sent before it. Returns how the
    /// handshake went and the suite it chose.
    async fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> (HandshakeKind, CipherSuite) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.clone());
        let accept = tokio::spawn(async move {
            let mut served = acceptor.accept(b).await.unwrap();
            served.write_all(b"!").await.unwrap();
            served.flush().await.unwrap();
            served
        });
        let name = sdm_proto::pinned_ca::server_name("localhost").unwrap();
        let mut tls = TlsConnector::from(client.clone())
            .connect(name, a)
            .await
            .unwrap();
        assert_eq!(tls.read_u8().await.unwrap(), b'!');
        let served = accept.await.unwrap();
        let conn = tls.get_ref().1;
        assert_eq!(served.get_ref().1.handshake_kind(), conn.handshake_kind());
        (
            conn.handshake_kind().unwrap(),
            conn.negotiated_cipher_suite().unwrap().suite(),
        )
    }

    /// A new CA in `dir` and a server configuration whose leaf it issued for `localhost`.
    fn server_with_new_ca(
        dir: &tempfile::TempDir,
        alpn: &[u8],
    ) -> (CertificateAuthority, Arc<rustls::ServerConfig>) {
        let ca = CertificateAuthority::load_or_create(dir.path(), false).unwrap();
        let leaf = ca.issue_leaf(&["localhost".into()]).unwrap();
        let server = server_config(LeafResolver::new(leaf).unwrap(), alpn).unwrap();
        (ca, server)
    }

    #[tokio::test]
    async fn later_connections_resume_with_aes_128_gcm() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server) = server_with_new_ca(&dir, ALPN_GATEWAY);
        let client =
            sdm_proto::pinned_ca::client_config(ca.fingerprint(), ALPN_GATEWAY, 8).unwrap();
        let first = handshake(&server, &client).await;
        assert_eq!(
            first,
            (HandshakeKind::Full, CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        for _ in 0..3 {
            let later = handshake(&server, &client).await;
            assert_eq!(
                later,
                (
                    HandshakeKind::Resumed,
                    CipherSuite::TLS13_AES_128_GCM_SHA256
                ),
                "each resumed connection brings a new ticket for the next one"
            );
        }
    }

    #[tokio::test]
    async fn the_server_chooses_aes_128_gcm_for_clients_preferring_aes_256() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server) = server_with_new_ca(&dir, ALPN_API);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.certificate_der().clone()).unwrap();
        // rustls's own default order, as OpenSSL's: AES-256-GCM first.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert_eq!(
            provider.cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (_, suite) = handshake(&server, &Arc::new(client)).await;
        assert_eq!(suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
