//! Credential injection for PostgreSQL, end to end: a real cluster demanding a password, the
//! real client library's tunnel, and psql, pgbench and tokio-postgres connecting with any user
//! name and no password. Also: cancel, large COPY, failures as PostgreSQL errors, the audit
//! trail, and the stored password never showing up anywhere.

mod support;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use md5::{Digest, Md5};
use sdm_core::admin::{
    AuditFilter, Credentials, NewResource, ResourceChanges, TlsMode, UpstreamTls,
};
use sdm_core::{ResourceKind, Tunnel};
use sdm_testkit::{EchoServer, HbaAuth, PgCluster, PgConfig, free_port};
use support::{Installation, app_cluster, enable_tls, eventually, pg_connect as connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stored password: distinctive, so that finding it anywhere is a leak.
const APP_PASSWORD: &str = "Pw-9c1e77d2-must-never-be-seen";
const WAIT: Duration = Duration::from_secs(30);

/// Captures every log line of this test process at trace level.
fn log_capture() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn cluster_async(auth: HbaAuth) -> PgCluster {
    app_cluster(PgConfig::default().auth(auth), APP_PASSWORD, &[]).await
}

fn pg_resource(name: &str, pg: &PgCluster, password: &str) -> NewResource {
    NewResource::new(name, ResourceKind::Postgres, pg.host())
        .port(pg.port())
        .credentials(Credentials {
            username: "app".into(),
            password: password.into(),
            database: Some("app".into()),
        })
}

/// Runs a PostgreSQL client program against the tunnel without any password in reach.
async fn run(
    pg: &PgCluster,
    program: &str,
    tunnel: &Tunnel,
    args: &[&str],
    sslmode: &str,
) -> Output {
    let mut cmd = Command::new(pg.bin(program));
    cmd.args([
        "-h",
        &tunnel.host().unwrap(),
        "-p",
        &tunnel.port().unwrap().to_string(),
        "-U",
        "anything",
    ])
    .args(args)
    .env_remove("PGPASSWORD")
    .env("PGPASSFILE", "/nonexistent")
    .env("PGSSLMODE", sslmode)
    .env("PGCONNECT_TIMEOUT", "20");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_pgbench_and_drivers_log_in_without_a_password() {
    let logs = log_capture();
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("app-db", &pg, APP_PASSWORD)).await;
    let session = sdm.session("bi-extract", &["app-db"]).await;
    let tunnel = session.connect("app").await.unwrap();

    // psql with sslmode=prefer (its default): the tunnel answers the TLS request with N.
    let out = run(
        &pg,
        "psql",
        &tunnel,
        &[
            "-X",
            "-A",
            "-t",
            "-w",
            "-d",
            "app",
            "-c",
            "SELECT current_user || '@' || current_database()",
        ],
        "prefer",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app@app");

    // A client that insists on TLS to the loopback listener gets a clear refusal.
    let out = run(
        &pg,
        "psql",
        &tunnel,
        &["-X", "-w", "-d", "app", "-c", "SELECT 1"],
        "require",
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("server does not support SSL"),
        "{}",
        text(&out)
    );

    // pgbench: initialise, then a bounded run.
    let out = run(
        &pg,
        "pgbench",
        &tunnel,
        &["-i", "-s", "1", "-q", "app"],
        "prefer",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &pg,
        "pgbench",
        &tunnel,
        &["-c", "4", "-j", "2", "-t", "50", "-n", "app"],
        "prefer",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("number of transactions actually processed: 200/200"),
        "{}",
        text(&out)
    );

    // tokio-postgres, extended protocol included.
    let (client, _conn) = connect(&tunnel).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text, $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
    assert_eq!(row.get::<_, i32>(1), 42);
    let count: i64 = client
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 100_000);

    // The password is in no API answer, no log line and not in clear in the database file.
    let listed = serde_json::to_string(&sdm.admin.list_resources().await.unwrap()).unwrap();
    assert!(!listed.contains(APP_PASSWORD));
    let db = std::fs::read(sdm.data_dir().join("sdm.db")).unwrap();
    assert!(
        !db.windows(APP_PASSWORD.len())
            .any(|w| w == APP_PASSWORD.as_bytes())
    );
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logged.is_empty(), "the log capture caught nothing");
    assert!(
        !logged.contains(APP_PASSWORD),
        "the stored password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_password_and_trust_upstreams() {
    for auth in [HbaAuth::Md5, HbaAuth::Password, HbaAuth::Trust] {
        let pg = cluster_async(auth).await;
        let sdm = Installation::start().await;
        sdm.resource(pg_resource("db", &pg, APP_PASSWORD)).await;
        let session = sdm.session("etl", &["db"]).await;
        let tunnel = session.connect("db").await.unwrap();
        let (client, _conn) = connect(&tunnel)
            .await
            .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, "app", "{auth:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_client_as_postgres_errors_and_in_the_audit() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("wrong-password", &pg, "not-the-password"))
        .await;
    sdm.resource(pg_resource("nowhere", &pg, APP_PASSWORD).port(free_port()))
        .await;
    let session = sdm.session("etl", &["wrong-password", "nowhere"]).await;

    let tunnel = session.connect("wrong").await.unwrap();
    let err = connect(&tunnel).await.err().unwrap();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {err}"));
    assert_eq!(db.code().code(), "28P01", "{db}");
    assert!(
        db.message().contains("resource \"wrong-password\""),
        "{}",
        db.message()
    );
    assert!(
        db.message().contains("password authentication failed"),
        "{}",
        db.message()
    );
    assert!(!db.message().contains("not-the-password"));

    let tunnel = session.connect("nowhere").await.unwrap();
    let err = connect(&tunnel).await.err().unwrap();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {err}"));
    assert_eq!(db.code().code(), "08001", "{db}");
    assert!(
        db.message()
            .contains("cannot connect to resource \"nowhere\""),
        "{}",
        db.message()
    );

    let found = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().account("etl"))
            .await
            .unwrap();
        list.records.len() == 2 && list.records.iter().all(|r| r.ended_at.is_some())
    })
    .await;
    assert!(found, "two ended audit records");
    let list = sdm
        .admin
        .audit(&AuditFilter::default().account("etl"))
        .await
        .unwrap();
    for r in &list.records {
        assert_eq!(r.outcome, "upstream_refused", "{r:?}");
        assert!(
            r.error.as_deref().unwrap_or("").contains(&r.resource_name),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_dies_mid_session_is_reported() {
    let mut pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("fragile", &pg, APP_PASSWORD))
        .await;
    let session = sdm.session("etl", &["fragile"]).await;
    let tunnel = session.connect("fragile").await.unwrap();
    let (client, connection) = connect(&tunnel).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    pg.kill();
    // The next query fails; the connection reports the gateway's explanation or a server-side
    // termination notice, never a silent hang.
    let result = tokio::time::timeout(WAIT, client.query_one("SELECT pg_sleep(0.1)", &[])).await;
    assert!(
        matches!(result, Ok(Err(_))),
        "the query after the crash did not fail"
    );
    let conn_result = tokio::time::timeout(WAIT, connection)
        .await
        .unwrap()
        .unwrap();
    if let Err(e) = conn_result
        && let Some(db) = e.as_db_error()
    {
        assert!(
            db.message().contains("fragile") || db.code().code().starts_with("57"),
            "{db}"
        );
    }
    let recorded = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().resource("fragile"))
            .await
            .unwrap();
        list.records.iter().any(|r| r.outcome == "upstream_refused")
    })
    .await;
    assert!(
        recorded,
        "the lost connection is not in the audit trail as a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("db", &pg, APP_PASSWORD)).await;
    let session = sdm.session("etl", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let (client, _conn) = connect(&tunnel).await.unwrap();
    let (other, _other_conn) = connect(&tunnel).await.unwrap();
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.query_one("SELECT pg_sleep(30)", &[]).await });
    // Wait until the backend is really sleeping, then cancel it through the tunnel.
    let asleep = eventually(WAIT, async || {
        let n: i64 = other
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'", &[])
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    assert!(asleep);
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), sleeping)
        .await
        .expect("cancel did not interrupt pg_sleep(30)");
    let err = result.unwrap().unwrap_err();
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{err}"
    );
    // The other connection was not touched, and statement_timeout behaves as directly.
    other
        .batch_execute("SET statement_timeout = 200")
        .await
        .unwrap();
    let err = other
        .query_one("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_copy_arrives_intact_and_queries_are_audited() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("warehouse", &pg, APP_PASSWORD))
        .await;
    let session = sdm.session("nightly", &["warehouse"]).await;
    let tunnel = session.connect("warehouse").await.unwrap();
    let (client, _conn) = connect(&tunnel).await.unwrap();
    client.batch_execute("SELECT 'audit me'").await.unwrap();
    let statement = client
        .prepare("SELECT $1::text || 'prepared'")
        .await
        .unwrap();
    client.query_one(&statement, &[&"is "]).await.unwrap();

    // 100,000 lines of 1,024 characters: md5(i) repeated 32 times.
    let stream = client
        .copy_out(
            "COPY (SELECT repeat(md5(i::text), 32) FROM generate_series(1, 100000) AS i) TO STDOUT",
        )
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut pending = Vec::new();
    let (mut lines, mut bytes) = (0u64, 0u64);
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            lines += 1;
            let expected = format!("{:x}", Md5::digest(lines.to_string().as_bytes())).repeat(32);
            assert!(
                pending[..end] == *expected.as_bytes(),
                "line {lines} differs"
            );
            pending.drain(..=end);
        }
    }
    assert_eq!(lines, 100_000);
    assert_eq!(bytes, 100_000 * 1025);
    drop(client);

    let done = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().resource("warehouse"))
            .await
            .unwrap();
        list.records.first().is_some_and(|r| r.ended_at.is_some())
    })
    .await;
    assert!(done, "no ended audit record");
    let record = sdm
        .admin
        .audit(&AuditFilter::default().resource("warehouse"))
        .await
        .unwrap()
        .records
        .remove(0);
    assert_eq!(record.account_name, "nightly");
    assert_eq!(record.outcome, "ok", "{record:?}");
    assert!(record.bytes_down > 100_000 * 1025, "{record:?}");
    assert!(record.bytes_up > 0);
    let queries = sdm
        .admin
        .audit_queries(&record.id.to_string(), 0)
        .await
        .unwrap();
    let texts: Vec<&str> = queries.queries.iter().map(|q| q.text.as_str()).collect();
    assert!(texts.contains(&"SELECT 'audit me'"), "{texts:?}");
    assert!(
        texts.contains(&"SELECT $1::text || 'prepared'"),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("COPY (SELECT repeat")),
        "{texts:?}"
    );
    assert_eq!(record.query_count, queries.queries.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_counts_bytes_exactly_and_filters_and_pages() {
    let echo = EchoServer::start().unwrap();
    let sdm = Installation::start().await;
    sdm.resource(NewResource::new("echo", ResourceKind::Tcp, "127.0.0.1").port(echo.port()))
        .await;
    let session = sdm.session("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let started = sdm_proto::unix_now();
    for size in [1000usize, 2000, 3000] {
        let mut s = tokio::net::TcpStream::connect(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap();
        let payload = vec![7u8; size];
        s.write_all(&payload).await.unwrap();
        let mut back = vec![0u8; size];
        s.read_exact(&mut back).await.unwrap();
    }
    let all_ended = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().account("etl"))
            .await
            .unwrap();
        list.records.len() == 3 && list.records.iter().all(|r| r.ended_at.is_some())
    })
    .await;
    assert!(all_ended);
    let mut sizes: Vec<(u64, u64)> = sdm
        .admin
        .audit(&AuditFilter::default().account("etl"))
        .await
        .unwrap()
        .records
        .iter()
        .map(|r| (r.bytes_up, r.bytes_down))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [(1000, 1000), (2000, 2000), (3000, 3000)]);

    // Pages of one, newest first, until the end.
    let mut seen = Vec::new();
    let mut filter = AuditFilter::default().resource("echo").limit(1);
    loop {
        let page = sdm.admin.audit(&filter).await.unwrap();
        seen.extend(page.records.iter().map(|r| r.id));
        match page.next_before {
            Some(cursor) => filter = filter.before(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    seen.dedup();
    assert_eq!(seen.len(), 3);
    // Time filters.
    let future = AuditFilter::default().since(started + 3600);
    assert!(sdm.admin.audit(&future).await.unwrap().records.is_empty());
    let past = AuditFilter::default().until(started - 3600);
    assert!(sdm.admin.audit(&past).await.unwrap().records.is_empty());
    // A service token cannot read the audit trail.
    let err = sdm_core::admin::AdminClient::new("sdm_svc_x").unwrap_err();
    assert_eq!(err.kind(), sdm_core::ErrorKind::InvalidToken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_stored_password_takes_effect_on_new_connections() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("db", &pg, APP_PASSWORD)).await;
    let session = sdm.session("etl", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    connect(&tunnel).await.unwrap();

    let rotated = "Pw-rotated-0451";
    pg.psql("postgres", &format!("ALTER ROLE app PASSWORD '{rotated}'"))
        .unwrap();
    let err = connect(&tunnel).await.err().unwrap();
    assert_eq!(err.as_db_error().map(|d| d.code().code()), Some("28P01"));
    let changes = ResourceChanges {
        credentials: Some(Credentials {
            username: "app".into(),
            password: rotated.into(),
            database: Some("app".into()),
        }),
        ..Default::default()
    };
    let updated = sdm.admin.update_resource("db", &changes).await.unwrap();
    assert!(updated.has_credentials);
    assert!(!serde_json::to_string(&updated).unwrap().contains(rotated));
    connect(&tunnel).await.unwrap();
}

/// PostgreSQL stores the SCRAM verifier of a password after SASLprep (RFC 4013), and libpq
/// applies SASLprep before it derives its proof, so psql logs in with a password that SASLprep
/// rewrites. The gateway must log in with it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_that_saslprep_rewrites_logs_in_as_it_does_with_psql() {
    // U+00A0 and U+2003 map to a space, U+00AD to nothing, U+FB01 to "fi" (NFKC).
    const REWRITTEN: &str = "Pw\u{a0}no-break\u{2003}em\u{ad}soft-\u{fb01}ligature";
    const PREPARED: &str = "Pw no-break emsoft-filigature";
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), REWRITTEN, &[]).await;
    let sql = "SELECT current_user";
    assert_eq!(
        pg.psql_as("app", Some(REWRITTEN), "app", sql).unwrap(),
        "app"
    );
    // What PostgreSQL stored is the prepared form's verifier: that form logs in as well.
    assert_eq!(
        pg.psql_as("app", Some(PREPARED), "app", sql).unwrap(),
        "app"
    );

    let sdm = Installation::start().await;
    sdm.resource(pg_resource("db", &pg, REWRITTEN)).await;
    let session = sdm.session("etl", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let (client, _conn) = connect(&tunnel).await.unwrap_or_else(|e| {
        panic!(
            "the gateway could not log in: {}",
            e.as_db_error()
                .map_or(e.to_string(), |d| d.message().to_owned())
        )
    });
    let user: String = client.query_one(sql, &[]).await.unwrap().get(0);
    assert_eq!(user, "app");
    let out = run(
        &pg,
        "psql",
        &tunnel,
        &["-X", "-A", "-t", "-w", "-d", "app", "-c", sql],
        "disable",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_require_and_verify_full() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let plain = cluster_async(HbaAuth::Scram).await;
    let ca_pem = enable_tls(&pg, &["127.0.0.1", "localhost"]);
    let sdm = Installation::start().await;
    let tls = |mode, ca_pem: Option<String>| UpstreamTls { mode, ca_pem };
    sdm.resource(
        pg_resource("required", &pg, APP_PASSWORD).upstream_tls(tls(TlsMode::Require, None)),
    )
    .await;
    sdm.resource(
        pg_resource("verified", &pg, APP_PASSWORD)
            .upstream_tls(tls(TlsMode::VerifyFull, Some(ca_pem))),
    )
    .await;
    let (_, other_ca) = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ((), p.self_signed(&key).unwrap().pem())
    };
    sdm.resource(
        pg_resource("impostor", &pg, APP_PASSWORD)
            .upstream_tls(tls(TlsMode::VerifyFull, Some(other_ca))),
    )
    .await;
    sdm.resource(
        pg_resource("no-tls-there", &plain, APP_PASSWORD).upstream_tls(tls(TlsMode::Require, None)),
    )
    .await;
    let session = sdm
        .session("etl", &["required", "verified", "impostor", "no-tls-there"])
        .await;

    for name in ["required", "verified"] {
        let tunnel = session.connect(name).await.unwrap();
        let (client, _conn) = connect(&tunnel)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{name}: the gateway's connection is not encrypted");
    }
    for (name, expected) in [
        ("impostor", "TLS handshake failed"),
        ("no-tls-there", "does not accept TLS"),
    ] {
        let tunnel = session.connect(name).await.unwrap();
        let err = connect(&tunnel).await.err().unwrap();
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{name}: not a PostgreSQL error: {err}"));
        assert!(db.message().contains(expected), "{name}: {}", db.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_without_credentials_pass_through() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(
        NewResource::new("passthrough", ResourceKind::Postgres, pg.host()).port(pg.port()),
    )
    .await;
    let session = sdm.session("etl", &["passthrough"]).await;
    let tunnel = session.connect("passthrough").await.unwrap();
    let with_password = format!(
        "host={} port={} user=app password={APP_PASSWORD} dbname=app sslmode=disable",
        tunnel.host().unwrap(),
        tunnel.port().unwrap()
    );
    let (client, conn) = tokio_postgres::connect(&with_password, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.unwrap();
    // Without one, the server's own password request comes through to the client.
    let err = connect(&tunnel).await.err().unwrap();
    assert!(format!("{err:?}").contains("password missing"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_access_ends_a_session_with_a_postgres_error() {
    let pg = cluster_async(HbaAuth::Scram).await;
    let sdm = Installation::start().await;
    sdm.resource(pg_resource("db", &pg, APP_PASSWORD)).await;
    let session = sdm.session("etl", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let (client, connection) = connect(&tunnel).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    sdm.admin.revoke("etl", "db").await.unwrap();
    // The gateway ends the session between two messages, saying why.
    let ended = tokio::time::timeout(WAIT, connection)
        .await
        .expect("the session was not ended");
    let err = ended
        .unwrap()
        .expect_err("the connection ended without an error");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a PostgreSQL error: {err}"));
    assert_eq!(db.code().code(), "57P01");
    assert!(
        db.message()
            .contains("access to resource \"db\" was revoked"),
        "{}",
        db.message()
    );
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
}
