//! The diagnostics listener (`--diag-listen`) as an operator's probes and scraper see it, with
//! real processes: `/metrics` scraped before and after real traffic (a service account logging
//! in with the real client library and moving bytes through a tunnel to an echo server), the
//! scrape checked by Debian's `promtool check metrics`; `/readyz` of a standalone gateway whose
//! only control plane is killed and started again, and of a control plane whose PostgreSQL is
//! stopped and started again; a taken port and an address off loopback refused.
//!
//! docs/OPERATIONS.md ("Diagnostics") names these tests beside the endpoints and metrics.

mod common;
mod processes;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use sdm_proto::api::LoginRequest;
use sdm_testkit::{EchoServer, PgCluster, PgConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use processes::{Proc, control_plane, control_plane_with, field, spawn};
use support::eventually;

/// Bound on each HTTP exchange with the diagnostics listener.
const HTTP_WAIT: Duration = Duration::from_secs(20);
/// Bound on a state the gateway reaches at its next heartbeat (every 20 s).
const HEARTBEAT_WAIT: Duration = Duration::from_secs(90);

/// Where a process's diagnostics listener is, from its log.
fn diag_addr(proc: &mut Proc) -> SocketAddr {
    let log = proc.stderr_so_far();
    let line = log
        .lines()
        .find(|l| l.contains("diagnostics listening"))
        .map(str::to_owned)
        .unwrap_or_else(|| proc.wait_for("diagnostics listening"));
    field(&line, "diag_addr").parse().unwrap()
}

/// `GET path` over plain HTTP/1.1: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(HTTP_WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} from {addr} timed out"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// One scrape: every sample (`name{labels}` → value).
async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let samples = sdm_testkit::promtool::samples(&text)
        .unwrap_or_else(|| panic!("not a Prometheus scrape:\n{text}"));
    (text, samples)
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {samples:#?}"))
}

/// How much each of `names` grew between two scrapes.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    sample(after, name) - before.get(name).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`; fails clearly when promtool is missing.
fn promtool_check(text: &str) {
    sdm_testkit::promtool::check_metrics(text).unwrap_or_else(|e| panic!("{e}"));
}

/// Through a tunnel: `bytes` out to the echo server and the same back.
async fn echo(addr: SocketAddr, bytes: usize) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let out: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = s.split();
        let mut back = vec![0u8; bytes];
        let (sent, received) = tokio::join!(write.write_all(&out), read.read_exact(&mut back));
        sent.unwrap();
        received.unwrap();
        assert_eq!(back, out);
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("the echo through the tunnel timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic_and_promtool_accepts_the_scrape() {
    let mut cp = control_plane_with(&["--diag-listen", "127.0.0.1:0"]).await;
    let diag = diag_addr(&mut cp.proc);
    assert_eq!(get(diag, "/livez").await, (200, "ok\n".to_owned()));
    assert_eq!(get(diag, "/readyz").await, (200, "ok\n".to_owned()));

    let echo_server = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo_server, None).await;
    let (_, before) = scrape(diag).await;

    // A refused login, then a service account logging in with the client library, asking for
    // a lease and moving 64 KiB each way through the gateway.
    let refused = cp
        .client
        .post(
            "/v1/login",
            Some("sdm_not_a_real_token"),
            &LoginRequest::default(),
        )
        .await;
    assert!(refused.status >= 400, "{}", refused.text());
    let (token, session) = cp.session("diag-bot", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    const BYTES: usize = 64 * 1024;
    echo(tunnel.local_addr().tcp().unwrap(), BYTES).await;

    // A connection's bytes are counted when it ends.
    let mut after = BTreeMap::new();
    let ended = eventually(Duration::from_secs(30), async || {
        after = scrape(diag).await.1;
        sample(&after, r#"sdm_gateway_connections_open{resource="echo"}"#) == 0.0
            && moved(
                &before,
                &after,
                r#"sdm_gateway_bytes_total{direction="up"}"#,
            ) >= BYTES as f64
    })
    .await;
    assert!(ended, "the connection's end was not counted: {after:#?}");
    assert_eq!(
        moved(&before, &after, r#"sdm_logins_total{outcome="ok"}"#),
        1.0
    );
    let refusals: f64 = after
        .keys()
        .filter(|k| k.starts_with("sdm_logins_total{") && !k.contains(r#""ok""#))
        .map(|k| moved(&before, &after, k))
        .sum();
    assert_eq!(refusals, 1.0, "one refused login: {after:#?}");
    assert!(moved(&before, &after, "sdm_leases_issued_total") >= 1.0);
    assert!(
        moved(&before, &after, "sdm_store_query_seconds_count") >= 2.0,
        "the login and the lease read the store"
    );
    assert_eq!(
        moved(
            &before,
            &after,
            r#"sdm_gateway_connections_total{resource="echo"}"#
        ),
        1.0
    );
    assert!(
        moved(
            &before,
            &after,
            r#"sdm_gateway_bytes_total{direction="up"}"#
        ) >= BYTES as f64
    );
    assert!(
        moved(
            &before,
            &after,
            r#"sdm_gateway_bytes_total{direction="down"}"#
        ) >= BYTES as f64
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "sdm_gateway_connection_setup_seconds_count"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            r#"sdm_gateway_connection_setup_seconds_bucket{le="+Inf"}"#
        ),
        sample(&after, "sdm_gateway_connection_setup_seconds_count")
    );

    // While a connection is held, the gauge shows it.
    let held = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    let shown = eventually(Duration::from_secs(30), async || {
        sample(
            &scrape(diag).await.1,
            r#"sdm_gateway_connections_open{resource="echo"}"#,
        ) == 1.0
    })
    .await;
    assert!(shown, "an open connection is not shown");

    // Suspending the account closes it: a revoked connection, and none open.
    cp.admin.suspend_account("diag-bot").await.unwrap();
    let mut last = BTreeMap::new();
    let revoked = eventually(Duration::from_secs(60), async || {
        last = scrape(diag).await.1;
        moved(&before, &last, "sdm_gateway_revoked_connections_total") == 1.0
            && sample(&last, r#"sdm_gateway_connections_open{resource="echo"}"#) == 0.0
            // Its end after the stop was timed.
            && moved(
                &before,
                &last,
                "sdm_gateway_revoked_connection_close_seconds_count",
            ) == 1.0
    })
    .await;
    assert!(revoked, "the revoked connection is not counted: {last:#?}");
    drop(held);

    // Every audit event was written: none waits, none was lost.
    let written = eventually(Duration::from_secs(30), async || {
        last = scrape(diag).await.1;
        sample(&last, "sdm_gateway_audit_queue_events") == 0.0
    })
    .await;
    assert!(written, "audit events still queued: {last:#?}");
    assert_eq!(sample(&last, "sdm_gateway_audit_lost_events_total"), 0.0);

    let (text, _) = scrape(diag).await;
    promtool_check(&text);
    for secret in [token.as_str(), cp.admin_token.as_str()] {
        assert!(!text.contains(secret), "a token in /metrics:\n{text}");
    }
    tunnel.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_sigterm_readiness_fails_while_open_connections_drain() {
    let mut cp =
        control_plane_with(&["--diag-listen", "127.0.0.1:0", "--drain-timeout", "60s"]).await;
    let diag = diag_addr(&mut cp.proc);
    let echo_server = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo_server, None).await;
    let (_, session) = cp.session("drain-bot", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    // A connection carrying a stream holds the drain open.
    let mut held = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    held.write_all(b"x").await.unwrap();
    let mut back = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(30), held.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(diag, "/readyz").await.0, 200);

    cp.proc.signal(libc::SIGTERM);
    cp.proc.wait_for("SIGTERM received");
    let mut answer = (0, String::new());
    let draining = eventually(Duration::from_secs(30), async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 503
    })
    .await;
    assert!(draining, "still ready after SIGTERM: {answer:?}");
    assert!(answer.1.starts_with("shutdown: "), "{answer:?}");
    assert_eq!(get(diag, "/livez").await.0, 200, "alive while it drains");

    drop(held);
    let (code, stderr) = cp.proc.wait_exit();
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_not_ready_while_its_only_control_plane_is_down() {
    let mut cp = control_plane().await;
    let mut gw = cp
        .gateway("gw-diag", &[], &["--diag-listen", "127.0.0.1:0"])
        .await;
    let diag = diag_addr(&mut gw.proc);
    // Ready once start-up has handed over (it logs that it registered just before).
    let mut answer = (0, String::new());
    let ready = eventually(Duration::from_secs(30), async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 200
    })
    .await;
    assert!(ready, "a registered gateway is not ready: {answer:?}");
    assert_eq!(answer.1, "ok\n");

    cp.proc.kill();
    let down = eventually(HEARTBEAT_WAIT, async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 503
    })
    .await;
    assert!(down, "still ready with no control plane: {answer:?}");
    assert!(
        answer.1.starts_with("registration: "),
        "the failing check is named: {answer:?}"
    );
    assert_eq!(get(diag, "/livez").await.0, 200, "alive all the same");
    let (_, samples) = scrape(diag).await;
    assert!(
        sample(
            &samples,
            r#"sdm_gateway_heartbeats_total{outcome="failed"}"#
        ) >= 1.0
    );

    cp.restart();
    let up = eventually(HEARTBEAT_WAIT, async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 200
    })
    .await;
    assert!(up, "not ready again after the restart: {answer:?}");
    let (_, samples) = scrape(diag).await;
    assert!(sample(&samples, r#"sdm_gateway_heartbeats_total{outcome="ok"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_is_not_ready_while_its_store_is_stopped() {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let mut store = tokio::task::spawn_blocking(|| PgCluster::start(PgConfig::default()).unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cp = spawn(
        "control plane",
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--diag-listen",
            "127.0.0.1:0",
        ],
        &[("SDM_DATABASE_URL", &store.url("postgres"))],
    );
    cp.wait_for("sdm-server is running");
    let diag = diag_addr(&mut cp);
    let mut answer = (0, String::new());
    let ready = eventually(Duration::from_secs(30), async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 200
    })
    .await;
    assert!(ready, "not ready on a running store: {answer:?}");

    tokio::task::block_in_place(|| store.stop());
    let down = eventually(Duration::from_secs(60), async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 503
    })
    .await;
    assert!(down, "ready with its store stopped: {answer:?}");
    assert!(
        answer.1.starts_with("store: "),
        "the failing check is named: {answer:?}"
    );
    assert_eq!(get(diag, "/livez").await.0, 200, "alive all the same");

    tokio::task::block_in_place(|| store.restart()).unwrap();
    let up = eventually(Duration::from_secs(60), async || {
        answer = get(diag, "/readyz").await;
        answer.0 == 200
    })
    .await;
    assert!(up, "not ready again once the store is back: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_or_an_address_off_loopback_is_refused_with_the_address_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let serve = |diag: &[&str]| {
        let mut args = vec![
            "serve",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(diag);
        spawn("control plane", &args, &[])
    };

    let (code, stderr) = serve(&["--diag-listen", &addr]).wait_exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for diagnostics on {addr}"))
            && stderr.contains("choose another --diag-listen"),
        "{stderr}"
    );
    assert!(
        !std::path::Path::new(data).join("sdm.db").exists(),
        "nothing is created before the port is refused"
    );

    // A standalone gateway: refused before it asks any control plane.
    let mut gw = spawn(
        "gateway",
        &[
            "gateway",
            "--diag-listen",
            &addr,
            "--register-timeout",
            "1s",
        ],
        &[("SDM_GATEWAY_TOKEN", "sdm_gw_not_a_real_token")],
    );
    let (code, stderr) = gw.wait_exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for diagnostics on {addr}")),
        "{stderr}"
    );

    let (code, stderr) = serve(&["--diag-listen", "0.0.0.0:0"]).wait_exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--diag-listen 0.0.0.0:0 is not a loopback address")
            && stderr.contains("--diag-allow-remote"),
        "{stderr}"
    );
    drop(taken);
}
