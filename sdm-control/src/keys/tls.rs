//! The TLS both listeners present, tested end to end: a leaf this installation's CA issued,
//! served with `sdm_proto::server_tls` to the clients' pinned-CA configuration.

use rustls::{CipherSuite, HandshakeKind};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use std::sync::Arc;

use sdm_proto::server_tls::{ALPN_API, ALPN_GATEWAY, LeafResolver, server_config};

use super::ca::CertificateAuthority;

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
    let client = sdm_proto::pinned_ca::client_config(ca.fingerprint(), ALPN_GATEWAY, 8).unwrap();
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
