//! The control plane's decisions as the real gateway enforces them: a lease from the API opens a
//! tunnel; revoking the grant or suspending the account refuses the next connection.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sdm_proto::ErrorKind;
use sdm_proto::api::*;
use sdm_proto::handshake::{self, Reply};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP echo service standing in for a database.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Opens a tunnel with HELLO + OPEN in one write; returns the stream after CONNECTED, or the
/// gateway's error.
async fn open_tunnel(
    data_dir: &Path,
    gateway: &GatewayInfo,
    lease: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (ErrorKind, String)> {
    let ca = CertificateDer::from_pem_file(data_dir.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"sdm/1".to_vec()];
    let tcp = TcpStream::connect(&gateway.address).await.unwrap();
    let name = ServerName::try_from(gateway.server_name.clone()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"sdm/1"[..]));
    let mut hello = handshake::encode_hello(lease, false);
    hello.push(handshake::OPEN);
    tls.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some((reply, n)) = handshake::decode_reply(&buf).unwrap() {
            buf.drain(..n);
            match reply {
                Reply::Ready | Reply::ReadyFramed => {}
                Reply::Connected => {
                    assert!(buf.is_empty());
                    return Ok(tls);
                }
                Reply::Error { kind, message } => return Err((kind, message)),
            }
        }
        let n = tokio::time::timeout(WAIT, tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the gateway closed without a reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn leases_open_tunnels_until_access_is_taken_away() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let echo = echo_server().await;
    let _: AdminResource = t
        .client
        .post(
            routes::ADMIN_RESOURCES,
            Some(&admin),
            &json!({"name": "echo", "kind": "tcp", "hostname": "127.0.0.1", "port": echo.port()}),
        )
        .await
        .expect_ok();
    let etl: CreatedAccount = t
        .client
        .post(
            routes::ADMIN_ACCOUNTS,
            Some(&admin),
            &json!({"name": "etl"}),
        )
        .await
        .expect_ok();
    let _: GrantInfo = t
        .client
        .post(
            "/v1/admin/accounts/etl/grants",
            Some(&admin),
            &json!({"resource": "echo"}),
        )
        .await
        .expect_ok();
    let session: LoginResponse = t
        .client
        .post(routes::LOGIN, Some(&etl.token), &json!({}))
        .await
        .expect_ok();
    let list: ResourceList = t
        .client
        .get(routes::RESOURCES, Some(&etl.token))
        .await
        .expect_ok();
    let lease_reply: LeaseGrant = t
        .client
        .post(
            routes::LEASES,
            Some(&etl.token),
            &LeaseRequest {
                session_id: session.session_id,
                resource_id: list.resources[0].id,
            },
        )
        .await
        .expect_ok();
    let lease = URL_SAFE_NO_PAD.decode(&lease_reply.lease).unwrap();
    let gateway = &lease_reply.gateways[0];

    let mut tunnel = open_tunnel(&t.data_dir(), gateway, &lease).await.unwrap();
    tunnel.write_all(b"SELECT 1").await.unwrap();
    let mut back = [0u8; 8];
    tokio::time::timeout(WAIT, tunnel.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"SELECT 1");

    // Suspension refuses the next connection with the same, still unexpired lease.
    let _: AccountInfo = t
        .client
        .post_empty("/v1/admin/accounts/etl/suspend", Some(&admin))
        .await
        .expect_ok();
    let (kind, message) = open_tunnel(&t.data_dir(), gateway, &lease)
        .await
        .err()
        .unwrap();
    assert_eq!(kind, ErrorKind::Unauthenticated, "{message}");
    assert!(message.contains("suspended"), "{message}");
    let _: AccountInfo = t
        .client
        .post_empty("/v1/admin/accounts/etl/unsuspend", Some(&admin))
        .await
        .expect_ok();
    open_tunnel(&t.data_dir(), gateway, &lease).await.unwrap();

    // So does removing the grant.
    let revoked = t
        .client
        .delete("/v1/admin/accounts/etl/grants/echo", Some(&admin))
        .await;
    assert_eq!(revoked.status, 204);
    let (kind, message) = open_tunnel(&t.data_dir(), gateway, &lease)
        .await
        .err()
        .unwrap();
    assert_eq!(kind, ErrorKind::Forbidden, "{message}");
    assert!(
        message.contains("access to resource echo was revoked"),
        "{message}"
    );
    t.server.shutdown().await;
}
