//! Standalone gateways as separate processes: a control plane (`sdm-server serve`) and
//! `sdm-server gateway` processes on 127.0.0.1, the real client library in this process.
//!
//! A killed gateway is skipped with no error seen by the job; suspending an account closes
//! connections open on standalone gateways within the revocation bound; credentials are injected
//! through a standalone gateway (real PostgreSQL); resources pinned by tag are offered only with
//! matching gateways and refused by the others; bad gateway tokens are refused; SIGTERM
//! withdraws a gateway.

mod common;
mod processes;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdm_core::admin::{AdminClient, AuditFilter, NewResource};
use sdm_core::{ErrorKind, ResourceKind, Session};
use sdm_proto::api::LeaseGrant;
use sdm_proto::gateway::RegisterGateway;
use sdm_proto::handshake::{self, Reply};
use sdm_proto::{Token, TokenKind};
use sdm_testkit::{EchoServer, HbaAuth, PgCluster, PgConfig, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use processes::{Proc, WAIT, control_plane, field, gateway, spawn};
use support::{app_cluster, app_db_resource, pg_connect};

/// Generous bound for "soon": the design bound is the gateway's 1 s revocation poll plus one
/// re-check over HTTPS; the machine is shared, so the tests allow more and print what they saw.
const SOON: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Processes

// ---------------------------------------------------------------------------------------------
// Client-side helpers

async fn echo_once(addr: SocketAddr) -> Result<(), String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf == b"ping" {
            Ok(())
        } else {
            Err(format!("echoed {buf:?}"))
        }
    };
    tokio::time::timeout(SOON, work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

async fn held_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hold").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(SOON, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    s
}

/// Waits until the gateway cuts `s` (EOF or error), for at most [`SOON`].
async fn cut_within_soon(s: &mut TcpStream, started: Instant) -> Option<Duration> {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(SOON, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        _ => None,
    }
}

