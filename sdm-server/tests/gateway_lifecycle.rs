//! A standalone gateway's life as an operator sees it, with real processes (`sdm-server serve`,
//! `sdm-server gateway`), the real client library and, where a connection is held, a real
//! PostgreSQL and tokio-postgres: deleted while it carries a connection, killed with SIGKILL,
//! started before its control plane, started with none, talking to a control plane of another
//! version; and the control plane's data directory, loose or another user's.
//!
//! docs/SECURITY.md, docs/PROTOCOL.md and docs/OPERATIONS.md name these tests beside their
//! promises.

mod common;
mod processes;
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use sdm_core::Tunnel;
use sdm_proto::api::{LeaseGrant, ResourceList};
use sdm_proto::gateway::{GatewayRegistration, HeartbeatReply};
use sdm_proto::{Token, TokenKind};
use sdm_testkit::{EchoServer, HbaAuth, PgCluster, PgConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use processes::{WAIT, control_plane, spawn, spawn_control_plane};
use support::{app_cluster, app_db_resource, eventually, pg_connect};

const PASSWORD: &str = "Pw-lifecycle-3e9a-never-seen";

/// One connection through an echo tunnel: a line out, the same line back.
async fn echo_once(addr: SocketAddr) -> Result<(), String> {
    let mut s = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut back))
        .await
        .map_err(|_| "no echo within 20 s".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    if &back != b"ping\n" {
        return Err(format!("echoed {back:?}"));
    }
    Ok(())
}

/// The names of the gateways a lease for `resource` lists, or the 502 it gets.
async fn offered(cp: &processes::ControlPlane, token: &str, resource: &str) -> Vec<String> {
    let grant: LeaseGrant = cp.raw_lease(token, resource).await.expect_ok();
    grant.gateways.into_iter().map(|g| g.name).collect()
}

/// One query over a held PostgreSQL connection.
async fn answers(client: &tokio_postgres::Client, i: usize) -> Result<(), String> {
    let rows = tokio::time::timeout(
        Duration::from_secs(20),
        client.simple_query(&format!("SELECT 'held {i}'")),
    )
    .await
    .map_err(|_| format!("query {i}: no answer within 20 s"))?
    .map_err(|e| format!("query {i}: {e}"))?;
    let expected = format!("held {i}");
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    });
    if row == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(format!("query {i}: answered {row:?}"))
    }
}

/// A PostgreSQL connection through `tunnel` that runs one query and ends.
async fn one_query(tunnel: &Tunnel) -> Result<(), String> {
    let (client, connection) = pg_connect(tunnel).await.map_err(|e| e.to_string())?;
    let result = answers(&client, 0).await;
    drop(client);
    let _ = connection.await;
    result
}

// ---------------------------------------------------------------------------------------------
// Deleting a gateway

