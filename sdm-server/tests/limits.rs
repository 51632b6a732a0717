//! The connection caps and timeouts the docs promise, each reached for real: the caps with
//! their real numbers against the `sdm-server` binary (its descriptors apart from the test's),
//! the timeouts by a client that stalls past them. Each test asserts what the client sees.
//!
//! Two tests: `caps` reaches one cap after the other (together they would hold about 20,500
//! descriptors in this process, over its hard limit of 20,000), and `timeouts` runs every
//! timeout at once (the harness runs only as many tests at once as there are cores), so that the
//! file takes about its longest timeout.

mod common;
mod processes;
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use sdm_core::ResourceKind;
use sdm_core::admin::NewResource;
use sdm_proto::api::routes;
use sdm_proto::error::ApiErrorBody;
use sdm_proto::handshake::{self, Reply};
use sdm_proto::lease::{Lease, LeaseSigner};
use sdm_testkit::{EchoServer, PgCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::ca_connector;
use uuid::Uuid;

/// Bound on "is served" and "is closed" after the moment it should happen: generous, the
/// machine is shared.
const LATE: Duration = Duration::from_secs(30);
/// How long a client behind a full cap is watched for being served (it must not be).
const HELD_BACK: Duration = Duration::from_secs(5);
/// How far before a deadline a connection is checked to be still open and unanswered.
const EARLY: Duration = Duration::from_secs(10);

/// The API's cap (`sdm-control/src/api/serve.rs`).
const API_CAP: usize = 4096;
/// The API's default per-source cap.
const PER_SOURCE: usize = 256;
/// A gateway's cap (`sdm-gateway/src/listener.rs`).
const GATEWAY_CAP: usize = 16 * 1024;
/// Connections set up at once while filling a cap: few enough that each finishes its
/// handshake well inside the server's 10 s handshake deadline.
const FILLING: usize = 32;

/// Raises this process's soft open-file limit to its hard limit (20,000 on the CI machine).
fn raise_open_file_limit(needed: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= needed as u64,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_cur
    );
}

/// A TCP connection to `to` from `from` (any port).
async fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = tokio::time::timeout(LATE, socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connecting to {to} from {from} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {to} from {from}: {e}"));
    tcp.set_nodelay(true).unwrap();
    tcp
}

async fn tls(connector: &TlsConnector, tcp: TcpStream) -> TlsStream<TcpStream> {
    let name = ServerName::IpAddress(tcp.peer_addr().unwrap().ip().into());
    connector.connect(name, tcp).await.unwrap()
}

/// Writes `bytes` and flushes them out of the TLS session onto the socket.
async fn send(
    stream: &mut (impl AsyncWriteExt + Unpin),
    bytes: impl AsRef<[u8]>,
) -> std::io::Result<()> {
    stream.write_all(bytes.as_ref()).await?;
    stream.flush().await
}

/// An HTTP/1.1 answer: status and body.
struct Answer {
    status: u16,
    /// Status line and headers, lower case.
    head: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key == name).then(|| value.trim())
        })
    }
}

/// Reads one HTTP/1.1 answer (with a `Content-Length`); `None` if the server closed first.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .map(|v| v.trim().to_owned());
    Some(Answer {
        status,
        head,
        content_type,
        body: buf[head_end..head_end + length].to_vec(),
    })
}

fn health_request() -> Vec<u8> {
    format!("GET {} HTTP/1.1\r\nHost: sdm\r\n\r\n", routes::HEALTH).into_bytes()
}

/// What a silent client reads until the server closes, or `None` if it is still open at
/// `deadline`.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    deadline: Instant,
) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Asserts that `stream` receives nothing and stays open until `until`.
async fn silent_and_open_until(
    stream: &mut (impl AsyncReadExt + Unpin),
    until: Instant,
    what: &str,
) {
    let mut chunk = [0u8; 1];
    match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("{what}: closed before its deadline"),
        Ok(Ok(_)) => panic!("{what}: answered before its deadline"),
        Ok(Err(e)) => panic!("{what}: failed before its deadline: {e}"),
    }
}

