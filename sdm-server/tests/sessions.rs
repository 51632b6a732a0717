//! Login sessions are bounded: one token logging in thousands of times keeps at most the
//! account's limit open (the oldest make room) and leaves no trail of unused sessions in the
//! store; idle and old sessions end, ended ones are removed; a client of the same account whose
//! session ended that way logs in again by itself and its tunnels carry on.
//!
//! The real server in-process on 127.0.0.1, on SQLite and on a real PostgreSQL; the real
//! client library.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sdm_core::admin::NewResource;
use sdm_core::{ResourceKind, Session, Tunnel};
use sdm_server::SessionPolicy;
use sdm_testkit::{EchoServer, PgCluster};
use support::{Installation, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Bound on anything expected to happen "soon" (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(60);
/// Logins of the flood.
const FLOOD: usize = 3_000;
/// The account's session limit in the flood tests.
const LIMIT: u32 = 25;

/// A new database in this test process's PostgreSQL cluster; its URL.
async fn fresh_postgres() -> String {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .expect("a PostgreSQL cluster (initdb and postgres on this machine)");
    let name = format!("sdm_{}", Uuid::new_v4().simple());
    pg.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    pg.url(&name)
}

/// Where the state lives, to count what the flood left there.
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Backend {
    /// (open, all) sessions of the account, read from the database itself.
    async fn sessions(&self, account: Uuid) -> (i64, i64) {
        match self {
            Backend::Sqlite(data_dir) => {
                let conn = rusqlite::Connection::open(data_dir.join("sdm.db")).unwrap();
                conn.query_row(
                    "SELECT COALESCE(SUM(ended_at IS NULL), 0), COUNT(*) FROM sessions
                     WHERE account_id = ?1",
                    [account.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
            }
            Backend::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let row = client
                    .query_one(
                        "SELECT COUNT(*) FILTER (WHERE ended_at IS NULL), COUNT(*)
                         FROM sessions WHERE account_id = $1",
                        &[&account],
                    )
                    .await
                    .unwrap();
                (row.get(0), row.get(1))
            }
        }
    }

    /// When the session ended, `None` while open; `Err` when it is gone.
    async fn ended_at(&self, session: Uuid) -> Result<Option<i64>, ()> {
        let found: Option<Option<i64>> = match self {
            Backend::Sqlite(data_dir) => {
                let conn = rusqlite::Connection::open(data_dir.join("sdm.db")).unwrap();
                let mut stmt = conn
                    .prepare("SELECT ended_at FROM sessions WHERE id = ?1")
                    .unwrap();
                let mut rows = stmt.query([session.to_string()]).unwrap();
                rows.next().unwrap().map(|r| r.get(0).unwrap())
            }
            Backend::Postgres(_) => unreachable!("only SQLite installations are inspected"),
        };
        found.ok_or(())
    }
}

/// `n` logins with `token` over keep-alive connections (a few hundred per connection), each
/// answered 200.
async fn flood_logins(data_dir: &Path, api: SocketAddr, token: &str, n: usize) {
    let client = common::Client::new(data_dir, api);
    let mut done = 0;
    while done < n {
        let tls = client.connect_raw().await;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..250.min(n - done) {
            tokio::time::timeout(WAIT, sender.ready())
                .await
                .expect("the API connection was never ready")
                .unwrap();
            let request = hyper::Request::builder()
                .method("POST")
                .uri("/v1/login")
                .header(hyper::header::HOST, api.to_string())
                .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(b"{\"client\":\"flood\"}")))
                .unwrap();
            let response = tokio::time::timeout(WAIT, sender.send_request(request))
                .await
                .expect("a login timed out")
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                status,
                200,
                "login {done}: {}",
                String::from_utf8_lossy(&body)
            );
            done += 1;
        }
    }
}

/// Connects through the tunnel and writes and reads an echo; whether that worked within a bound.
async fn echoes(tunnel: &Tunnel) -> bool {
    let connect = TcpStream::connect(tunnel.local_addr().tcp().unwrap());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(mut s)) => support::echoes_on(&mut s).await,
        _ => false,
    }
}

/// Whether the peer closed `stream` within [`WAIT`].
async fn cut(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut sink)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// An echo resource `echo` and a service account `etl` granted it; its token.
async fn echo_account(sdm: &Installation, echo: &EchoServer) -> String {
    sdm.resource(NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()))
        .await;
    let token = sdm.admin.create_service_account("etl").await.unwrap().token;
    sdm.admin.grant("etl", "echo").await.unwrap();
    token
}

