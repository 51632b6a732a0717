//! Outages ridden out, as an operator causes them: a control plane process (`sdm-server serve`)
//! killed with SIGKILL and started again, a standalone gateway process (`sdm-server gateway`)
//! stopped with SIGTERM or restarted, a real PostgreSQL behind it, and a job using the real
//! client library and tokio-postgres in this process.
//!
//! docs/OPERATIONS.md ("Control-plane outages") names these tests beside its promises.

mod common;
mod processes;
mod support;

use std::time::Duration;

use sdm_core::admin::AuditFilter;
use sdm_core::{Session, Tunnel};
use sdm_proto::api::AuditRecord;
use sdm_testkit::{HbaAuth, PgCluster, PgConfig};

use processes::{ControlPlane, Gw, WAIT, control_plane_with};
use support::{app_cluster, app_db_resource, eventually, pg_connect};

const PASSWORD: &str = "Pw-outage-7c41-never-seen";

/// A control plane with `lease_ttl`, a standalone gateway (`gw-args`) that alone serves a
/// PostgreSQL resource `app-db`, and a job's open tunnel to it.
struct Setup {
    cp: ControlPlane,
    gw: Gw,
    gw_token: String,
    _pg: PgCluster,
    session: Session,
    tunnel: Tunnel,
}

async fn setup(lease_ttl: &str, gw_args: &[&str]) -> Option<Setup> {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return None;
    }
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let cp = control_plane_with(&["--lease-ttl", lease_ttl]).await;
    let gw_token = cp.gateway_token("edge", &[("dc", "db")]).await;
    let mut args = gw_args.to_vec();
    args.extend_from_slice(&["--control-plane", cp.url.as_str()]);
    let gw = processes::gateway("edge", &gw_token, &args);
    cp.admin
        .create_resource(&app_db_resource("app-db", &pg, PASSWORD, Some("dc=db")))
        .await
        .unwrap();
    let (_, session) = cp.session("etl", &["app-db"]).await;
    let tunnel = session.connect("app-db").await.unwrap();
    Some(Setup {
        cp,
        gw,
        gw_token,
        _pg: pg,
        session,
        tunnel,
    })
}

/// One connection through the tunnel running `sql`; the error's text when it fails.
async fn run(tunnel: &Tunnel, sql: &str) -> Result<(), String> {
    let (client, connection) = pg_connect(tunnel).await.map_err(|e| pg_text(&e))?;
    let result = client
        .simple_query(sql)
        .await
        .map(drop)
        .map_err(|e| pg_text(&e));
    drop(client);
    let _ = connection.await;
    result
}

fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn records(cp: &ControlPlane) -> Vec<AuditRecord> {
    cp.admin
        .audit(&AuditFilter::default().resource("app-db").limit(1000))
        .await
        .map(|page| page.records)
        .unwrap_or_default()
}

