//! The audit trail fails closed: the real `sdm-server` binary on a data directory whose disk
//! fills up (a small tmpfs, filled for real) refuses new PostgreSQL connections with the cause,
//! closes the open one after its grace, serves again by itself once the disk has room, and
//! loses none of the statements that ran. With `--audit-fail-open` it keeps serving instead.
//!
//! Mounting a tmpfs needs root (as in CI); elsewhere these tests say so and pass.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sdm_core::Session;
use sdm_core::admin::{AdminClient, AuditFilter};
use sdm_testkit::{HbaAuth, PgCluster, PgConfig, free_port};
use support::{app_cluster, pg_connect as connect};

const PASSWORD: &str = "Pw-fail-closed-81d0";
const WAIT: Duration = Duration::from_secs(60);
/// Statements this long make the audit trail's writes need new disk blocks quickly.
const STATEMENT_PAD: usize = 60 * 1024;

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        // Bounded by the tmpfs size.
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    fn start(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> (ServerProcess, String) {
        let (api, gateway) = (free_port(), free_port());
        let token_file = log_dir.join("admin.token");
        let log = log_dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sdm-server"))
            .env_remove("RUST_LOG")
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--admin-token-file")
            .arg(&token_file)
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        let token = loop {
            if let Ok(token) = std::fs::read_to_string(&token_file)
                && !token.trim().is_empty()
            {
                break token.trim().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (ServerProcess { child, log }, token)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An installation with a granted PostgreSQL resource, on a data dir on a small disk.
struct Setup {
    // Dropped in this order: the session before its server, the server before its disk.
    session: Session,
    admin: AdminClient,
    server: ServerProcess,
    disk: SmallDisk,
    _pg: PgCluster,
    _logs: tempfile::TempDir,
}

async fn setup(extra: &[&str]) -> Option<Setup> {
    let Some(disk) = SmallDisk::mount(24) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return None;
    };
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let logs = tempfile::tempdir().unwrap();
    let (server, token) = ServerProcess::start(&disk.path().join("data"), logs.path(), extra);
    let admin = AdminClient::new(&token).unwrap();
    admin
        .create_resource(&support::app_db_resource("db", &pg, PASSWORD, None))
        .await
        .unwrap();
    let job = admin.create_service_account("etl").await.unwrap().token;
    admin.grant("etl", "db").await.unwrap();
    let session = Session::login(&job).await.unwrap();
    Some(Setup {
        _pg: pg,
        server,
        admin,
        session,
        disk,
        _logs: logs,
    })
}

fn padded(n: usize) -> String {
    format!("SELECT {n} /*{}*/", "x".repeat(STATEMENT_PAD))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_connections_closes_open_ones_and_loses_nothing() {
    let Some(s) = setup(&["--audit-grace", "3s"]).await else {
        return;
    };
    let tunnel = s.session.connect("db").await.unwrap();
    let (client, connection) = connect(&tunnel).await.unwrap();
    client.simple_query(&padded(0)).await.unwrap();

    let filler = s.disk.fill();
    // Statements go on while the writer fails, for the grace, then the connection is closed.
    let mut ran = 1;
    let mut closed = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        match client.simple_query(&padded(ran)).await {
            Ok(_) => ran += 1,
            Err(e) => {
                closed = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = closed.expect("the open connection was never closed");
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .unwrap()
        .unwrap();
    // The error reaches the query in flight or, between queries, the connection.
    let why = [Some(&closed), ended.as_ref().err()]
        .into_iter()
        .flatten()
        .find_map(|e| e.as_db_error())
        .map(|db| (db.code().code().to_owned(), db.message().to_owned()))
        .unwrap_or_else(|| panic!("closed without a PostgreSQL error: {closed}"));
    assert_eq!(why.0, "57P01", "{why:?}");
    assert!(
        why.1.contains("audit trail cannot be written") && why.1.contains("full"),
        "{why:?}"
    );

    // A new connection is refused, saying why.
    let Err(refused) = connect(&tunnel).await else {
        panic!("a new connection was served");
    };
    let db = refused
        .as_db_error()
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {refused}"));
    assert_eq!(db.code().code(), "57P03", "{db}");
    assert!(
        db.message().contains("not accepting connections")
            && db.message().contains("audit trail cannot be written"),
        "{}",
        db.message()
    );
    assert!(s.server.log().contains("the audit trail cannot be written"));

    // Room again: the gateway serves by itself, and every statement that ran is recorded.
    std::fs::remove_file(filler).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (client, _connection) = loop {
        match connect(&tunnel).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never served again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    client.simple_query("SELECT 'served again'").await.unwrap();
    let records = s
        .admin
        .audit(&AuditFilter::default().account("etl"))
        .await
        .unwrap()
        .records;
    let first = records.last().unwrap();
    assert_eq!(first.outcome, "gateway_unreachable", "{first:?}");
    let mut recorded = Vec::new();
    loop {
        let page = s
            .admin
            .audit_queries(&first.id.to_string(), recorded.len() as u64)
            .await
            .unwrap()
            .queries;
        if page.is_empty() {
            break;
        }
        recorded.extend(page.into_iter().map(|q| q.text));
    }
    let expected: Vec<String> = (0..ran).map(padded).collect();
    assert!(
        recorded.starts_with(&expected),
        "{} statements ran, {} recorded",
        ran,
        recorded.len()
    );
    let log = s.server.log();
    assert!(
        !log.contains("are lost") && !log.contains("were lost"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_is_an_explicit_choice_that_keeps_serving() {
    let Some(s) = setup(&["--audit-fail-open"]).await else {
        return;
    };
    let tunnel = s.session.connect("db").await.unwrap();
    let (client, _connection) = connect(&tunnel).await.unwrap();
    let _filler = s.disk.fill();
    // Past the grace a fail-closed gateway would have used.
    for n in 0..300 {
        client.simple_query(&padded(n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (other, _c) = connect(&tunnel).await.expect("fail-open keeps serving");
    other.simple_query("SELECT 1").await.unwrap();
    let log = s.server.log();
    assert!(log.contains("the audit trail cannot be written"), "{log}");
}