async fn flood_keeps_sessions_at_the_limit(sdm: Installation, backend: Backend) {
    let echo = EchoServer::start().unwrap();
    let token = echo_account(&sdm, &echo).await;
    // The job: logged in first, a tunnel open and in use.
    let job = Session::login(&token).await.unwrap();
    let account = job.account().id;
    let first_session = job.id();
    let tunnel = job.connect("echo").await.unwrap();
    assert!(echoes(&tunnel).await);

    // Someone holding the same token logs in thousands of times.
    flood_logins(&sdm.data_dir(), sdm.server.api_addr(), &token, FLOOD).await;
    let (open, all) = backend.sessions(account).await;
    assert_eq!(open, i64::from(LIMIT), "open sessions after {FLOOD} logins");
    // The unused sessions that made room left nothing behind; the job's session, which was
    // used, is kept as ended (until the retention) for the record.
    assert_eq!(
        all,
        i64::from(LIMIT) + 1,
        "sessions stored after {FLOOD} logins"
    );

    // The job carries on: its tunnel reopens connections in a new session of its own, and what
    // `sdm status` shows still works.
    assert!(
        eventually(WAIT, async || echoes(&tunnel).await).await,
        "the tunnel did not recover after its session was ended by the limit"
    );
    assert!(tunnel.is_open(), "{:?}", tunnel.close_reason());
    assert_ne!(job.id(), first_session, "the job logged in again");
    let status = job.status().await.unwrap();
    assert_eq!(status.resources.len(), 1);
    assert!(status.resources[0].is_connected());
    assert_eq!(backend.sessions(account).await.0, i64::from(LIMIT));
    job.logout().await.unwrap();
}

fn limited(builder: sdm_server::ServerBuilder) -> sdm_server::ServerBuilder {
    builder.session_policy(SessionPolicy {
        max_per_account: LIMIT,
        ..SessionPolicy::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logging_in_thousands_of_times_keeps_its_open_sessions_at_the_limit() {
    let sdm = Installation::start_with(limited).await;
    let backend = Backend::Sqlite(sdm.data_dir());
    flood_keeps_sessions_at_the_limit(sdm, backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logging_in_thousands_of_times_keeps_its_open_sessions_at_the_limit_on_postgres() {
    let url = fresh_postgres().await;
    let sdm = Installation::start_with(|b| limited(b).database_url(&url)).await;
    flood_keeps_sessions_at_the_limit(sdm, Backend::Postgres(url)).await;
}

/// Leases live 2 s, so that short session lifetimes are allowed.
fn short_lived(
    idle: u64,
    max_age: u64,
) -> impl FnOnce(sdm_server::ServerBuilder) -> sdm_server::ServerBuilder {
    move |builder| {
        builder
            .lease_ttl(Duration::from_secs(2))
            .session_policy(SessionPolicy {
                idle_timeout: Duration::from_secs(idle),
                max_age: Duration::from_secs(max_age),
                retention: Duration::ZERO,
                ..SessionPolicy::default()
            })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_and_its_client_logs_in_again_when_it_needs_a_lease() {
    let sdm = Installation::start_with(short_lived(3, 3600)).await;
    let backend = Backend::Sqlite(sdm.data_dir());
    let echo = EchoServer::start().unwrap();
    let token = echo_account(&sdm, &echo).await;
    let job = Session::login(&token).await.unwrap();
    let idle = job.id();
    // Nothing asked for a lease: the sweep ends the session, and (no retention) removes it.
    assert!(
        eventually(WAIT, async || backend.ended_at(idle).await.is_err()).await,
        "the idle session was not ended and removed"
    );
    // The job neither noticed nor needs to: listing works with the token alone, and the first
    // tunnel logs in again.
    assert_eq!(job.list_resources().await.unwrap().len(), 1);
    let tunnel = job.connect("echo").await.unwrap();
    assert!(echoes(&tunnel).await);
    assert_ne!(job.id(), idle);
    // In use (a tunnel renews its lease every second), the new session stays open past the
    // idle timeout.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.ended_at(job.id()).await, Ok(None));
    assert!(echoes(&tunnel).await);
    // Logging out of a session the server already removed is not an error.
    drop(tunnel);
    let stale = job.id();
    assert!(
        eventually(WAIT, async || backend.ended_at(stale).await.is_err()).await,
        "the idle session was not ended and removed"
    );
    job.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_maximum_age_is_cut_like_a_logout_and_the_tunnel_carries_on() {
    let sdm = Installation::start_with(short_lived(4, 4)).await;
    let backend = Backend::Sqlite(sdm.data_dir());
    let echo = EchoServer::start().unwrap();
    let token = echo_account(&sdm, &echo).await;
    let job = Session::login(&token).await.unwrap();
    let first = job.id();
    let tunnel = job.connect("echo").await.unwrap();
    let mut held = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.unwrap();
    // However busy, the session ends at its maximum age, and like a logout that cuts its
    // connections.
    assert!(
        cut(&mut held).await,
        "the old session's connection stayed open"
    );
    assert!(backend.ended_at(first).await != Ok(None));
    // The tunnel stays open and carries new connections in a new session.
    assert!(
        eventually(WAIT, async || echoes(&tunnel).await).await,
        "the tunnel did not recover after its session reached its maximum age"
    );
    assert!(tunnel.is_open(), "{:?}", tunnel.close_reason());
    assert_ne!(job.id(), first);
}