async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The gateway's reply to a HELLO+OPEN with `lease`, over TLS trusting the CA in `data_dir`.
async fn present_lease(data_dir: &std::path::Path, gateway: SocketAddr, lease: &[u8]) -> Reply {
    use rustls::pki_types::pem::PemObject;
    let ca = rustls::pki_types::CertificateDer::from_pem_file(data_dir.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"sdm/1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gateway).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(gateway.ip().into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let mut hello = handshake::encode_hello(lease, false);
    hello.push(handshake::OPEN);
    tls.write_all(&hello).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some((reply, n)) = handshake::decode_reply(&buf).unwrap() {
            if reply == Reply::Ready {
                buf.drain(..n);
                continue;
            }
            return reply;
        }
        let n = tokio::time::timeout(SOON, tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the gateway closed without a reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn lease_bytes(grant: &LeaseGrant) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&grant.lease)
        .unwrap()
}

/// Sessions with their tunnels and held connections, open on every gateway of a set.
struct Spread {
    sessions: Vec<Session>,
    tunnels: Vec<sdm_core::Tunnel>,
    held: Vec<TcpStream>,
    since: i64,
}

/// Logs in again and again (through `api_url`, else the token's URL), each session with its own
/// lease starting at a random gateway, holding two connections per session, until each gateway
/// in `gateways` carries at least one (per the audit trail).
async fn spread(
    admin: &AdminClient,
    token: &str,
    api_url: Option<&str>,
    resource: &str,
    gateways: &[&str],
) -> Spread {
    let since = sdm_proto::unix_now();
    let mut spread = Spread {
        sessions: Vec::new(),
        tunnels: Vec::new(),
        held: Vec::new(),
        since,
    };
    let mut per_gateway: Vec<(String, usize)> = Vec::new();
    for _ in 0..24 {
        let mut builder = Session::builder().token(token);
        if let Some(url) = api_url {
            builder = builder.api_url(url);
        }
        let session = builder.login().await.unwrap();
        let tunnel = session.connect(resource).await.unwrap();
        spread
            .held
            .push(held_connection(tunnel.local_addr().tcp().unwrap()).await);
        spread
            .held
            .push(held_connection(tunnel.local_addr().tcp().unwrap()).await);
        spread.tunnels.push(tunnel);
        spread.sessions.push(session);
        let expected = spread.held.len();
        assert!(
            eventually(SOON, async || {
                let records = admin
                    .audit(
                        &AuditFilter::default()
                            .resource(resource)
                            .since(since)
                            .limit(1000),
                    )
                    .await
                    .unwrap()
                    .records;
                per_gateway = gateways
                    .iter()
                    .map(|g| {
                        let open = records
                            .iter()
                            .filter(|r| r.gateway == *g && r.outcome == "open")
                            .count();
                        ((*g).to_owned(), open)
                    })
                    .collect();
                per_gateway.iter().map(|(_, n)| n).sum::<usize>() == expected
            })
            .await,
            "open connections per gateway: {per_gateway:?}"
        );
        if per_gateway.iter().all(|(_, n)| *n > 0) {
            break;
        }
    }
    println!("open connections per gateway: {per_gateway:?}");
    assert!(per_gateway.iter().all(|(_, n)| *n > 0), "{per_gateway:?}");
    spread
}

/// Waits until every held connection is cut; returns the longest wait after `since`.
async fn all_cut(held: &mut [TcpStream], since: Instant) -> Duration {
    let mut worst = Duration::ZERO;
    for (i, s) in held.iter_mut().enumerate() {
        let took = cut_within_soon(s, since).await;
        assert!(
            took.is_some(),
            "connection {i} stayed open after the revocation"
        );
        worst = worst.max(took.unwrap());
    }
    worst
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_go_through_standalone_gateways_and_survive_a_killed_one() {
    let cp = control_plane().await;
    // The first gateway is told about a control plane that is down first: it moves on.
    let dead = format!("https://127.0.0.1:{}", sdm_testkit::free_port());
    let mut gateways = vec![
        cp.gateway("edge-1", &[("edge", "")], &["--control-plane", &dead])
            .await,
        cp.gateway("edge-2", &[("edge", "")], &[]).await,
        cp.gateway("edge-3", &[("edge", "")], &[]).await,
    ];
    let echo = EchoServer::start().unwrap();
    // Pinned to the edge gateways, so the control plane's own gateway never carries it.
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let (_, session) = cp.session("etl", &["echo"]).await;
    let started = sdm_proto::unix_now();
    let tunnel = session.connect("echo").await.unwrap();
    for i in 0..20 {
        echo_once(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
    }
    // The gateway a new lease starts at is random: kill the one this tunnel uses, as a crash
    // would, once it has carried connections.
    let mut used = None;
    assert!(
        eventually(SOON, async || {
            for (i, g) in gateways.iter().enumerate() {
                if cp.ok_through("echo", &g.name, started).await > 0 {
                    used = Some(i);
                    return true;
                }
            }
            false
        })
        .await,
        "no standalone gateway carried a connection"
    );
    let mut victim = gateways.remove(used.unwrap());
    println!("killing {} ({})", victim.name, victim.addr);
    victim.proc.kill();
    let killed_at = sdm_proto::unix_now();

    // The job keeps going: every new connection, through the tunnel and by dial, succeeds.
    for i in 0..40 {
        echo_once(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap_or_else(|e| panic!("after the kill, round {i}: {e}"));
        if i % 5 == 0 {
            let mut d = session.dial("echo").await.unwrap();
            d.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            d.read_exact(&mut one).await.unwrap();
        }
    }
    assert!(tunnel.is_open());
    assert!(tunnel.last_error().is_none(), "{:?}", tunnel.last_error());
    // …carried by the other gateways, whose audit trail reached the control plane.
    let mut survivors = 0;
    assert!(
        eventually(SOON, async || {
            survivors = 0;
            for g in &gateways {
                survivors += cp.ok_through("echo", &g.name, killed_at).await;
            }
            survivors >= 40
        })
        .await,
        "only {survivors} connections recorded through the surviving gateways"
    );
    for g in &mut gateways {
        let logs = g.proc.stderr_so_far();
        assert!(!logs.contains(" ERROR "), "{}:\n{logs}", g.name);
    }
}

/// The client library may learn of a revocation before the gateway does (its own check runs when
/// a connection ends); a PostgreSQL client must still read why. Forced here: the gateway's path
/// to the control plane is cut while the account is suspended and another connection ends, so
/// the library closes the tunnel first; the held connection is then left to the gateway, which
/// tells psql why (57P01) once it hears of the suspension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_the_client_library_learns_first_still_reaches_postgres_clients_with_its_reason()
 {
    const PASSWORD: &str = "Pw-race-51d2-never-seen";
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let cp = control_plane().await;
    // The gateway reaches the control plane only through a relay the test can cut.
    let mut path = Relay::start(cp.api_addr).unwrap();
    let token = cp.gateway_token("edge", &[("dc", "db")]).await;
    let via = format!("https://127.0.0.1:{}", path.port());
    let _gw = gateway("edge", &token, &["--control-plane", &via]);
    cp.admin
        .create_resource(&app_db_resource("app-db", &pg, PASSWORD, Some("dc=db")))
        .await
        .unwrap();
    let (_, session) = cp.session("bi", &["app-db"]).await;
    let tunnel = session.connect("app-db").await.unwrap();
    let connect = async || {
        let (client, connection) = pg_connect(&tunnel).await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        (client, connection)
    };
    let (held, held_connection) = connect().await;
    let (other, other_connection) = connect().await;

    tokio::task::block_in_place(|| path.cut());
    cp.admin.suspend_account("bi").await.unwrap();
    // A connection ends: the library checks access, learns of the suspension and closes the
    // tunnel, while the gateway cannot hear of it.
    drop(other);
    let _ = tokio::time::timeout(SOON, other_connection)
        .await
        .expect("the other connection ended");
    assert!(
        eventually(SOON, async || !tunnel.is_open()).await,
        "the library did not learn of the suspension"
    );
    assert_eq!(
        tunnel.close_reason().map(|e| e.kind()),
        Some(ErrorKind::Unauthenticated)
    );
    assert!(
        !held_connection.is_finished(),
        "the held connection was cut without a word"
    );
    tokio::task::block_in_place(|| path.restore()).unwrap();
    let ended = tokio::time::timeout(SOON, held_connection)
        .await
        .expect("the gateway told the held connection within the bound")
        .unwrap();
    let e = ended.unwrap_err();
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("no PostgreSQL error: {e}"));
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    assert!(db.message().contains("suspended"), "{}", db.message());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_an_account_closes_connections_on_standalone_gateways() {
    let cp = control_plane().await;
    let gateways = [
        cp.gateway("edge-a", &[("edge", "")], &[]).await,
        cp.gateway("edge-b", &[("edge", "")], &[]).await,
    ];
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let token = cp.admin.create_service_account("etl").await.unwrap().token;
    cp.admin.grant("etl", "echo").await.unwrap();
    let names: Vec<&str> = gateways.iter().map(|g| g.name.as_str()).collect();
    let Spread {
        sessions,
        tunnels,
        mut held,
        since,
    } = spread(&cp.admin, &token, None, "echo", &names).await;

    cp.admin.suspend_account("etl").await.unwrap();
    let worst = all_cut(&mut held, Instant::now()).await;
    println!(
        "revocation through standalone gateways: all {} open connections closed {:?} after the suspension",
        held.len(),
        worst
    );
    // The tunnels learn why and close; new connections are refused.
    for tunnel in &tunnels {
        assert!(
            eventually(SOON, async || !tunnel.is_open()).await,
            "a tunnel stayed open"
        );
        assert_eq!(
            tunnel.close_reason().unwrap().kind(),
            ErrorKind::Unauthenticated
        );
    }
    let err = sessions[0].dial("echo").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unauthenticated | ErrorKind::Forbidden
        ),
        "{err}"
    );
    // Each cut connection is in the audit trail, with the reason.
    assert!(
        eventually(SOON, async || {
            let records = cp
                .admin
                .audit(&AuditFilter::default().resource("echo").since(since))
                .await
                .unwrap()
                .records;
            records
                .iter()
                .filter(|r| r.outcome == "unauthenticated" && r.ended_at.is_some())
                .count()
                >= held.len()
        })
        .await,
        "the cut connections were not audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_injected_through_a_standalone_gateway() {
    const PASSWORD: &str = "Pw-standalone-3f0e-never-seen";
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let cp = control_plane().await;
    let mut gw = cp.gateway("db-side", &[("dc", "db")], &[]).await;
    cp.admin
        .create_resource(&app_db_resource("app-db", &pg, PASSWORD, Some("dc=db")))
        .await
        .unwrap();
    let (_, session) = cp.session("bi", &["app-db"]).await;
    let tunnel = session.connect("app-db").await.unwrap();
    let (client, connection) = pg_connect(&tunnel).await.unwrap();
    let row = client
        .query_one("SELECT current_user || '@' || current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app@app");
    drop(client);
    let _ = connection.await;

    // The audit trail, queries included, reached the control plane from the gateway.
    assert!(
        eventually(SOON, async || {
            let records = cp
                .admin
                .audit(&AuditFilter::default().resource("app-db"))
                .await
                .unwrap()
                .records;
            records
                .iter()
                .any(|r| r.gateway == "db-side" && r.outcome == "ok" && r.query_count >= 1)
        })
        .await,
        "no audit record with queries from the standalone gateway"
    );
    // The password was never logged by either process.
    assert!(!gw.proc.stderr_so_far().contains(PASSWORD));
    let mut cp = cp;
    assert!(!cp.proc.stderr_so_far().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_resources_are_offered_only_with_matching_gateways_and_refused_by_others() {
    let cp = control_plane().await;
    let eu = cp.gateway("gw-eu", &[("region", "eu")], &[]).await;
    let us = cp.gateway("gw-us", &[("region", "us")], &[]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("db-eu", &echo, Some("region=eu")).await;
    cp.echo_resource("db-ap", &echo, Some("region=ap")).await;
    cp.echo_resource("anywhere", &echo, None).await;
    let (token, session) = cp.session("etl", &["db-eu", "db-ap", "anywhere"]).await;

    // The lease for a pinned resource names only the matching gateway, every time.
    for _ in 0..8 {
        let grant: LeaseGrant = cp.raw_lease(&token, "db-eu").await.expect_ok();
        let names: Vec<&str> = grant.gateways.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["gw-eu"]);
    }
    // An unpinned resource may go through any gateway, the embedded one included.
    let grant: LeaseGrant = cp.raw_lease(&token, "anywhere").await.expect_ok();
    let mut names: Vec<&str> = grant.gateways.iter().map(|g| g.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["embedded", "gw-eu", "gw-us"]);
    // No live gateway matches: unhealthy, and no lease.
    let message = cp
        .raw_lease(&token, "db-ap")
        .await
        .expect_error(502, "gateway_unreachable");
    assert!(message.contains("pinned"), "{message}");
    let resources = session.list_resources().await.unwrap();
    let health: BTreeMap<&str, bool> = resources
        .iter()
        .map(|r| (r.name.as_str(), r.healthy))
        .collect();
    assert_eq!(
        health,
        BTreeMap::from([("anywhere", true), ("db-ap", false), ("db-eu", true)])
    );

    // The client library connects through the EU gateway.
    let tunnel = session.connect("db-eu").await.unwrap();
    echo_once(tunnel.local_addr().tcp().unwrap()).await.unwrap();
    assert!(
        eventually(SOON, async || cp.ok_through("db-eu", "gw-eu", 0).await > 0).await,
        "the EU gateway carried nothing"
    );

    // A genuine lease presented to the US gateway is refused there: it never learns where the
    // resource is.
    let grant: LeaseGrant = cp.raw_lease(&token, "db-eu").await.expect_ok();
    let data_dir = cp.dir.path().join("data");
    match present_lease(&data_dir, us.addr, &lease_bytes(&grant)).await {
        Reply::Error { kind, message } => {
            assert_eq!(kind, sdm_proto::ErrorKind::Forbidden, "{message}");
            assert!(message.contains("pinned"), "{message}");
        }
        other => panic!("the US gateway accepted a lease for an EU resource: {other:?}"),
    }
    // The EU gateway accepts the same lease.
    assert_eq!(
        present_lease(&data_dir, eu.addr, &lease_bytes(&grant)).await,
        Reply::Connected
    );

    // A gateway may not claim tags its token does not allow.
    let token_us2 = cp.gateway_token("gw-us-2", &[("region", "us")]).await;
    let mut claim = spawn(
        "gw-us-2",
        &[
            "gateway",
            "--control-plane",
            &cp.url,
            "--listen",
            "127.0.0.1:0",
            "--tags",
            "region=eu",
        ],
        &[("SDM_GATEWAY_TOKEN", &token_us2)],
    );
    let (code, logs) = claim.wait_exit();
    assert_eq!(code, 1, "{logs}");
    assert!(logs.contains("does not allow the tag region=eu"), "{logs}");
    drop((eu, us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_tokens_are_refused() {
    let cp = control_plane().await;
    let fingerprint = {
        let token = Token::parse(&cp.admin_token).unwrap();
        token.ca_fingerprint
    };
    // A well-formed gateway token the control plane never issued.
    let forged = Token::generate(TokenKind::Gateway, &cp.url, fingerprint)
        .unwrap()
        .encode();
    let mut p = spawn(
        "forged",
        &["gateway", "--listen", "127.0.0.1:0"],
        &[("SDM_GATEWAY_TOKEN", &forged)],
    );
    let (code, logs) = p.wait_exit();
    assert_eq!(code, 1, "{logs}");
    assert!(logs.contains("gateway token is not valid"), "{logs}");
    // A service token is not a gateway token.
    let service = cp.admin.create_service_account("etl").await.unwrap().token;
    let mut p = spawn(
        "service",
        &["gateway", "--listen", "127.0.0.1:0"],
        &[("SDM_GATEWAY_TOKEN", &service)],
    );
    let (code, logs) = p.wait_exit();
    assert_eq!(code, 1, "{logs}");
    assert!(logs.contains("not a gateway token"), "{logs}");
    // A deleted gateway's token stops working at once.
    let token = cp.gateway_token("short-lived", &[]).await;
    cp.admin.delete_gateway("short-lived").await.unwrap();
    let body = RegisterGateway {
        name: None,
        address: "127.0.0.1:9".into(),
        tags: None,
        version: String::new(),
        starting: false,
    };
    let reply = cp
        .client
        .post("/v1/gateway/register", Some(&token), &body)
        .await;
    let message = reply.expect_error(401, "unauthenticated");
    assert!(message.contains("gateway token"), "{message}");
    // The gateway routes want a gateway token; gateway tokens open nothing else.
    let reply = cp
        .client
        .get("/v1/gateway/revocations", Some(&service))
        .await;
    reply.expect_error(403, "forbidden");
    let reply = cp
        .client
        .get("/v1/gateway/revocations", Some("sdm_gw_garbage"))
        .await;
    reply.expect_error(401, "invalid_token");
    let live = cp.gateway_token("live", &[]).await;
    let reply = cp.client.get("/v1/resources", Some(&live)).await;
    let message = reply.expect_error(403, "forbidden");
    assert!(message.contains("gateway token"), "{message}");
    let reply = cp.client.get("/v1/admin/gateways", Some(&live)).await;
    reply.expect_error(403, "forbidden");
    // Only admins manage gateways.
    let reply = cp.client.get("/v1/admin/gateways", Some(&service)).await;
    reply.expect_error(403, "forbidden");
    let _ = cp.api_addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_withdraws_the_gateway_at_once() {
    let cp = control_plane().await;
    let mut gw = cp.gateway("leaving", &[("edge", "")], &[]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let (token, _session) = cp.session("etl", &["echo"]).await;
    let listed = cp.admin.list_gateways().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].live, "{listed:?}");
    assert_eq!(
        listed[0].address.as_deref(),
        Some(gw.addr.to_string().as_str())
    );
    let _: LeaseGrant = cp.raw_lease(&token, "echo").await.expect_ok();

    gw.proc.signal(libc::SIGTERM);
    let (code, logs) = gw.proc.wait_exit();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("withdrew from the control plane"), "{logs}");
    // Not offered any more, without waiting for its registration to go stale.
    let listed = cp.admin.list_gateways().await.unwrap();
    assert!(!listed[0].live, "{listed:?}");
    let message = cp
        .raw_lease(&token, "echo")
        .await
        .expect_error(502, "gateway_unreachable");
    assert!(message.contains("pinned"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_bound_their_input_and_say_what_is_wrong() {
    use sdm_proto::gateway::{
        AuditEnd, AuditEvent, AuditUpload, Authorization, AuthorizeLease, GatewayRegistration,
    };
    let cp = control_plane().await;
    let token = cp.gateway_token("gw", &[("region", "eu")]).await;
    let register = |address: &str| RegisterGateway {
        name: None,
        address: address.into(),
        tags: None,
        version: "test".into(),
        starting: false,
    };
    // Addresses clients could not use are refused.
    for bad in ["0.0.0.0:8444", "gw.example.com", "[::1", "a b:1"] {
        let reply = cp
            .client
            .post("/v1/gateway/register", Some(&token), &register(bad))
            .await;
        let message = reply.expect_error(400, "invalid_argument");
        assert!(
            message.contains("address") || message.contains("hostname"),
            "{bad}: {message}"
        );
    }
    // Another gateway's name.
    let mut named = register("127.0.0.1:9");
    named.name = Some("other".into());
    let reply = cp
        .client
        .post("/v1/gateway/register", Some(&token), &named)
        .await;
    assert!(
        reply
            .expect_error(400, "invalid_argument")
            .contains("belongs to gateway")
    );
    // A good registration carries a certificate for the host and the lease key.
    let registration: GatewayRegistration = cp
        .client
        .post(
            "/v1/gateway/register",
            Some(&token),
            &register("127.0.0.1:9"),
        )
        .await
        .expect_ok();
    assert_eq!(registration.name, "gw");
    assert_eq!(registration.lease_keys.len(), 1);
    assert!(registration.private_key_pem.contains("PRIVATE KEY"));
    assert_eq!(
        registration
            .certificate_chain_pem
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    // Leases: not base64, not a lease, and a tampered one.
    let authorize = |lease: &str| AuthorizeLease {
        lease: lease.into(),
    };
    let reply = cp
        .client
        .post("/v1/gateway/authorize", Some(&token), &authorize("!!!"))
        .await;
    reply.expect_error(400, "invalid_argument");
    let reply = cp
        .client
        .post(
            "/v1/gateway/authorize",
            Some(&token),
            &authorize(&"A".repeat(4000)),
        )
        .await;
    reply.expect_error(400, "invalid_argument");
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, None).await;
    let (service, _session) = cp.session("etl", &["echo"]).await;
    let grant: LeaseGrant = cp.raw_lease(&service, "echo").await.expect_ok();
    let mut tampered = lease_bytes(&grant);
    tampered[40] ^= 1;
    let tampered = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tampered)
    };
    let answer: Authorization = cp
        .client
        .post("/v1/gateway/authorize", Some(&token), &authorize(&tampered))
        .await
        .expect_ok();
    match answer {
        Authorization::Denied(e) => assert_eq!(e.kind, "unauthenticated", "{}", e.message),
        other => panic!("a tampered lease was authorized: {other:?}"),
    }
    let answer: Authorization = cp
        .client
        .post(
            "/v1/gateway/authorize",
            Some(&token),
            &authorize(&grant.lease),
        )
        .await
        .expect_ok();
    assert!(matches!(answer, Authorization::Allowed(ref up) if up.resource_name == "echo"));

    // Audit uploads: too many events, too many bytes, the wrong shape.
    let end = AuditEvent::Ended(AuditEnd {
        id: uuid::Uuid::new_v4(),
        ended_at: 1,
        bytes_up: 0,
        bytes_down: 0,
        outcome: "ok".into(),
        error: None,
        query_count: 0,
    });
    let too_many = AuditUpload {
        events: vec![end.clone(); sdm_proto::gateway::MAX_AUDIT_EVENTS + 1],
    };
    let reply = cp
        .client
        .post("/v1/gateway/audit", Some(&token), &too_many)
        .await;
    assert!(
        reply
            .expect_error(400, "invalid_argument")
            .contains("at most")
    );
    let huge = vec![b' '; 2 * sdm_proto::gateway::MAX_AUDIT_BODY_BYTES];
    // Refused when the limit is reached: with 413, or, when the server closed before the client
    // finished sending, with the upload cut off (the next request shows the server still up).
    match cp
        .client
        .try_request(
            "POST",
            "/v1/gateway/audit",
            Some(&token),
            Some("application/json"),
            huge,
        )
        .await
    {
        Ok(reply) => {
            reply.expect_error(413, "invalid_argument");
        }
        Err(e) => assert!(
            e.contains("BrokenPipe") || e.contains("ConnectionReset"),
            "{e}"
        ),
    }
    let reply = cp
        .client
        .request(
            "POST",
            "/v1/gateway/audit",
            Some(&token),
            Some("application/json"),
            br#"{"events": 5}"#.to_vec(),
        )
        .await;
    reply.expect_error(422, "invalid_argument");
    let reply = cp
        .client
        .post(
            "/v1/gateway/audit",
            Some(&token),
            &AuditUpload { events: vec![end] },
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
}

/// `serve` on the PostgreSQL database `url` in `data`, its built-in gateway named `name`;
/// returns the process and its API URL.
fn control_plane_on(data: &std::path::Path, url: &str, name: &str) -> (Proc, String) {
    let mut proc = spawn(
        name,
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-name",
            name,
        ],
        &[("SDM_DATABASE_URL", url)],
    );
    let running = proc.wait_for("sdm-server is running");
    let api_url = field(&running, "api_url");
    (proc, api_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_postgres_store_serve_gateways_attached_to_either() {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let database = format!("sdm_{}", uuid::Uuid::new_v4().simple());
    pg.psql("postgres", &format!("CREATE DATABASE {database}"))
        .unwrap();
    let url = pg.url(&database);
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));

    // Control plane A creates the installation; B shares its key files and its database.
    let (mut a, url_a) = control_plane_on(&data_a, &url, "cp-a");
    let admin_token = a.first_stdout_line();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data_b)
            .unwrap();
        for file in ["ca.pem", "ca.key", "lease.key", "ssh_ca.key", "secret.key"] {
            std::fs::copy(data_a.join(file), data_b.join(file)).unwrap();
        }
    }
    let (_b, url_b) = control_plane_on(&data_b, &url, "cp-b");
    let admin_a = AdminClient::with_api_url(&admin_token, Some(&url_a)).unwrap();
    let admin_b = AdminClient::with_api_url(&admin_token, Some(&url_b)).unwrap();

    // One gateway attached to B only (its identity created through A), one attached to A
    // first and B second (its identity created through B).
    let edge = BTreeMap::from([("edge".to_owned(), String::new())]);
    let token_b = admin_a
        .create_gateway("edge-b", edge.clone())
        .await
        .unwrap()
        .token;
    let token_ab = admin_b.create_gateway("edge-ab", edge).await.unwrap().token;
    let g_b = gateway("edge-b", &token_b, &["--control-plane", &url_b]);
    let g_ab = gateway(
        "edge-ab",
        &token_ab,
        &["--control-plane", &format!("{url_a},{url_b}")],
    );
    let names = [g_b.name.as_str(), g_ab.name.as_str()];
    let echo = EchoServer::start().unwrap();
    admin_a
        .create_resource(
            &NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1")
                .port(echo.port())
                .tag("sdm.gateway", "edge"),
        )
        .await
        .unwrap();
    let token = admin_a.create_service_account("etl").await.unwrap().token;
    admin_b.grant("etl", "echo").await.unwrap();

    // Jobs log in through A; their connections run on both gateways. Suspending the account on
    // A closes the connections on the gateway attached to B as well.
    let mut through_a = spread(&admin_a, &token, Some(&url_a), "echo", &names).await;
    admin_a.suspend_account("etl").await.unwrap();
    let worst = all_cut(&mut through_a.held, Instant::now()).await;
    println!(
        "suspended on control plane A: {} open connections on gateways attached to B (and to \
         A then B) closed within {worst:?}",
        through_a.held.len()
    );
    drop(through_a);
    admin_a.unsuspend_account("etl").await.unwrap();

    // Control plane A dies. Through B, jobs still log in, list, get leases and connect through
    // both gateways (edge-ab moves to B), and revocation still reaches every gateway.
    a.kill();
    let session = Session::builder()
        .token(&token)
        .api_url(&url_b)
        .login()
        .await
        .unwrap();
    let listed = session.list_resources().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].healthy, "{listed:?}");
    let tunnel = session.connect("echo").await.unwrap();
    for i in 0..10 {
        echo_once(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap_or_else(|e| panic!("round {i} after A died: {e}"));
    }
    let mut through_b = spread(&admin_b, &token, Some(&url_b), "echo", &names).await;
    through_b
        .held
        .push(held_connection(tunnel.local_addr().tcp().unwrap()).await);
    admin_b.suspend_account("etl").await.unwrap();
    let worst = all_cut(&mut through_b.held, Instant::now()).await;
    println!(
        "control plane A dead, suspended on B: {} open connections closed within {worst:?}",
        through_b.held.len()
    );
    assert!(
        eventually(SOON, async || !tunnel.is_open()).await,
        "the tunnel stayed open"
    );
    assert_eq!(
        tunnel.close_reason().unwrap().kind(),
        ErrorKind::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_gateway_is_dropped_at_once_and_stops_asking() {
    let mut cp = control_plane().await;
    let mut doomed = cp.gateway("doomed", &[("edge", "")], &[]).await;
    let healthy = cp.gateway("healthy", &[("edge", "")], &[]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let (token, session) = cp.session("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    echo_once(tunnel.local_addr().tcp().unwrap()).await.unwrap();

    cp.admin.delete_gateway("doomed").await.unwrap();
    // No longer offered, without waiting for its registration to go stale.
    let grant: LeaseGrant = cp.raw_lease(&token, "echo").await.expect_ok();
    let names: Vec<&str> = grant.gateways.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, [healthy.name.as_str()]);
    // A client that still goes there is refused: the gateway cannot get leases authorized.
    let data_dir = cp.dir.path().join("data");
    match present_lease(&data_dir, doomed.addr, &lease_bytes(&grant)).await {
        Reply::Error { message, .. } => assert!(message.contains("token"), "{message}"),
        other => panic!("a deleted gateway admitted a connection: {other:?}"),
    }
    // Jobs are unaffected, but for one connection at most: the deleted gateway can no longer
    // check leases or record connections, so one that reaches it is refused, and the client then
    // tries that gateway last.
    let mut refused = Vec::new();
    for _ in 0..10 {
        if let Err(e) = echo_once(tunnel.local_addr().tcp().unwrap()).await {
            refused.push(e);
        }
    }
    assert!(refused.len() <= 1, "{refused:?}");
    // The refused gateway does not keep failing token checks every second (which would get
    // its address rate-limited, and every healthy gateway and job behind that address with it).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let logs = cp.proc.stderr_so_far();
    let failures = logs
        .lines()
        .filter(|l| l.contains("failed token check"))
        .map(|l| field(l, "failures").parse::<u32>().unwrap())
        .max()
        .unwrap_or(0);
    assert!(
        failures <= 2,
        "{failures} failed token checks in 6 s:\n{logs}"
    );
    // (The control plane logs the count at powers of two: 2 means at most 3.)
    let gateway_logs = doomed.proc.stderr_so_far();
    let refusals = gateway_logs
        .matches("refused this gateway's token; asking again")
        .count();
    assert!((1..=3).contains(&refusals), "{gateway_logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_lease_key_reaches_standalone_gateways_with_their_heartbeat() {
    let mut cp = control_plane().await;
    let edge = cp.gateway("edge-keys", &[("edge", "")], &[]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let token = cp.admin.create_service_account("etl").await.unwrap().token;
    cp.admin.grant("etl", "echo").await.unwrap();
    let data_dir = cp.dir.path().join("data");
    let old: LeaseGrant = cp.raw_lease(&token, "echo").await.expect_ok();
    let old = lease_bytes(&old);
    assert_eq!(
        present_lease(&data_dir, edge.addr, &old).await,
        Reply::Connected
    );

    cp.restart_with_a_new_lease_key();
    let new: LeaseGrant = cp.raw_lease(&token, "echo").await.expect_ok();
    let new = lease_bytes(&new);
    // Within a heartbeat (20 s) the gateway checks leases with the new key; before this, it kept
    // the keys of its registration and refused every new lease until restarted.
    let started = Instant::now();
    assert!(
        eventually(WAIT, async || present_lease(&data_dir, edge.addr, &new)
            .await
            == Reply::Connected)
        .await,
        "the standalone gateway never accepted a lease signed with the new key"
    );
    println!("new key accepted after {:?}", started.elapsed());
    match present_lease(&data_dir, edge.addr, &old).await {
        Reply::Error { kind, message } => println!("old lease refused: {kind:?}: {message}"),
        other => panic!("a lease signed with the replaced key was accepted: {other:?}"),
    }
    let mut edge = edge;
    let logs = edge.proc.stderr_so_far();
    assert!(logs.contains("lease keys changed"), "{logs}");
}
