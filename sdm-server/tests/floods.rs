//! Floods and slow clients from loopback are shed with limits and timeouts while legitimate
//! clients get through; failed token checks are limited per source and per token id, never a
//! valid token; oversized headers are refused.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sdm_core::admin::NewResource;
use sdm_core::{ErrorKind, ResourceKind, Session};
use sdm_testkit::EchoServer;
use support::Installation;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(40);
/// Bound on one connection, handshake or request that should be served at once: only there to
/// turn a hang into a failure (the API holds an idle connection for 45 s at most).
const HANG: Duration = Duration::from_secs(20);

async fn closed_by_peer(stream: &mut (impl AsyncRead + Unpin)) -> bool {
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
async fn a_flood_of_stalled_connections_is_shed_and_real_clients_get_through() {
    let sdm =
        Installation::start_with(|b| b.gateway_handshake_timeout(Duration::from_secs(2))).await;
    let echo = EchoServer::start().unwrap();
    sdm.resource(NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()))
        .await;
    let token = sdm.admin.create_service_account("etl").await.unwrap().token;
    sdm.admin.grant("etl", "echo").await.unwrap();

    // 400 silent or half-speaking connections to the gateway, 200 to the API.
    let mut flood = Vec::new();
    for i in 0..400 {
        let mut s = TcpStream::connect(sdm.server.gateway_addr()).await.unwrap();
        if i % 2 == 0 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        flood.push(s);
    }
    for _ in 0..200 {
        let mut s = TcpStream::connect(sdm.server.api_addr()).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        flood.push(s);
    }
    // A real job logs in, opens a tunnel and talks through it while the flood holds.
    let session = Session::login(&token).await.unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    let mut conn = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    conn.write_all(b"through the flood").await.unwrap();
    let mut back = [0u8; 17];
    tokio::time::timeout(WAIT, conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"through the flood");
    // Every stalled connection is dropped by a timeout.
    for (i, s) in flood.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s).await,
            "stalled connection {i} was never dropped"
        );
    }
}

/// A token of this installation with a random id (unknown to the server).
fn forged(sdm: &Installation) -> sdm_proto::Token {
    sdm_proto::Token::generate(
        sdm_proto::TokenKind::Service,
        sdm.server.api_url(),
        sdm.server.ca_fingerprint(),
    )
    .unwrap()
}