/// docs/SECURITY.md: deleting a gateway refuses its token at once and stops offering it; the
/// connections it carries are not cut by that alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_gateway_refuses_its_token_and_stops_offering_it_but_its_connection_goes_on() {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let cp = control_plane().await;
    let doomed_token = cp.gateway_token("doomed", &[("dc", "db")]).await;
    let mut doomed = processes::gateway(
        "doomed",
        &doomed_token,
        &["--control-plane", cp.url.as_str()],
    );
    cp.admin
        .create_resource(&app_db_resource("app-db", &pg, PASSWORD, Some("dc=db")))
        .await
        .unwrap();
    let (token, session) = cp.session("etl", &["app-db"]).await;
    let tunnel = session.connect("app-db").await.unwrap();
    // The only gateway serving app-db yet: the held connection goes through it.
    let (held, connection) = pg_connect(&tunnel).await.unwrap();
    answers(&held, 0).await.unwrap();
    let spare = cp.gateway("spare", &[("dc", "db")], &[]).await;
    let mut names = offered(&cp, &token, "app-db").await;
    names.sort();
    assert_eq!(names, ["doomed", "spare"]);

    cp.admin.delete_gateway("doomed").await.unwrap();
    // Its token is refused at once: by the control plane…
    let heartbeat = serde_json::json!({ "address": doomed.addr.to_string() });
    let message = cp
        .client
        .post("/v1/gateway/heartbeat", Some(&doomed_token), &heartbeat)
        .await
        .expect_error(401, "unauthenticated");
    assert!(message.contains("gateway token"), "{message}");
    // …as the gateway process itself finds when it next asks (its revocation poll, each second).
    doomed
        .proc
        .wait_for("the control plane refused this gateway's token");
    // It is no longer offered: new leases list the other gateway only, and a new job's
    // connection goes there.
    assert_eq!(offered(&cp, &token, "app-db").await, ["spare"]);
    let since = sdm_proto::unix_now();
    let (_, other) = cp.session("bi", &["app-db"]).await;
    let fresh = other.connect("app-db").await.unwrap();
    one_query(&fresh).await.unwrap();
    assert!(
        eventually(WAIT, async || cp.ok_through("app-db", "spare", since).await
            >= 1)
        .await,
        "the new connection was not recorded through spare"
    );
    // The held connection keeps answering: over a heartbeat's worth of time (20 s), during which
    // the deleted gateway's heartbeat and revocation polls are refused.
    let started = Instant::now();
    let mut i = 1;
    while started.elapsed() < Duration::from_secs(25) {
        answers(&held, i)
            .await
            .unwrap_or_else(|e| panic!("the held connection was cut after the delete: {e}"));
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!connection.is_finished(), "the held connection ended");
    let logs = doomed.proc.stderr_so_far();
    assert!(
        logs.contains("heartbeat failed")
            || logs.matches("refused this gateway's token").count() > 1,
        "the deleted gateway did not keep being refused:\n{logs}"
    );
    drop(held);
    let _ = connection.await;
    drop(spare);
}

// ---------------------------------------------------------------------------------------------
// A crashed gateway

/// docs/PROTOCOL.md ("Health"), docs/OPERATIONS.md: a gateway that dies without SIGTERM is still
/// offered (clients skip it) until 60 s after its last heartbeat, then drops out of leases; a
/// resource only it served is then unhealthy and its leases fail with `gateway_unreachable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_drops_out_of_leases_60_s_after_its_last_heartbeat() {
    let cp = control_plane().await;
    let mut crashing = cp
        .gateway("crashing", &[("edge", ""), ("solo", "")], &[])
        .await;
    let _steady = cp.gateway("steady", &[("edge", "")], &[]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    cp.echo_resource("solo", &echo, Some("solo")).await;
    let (token, session) = cp.session("etl", &["echo", "solo"]).await;
    // Each raw lease logs in anew: the polling below uses an account of its own, so that its
    // logins never end the job's session.
    let (poller, _) = cp.session("poller", &["echo", "solo"]).await;
    let last_seen = cp
        .admin
        .list_gateways()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == "crashing")
        .and_then(|g| g.last_seen)
        .unwrap();

    crashing.proc.kill();
    // Shortly after, it is still offered (its heartbeat is fresh)…
    assert_eq!(offered(&cp, &token, "solo").await, ["crashing"]);
    let mut names = offered(&cp, &token, "echo").await;
    names.sort();
    assert_eq!(names, ["crashing", "steady"]);
    // …and a job's connections skip it.
    let tunnel = session.connect("echo").await.unwrap();
    for round in 0..5 {
        echo_once(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }

    // Within 60 s of its last heartbeat (plus a generous margin for a shared machine) it drops out.
    let mut dropped_at = None;
    assert!(
        eventually(Duration::from_secs(60 + 60), async || {
            let reply = cp.raw_lease(&poller, "solo").await;
            if reply.status == 502 {
                dropped_at = Some(sdm_proto::unix_now());
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            false
        })
        .await,
        "the killed gateway was still offered 120 s after the kill"
    );
    // Not before its 60 s were up.
    let dropped_at = dropped_at.unwrap();
    assert!(
        dropped_at - last_seen >= 60,
        "dropped {} s after its last heartbeat",
        dropped_at - last_seen
    );
    let message = cp
        .raw_lease(&token, "solo")
        .await
        .expect_error(502, "gateway_unreachable");
    assert!(message.contains("solo"), "{message}");
    assert_eq!(offered(&cp, &token, "echo").await, ["steady"]);
    let listed = cp.admin.list_gateways().await.unwrap();
    let crashed = listed.iter().find(|g| g.name == "crashing").unwrap();
    assert!(!crashed.live, "{listed:?}");
    let resources: ResourceList = cp
        .client
        .get("/v1/resources", Some(&token))
        .await
        .expect_ok();
    let mut health: Vec<(&str, bool)> = resources
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.healthy))
        .collect();
    health.sort();
    assert_eq!(health, [("echo", true), ("solo", false)]);
}

