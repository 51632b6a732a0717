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
use sdm_relay::Framed;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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

/// TLS to the gateway, trusting the installation's CA.
async fn tls_to(
    data_dir: &Path,
    gateway: &GatewayInfo,
) -> tokio_rustls::client::TlsStream<TcpStream> {
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
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"sdm/1"[..]));
    tls
}

/// Opens a tunnel with HELLO + OPEN in one write; returns the stream after CONNECTED, or the
/// gateway's error.
async fn open_tunnel(
    data_dir: &Path,
    gateway: &GatewayInfo,
    lease: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (ErrorKind, String)> {
    let mut tls = tls_to(data_dir, gateway).await;
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

/// An echo resource granted to a new account `etl`, logged in: a lease for it and its gateway.
async fn echo_lease(t: &TestServer) -> (Vec<u8>, GatewayInfo) {
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
    (lease, lease_reply.gateways[0].clone())
}

/// Reads one handshake reply a byte at a time, leaving whatever follows it unread.
async fn next_reply<S: AsyncRead + Unpin>(conn: &mut S) -> Reply {
    let mut buf = Vec::new();
    loop {
        if let Some((reply, _)) = handshake::decode_reply(&buf).unwrap() {
            return reply;
        }
        let byte = tokio::time::timeout(WAIT, conn.read_u8())
            .await
            .expect("a reply in time")
            .expect("a reply, not the end of the connection");
        buf.push(byte);
    }
}

#[tokio::test]
async fn leases_open_tunnels_until_access_is_taken_away() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let (lease, gateway) = echo_lease(&t).await;
    let gateway = &gateway;

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

/// A client that asks for framed streams gets READY-FRAMED, and its connection carries one
/// stream after another, each ended by end frames both ways; taking access away refuses the
/// next OPEN on the same connection.
#[tokio::test]
async fn a_framed_connection_carries_one_stream_after_another() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let (lease, gateway) = echo_lease(&t).await;
    let mut conn = Framed::new(tls_to(&t.data_dir(), &gateway).await);
    conn.write_all(&handshake::encode_hello(&lease, true))
        .await
        .unwrap();
    conn.flush().await.unwrap();
    assert_eq!(next_reply(&mut conn).await, Reply::ReadyFramed);
    for round in 0..3 {
        conn.write_all(&[handshake::OPEN]).await.unwrap();
        conn.start_writing();
        let message = format!("stream {round}").repeat(1000 * (round + 1));
        conn.write_all(message.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        assert_eq!(next_reply(&mut conn).await, Reply::Connected);
        conn.start_reading();
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, conn.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert!(back == message.as_bytes(), "stream {round} got other bytes");
        assert!(conn.finished(), "stream {round} did not end both ways");
    }

    // An unframed client on the same gateway still gets plain streams.
    let mut plain = open_tunnel(&t.data_dir(), &gateway, &lease).await.unwrap();
    plain.write_all(b"plain").await.unwrap();
    plain.shutdown().await.unwrap();
    let mut back = Vec::new();
    plain.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"plain");

    let revoked = t
        .client
        .delete("/v1/admin/accounts/etl/grants/echo", Some(&admin))
        .await;
    assert_eq!(revoked.status, 204);
    conn.write_all(&[handshake::OPEN]).await.unwrap();
    let Reply::Error { kind, message } = next_reply(&mut conn).await else {
        panic!("OPEN after the grant was removed was not refused")
    };
    assert_eq!(kind, ErrorKind::Forbidden, "{message}");
    assert!(message.contains("was revoked"), "{message}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "the gateway sent more after refusing");
    t.server.shutdown().await;
}

/// A framed stream cut short or carrying a frame over the limit ends that connection (not the
/// gateway), and is not kept for another stream.
#[tokio::test]
async fn a_broken_frame_ends_the_connection_and_nothing_else() {
    let t = TestServer::start().await;
    let (lease, gateway) = echo_lease(&t).await;
    for garbage in [&[0xffu8, 0xff, 0xff, 0xff][..], &[0, 0, 0, 9, b'x'][..]] {
        let mut conn = tls_to(&t.data_dir(), &gateway).await;
        conn.write_all(&handshake::encode_hello(&lease, true))
            .await
            .unwrap();
        assert_eq!(next_reply(&mut conn).await, Reply::ReadyFramed);
        conn.write_all(&[handshake::OPEN]).await.unwrap();
        conn.write_all(garbage).await.unwrap();
        if garbage.len() == 5 {
            // Cut short: the client's half ends inside the frame.
            conn.shutdown().await.unwrap();
        }
        assert_eq!(next_reply(&mut conn).await, Reply::Connected);
        // The gateway closes the connection instead of waiting for another OPEN.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stayed open");
        assert!(
            !rest.ends_with(&[0, 0, 0, 0]),
            "a broken stream was answered with an end frame: {rest:?}"
        );
    }
    // The gateway still serves.
    let mut tunnel = open_tunnel(&t.data_dir(), &gateway, &lease).await.unwrap();
    tunnel.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(WAIT, tunnel.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"still here");
    t.server.shutdown().await;
}
