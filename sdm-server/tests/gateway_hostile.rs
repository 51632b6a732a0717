//! Hostile and broken clients at the gateway: garbage, half handshakes, stalls and bad leases
//! are refused or dropped, and the gateway keeps serving everyone else.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use sdm_core::admin::{AdminClient, NewResource};
use sdm_core::{ResourceKind, Session};
use sdm_proto::ErrorKind;
use sdm_proto::handshake::{self, Reply};
use sdm_proto::lease::{Lease, LeaseSigner};
use sdm_server::{RunningServer, Server};
use sdm_testkit::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Generous bound for "the gateway reacts": the machine is shared, so no tight timings.
const WAIT: Duration = Duration::from_secs(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

struct Setup {
    server: RunningServer,
    dir: tempfile::TempDir,
    session: Session,
    resource_id: Uuid,
    _echo: EchoServer,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .gateway_handshake_timeout(HANDSHAKE_TIMEOUT)
        .start()
        .await
        .unwrap();
    let echo = EchoServer::start().unwrap();
    let admin = AdminClient::new(server.admin_token().unwrap()).unwrap();
    admin
        .create_resource(&NewResource {
            name: "echo".into(),
            kind: ResourceKind::Tcp,
            hostname: "127.0.0.1".into(),
            port: Some(echo.port()),
            port_override: None,
            tags: BTreeMap::new(),
            credentials: None,
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        })
        .await
        .unwrap();
    let token = admin.create_service_account("etl").await.unwrap().token;
    admin.grant("etl", "echo").await.unwrap();
    let session = Session::login(&token).await.unwrap();
    let resource_id = session.list_resources().await.unwrap()[0].id;
    Setup {
        server,
        dir,
        session,
        resource_id,
        _echo: echo,
    }
}

impl Setup {
    fn signer(&self) -> LeaseSigner {
        let pem = std::fs::read(self.dir.path().join("data/lease.key")).unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
        LeaseSigner::from_pkcs8(der.secret_pkcs8_der()).unwrap()
    }

    fn lease(&self) -> Lease {
        let now = sdm_proto::unix_now();
        Lease {
            id: Uuid::new_v4(),
            account_id: self.session.account().id,
            resource_id: self.resource_id,
            session_id: self.session.id(),
            issued_at: now,
            expires_at: now + 60,
        }
    }

    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.server.gateway_addr())
            .await
            .unwrap();
        support::ca_connector(&self.dir.path().join("data"), b"sdm/1")
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Presents `lease` with OPEN and returns the gateway's final reply.
    async fn present(&self, lease: &[u8]) -> Reply {
        let mut tls = self.tls().await;
        let mut hello = handshake::encode_hello(lease, false);
        hello.push(handshake::OPEN);
        tls.write_all(&hello).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            while let Some((reply, n)) = handshake::decode_reply(&buf).unwrap() {
                buf.drain(..n);
                if reply != Reply::Ready {
                    return reply;
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

    /// The real client still gets through.
    async fn still_serves(&self) {
        let mut stream = tokio::time::timeout(WAIT, self.session.dial("echo"))
            .await
            .unwrap()
            .unwrap();
        stream.write_all(b"alive").await.unwrap();
        let mut back = [0u8; 5];
        tokio::time::timeout(WAIT, stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"alive");
    }
}

fn refused(reply: Reply) -> (ErrorKind, String) {
    match reply {
        Reply::Error { kind, message } => (kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Reads until the peer closes (Ok) or WAIT passes (Err).
async fn closed_by_peer(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_signed_lease_connects() {
    let s = setup().await;
    let lease = s.signer().sign(&s.lease());
    assert_eq!(s.present(&lease).await, Reply::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_expired_and_foreign_leases_are_refused() {
    let s = setup().await;
    let signer = s.signer();

    let forger = LeaseSigner::from_pkcs8(&LeaseSigner::generate_pkcs8().unwrap()).unwrap();
    let (kind, message) = refused(s.present(&forger.sign(&s.lease())).await);
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("unknown key"), "{message}");

    let mut tampered = signer.sign(&s.lease());
    tampered[50] ^= 0x01; // inside the resource id
    let (kind, message) = refused(s.present(&tampered).await);
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("signature"), "{message}");

    let mut expired = s.lease();
    expired.issued_at -= 3600;
    expired.expires_at = expired.issued_at + 60;
    let (kind, message) = refused(s.present(&signer.sign(&expired)).await);
    assert_eq!(kind, ErrorKind::Unauthenticated);
    assert!(message.contains("expired"), "{message}");

    // Correctly signed, but the session belongs to another account.
    let mut foreign = s.lease();
    foreign.account_id = Uuid::new_v4();
    let (kind, message) = refused(s.present(&signer.sign(&foreign)).await);
    assert_eq!(kind, ErrorKind::Unauthenticated, "{message}");

    // Correctly signed for a resource that does not exist.
    let mut elsewhere = s.lease();
    elsewhere.resource_id = Uuid::new_v4();
    let (kind, _) = refused(s.present(&signer.sign(&elsewhere)).await);
    assert!(
        matches!(kind, ErrorKind::ResourceNotFound | ErrorKind::Forbidden),
        "{kind}"
    );

    let (kind, _) = refused(s.present(b"not a lease at all").await);
    assert_eq!(kind, ErrorKind::Unauthenticated);

    s.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_tls_gets_an_error_and_a_close() {
    let s = setup().await;
    let mut tls = s.tls().await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (reply, _) = handshake::decode_reply(&buf[..n]).unwrap().unwrap();
    let (kind, message) = refused(reply);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains("not an sdm client"), "{message}");
    assert!(closed_by_peer(&mut tls).await);
    s.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_garbage_and_half_handshakes_are_dropped() {
    let s = setup().await;
    // Not TLS at all.
    let mut plain = TcpStream::connect(s.server.gateway_addr()).await.unwrap();
    plain
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    plain.write_all(b"\x00garbage\r\n").await.unwrap();
    assert!(closed_by_peer(&mut plain).await);

    // Half a TLS record, then silence: dropped after the handshake timeout.
    let mut half = TcpStream::connect(s.server.gateway_addr()).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // TLS done, half a HELLO, then silence.
    let mut stalled_hello = s.tls().await;
    stalled_hello.write_all(b"SDMG\x01\x00\x00").await.unwrap();
    // Connected and silent.
    let mut silent = TcpStream::connect(s.server.gateway_addr()).await.unwrap();

    // Others are served while the stallers wait.
    s.still_serves().await;

    assert!(
        closed_by_peer(&mut half).await,
        "half a TLS handshake was not dropped"
    );
    assert!(
        closed_by_peer(&mut stalled_hello).await,
        "half a HELLO was not dropped"
    );
    assert!(
        closed_by_peer(&mut silent).await,
        "a silent client was not dropped"
    );
    s.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_lease_length_is_refused_without_reading_it() {
    let s = setup().await;
    let mut tls = s.tls().await;
    tls.write_all(b"SDMG\x01\x00\xff\xff").await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (reply, _) = handshake::decode_reply(&buf[..n]).unwrap().unwrap();
    let (kind, message) = refused(reply);
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains("too long"), "{message}");
    s.still_serves().await;
}