// ---------------------------------------------------------------------------------------------
// Starting

/// A gateway started before any control plane answers keeps asking, then registers and serves
/// once one comes up at the URL it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_control_plane_registers_and_serves_once_it_answers() {
    let mut cp = control_plane().await;
    let gw_token = cp.gateway_token("early", &[("edge", "")]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let token = cp.admin.create_service_account("etl").await.unwrap().token;
    cp.admin.grant("etl", "echo").await.unwrap();
    cp.proc.kill();

    let mut early = spawn(
        "early",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--control-plane",
            cp.url.as_str(),
        ],
        &[("SDM_GATEWAY_TOKEN", &gw_token)],
    );
    early.wait_for("no control plane answered yet; retrying");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cp.restart();
    early.wait_for("gateway registered with the control plane");

    // Pinned to it: no other gateway could carry this.
    let session = sdm_core::Session::login(&token).await.unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    echo_once(tunnel.local_addr().tcp().unwrap()).await.unwrap();
    let logs = early.stderr_so_far();
    assert!(!logs.contains(" ERROR "), "{logs}");
}

/// With no control plane at all, start-up gives up after `--register-timeout` (default 120 s:
/// unit test `remote::args`, and `--help` below) with a message saying so, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_no_control_plane_gives_up_after_the_register_timeout() {
    let dead = format!("https://127.0.0.1:{}", sdm_testkit::free_port());
    let token = Token::generate(TokenKind::Gateway, &dead, [7; 32])
        .unwrap()
        .encode();
    let mut gw = spawn(
        "alone",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--register-timeout",
            "3s",
        ],
        &[("SDM_GATEWAY_TOKEN", &token)],
    );
    let (code, logs) = gw.wait_exit();
    assert_eq!(code, 1, "{logs}");
    assert!(
        logs.contains("no control plane answered yet; retrying"),
        "{logs}"
    );
    assert!(
        logs.contains("sdm-server: error: no control plane answered within 3 s"),
        "{logs}"
    );

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_sdm-server"))
        .args(["gateway", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    // The flag's line and its description, up to the next option.
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--register-timeout"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no --register-timeout in:\n{help}"));
    let flag: Vec<&str> = std::iter::once(first)
        .chain(lines.take_while(|l| !l.trim_start().starts_with('-')))
        .collect();
    let flag = flag.join("\n");
    assert!(flag.contains("[default: 120]"), "{flag}");
}

// ---------------------------------------------------------------------------------------------
// Mixed versions

