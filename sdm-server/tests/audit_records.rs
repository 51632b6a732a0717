//! The audit trail's records belong to the gateway that opened the connections: another
//! gateway's token cannot end, replace or add queries to them; and records a gateway left open
//! because its process was killed are closed as `interrupted` when it starts again (a control
//! plane's own gateway at the control plane's start, also when several share one PostgreSQL
//! store; a standalone gateway at its first registration), never when it only registers again.
//!
//! Real parts: the server in-process or as `sdm-server` processes killed with SIGKILL, a real
//! PostgreSQL, the real client library.

mod common;
mod processes;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sdm_core::admin::{AdminClient, AuditFilter, NewResource};
use sdm_core::{ResourceKind, Session, Tunnel};
use sdm_proto::api::AuditRecord;
use sdm_proto::gateway::{
    AuditEnd, AuditEvent, AuditQueryEvent, AuditUpload, GatewayRegistration, RegisterGateway,
};
use sdm_testkit::{EchoServer, PgCluster};
use support::{Installation, echoes_on, eventually};
use tokio::net::TcpStream;
use uuid::Uuid;

use processes::{Proc, field};

/// Bound on anything expected to happen "soon" (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers

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

/// A connection through `tunnel` that has echoed once and stays open.
async fn held(tunnel: &Tunnel) -> TcpStream {
    let mut s = TcpStream::connect(tunnel.local_addr().tcp().unwrap())
        .await
        .unwrap();
    assert!(echoes_on(&mut s).await, "no echo through the tunnel");
    s
}

/// Every audit record of `resource`, newest first.
async fn records(admin: &AdminClient, resource: &str) -> Vec<AuditRecord> {
    admin
        .audit(&AuditFilter::default().resource(resource).limit(1000))
        .await
        .unwrap()
        .records
}