/// The texts of every query the audit trail holds for `app-db`.
async fn audited_queries(cp: &ControlPlane) -> Vec<String> {
    let mut texts = Vec::new();
    for record in records(cp).await {
        if let Ok(list) = cp.admin.audit_queries(&record.id.to_string(), 0).await {
            texts.extend(list.queries.into_iter().map(|q| q.text));
        }
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_is_ridden_out_for_the_lease_and_every_query_is_audited() {
    let Some(mut s) = setup("60", &[]).await else {
        return;
    };
    // The gateway learns the lease's answer while the control plane is up.
    run(&s.tunnel, "SELECT 'before the outage'").await.unwrap();
    // Another job holds a lease too, but has not used it on the gateway yet.
    let (_, other) = s.cp.session("bi", &["app-db"]).await;
    let unseen = other.connect("app-db").await.unwrap();

    s.cp.proc.kill();
    // The gateway has no answer to ride on for that one: the PostgreSQL client reads why.
    let e = run(&unseen, "SELECT 'never'").await.unwrap_err();
    assert!(
        e.starts_with("08001")
            && e.contains("app-db")
            && e.contains("cannot reach the control plane"),
        "{e}"
    );
    // Longer than the gateway's 5 s answer cache, shorter than the 60 s lease.
    let mut failed = Vec::new();
    for i in 0..16 {
        if let Err(e) = run(&s.tunnel, &format!("SELECT 'during the outage {i}'")).await {
            failed.push(format!("{i}: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        failed.is_empty(),
        "connections failed during the outage: {failed:#?}"
    );
    assert!(s.tunnel.is_open());

    s.cp.restart();
    let expected: Vec<String> = (0..16)
        .map(|i| format!("SELECT 'during the outage {i}'"))
        .collect();
    let complete = eventually(WAIT, async || {
        let texts = audited_queries(&s.cp).await;
        expected.iter().all(|q| texts.contains(q))
    })
    .await;
    assert!(
        complete,
        "queries made during the outage are missing from the audit trail: {:#?}\ngateway log:\n{}",
        audited_queries(&s.cp).await,
        s.gw.proc.stderr_so_far()
    );
    // Each query once, and every connection's record closed with its bytes.
    let texts = audited_queries(&s.cp).await;
    for q in &expected {
        assert_eq!(texts.iter().filter(|t| *t == q).count(), 1, "{q}");
    }
    let all_closed = eventually(WAIT, async || {
        let records = records(&s.cp).await;
        let (etl, bi): (Vec<_>, Vec<_>) = records.iter().partition(|r| r.account_name == "etl");
        etl.len() == 17
            && etl.iter().all(|r| r.outcome == "ok" && r.bytes_up > 0)
            // The refusal is on the record too.
            && bi.len() == 1
            && bi[0].outcome != "ok"
    })
    .await;
    assert!(all_closed, "{:#?}", records(&s.cp).await);
    assert!(!s.gw.proc.stderr_so_far().contains(PASSWORD));
    drop(s.session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_lease_a_postgres_client_is_told_why_in_its_protocol() {
    let Some(mut s) = setup("4", &[]).await else {
        return;
    };
    run(&s.tunnel, "SELECT 1").await.unwrap();
    s.cp.proc.kill();
    // The lease (4 s) runs out while no control plane can renew it.
    let refused = eventually(WAIT, async || run(&s.tunnel, "SELECT 2").await.is_err()).await;
    assert!(refused);
    let e = run(&s.tunnel, "SELECT 3").await.unwrap_err();
    assert!(
        e.starts_with("08001") && e.contains("app-db") && e.contains("lease expired"),
        "{e}"
    );
    // The tunnel stays open: it serves again when the control plane is back.
    assert!(s.tunnel.is_open());
    s.cp.restart();
    let back = eventually(WAIT, async || run(&s.tunnel, "SELECT 4").await.is_ok()).await;
    assert!(back, "the tunnel did not serve again after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_connections_finish_then_closes_them_with_their_records() {
    let Some(mut s) = setup("60", &["--drain-timeout", "2"]).await else {
        return;
    };
    let (client, connection) = pg_connect(&s.tunnel).await.unwrap();
    client
        .simple_query("SELECT 'held through the stop'")
        .await
        .unwrap();
    s.gw.proc.signal(libc::SIGTERM);
    // The held connection is told why, in PostgreSQL's protocol, after the drain.
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .unwrap()
        .unwrap();
    let e = ended.unwrap_err();
    assert!(
        pg_text(&e).contains("57P01") && pg_text(&e).contains("shutting down"),
        "{}",
        pg_text(&e)
    );
    let (code, log) = s.gw.proc.wait_exit();
    assert_eq!(code, 0, "{log}");
    let records = records(&s.cp).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_ne!(record.outcome, "open", "{record:#?}");
    assert!(record.bytes_up > 0 && record.bytes_down > 0, "{record:#?}");
    assert_eq!(record.query_count, 1, "{record:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_during_the_outage_uploads_its_spool_once() {
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let spool_arg = spool_dir.to_str().unwrap().to_owned();
    let Some(mut s) = setup("60", &["--audit-spool", &spool_arg]).await else {
        return;
    };
    run(&s.tunnel, "SELECT 'before'").await.unwrap();
    s.cp.proc.kill();
    for i in 0..3 {
        run(&s.tunnel, &format!("SELECT 'spooled {i}'"))
            .await
            .unwrap();
    }
    // Stopped during the outage: what it could not upload is on its disk.
    s.gw.proc.signal(libc::SIGTERM);
    let (code, log) = s.gw.proc.wait_exit();
    assert_eq!(code, 0, "{log}");
    let batches = || {
        std::fs::read_dir(&spool_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".batch")
            })
            .count()
    };
    assert!(batches() > 0, "nothing was spooled: {log}");

    // The control plane comes back; the gateway starts again on the same spool.
    s.cp.restart();
    // It uploads the spool before it registers.
    let _gw = processes::gateway(
        "edge",
        &s.gw_token,
        &["--control-plane", &s.cp.url, "--audit-spool", &spool_arg],
    );
    let texts = audited_queries(&s.cp).await;
    for i in 0..3 {
        let q = format!("SELECT 'spooled {i}'");
        assert_eq!(
            texts.iter().filter(|t| **t == q).count(),
            1,
            "{q}: {texts:#?}"
        );
    }
    assert_eq!(batches(), 0, "the spool is empty once uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_is_ridden_out_by_open_tunnels_and_their_connections() {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return;
    }
    let mut store = tokio::task::spawn_blocking(|| PgCluster::start(PgConfig::default()).unwrap())
        .await
        .unwrap();
    let app = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cp = processes::spawn(
        "control plane",
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--lease-ttl",
            "4",
        ],
        &[("SDM_DATABASE_URL", &store.url("postgres"))],
    );
    let admin_token = cp.first_stdout_line();
    let running = cp.wait_for("sdm-server is running");
    let url = processes::field(&running, "api_url");
    let admin = sdm_core::admin::AdminClient::with_api_url(&admin_token, Some(&url)).unwrap();
    admin
        .create_resource(&app_db_resource("app-db", &app, PASSWORD, None))
        .await
        .unwrap();
    let token = admin.create_service_account("etl").await.unwrap().token;
    admin.grant("etl", "app-db").await.unwrap();
    let session = Session::login(&token).await.unwrap();
    let tunnel = session.connect("app-db").await.unwrap();
    let (held, connection) = pg_connect(&tunnel).await.unwrap();
    held.simple_query("SELECT 'before'").await.unwrap();

    // The store is down for longer than a lease renewal interval (2 s of a 4 s lease).
    tokio::task::block_in_place(|| store.stop());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(tunnel.is_open(), "{:?}", tunnel.close_reason());
    tokio::task::block_in_place(|| store.restart().unwrap());

    // The held connection carries on, and the tunnel serves new connections again.
    held.simple_query("SELECT 'held through the store outage'")
        .await
        .unwrap();
    let back = eventually(WAIT, async || run(&tunnel, "SELECT 'after'").await.is_ok()).await;
    assert!(
        back,
        "the tunnel did not serve again after the store returned"
    );
    assert!(tunnel.is_open(), "{:?}", tunnel.close_reason());
    drop(held);
    let _ = connection.await;
    drop(session);
    let log = cp.stderr_so_far();
    assert!(!log.contains("lost"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_new_connections_and_loses_nothing() {
    let Some(mut s) = setup("60", &["--audit-spool-max", "4K"]).await else {
        return;
    };
    run(&s.tunnel, "SELECT 'before'").await.unwrap();
    s.cp.proc.kill();
    // Connections until the spool is full (each spools a few hundred bytes of audit).
    let mut served = Vec::new();
    let mut refusal = None;
    for i in 0..60 {
        let sql = format!("SELECT 'spooled {i}'");
        match run(&s.tunnel, &sql).await {
            Ok(()) => served.push(sql),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 4 KiB spool filled up within 60 connections");
    assert!(
        refusal.starts_with("57P03") && refusal.contains("spool") && refusal.contains("full"),
        "{refusal}"
    );
    assert!(!served.is_empty());

    // Back: everything that was served is in the audit trail, once.
    s.cp.restart();
    let complete = eventually(WAIT, async || {
        let texts = audited_queries(&s.cp).await;
        served.iter().all(|q| texts.contains(q))
    })
    .await;
    assert!(complete, "{:#?}", audited_queries(&s.cp).await);
    let texts = audited_queries(&s.cp).await;
    for q in &served {
        assert_eq!(texts.iter().filter(|t| *t == q).count(), 1, "{q}");
    }
    // And the gateway serves again.
    let again = eventually(WAIT, async || {
        run(&s.tunnel, "SELECT 'after'").await.is_ok()
    })
    .await;
    assert!(again, "{}", s.gw.proc.stderr_so_far());
}