/// docs/OPERATIONS.md ("Upgrades"): the control plane takes a gateway's registration and
/// heartbeats whether they carry fields it does not know (a newer gateway) or lack the ones
/// added since (an older one), over the real API with a real gateway token; the gateway is then
/// offered to clients. (A gateway reading a newer control plane's answers: `sdm-proto` unit test
/// `answers_from_a_newer_control_plane_are_read_without_their_new_fields`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_takes_registrations_from_older_and_newer_gateways() {
    let mut cp = control_plane().await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, Some("edge")).await;
    let (token, _session) = cp.session("etl", &["echo"]).await;
    let newer_token = cp.gateway_token("newer", &[("edge", "")]).await;
    let older_token = cp.gateway_token("older", &[("edge", "")]).await;

    let newer = serde_json::json!({
        "name": "newer",
        "address": "127.0.0.1:9",
        "version": "sdm-server/99.1.0",
        "starting": true,
        "capabilities": ["quic", "framed-v2"],
        "load": { "connections": 3 },
    });
    let registration: GatewayRegistration = cp
        .client
        .post("/v1/gateway/register", Some(&newer_token), &newer)
        .await
        .expect_ok();
    assert_eq!(registration.name, "newer");
    assert!(!registration.lease_keys.is_empty());
    let newer_heartbeat = serde_json::json!({
        "name": "newer",
        "address": "127.0.0.1:9",
        "version": "sdm-server/99.1.0",
        "load": { "connections": 4 },
    });
    let heartbeat: HeartbeatReply = cp
        .client
        .post(
            "/v1/gateway/heartbeat",
            Some(&newer_token),
            &newer_heartbeat,
        )
        .await
        .expect_ok();
    assert_eq!(heartbeat.lease_keys, registration.lease_keys);

    // The fields an early gateway sent: its address only.
    let older = serde_json::json!({ "address": "127.0.0.1:10" });
    let registration: GatewayRegistration = cp
        .client
        .post("/v1/gateway/register", Some(&older_token), &older)
        .await
        .expect_ok();
    assert_eq!(registration.name, "older");
    let _: HeartbeatReply = cp
        .client
        .post("/v1/gateway/heartbeat", Some(&older_token), &older)
        .await
        .expect_ok();

    let mut names = offered(&cp, &token, "echo").await;
    names.sort();
    assert_eq!(names, ["newer", "older"]);
    let line = cp.proc.wait_for("version=sdm-server/99.1.0");
    assert!(line.contains("gateway registered"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// The data directory

/// docs/PROTOCOL.md ("Data directory"): an existing data directory others may enter is
/// tightened to 0700, and the control plane says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_data_dir_is_tightened_to_0700() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cp = spawn_control_plane(&data, "127.0.0.1:0");
    let line = cp.wait_for("its mode is now 0700");
    assert!(line.contains("was=0755"), "{line}");
    cp.wait_for("sdm-server is running");
    let mode = std::fs::metadata(&data).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{mode:o}");
    // A second start finds nothing to tighten.
    cp.signal(libc::SIGTERM);
    let (code, logs) = cp.wait_exit();
    assert_eq!(code, 0, "{logs}");
    let mut again = spawn_control_plane(&data, "127.0.0.1:0");
    again.wait_for("sdm-server is running");
    let logs = again.stderr_so_far();
    assert!(!logs.contains("its mode is now 0700"), "{logs}");
}

/// docs/SECURITY.md: a data directory owned by another user is refused (its owner could swap
/// the keys in it), with the reason, exit 1 and nothing written in it. Needs root and the
/// second OS user of sdm-testkit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_owned_by_another_user_is_refused() {
    let Some(user) = sdm_testkit::other_os_user().unwrap() else {
        eprintln!("note: no second OS user (needs root); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(user.uid), Some(user.gid)).unwrap();
    let mut cp = spawn_control_plane(&data, "127.0.0.1:0");
    let (code, logs) = cp.wait_exit();
    assert_eq!(code, 1, "{logs}");
    assert!(
        logs.contains(&format!(
            "the data directory {} belongs to another user (uid {},",
            data.display(),
            user.uid
        )),
        "{logs}"
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.uid(), user.uid);
}