/// Polls until the records of `resource` satisfy `check`; the last ones seen.
async fn records_until(
    admin: &AdminClient,
    resource: &str,
    check: impl Fn(&[AuditRecord]) -> bool,
) -> Vec<AuditRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = records(admin, resource).await;
        if check(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit records of {resource} never got there: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sdm-server serve` in `data` with its gateway named `gateway` (on PostgreSQL when `url` is
/// given); the process and its API URL once it runs.
fn serve(data: &Path, gateway: &str, url: Option<&str>) -> (Proc, String) {
    let env: Vec<(&str, &str)> = url.map(|u| ("SDM_DATABASE_URL", u)).into_iter().collect();
    let mut proc = processes::spawn(
        gateway,
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--gateway-name",
            gateway,
        ],
        &env,
    );
    let running = proc.wait_for("sdm-server is running");
    (proc, field(&running, "api_url"))
}

/// An echo resource named `name` (pinned to gateways tagged `pin`, if given).
async fn echo_resource(admin: &AdminClient, name: &str, echo: &EchoServer, pin: Option<&str>) {
    let mut resource = NewResource::new(name, ResourceKind::Tcp, "127.0.0.1").port(echo.port());
    if let Some(pin) = pin {
        resource = resource.tag("sdm.gateway", pin);
    }
    admin.create_resource(&resource).await.unwrap();
}

/// A service account granted `resource`; its token.
async fn account(admin: &AdminClient, name: &str, resource: &str) -> String {
    let token = admin.create_service_account(name).await.unwrap().token;
    admin.grant(name, resource).await.unwrap();
    token
}

async fn login(token: &str, api_url: &str) -> Session {
    Session::builder()
        .token(token)
        .api_url(api_url)
        .login()
        .await
        .unwrap()
}

fn interrupted(r: &AuditRecord) -> bool {
    r.outcome == "interrupted" && r.ended_at.is_some_and(|end| end >= r.started_at)
}

// ---------------------------------------------------------------------------------------------
// A gateway reports only on its own connections

async fn another_gateway_cannot_alter_the_records(sdm: Installation) {
    let echo = EchoServer::start().unwrap();
    echo_resource(&sdm.admin, "echo", &echo, None).await;
    let token = account(&sdm.admin, "etl", "echo").await;
    let job = Session::login(&token).await.unwrap();
    let tunnel = job.connect("echo").await.unwrap();
    // One connection that ended, one still open, both through the control plane's gateway.
    drop(held(&tunnel).await);
    let mut open = held(&tunnel).await;
    let before = records_until(&sdm.admin, "echo", |r| {
        r.len() == 2 && r.iter().any(|c| c.outcome == "ok") && r.iter().any(|c| c.outcome == "open")
    })
    .await;

    // Gateway B, with a valid gateway token of its own, reports on them.
    let forger = sdm
        .admin
        .create_gateway("gw-b", BTreeMap::new())
        .await
        .unwrap()
        .token;
    let mut events = Vec::new();
    for r in &before {
        events.push(AuditEvent::Started(Box::new(AuditRecord {
            account_name: "somebody-else".into(),
            ended_at: Some(r.started_at + 1),
            outcome: "ok".into(),
            bytes_up: 1,
            ..r.clone()
        })));
        events.push(AuditEvent::Ended(AuditEnd {
            id: r.id,
            ended_at: r.started_at + 1,
            bytes_up: 0,
            bytes_down: 0,
            outcome: "ok".into(),
            error: None,
            query_count: 1,
        }));
        events.push(AuditEvent::Query(AuditQueryEvent {
            connection_id: r.id,
            seq: 1,
            at: r.started_at,
            text: "SELECT 'this never ran'".into(),
        }));
    }
    // And on a connection of its own, which it may.
    let own = Uuid::new_v4();
    events.push(AuditEvent::Started(Box::new(AuditRecord {
        id: own,
        gateway: "gw-b".into(),
        ended_at: None,
        outcome: "open".into(),
        ..before[0].clone()
    })));
    events.push(AuditEvent::Ended(AuditEnd {
        id: own,
        ended_at: before[0].started_at + 2,
        bytes_up: 3,
        bytes_down: 4,
        outcome: "ok".into(),
        error: None,
        query_count: 0,
    }));
    let client = common::Client::new(&sdm.data_dir(), sdm.server.api_addr());
    let reply = client
        .post("/v1/gateway/audit", Some(&forger), &AuditUpload { events })
        .await;
    // The honest part is taken and the upload answered as usual.
    assert_eq!(reply.status, 204, "{}", reply.text());

    let after = records(&sdm.admin, "echo").await;
    for r in &before {
        assert_eq!(after.iter().find(|a| a.id == r.id), Some(r), "{after:#?}");
        let queries = sdm.admin.audit_queries(&r.id.to_string(), 0).await.unwrap();
        assert!(queries.queries.is_empty(), "{queries:?}");
    }
    let mine = after.iter().find(|a| a.id == own).expect("B's own record");
    assert_eq!(mine.gateway, "gw-b");
    assert_eq!(mine.outcome, "ok");
    // The real end still comes from the real gateway.
    assert!(echoes_on(&mut open).await);
    drop(open);
    records_until(&sdm.admin, "echo", |r| {
        r.iter()
            .filter(|c| before.iter().any(|b| b.id == c.id))
            .all(|c| c.outcome == "ok" && c.gateway == before[0].gateway)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_token_cannot_alter_another_gateways_audit_records() {
    another_gateway_cannot_alter_the_records(Installation::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_token_cannot_alter_another_gateways_audit_records_on_postgres() {
    let url = fresh_postgres().await;
    let sdm = Installation::start_with(|b| b.database_url(&url)).await;
    another_gateway_cannot_alter_the_records(sdm).await;
}

// ---------------------------------------------------------------------------------------------
// Records of connections cut by a crash

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_closes_the_records_it_left_open_when_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut cp, url) = serve(&data, "embedded", None);
    let admin_token = cp.first_stdout_line();
    let admin = AdminClient::with_api_url(&admin_token, Some(&url)).unwrap();
    let echo = EchoServer::start().unwrap();
    echo_resource(&admin, "echo", &echo, None).await;
    let token = account(&admin, "etl", "echo").await;
    let job = login(&token, &url).await;
    let tunnel = job.connect("echo").await.unwrap();
    let _open = held(&tunnel).await;
    let done = held(&tunnel).await;
    drop(done);
    records_until(&admin, "echo", |r| {
        r.len() == 2 && r.iter().any(|c| c.outcome == "open") && r.iter().any(|c| c.outcome == "ok")
    })
    .await;

    cp.kill();
    let (_cp, url) = serve(&data, "embedded", None);
    let admin = AdminClient::with_api_url(&admin_token, Some(&url)).unwrap();
    // Closed before the restarted gateway serves, so the first read already shows it.
    let after = records(&admin, "echo").await;
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(
        after.iter().filter(|r| interrupted(r)).count(),
        1,
        "{after:#?}"
    );
    assert_eq!(
        after.iter().filter(|r| r.outcome == "ok").count(),
        1,
        "{after:#?}"
    );
    let record = after.iter().find(|r| interrupted(r)).unwrap();
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("embedded")),
        "{record:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_planes_sharing_postgres_close_only_their_own_gateways_records_at_restart() {
    let url = fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (mut cp_a, url_a) = serve(&data_a, "gw-a", Some(&url));
    let admin_token = cp_a.first_stdout_line();
    std::fs::create_dir_all(&data_b).unwrap();
    for file in ["ca.pem", "ca.key", "lease.key", "ssh_ca.key", "secret.key"] {
        std::fs::copy(data_a.join(file), data_b.join(file)).unwrap();
    }
    let (_cp_b, url_b) = serve(&data_b, "gw-b", Some(&url));
    let admin = AdminClient::with_api_url(&admin_token, Some(&url_b)).unwrap();
    let echo = EchoServer::start().unwrap();
    echo_resource(&admin, "echo", &echo, None).await;
    let token = account(&admin, "etl", "echo").await;
    // Each lease names both gateways, starting at either; open tunnels until connections are
    // held through each.
    let mut held_through: Vec<(Session, Tunnel, TcpStream)> = Vec::new();
    let on = |records: &[AuditRecord], gateway: &str| {
        records
            .iter()
            .filter(|r| r.outcome == "open" && r.gateway == gateway)
            .count()
    };
    for attempt in 0..40 {
        let job = login(&token, &url_a).await;
        let tunnel = job.connect("echo").await.unwrap();
        let stream = held(&tunnel).await;
        held_through.push((job, tunnel, stream));
        let seen = records_until(&admin, "echo", |r| {
            r.iter().filter(|c| c.outcome == "open").count() == held_through.len()
        })
        .await;
        if on(&seen, "gw-a") > 0 && on(&seen, "gw-b") > 0 {
            break;
        }
        assert!(attempt < 39, "every connection went through one gateway");
    }

    cp_a.kill();
    let (_cp_a, _) = serve(&data_a, "gw-a", Some(&url));
    let after = records(&admin, "echo").await;
    assert!(
        after
            .iter()
            .filter(|r| r.gateway == "gw-a")
            .all(interrupted),
        "{after:#?}"
    );
    let through_b: Vec<&AuditRecord> = after.iter().filter(|r| r.gateway == "gw-b").collect();
    assert!(!through_b.is_empty());
    assert!(through_b.iter().all(|r| r.outcome == "open"), "{after:#?}");
    // And exactly those are alive.
    let mut alive = 0;
    for (_, _, stream) in &mut held_through {
        if echoes_on(stream).await {
            alive += 1;
        }
    }
    assert_eq!(alive, through_b.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_standalone_gateway_closes_what_it_left_open_and_a_renewal_closes_nothing() {
    // Short leases, so that the tunnel learns the restarted gateway's new address soon.
    let sdm = Installation::start_with(|b| b.lease_ttl(Duration::from_secs(4))).await;
    let api_url = sdm.server.api_url().to_owned();
    let gateway_token = sdm
        .admin
        .create_gateway("gw-1", BTreeMap::from([("site".into(), "one".into())]))
        .await
        .unwrap()
        .token;
    let echo = EchoServer::start().unwrap();
    // Only the standalone gateway may serve it.
    echo_resource(&sdm.admin, "echo", &echo, Some("site=one")).await;
    let token = account(&sdm.admin, "etl", "echo").await;
    let start_gateway = || {
        let mut gateway = processes::spawn(
            "gw-1",
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--control-plane",
                &api_url,
            ],
            &[("SDM_GATEWAY_TOKEN", &gateway_token)],
        );
        let line = gateway.wait_for("gateway registered with the control plane");
        let address: SocketAddr = field(&line, "address").parse().unwrap();
        (gateway, address)
    };
    let (mut gateway, address) = start_gateway();
    let job = Session::login(&token).await.unwrap();
    let tunnel = job.connect("echo").await.unwrap();
    let mut open = held(&tunnel).await;
    records_until(&sdm.admin, "echo", |r| {
        r.len() == 1 && r[0].outcome == "open" && r[0].gateway == "gw-1"
    })
    .await;

    // A registration of a running gateway (its daily certificate renewal) closes nothing.
    let client = common::Client::new(&sdm.data_dir(), sdm.server.api_addr());
    let renewal = RegisterGateway {
        name: None,
        address: address.to_string(),
        tags: None,
        version: "test".into(),
        starting: false,
    };
    let _: GatewayRegistration = client
        .post("/v1/gateway/register", Some(&gateway_token), &renewal)
        .await
        .expect_ok();
    assert_eq!(records(&sdm.admin, "echo").await[0].outcome, "open");
    assert!(echoes_on(&mut open).await);

    // Killed with the connection open, then started again: its first registration closes it.
    gateway.kill();
    let (_gateway, _) = start_gateway();
    let after = records(&sdm.admin, "echo").await;
    assert_eq!(after.len(), 1, "{after:#?}");
    assert!(interrupted(&after[0]), "{after:#?}");
    assert!(
        after[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("gw-1")),
        "{after:?}"
    );
    // The tunnel carries on through the new process.
    assert!(
        eventually(WAIT, async || {
            match TcpStream::connect(tunnel.local_addr().tcp().unwrap()).await {
                Ok(mut s) => echoes_on(&mut s).await,
                Err(_) => false,
            }
        })
        .await
    );
}