/// The gateway's reply after HELLO (and OPEN); with `past_ready`, the one after READY.
async fn gateway_reply(tls: &mut TlsStream<TcpStream>, past_ready: bool) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some((reply, n)) = handshake::decode_reply(&buf).unwrap() {
            buf.drain(..n);
            if !(past_ready && reply == Reply::Ready) {
                assert!(buf.is_empty(), "bytes after the reply");
                return reply;
            }
        }
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed without a reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A lease for `resource_id` signed with the installation's key in `data_dir`.
fn signed_lease(data_dir: &Path, session: &sdm_core::Session, resource_id: Uuid) -> Vec<u8> {
    let pem = std::fs::read(data_dir.join("lease.key")).unwrap();
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
    let signer = LeaseSigner::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let now = sdm_proto::unix_now();
    signer.sign(&Lease {
        id: Uuid::new_v4(),
        account_id: session.account().id,
        resource_id,
        session_id: session.id(),
        issued_at: now,
        expires_at: now + 600,
    })
}

/// Opens `count` connections with `open`, [`FILLING`] at a time, until one fails.
async fn fill<T, F>(count: usize, open: impl Fn(usize) -> F) -> Result<Vec<T>, String>
where
    F: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let held: Vec<T> = futures_util::stream::iter(0..count)
        .map(|i| {
            let opened = open(i);
            async move {
                match tokio::time::timeout(LATE, opened).await {
                    Ok(Ok(held)) => Ok(held),
                    Ok(Err(e)) => Err(format!(
                        "connection {i} failed after {:?}: {e}",
                        started.elapsed()
                    )),
                    Err(_) => Err(format!("connection {i} was not served in time")),
                }
            }
        })
        .buffer_unordered(FILLING)
        .try_collect()
        .await?;
    println!("{count} connections served in {:?}", started.elapsed());
    Ok(held)
}

