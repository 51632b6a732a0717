//! A real PostgreSQL per test: authentication methods, isolation, lifetime, failure drills.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sdm_testkit::{HbaAuth, PgCluster, PgConfig};

/// Skips (with a note) only when the machine has no PostgreSQL server binaries.
fn unavailable() -> bool {
    let missing = !PgCluster::available();
    if missing {
        eprintln!("note: PostgreSQL server binaries not found (initdb, postgres); skipping");
    }
    missing
}

fn start(config: PgConfig) -> PgCluster {
    PgCluster::start(config).unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// True while a process with `pid` runs with `data_dir` on its command line.
fn postmaster_alive(pid: u32, data_dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie && String::from_utf8_lossy(&cmdline).contains(&*data_dir.to_string_lossy())
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scram_accepts_the_password_and_rejects_a_wrong_one() {
    if unavailable() {
        return;
    }
    let pg = start(PgConfig::default());
    assert_eq!(pg.auth(), HbaAuth::Scram);
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");

    let wrong = pg
        .psql_as(
            pg.superuser(),
            Some("not-the-password"),
            "postgres",
            "SELECT 1",
        )
        .unwrap_err();
    assert!(
        wrong.to_string().contains("password authentication failed"),
        "{wrong}"
    );
    let none = pg
        .psql_as(pg.superuser(), None, "postgres", "SELECT 1")
        .unwrap_err();
    assert!(none.to_string().contains("no password supplied"), "{none}");

    let stored = pg
        .psql(
            "postgres",
            "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = current_user",
        )
        .unwrap();
    assert_eq!(stored, "SCRAM-SHA-256$");
    let methods = pg
        .psql(
            "postgres",
            "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules WHERE type = 'host'",
        )
        .unwrap();
    assert_eq!(methods, "scram-sha-256");
}

#[test]
fn md5_stores_an_md5_hash_and_accepts_a_login() {
    if unavailable() {
        return;
    }
    let pg = start(PgConfig::default().auth(HbaAuth::Md5));
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
    let stored = pg
        .psql(
            "postgres",
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = current_user",
        )
        .unwrap();
    assert_eq!(stored, "md5");
    let wrong = pg
        .psql_as(pg.superuser(), Some("nope"), "postgres", "SELECT 1")
        .unwrap_err();
    assert!(
        wrong.to_string().contains("password authentication failed"),
        "{wrong}"
    );
}

#[test]
fn password_method_accepts_a_login() {
    if unavailable() {
        return;
    }
    let pg = start(PgConfig::default().auth(HbaAuth::Password));
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
    let wrong = pg
        .psql_as(pg.superuser(), Some("nope"), "postgres", "SELECT 1")
        .unwrap_err();
    assert!(
        wrong.to_string().contains("password authentication failed"),
        "{wrong}"
    );
}

#[test]
fn trust_accepts_a_login_without_password() {
    if unavailable() {
        return;
    }
    let pg = start(PgConfig::default().auth(HbaAuth::Trust));
    assert_eq!(
        pg.psql_as(pg.superuser(), None, "postgres", "SELECT 1")
            .unwrap(),
        "1"
    );
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn config_sets_user_databases_settings_and_isolation() {
    if unavailable() {
        return;
    }
    let password = r"p@ss w'rd\x";
    let pg = start(
        PgConfig::default()
            .superuser("sdm_admin")
            .password(password)
            .database("app")
            .database("Other DB")
            .setting("max_connections", "50"),
    );
    assert_eq!(pg.superuser(), "sdm_admin");
    assert_eq!(
        pg.psql("app", "SELECT current_user || '@' || current_database()")
            .unwrap(),
        "sdm_admin@app"
    );
    assert_eq!(
        pg.psql("Other DB", "SELECT current_database()").unwrap(),
        "Other DB"
    );
    assert_eq!(pg.psql("postgres", "SHOW max_connections").unwrap(), "50");
    assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "off");
    assert_eq!(
        pg.psql("postgres", "SHOW listen_addresses").unwrap(),
        "127.0.0.1"
    );
    let socket = pg.psql("postgres", "SHOW unix_socket_directories").unwrap();
    assert_eq!(Path::new(&socket), pg.socket_dir());
    assert!(
        socket.starts_with(&*std::env::temp_dir().to_string_lossy()),
        "{socket}"
    );

    assert_eq!(
        pg.conn_string("app"),
        format!(
            r"host=127.0.0.1 port={} user=sdm_admin password='p@ss w\'rd\\x' dbname=app",
            pg.port()
        )
    );
    assert_eq!(
        pg.url("Other DB"),
        format!(
            "postgres://sdm_admin:p%40ss%20w%27rd%5Cx@127.0.0.1:{}/Other%20DB",
            pg.port()
        )
    );
    let debug = format!("{pg:?}");
    assert!(
        !debug.contains(password) && debug.contains("<redacted>"),
        "{debug}"
    );

    // The libpq connection string works as printed, through the real psql.
    let out = Command::new(pg.bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-c",
            "SELECT 42",
            &pg.conn_string("app"),
        ])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn two_clusters_run_side_by_side() {
    if unavailable() {
        return;
    }
    let a = start(PgConfig::default());
    let b = start(PgConfig::default());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.psql("postgres", "CREATE TABLE only_in_a ()").unwrap();
    let in_b = b
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
        )
        .unwrap();
    assert_eq!(in_b, "0");
    assert_eq!(b.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    if unavailable() {
        return;
    }
    let pg = start(PgConfig::default());
    let data_dir = pg.data_dir().to_path_buf();
    let work_dir = data_dir.parent().unwrap().to_path_buf();
    let pid = pg.pid().unwrap();
    assert!(postmaster_alive(pid, &data_dir));
    assert!(work_dir.join("owner.pid").exists());
    assert!(
        work_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sdm-pg-")
    );

    drop(pg);
    assert!(!work_dir.exists(), "{} still exists", work_dir.display());
    assert!(!postmaster_alive(pid, &data_dir));
}

#[test]
fn kill_then_restart_recovers_on_the_same_port() {
    if unavailable() {
        return;
    }
    let mut pg = start(PgConfig::default());
    let port = pg.port();
    let first = pg.pid().unwrap();
    // synchronous_commit is off, so a commit may still sit in WAL buffers; a CHECKPOINT of
    // its own (not in the same implicit transaction) hands it to the kernel, which SIGKILL
    // cannot take back.
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    )
    .unwrap();
    pg.psql("postgres", "CHECKPOINT").unwrap();

    pg.kill();
    assert_eq!(pg.pid(), None);
    assert!(!postmaster_alive(first, pg.data_dir()));
    let down = pg.psql("postgres", "SELECT 1").unwrap_err();
    assert!(down.to_string().contains("Connection refused"), "{down}");

    pg.restart().unwrap();
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), Some(first));
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t").unwrap(), "1");
    let log = fs::read_to_string(pg.log_path()).unwrap();
    assert!(log.contains("database system was interrupted"), "{log}");
}

