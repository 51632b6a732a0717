//! The client against a scripted HTTPS server on 127.0.0.1: keep-alive and resumption, 429,
//! refusals, garbage, oversized answers, dead and failing control planes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::HandshakeKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sdm_proto::{ErrorKind, Token, TokenKind};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{ApiClient, CallError, Error, Failover, Options};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the server does with request number `n` (from 0, across connections).
#[derive(Clone)]
enum Reply {
    /// Writes these bytes and keeps the connection.
    Bytes(Vec<u8>),
    /// Writes these bytes and closes the connection.
    BytesThenClose(Vec<u8>),
    /// Never answers.
    Silence,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A CA and a leaf for 127.0.0.1 it signed.
struct Pki {
    fingerprint: [u8; 32],
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    Pki {
        fingerprint: sdm_proto::sha256(ca.der()),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: leaf_key.serialize_der(),
    }
}

struct Server {
    addr: SocketAddr,
    pki: Arc<Pki>,
    connections: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_with(Arc::new(pki()), Arc::new(script)).await
    }

    async fn start_with(pki: Arc<Pki>, script: Script) -> Server {
        let mut config =
            rustls::ServerConfig::builder_with_provider(sdm_proto::tls_provider::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    pki.chain.clone(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
                )
                .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            addr,
            pki,
            connections: Arc::default(),
            resumed: Arc::default(),
            requests: Arc::default(),
        };
        let (connections, resumed, requests) = (
            server.connections.clone(),
            server.resumed.clone(),
            server.requests.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, script) = (acceptor.clone(), script.clone());
                let (connections, resumed, requests) =
                    (connections.clone(), resumed.clone(), requests.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                        resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    while read_request(&mut tls).await.is_some() {
                        let n = requests.fetch_add(1, Ordering::SeqCst);
                        match script(n) {
                            Reply::Bytes(b) => {
                                if tls.write_all(&b).await.is_err() {
                                    return;
                                }
                            }
                            Reply::BytesThenClose(b) => {
                                let _ = tls.write_all(&b).await;
                                let _ = tls.shutdown().await;
                                return;
                            }
                            Reply::Silence => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn token(&self) -> Token {
        Token::generate(TokenKind::Service, &self.url(), self.pki.fingerprint).unwrap()
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.url(), &self.token(), TIMEOUT, &Options::default()).unwrap()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request (head and a Content-Length body); `None` when the connection ended.
async fn read_request(tls: &mut (impl AsyncReadExt + Unpin)) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).await.ok()?;
    Some(head)
}

fn answer(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ok(body: &str) -> Reply {
    Reply::Bytes(answer(200, body))
}

fn error_body(kind: &str, message: &str) -> String {
    format!(r#"{{"error":{{"kind":"{kind}","message":"{message}"}}}}"#)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Pong {
    n: u32,
}

fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("https://{addr}")
}

#[tokio::test]
async fn calls_share_one_connection_and_a_new_one_resumes_tls() {
    let server = Server::start(|n| match n {
        1 => Reply::BytesThenClose(answer(200, r#"{"n":1}"#)),
        n => ok(&format!(r#"{{"n":{n}}}"#)),
    })
    .await;
    let client = server.client();
    for n in 0..2 {
        let pong: Pong = client.get("/v1/ping").await.unwrap();
        assert_eq!(pong, Pong { n });
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let pong: Pong = client.post("/v1/ping", &Pong { n: 9 }).await.unwrap();
    assert_eq!(pong, Pong { n: 2 });
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(server.resumed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_429_is_asked_again_and_then_succeeds() {
    let server = Server::start(|n| match n {
        0 => Reply::Bytes(answer(429, &error_body("api_unreachable", "slow down"))),
        _ => ok(r#"{"n":7}"#),
    })
    .await;
    let pong: Pong = server.client().get("/v1/ping").await.unwrap();
    assert_eq!(pong, Pong { n: 7 });
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_429_that_persists_is_returned_after_three_attempts() {
    let server =
        Server::start(|_| Reply::Bytes(answer(429, &error_body("unauthenticated", "busy")))).await;
    let e = server.client().get::<Pong>("/v1/ping").await.unwrap_err();
    match e {
        Error::Answered {
            status: 429,
            attempts,
            error: Some(body),
            ..
        } => {
            assert_eq!(attempts, crate::BUSY_ATTEMPTS);
            assert_eq!(body.message, "busy");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_refused_token_is_the_answer_with_its_kind() {
    let server =
        Server::start(|_| Reply::Bytes(answer(401, &error_body("unauthenticated", "revoked"))))
            .await;
    let e = server.client().get::<Pong>("/v1/ping").await.unwrap_err();
    match &e {
        Error::Answered {
            status: 401,
            attempts: 1,
            error: Some(body),
            ..
        } => {
            assert_eq!(body.kind(), ErrorKind::Unauthenticated);
            assert_eq!(body.message, "revoked");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("revoked"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn an_error_without_an_sdm_body_has_none() {
    let server = Server::start(|_| Reply::Bytes(answer(503, "<html>down</html>"))).await;
    let e = server.client().get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Answered {
                status: 503,
                error: None,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn garbage_is_refused() {
    // A successful answer that is not the JSON expected.
    let server = Server::start(|_| ok("<html>hello</html>")).await;
    let e = server.client().get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(matches!(e, Error::Undecodable { .. }), "{e:?}");
    // Not HTTP at all.
    let server =
        Server::start(|_| Reply::BytesThenClose(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec())).await;
    let e = server.client().get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
}

#[tokio::test]
async fn too_large_an_answer_is_refused() {
    let limit = 1024;
    let options = Options::default().max_response_bytes(limit);
    // Announced by its length.
    let server = Server::start(move |_| ok(&"x".repeat(limit + 1))).await;
    let client = ApiClient::new(&server.url(), &server.token(), TIMEOUT, &options).unwrap();
    let e = client.get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 1024, .. }), "{e:?}");
    // Found while reading: chunked, no length.
    let server = Server::start(move |_| {
        let chunk = "y".repeat(600);
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 X\r\ntransfer-encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
            )
            .into_bytes(),
        )
    })
    .await;
    let client = ApiClient::new(&server.url(), &server.token(), TIMEOUT, &options).unwrap();
    let e = client.get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
}

#[tokio::test]
async fn a_dead_control_plane_is_unreachable_and_says_why() {
    let server = Server::start(|_| ok("{}")).await;
    let url = dead_url();
    let client = ApiClient::new(&url, &server.token(), TIMEOUT, &Options::default()).unwrap();
    match client.get::<Pong>("/v1/ping").await.unwrap_err() {
        Error::Unreachable { detail, url: u, .. } => {
            assert_eq!(detail, "connection refused");
            assert_eq!(u, url);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused() {
    let server = Server::start(|_| ok("{}")).await;
    let other = Token::generate(TokenKind::Service, &server.url(), [7; 32]).unwrap();
    let client = ApiClient::new(&server.url(), &other, TIMEOUT, &Options::default()).unwrap();
    match client.get::<Pong>("/v1/ping").await.unwrap_err() {
        Error::Unreachable { detail, .. } => {
            assert!(detail.starts_with("TLS handshake failed"), "{detail}");
            assert!(detail.contains("not issued by the CA"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn a_silent_control_plane_times_out() {
    let server = Server::start(|_| Reply::Silence).await;
    let client = ApiClient::new(
        &server.url(),
        &server.token(),
        Duration::from_millis(300),
        &Options::default(),
    )
    .unwrap();
    let e = client.get::<Pong>("/v1/ping").await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
}

#[test]
fn bad_urls_are_refused_before_any_call() {
    let token = Token::generate(TokenKind::Service, "https://x", [0; 32]).unwrap();
    for url in [
        "http://x:1",
        "https://",
        "https://x:0",
        "https://u@x",
        "https://x/?q",
    ] {
        let e = ApiClient::new(url, &token, TIMEOUT, &Options::default()).unwrap_err();
        assert!(matches!(e, Error::Url { .. }), "{url}: {e:?}");
    }
    let e = Failover::new(&[], &token, &Options::default()).unwrap_err();
    assert!(matches!(e, Error::NoUrl), "{e:?}");
}

fn failover(urls: &[String], token: &Token) -> Failover {
    Failover::new(urls, token, &Options::default()).unwrap()
}

#[tokio::test]
async fn failover_goes_past_a_dead_url_and_stays_with_the_live_one() {
    let live = Server::start(|n| ok(&format!(r#"{{"n":{n}}}"#))).await;
    let dead = dead_url();
    let cp = failover(&[dead.clone(), live.url()], &live.token());
    assert_eq!(cp.current_url(), dead);
    let pong: Pong = cp.get("/v1/gateway/ping", TIMEOUT).await.unwrap();
    assert_eq!(pong, Pong { n: 0 });
    assert_eq!(cp.current_url(), live.url());
    cp.post_raw("/v1/gateway/audit", Some(b"[]".to_vec()), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(live.requests(), 2);
}

#[tokio::test]
async fn failover_moves_on_after_a_server_error_or_a_429() {
    for status in [500, 502, 429] {
        let pki = Arc::new(pki());
        let failing = Server::start_with(
            pki.clone(),
            Arc::new(move |_| Reply::Bytes(answer(status, &error_body("internal", "broken")))),
        )
        .await;
        let live = Server::start_with(pki, Arc::new(|_| ok(r#"{"n":1}"#))).await;
        let cp = failover(&[failing.url(), live.url()], &live.token());
        let pong: Pong = cp.get("/v1/gateway/ping", TIMEOUT).await.unwrap();
        assert_eq!(pong, Pong { n: 1 });
        assert_eq!((failing.requests(), live.requests()), (1, 1), "{status}");
    }
}

#[tokio::test]
async fn failover_says_what_happened_at_each_url() {
    let failing = Server::start(|_| Reply::Bytes(answer(503, "busy"))).await;
    let dead = dead_url();
    let cp = failover(&[failing.url(), dead.clone()], &failing.token());
    match cp
        .get::<Pong>("/v1/gateway/ping", TIMEOUT)
        .await
        .unwrap_err()
    {
        CallError::Unavailable(why) => {
            assert!(
                why.contains(&format!("{}: HTTP 503", failing.url())),
                "{why}"
            );
            assert!(
                why.contains(&format!("{dead}: connection refused")),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn failover_takes_a_client_error_as_the_answer() {
    let pki = Arc::new(pki());
    let refusing = Server::start_with(
        pki.clone(),
        Arc::new(|_| Reply::Bytes(answer(404, &error_body("resource_not_found", "gone")))),
    )
    .await;
    let live = Server::start_with(pki, Arc::new(|_| ok("{}"))).await;
    let cp = failover(&[refusing.url(), live.url()], &live.token());
    let e = cp.get::<Pong>("/v1/gateway/x", TIMEOUT).await.unwrap_err();
    assert_eq!(
        e,
        CallError::Refused {
            status: 404,
            kind: ErrorKind::ResourceNotFound,
            message: "gone".into()
        }
    );
    assert_eq!(live.requests(), 0);
}

#[tokio::test]
async fn after_a_refused_token_the_failover_pauses() {
    let server =
        Server::start(|_| Reply::Bytes(answer(401, &error_body("unauthenticated", "deleted"))))
            .await;
    let cp = failover(&[server.url()], &server.token());
    for _ in 0..3 {
        let e = cp
            .get::<Pong>("/v1/gateway/ping", TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallError::Refused { status: 401, message, .. } if message == "deleted"),
            "{e:?}"
        );
    }
    assert_eq!(server.requests(), 1, "no token check during the pause");
}

#[tokio::test]
async fn failover_reports_an_unreadable_success() {
    let server = Server::start(|_| ok("not json")).await;
    let cp = failover(&[server.url()], &server.token());
    let e = cp
        .get::<Pong>("/v1/gateway/ping", TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Unavailable(why) if why.contains("cannot read")),
        "{e:?}"
    );
}