/// With the cap full: the connection over it is not served for [`HELD_BACK`], and the held
/// connections (filled within `fill_bound`, so none reached its idle limit) are still open,
/// checked on every `step`th.
async fn the_cap_holds_back<T>(
    waiting: &tokio::task::JoinHandle<T>,
    filled: Instant,
    fill_bound: Duration,
    held: &mut [TlsStream<TcpStream>],
    step: usize,
) {
    tokio::time::sleep(HELD_BACK).await;
    assert!(
        !waiting.is_finished(),
        "a connection over the cap was served"
    );
    assert!(
        filled.elapsed() < fill_bound,
        "filling the cap took too long to tell anything: {:?}",
        filled.elapsed()
    );
    for (i, tls) in held.iter_mut().enumerate().step_by(step) {
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(1), tls.read(&mut byte))
                .await
                .is_err(),
            "held connection {i} was closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps() {
    the_api_serves_4096_connections_and_the_next_waits_in_the_backlog().await;
    a_gateway_serves_16384_connections_and_the_next_waits_in_the_backlog().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts() {
    let scenarios = [
        tokio::spawn(idle_keep_alive_and_stalled_headers_are_closed_after_45_s()),
        tokio::spawn(a_request_whose_body_stalls_is_answered_504_timeout_after_30_s()),
        tokio::spawn(a_database_that_does_not_answer_fails_the_request_with_503_after_20_s()),
        tokio::spawn(a_warm_gateway_connection_without_open_is_closed_after_60_s()),
        tokio::spawn(a_postgres_client_that_sends_no_startup_is_told_why_and_closed_after_30_s()),
    ];
    for finished in futures_util::future::join_all(scenarios).await {
        if let Err(e) = finished {
            // The panic's message was printed when it happened; fail the test with it.
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn the_api_serves_4096_connections_and_the_next_waits_in_the_backlog() {
    raise_open_file_limit(API_CAP + 100);
    let mut cp =
        processes::control_plane_with(&["--log", "info,sdm_control=debug,sdm_gateway=debug"]).await;
    let data = cp.dir.path().join("data");
    let api = ca_connector(&data, b"http/1.1");
    let to = cp.api_addr;

    // The cap's worth of keep-alive connections, each served one request, 256 per source
    // address (the per-source cap) from 127.0.0.2 on; idle, each is kept for 45 s.
    let filled = Instant::now();
    let held = fill(API_CAP, |i| {
        let api = api.clone();
        async move {
            let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / PER_SOURCE).unwrap());
            let tcp = tcp_from(source.into(), to).await;
            let name = ServerName::IpAddress(to.ip().into());
            let mut tls = api
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(&mut tls, &health_request())
                .await
                .map_err(|e| format!("write: {e}"))?;
            match read_answer(&mut tls).await {
                Some(answer) if answer.status == 200 => Ok(tls),
                Some(answer) => Err(format!("answered {}", answer.status)),
                None => Err("closed without an answer".into()),
            }
        }
    })
    .await;
    let mut held =
        held.unwrap_or_else(|e| panic!("{e}; the server's log:\n{}", cp.proc.stderr_so_far()));

    // One more: its TCP connection is established (the kernel's backlog takes it, nothing
    // refuses it), but it gets no TLS handshake, let alone an answer, while the cap is full.
    let tcp = tcp_from(Ipv4Addr::LOCALHOST.into(), to).await;
    let waiting = tokio::spawn(async move {
        let mut tls = tls(&api, tcp).await;
        send(&mut tls, &health_request()).await.unwrap();
        read_answer(&mut tls).await
    });
    // The held connections were all still open meanwhile (their 45 s had not passed), so the
    // cap was full the whole time.
    the_cap_holds_back(&waiting, filled, Duration::from_secs(40), &mut held, 97).await;

    // Some held connections close: the waiting one is served.
    held.truncate(API_CAP - 16);
    let answer = tokio::time::timeout(LATE, waiting)
        .await
        .expect("the waiting connection was not served once the cap had room")
        .unwrap()
        .expect("the waiting connection was closed");
    assert_eq!(answer.status, 200);
    println!("the waiting connection got {}", answer.status);
}

async fn a_gateway_serves_16384_connections_and_the_next_waits_in_the_backlog() {
    raise_open_file_limit(GATEWAY_CAP + 100);
    let mut cp =
        processes::control_plane_with(&["--log", "info,sdm_control=debug,sdm_gateway=debug"]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, None).await;
    let (_, session) = cp.session("etl", &["echo"]).await;
    let resource_id = session.list_resources().await.unwrap()[0].id;
    let data = cp.dir.path().join("data");
    let lease = Arc::new(signed_lease(&data, &session, resource_id));
    let gateway = ca_connector(&data, b"sdm/1");
    let to = cp.gateway_addr;

    // The cap's worth of warm connections (TLS, HELLO, READY), each kept for 60 s without OPEN.
    let filled = Instant::now();
    let held = fill(GATEWAY_CAP, |_| {
        let (gateway, lease) = (gateway.clone(), lease.clone());
        async move {
            let tcp = tcp(to).await;
            let name = ServerName::IpAddress(to.ip().into());
            let mut tls = gateway
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(&mut tls, &handshake::encode_hello(&lease, false))
                .await
                .map_err(|e| format!("write: {e}"))?;
            match gateway_reply(&mut tls, false).await {
                Reply::Ready => Ok(tls),
                other => Err(format!("replied {other:?}")),
            }
        }
    })
    .await;
    let mut held =
        held.unwrap_or_else(|e| panic!("{e}; the server's log:\n{}", cp.proc.stderr_so_far()));

    // One more, a tunnel connection put to use at once (HELLO with OPEN): its TCP connection is
    // established, but no TLS handshake happens while the cap is full.
    let tcp = tcp(to).await;
    let waiting = tokio::spawn(async move {
        let mut tls = tls(&gateway, tcp).await;
        let mut hello = handshake::encode_hello(&lease, false);
        hello.push(handshake::OPEN);
        send(&mut tls, &hello).await.unwrap();
        assert_eq!(gateway_reply(&mut tls, true).await, Reply::Connected);
        send(&mut tls, b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).await.unwrap();
        back
    });
    // The held connections were all still open meanwhile (their 60 s had not passed).
    the_cap_holds_back(&waiting, filled, Duration::from_secs(55), &mut held, 397).await;

    // Some held connections close: the waiting one gets through to the echo server.
    held.truncate(GATEWAY_CAP - 16);
    let back = tokio::time::timeout(LATE, waiting)
        .await
        .expect("the waiting connection was not served once the cap had room")
        .unwrap();
    assert_eq!(&back, b"ping");
    println!("the waiting tunnel connection carried its bytes");
}

async fn tcp(to: SocketAddr) -> TcpStream {
    let tcp = tokio::time::timeout(LATE, TcpStream::connect(to))
        .await
        .unwrap_or_else(|_| panic!("connecting to {to} timed out"))
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// hyper's `header_read_timeout` in `sdm-control/src/api/serve.rs`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(45);

async fn idle_keep_alive_and_stalled_headers_are_closed_after_45_s() {
    let server = common::TestServer::start().await;
    // Served once, then idle.
    let mut idle = server.client.connect_raw().await;
    send(&mut idle, &health_request()).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    // Served once, then half of a second request's headers.
    let mut stalled = server.client.connect_raw().await;
    send(&mut stalled, &health_request()).await.unwrap();
    assert_eq!(read_answer(&mut stalled).await.unwrap().status, 200);
    send(
        &mut stalled,
        format!("GET {} HTTP/1.1\r\nHo", routes::HEALTH).as_bytes(),
    )
    .await
    .unwrap();
    let since = Instant::now();

    let early = since + HEADER_READ_TIMEOUT - EARLY;
    silent_and_open_until(&mut idle, early, "idle keep-alive connection").await;
    silent_and_open_until(&mut stalled, early, "connection with half its headers").await;

    let late = since + HEADER_READ_TIMEOUT + LATE;
    let idle_read = read_until_closed(&mut idle, late)
        .await
        .expect("an idle keep-alive connection was not closed");
    let stalled_read = read_until_closed(&mut stalled, late)
        .await
        .expect("a connection with half its headers was not closed");
    println!(
        "closed after {:?}; the idle connection read {:?}, the stalled one {:?}",
        since.elapsed(),
        String::from_utf8_lossy(&idle_read),
        String::from_utf8_lossy(&stalled_read)
    );
    // Closed without an answer (hyper sends no 408 here): nothing a client could mistake for
    // the answer to a request it sends meanwhile.
    assert!(idle_read.is_empty(), "{idle_read:?}");
    assert!(stalled_read.is_empty(), "{stalled_read:?}");
}

/// `REQUEST_TIMEOUT` in `sdm-control/src/api/mod.rs`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn a_request_whose_body_stalls_is_answered_504_timeout_after_30_s() {
    let server = common::TestServer::start().await;
    let mut tls = server.client.connect_raw().await;
    // Headers promise 100 bytes of body; 10 come.
    send(
        &mut tls,
        format!(
            "POST {} HTTP/1.1\r\nHost: sdm\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"labels\":",
            routes::LOGIN,
            server.admin()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let since = Instant::now();
    silent_and_open_until(&mut tls, since + REQUEST_TIMEOUT - EARLY, "stalled request").await;
    let answer = tokio::time::timeout_at(since + REQUEST_TIMEOUT + LATE, read_answer(&mut tls))
        .await
        .expect("a stalled request was not answered")
        .expect("a stalled request was closed without an answer");
    assert_eq!(
        answer.status,
        504,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let body: ApiErrorBody = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body.error.kind, "timeout", "{}", body.error.message);
    assert!(
        body.error.message.contains("30 s"),
        "{}",
        body.error.message
    );
    println!(
        "after {:?}: {} {}",
        since.elapsed(),
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
}

/// `CALL_TIMEOUT` in `sdm-control/src/store/postgres/mod.rs`.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

async fn a_database_that_does_not_answer_fails_the_request_with_503_after_20_s() {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let name = format!("sdm_{}", Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {name}");
    tokio::task::spawn_blocking(move || pg.psql("postgres", &create).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = sdm_server::Server::builder()
        .data_dir(&data)
        .database_url(&pg.url(&name))
        .listen("127.0.0.1:0".parse().unwrap())
        .gateway_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let admin = server.admin_token().unwrap().to_owned();
    let client = common::Client::new(&data, server.api_addr());

    // Another session holds the resources table: listing them waits on the lock.
    let (locker, connection) =
        tokio_postgres::connect(&pg.conn_string(&name), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE resources IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut tls = client.connect_raw().await;
    send(
        &mut tls,
        format!(
            "GET {} HTTP/1.1\r\nHost: sdm\r\nAuthorization: Bearer {admin}\r\n\r\n",
            routes::ADMIN_RESOURCES
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let since = Instant::now();
    silent_and_open_until(
        &mut tls,
        since + CALL_TIMEOUT - EARLY,
        "request on a locked table",
    )
    .await;
    let answer = tokio::time::timeout_at(since + CALL_TIMEOUT + LATE, read_answer(&mut tls))
        .await
        .expect("a request on a locked table was not answered")
        .expect("a request on a locked table was closed without an answer");
    println!(
        "after {:?}: {} (Retry-After: {:?}) {}",
        since.elapsed(),
        answer.status,
        answer.header("retry-after"),
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("retry-after"), Some("1"));
    let body: ApiErrorBody = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body.error.kind, "api_unreachable", "{}", body.error.message);
    assert!(
        body.error.message.contains("database"),
        "{}",
        body.error.message
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    let list = client.get(routes::ADMIN_RESOURCES, Some(&admin)).await;
    assert_eq!(list.status, 200, "{}", list.text());
}

/// `IDLE_BEFORE_OPEN` in `sdm-gateway/src/connection.rs`.
const IDLE_BEFORE_OPEN: Duration = Duration::from_secs(60);

async fn a_warm_gateway_connection_without_open_is_closed_after_60_s() {
    let install = support::Installation::start().await;
    let echo = EchoServer::start().unwrap();
    install
        .resource(NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()))
        .await;
    let session = install.session("etl", &["echo"]).await;
    let resource_id = session.list_resources().await.unwrap()[0].id;
    let lease = signed_lease(&install.data_dir(), &session, resource_id);
    let gateway = ca_connector(&install.data_dir(), b"sdm/1");

    let mut warm = tls(&gateway, tcp(install.server.gateway_addr()).await).await;
    send(&mut warm, &handshake::encode_hello(&lease, false))
        .await
        .unwrap();
    assert_eq!(gateway_reply(&mut warm, false).await, Reply::Ready);
    let since = Instant::now();
    silent_and_open_until(
        &mut warm,
        since + IDLE_BEFORE_OPEN - EARLY,
        "warm connection",
    )
    .await;
    let read = read_until_closed(&mut warm, since + IDLE_BEFORE_OPEN + LATE)
        .await
        .expect("a warm connection without OPEN was not closed");
    assert!(read.is_empty(), "the gateway sent {read:?} before closing");
    println!("closed without a word after {:?}", since.elapsed());
}

/// `STARTUP_TIMEOUT` in `sdm-gateway/src/postgres/mod.rs`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

async fn a_postgres_client_that_sends_no_startup_is_told_why_and_closed_after_30_s() {
    let install = support::Installation::start().await;
    // Never reached: the gateway connects upstream only after the startup message.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unreachable.local_addr().unwrap().port();
    install
        .resource(
            NewResource::new("pg", ResourceKind::Postgres, "127.0.0.1")
                .port(port)
                .credentials(sdm_core::admin::Credentials {
                    username: "app".into(),
                    password: "secret".into(),
                    database: Some("app".into()),
                }),
        )
        .await;
    let session = install.session("etl", &["pg"]).await;
    let resource_id = session.list_resources().await.unwrap()[0].id;
    let lease = signed_lease(&install.data_dir(), &session, resource_id);
    let gateway = ca_connector(&install.data_dir(), b"sdm/1");

    let mut client = tls(&gateway, tcp(install.server.gateway_addr()).await).await;
    let mut hello = handshake::encode_hello(&lease, false);
    hello.push(handshake::OPEN);
    send(&mut client, &hello).await.unwrap();
    assert_eq!(gateway_reply(&mut client, true).await, Reply::Connected);
    let since = Instant::now();
    silent_and_open_until(
        &mut client,
        since + STARTUP_TIMEOUT - EARLY,
        "PostgreSQL client",
    )
    .await;
    let read = read_until_closed(&mut client, since + STARTUP_TIMEOUT + LATE)
        .await
        .expect("a PostgreSQL client that sent no startup was not closed");
    println!(
        "closed after {:?}, having read {:?}",
        since.elapsed(),
        String::from_utf8_lossy(&read)
    );
    // An ErrorResponse: 'E', its length, then fields; SQLSTATE 08P01 (protocol violation).
    assert_eq!(read.first(), Some(&b'E'), "{read:?}");
    let text = String::from_utf8_lossy(&read);
    assert!(text.contains("C08P01"), "{text}");
    assert!(text.contains("no startup message within 30 s"), "{text}");
    drop(unreachable);
}