#[test]
fn stop_is_idempotent_and_restart_brings_the_data_back() {
    if unavailable() {
        return;
    }
    let mut pg = start(PgConfig::default().database("app"));
    pg.psql(
        "app",
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')",
    )
    .unwrap();
    pg.stop();
    pg.stop();
    assert!(pg.psql("app", "SELECT 1").is_err());
    assert!(pg.data_dir().exists());
    pg.restart().unwrap();
    assert_eq!(pg.psql("app", "SELECT v FROM kept").unwrap(), "yes");
    // restart of a running cluster stops it first
    pg.restart().unwrap();
    assert_eq!(pg.psql("app", "SELECT v FROM kept").unwrap(), "yes");
}

#[test]
fn shared_cluster_is_started_once() {
    if unavailable() {
        return;
    }
    let a = PgCluster::shared().unwrap();
    let b = PgCluster::shared().unwrap();
    assert!(std::ptr::eq(a, b));
    assert_eq!(b.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn bin_finds_server_and_client_programs() {
    if unavailable() {
        return;
    }
    let dir = PgCluster::bin_dir().unwrap();
    assert!(dir.join("initdb").is_file());
    let pg = start(PgConfig::default());
    for name in ["psql", "pgbench", "pg_isready"] {
        assert!(pg.bin(name).is_file(), "{name} not found");
    }
    let ready = Command::new(pg.bin("pg_isready"))
        .args(["-h", pg.host(), "-p", &pg.port().to_string()])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{ready:?}");
}

/// Child mode of the test below: start a cluster, report it, and exit without dropping it.
const CHILD_ENV: &str = "SDM_TESTKIT_ORPHAN_CHILD";

#[test]
fn postmaster_dies_with_its_process_and_the_sweep_cleans_up() {
    if unavailable() {
        return;
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        let pg = start(PgConfig::default());
        println!("ORPHAN {} {}", pg.pid().unwrap(), pg.data_dir().display());
        std::mem::forget(pg);
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "postmaster_dies_with_its_process_and_the_sweep_cleans_up",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("ORPHAN ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child said: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let (pid, data_dir) = line.split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    let data_dir = Path::new(data_dir);
    let work_dir = data_dir.parent().unwrap();

    wait_until(
        "the orphaned postmaster to exit",
        Duration::from_secs(30),
        || !postmaster_alive(pid, data_dir),
    );
    // The next start sweeps directories whose owner process is gone. Another test of this
    // binary may start a cluster first and sweep it already; either way a start removed it.
    let _pg = start(PgConfig::default());
    assert!(!work_dir.exists(), "{} was not swept", work_dir.display());
}

#[test]
fn a_failed_start_reports_the_server_log_and_cleans_up() {
    if unavailable() {
        return;
    }
    let err = PgCluster::start(PgConfig::default().setting("shared_buffers", "plenty"))
        .expect_err("a bad setting must stop the server from starting");
    let text = err.to_string();
    assert!(text.contains("exited during startup"), "{text}");
    assert!(
        text.contains("shared_buffers"),
        "the log tail is missing: {text}"
    );
    let sdm_testkit::TestkitError::StartFailed { log, .. } = err else {
        panic!("unexpected error: {err:?}");
    };
    assert!(
        !log.parent().unwrap().exists(),
        "{} was left behind",
        log.display()
    );
}