/// Logs in with tokens from `make` until an answer contains `marker` (at most 100 tries);
/// returns the number of the try that got it, and the answer.
async fn fail_until(make: impl Fn() -> String, marker: &str) -> (usize, sdm_core::Error) {
    for attempt in 1..=100 {
        let err = Session::login(&make()).await.unwrap_err();
        if err.message().contains(marker) {
            return (attempt, err);
        }
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err:?}");
    }
    panic!("100 failed token checks never got {marker:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_rate_limited_per_source_and_a_valid_token_still_passes() {
    let sdm = Installation::start().await;
    let echo = EchoServer::start().unwrap();
    sdm.resource(NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()))
        .await;
    let good = sdm.admin.create_service_account("etl").await.unwrap().token;
    sdm.admin.grant("etl", "echo").await.unwrap();

    let (attempt, err) = fail_until(
        || forged(&sdm).encode(),
        "too many failed token checks from 127.0.0.1",
    )
    .await;
    assert_eq!(attempt, 61, "the 61st failure in a minute is throttled");
    // Retryable, and not a revocation: the client tried again (with backoff) before saying so.
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err:?}");
    assert!(err.retryable());
    assert!(
        err.message().contains("answered 429") && err.message().contains("not a revocation"),
        "{err}"
    );

    // Garbage is refused without a look-up, with 429 and when to come back.
    let answer = raw_get(&sdm, "/v1/resources", Some("Bearer garbage")).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: "),
        "{answer}"
    );
    assert!(answer.contains(r#""kind":"api_unreachable""#), "{answer}");

    // A valid token from the same source is checked as usual: the job works.
    let session = Session::login(&good).await.unwrap();
    assert_eq!(session.list_resources().await.unwrap().len(), 1);
    let tunnel = session.connect("echo").await.unwrap();
    let mut conn = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    conn.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(WAIT, conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"still here");
    // The source is still throttled all the while.
    let (attempt, _) = fail_until(|| forged(&sdm).encode(), "too many failed token checks").await;
    assert_eq!(attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_secret_of_a_real_token_is_limited_per_token_and_the_real_secret_passes() {
    let sdm = Installation::start().await;
    let good = sdm.admin.create_service_account("etl").await.unwrap().token;
    let real = sdm_proto::Token::parse(&good).unwrap();
    let guess = || {
        let mut guess = real.clone();
        guess.secret = forged(&sdm).secret;
        guess.encode()
    };

    let (attempt, err) = fail_until(guess, "too many failed checks of this token id").await;
    assert_eq!(
        attempt, 11,
        "the 11th wrong secret in a minute is throttled"
    );
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err:?}");
    // That token id only: the source is not throttled (13 failures so far, with the client's
    // retries), so an unknown token still gets the ordinary answer…
    let err = Session::login(&forged(&sdm).encode()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err:?}");
    // …and the right secret of the throttled id is accepted.
    let session = Session::login(&good).await.unwrap();
    assert!(session.list_resources().await.unwrap().is_empty());
    let (attempt, _) = fail_until(guess, "too many failed checks of this token id").await;
    assert_eq!(attempt, 1, "the guesses are still throttled");
}

/// One HTTPS GET to the API, with an optional `Authorization` value; the raw answer.
async fn raw_get(sdm: &Installation, path: &str, authorization: Option<&str>) -> String {
    let mut tls = api_tls(sdm).await;
    let auth = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: sdm\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS connection to the API that trusts the installation's CA.
async fn api_tls(sdm: &Installation) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let ca = rustls::pki_types::CertificateDer::from_pem_file(sdm.data_dir().join("ca.pem"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(sdm.server.api_addr()).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_api_keeps_serving() {
    let sdm = Installation::start().await;
    let mut tls = api_tls(&sdm).await;
    let huge = "x".repeat(64 * 1024);
    let request = format!("GET /v1/health HTTP/1.1\r\nHost: sdm\r\nX-Big: {huge}\r\n\r\n");
    let _ = tls.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Still serving.
    let admin = sdm.admin.list_accounts().await.unwrap();
    assert!(!admin.is_empty());
}

/// A TCP connection to `to` from the local address `from` (all of 127.0.0.0/8 is loopback).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// `GET /v1/health` on a new connection from `from`: the status, or why there was none.
async fn health_from(sdm: &Installation, from: IpAddr) -> Result<u16, String> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    let api = sdm.server.api_addr();
    let tcp = connect_from(from, api)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = support::ca_connector(&sdm.data_dir(), b"http/1.1")
        .connect(
            rustls::pki_types::ServerName::IpAddress(api.ip().into()),
            tcp,
        )
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(sdm_proto::api::routes::HEALTH)
        .header(hyper::header::HOST, api.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_do_not_hold_the_api() {
    // This process holds a few thousand sockets.
    sdm_server::raise_open_file_limit();
    let sdm = Installation::start().await;
    let api = sdm.server.api_addr();
    let connector = support::ca_connector(&sdm.data_dir(), b"http/1.1");
    let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let name = rustls::pki_types::ServerName::IpAddress(api.ip().into());

    // 3,000 connections from 127.0.0.1 that never send a request: 1,500 of them finish the TLS
    // handshake first (when the server lets them), the others stay silent from the start.
    let mut silent = Vec::new();
    let mut after_tls = Vec::new();
    let mut refused = 0;
    for i in 0..3000 {
        let tcp = tokio::time::timeout(HANG, connect_from(one, api))
            .await
            .expect("connecting to the API hung")
            .unwrap();
        if !(100..1600).contains(&i) {
            silent.push(tcp);
            continue;
        }
        let handshake = tokio::time::timeout(HANG, connector.connect(name.clone(), tcp))
            .await
            .unwrap_or_else(|_| {
                panic!("connection {i}: the API neither finished the TLS handshake nor closed it")
            });
        match handshake {
            Ok(tls) => after_tls.push(tls),
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 0,
        "one source was let in {} times",
        after_tls.len()
    );

    // Meanwhile another source is served at once.
    let status = tokio::time::timeout(HANG, health_from(&sdm, two))
        .await
        .expect("a health check from 127.0.0.2 hung behind 127.0.0.1's idle connections");
    assert_eq!(status, Ok(200));

    // Every idle connection is closed by the server: those over the source's share at once, the
    // others once they have sent no request in time.
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s).await,
            "silent connection {i} was never closed"
        );
    }
    for (i, s) in after_tls.iter_mut().enumerate() {
        assert!(
            closed_by_peer(s).await,
            "idle TLS connection {i} was never closed"
        );
    }
    // And 127.0.0.1 is served again.
    let status = tokio::time::timeout(HANG, health_from(&sdm, one))
        .await
        .expect("a health check from 127.0.0.1 hung after its idle connections were closed");
    assert_eq!(status, Ok(200));
}
