//! What reaches a PostgreSQL resource through the gateway is what the grant allows and what the
//! audit trail shows, tried as an attacker with a valid tunnel would: raw protocol bytes cut at
//! awkward places, the fast-path function call, padding in front of a statement, a database or
//! a replication connection the resource does not allow. PostgreSQL logs every statement it
//! runs (`log_statement = all`), so each test checks both sides: it ran, and it is in the audit.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use sdm_core::admin::{AuditFilter, Credentials, NewResource, ResourceChanges};
use sdm_core::{ResourceKind, Tunnel};
use sdm_testkit::{HbaAuth, PgCluster, PgConfig};
use support::{Installation, app_cluster, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "Pw-audit-integrity-3f1c";
const WAIT: Duration = Duration::from_secs(30);

/// A cluster that logs every statement, with role `app` (password [`PASSWORD`]) owning
/// databases `app`, `reports` and `other`, and a table only `app` can read.
async fn cluster() -> PgCluster {
    let config = PgConfig::default()
        .auth(HbaAuth::Scram)
        .setting("log_statement", "all");
    let pg = app_cluster(config, PASSWORD, &["reports", "other"]).await;
    pg.psql_as(
        "app",
        Some(PASSWORD),
        "app",
        "CREATE TABLE vault (secret text); INSERT INTO vault VALUES ('crown jewels')",
    )
    .unwrap();
    pg
}

fn resource(name: &str, pg: &PgCluster) -> NewResource {
    NewResource::new(name, ResourceKind::Postgres, pg.host())
        .port(pg.port())
        .credentials(Credentials {
            username: "app".into(),
            password: PASSWORD.into(),
            database: Some("app".into()),
        })
}

/// A message: `tag | length | body`.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 0x0003_0000u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}

/// A raw protocol client of the tunnel.
struct Raw(TcpStream);

impl Raw {
    async fn connect(tunnel: &Tunnel) -> Raw {
        Raw(TcpStream::connect(tunnel.local_addr().tcp().unwrap())
            .await
            .unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
        // Each send is its own segment (TCP_NODELAY), so that the gateway may read it alone.
        self.0.flush().await.unwrap();
    }

    /// Messages up to and including the next ReadyForQuery (or the first error, when `fatal`).
    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        loop {
            let mut header = [0u8; 5];
            tokio::time::timeout(WAIT, self.0.read_exact(&mut header))
                .await
                .expect("no answer from the gateway")
                .unwrap_or_else(|e| panic!("connection ended after {messages:?}: {e}"));
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            self.0.read_exact(&mut body).await.unwrap();
            let tag = header[0];
            messages.push((tag, body));
            if tag == b'Z' {
                return messages;
            }
        }
    }

    /// The first ErrorResponse's message, reading until the gateway closes.
    async fn error(&mut self) -> String {
        let mut all = Vec::new();
        let _ = tokio::time::timeout(WAIT, self.0.read_to_end(&mut all)).await;
        let start = all
            .iter()
            .position(|&b| b == b'E')
            .expect("no ErrorResponse");
        let text = String::from_utf8_lossy(&all[start..]).into_owned();
        text.split('\0')
            .find_map(|f| f.strip_prefix('M'))
            .unwrap_or(&text)
            .to_owned()
    }
}

fn rows(messages: &[(u8, Vec<u8>)]) -> String {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect()
}

/// The statements recorded for the latest connection of `account`, once it has ended.
async fn audited(sdm: &Installation, account: &str) -> Vec<String> {
    let mut id = None;
    let ended = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().account(account))
            .await
            .unwrap();
        id = list
            .records
            .first()
            .filter(|r| r.ended_at.is_some())
            .map(|r| r.id);
        id.is_some()
    })
    .await;
    assert!(ended, "no ended audit record for {account}");
    let id = id.unwrap().to_string();
    sdm.admin
        .audit_queries(&id, 0)
        .await
        .unwrap()
        .queries
        .into_iter()
        .map(|q| q.text)
        .collect()
}

/// Whether PostgreSQL's log shows it ran `fragment`.
async fn ran(pg: &PgCluster, fragment: &str) -> bool {
    let log = pg.log_path();
    let fragment = fragment.to_owned();
    eventually(WAIT, async || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&fragment))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_sent_with_the_startup_or_split_across_it_are_audited() {
    let pg = cluster().await;
    let sdm = Installation::start().await;
    sdm.resource(resource("db", &pg)).await;
    let session = sdm.session("pipelined", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();

    // The startup and a query in one write.
    let mut first = startup(&[("user", "anyone"), ("database", "app")]);
    first.extend(query("SELECT 'sent with the startup' AS a"));
    let mut raw = Raw::connect(&tunnel).await;
    raw.send(&first).await;
    raw.until_ready().await; // the login
    assert!(rows(&raw.until_ready().await).contains("sent with the startup"));
    // A header cut after the startup: the tap must still be in step for what follows.
    let second = query("SELECT 'header split across the startup'");
    raw.send(&second[..3]).await;
    raw.send(&second[3..]).await;
    raw.until_ready().await;
    for n in 0..3 {
        raw.send(&query(&format!("SELECT 'after the split {n}'")))
            .await;
        raw.until_ready().await;
    }
    raw.send(&message(b'X', b"")).await;
    drop(raw);

    let texts = audited(&sdm, "pipelined").await;
    assert_eq!(
        texts,
        [
            "SELECT 'sent with the startup' AS a",
            "SELECT 'header split across the startup'",
            "SELECT 'after the split 0'",
            "SELECT 'after the split 1'",
            "SELECT 'after the split 2'",
        ]
    );
    for text in &texts {
        assert!(ran(&pg, text).await, "PostgreSQL did not log {text}");
    }

    // Again (another account, so that its record is told apart), with the cut inside the
    // header that comes with the startup.
    let session = sdm.session("cut-first", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let mut raw = Raw::connect(&tunnel).await;
    let third = query("SELECT 'header cut in the first write'");
    let mut first = startup(&[("user", "anyone"), ("database", "app")]);
    first.extend_from_slice(&third[..2]);
    raw.send(&first).await;
    raw.send(&third[2..]).await;
    raw.until_ready().await;
    assert!(rows(&raw.until_ready().await).contains("header cut in the first write"));
    raw.send(&query("SELECT 'still in step'")).await;
    raw.until_ready().await;
    raw.send(&message(b'X', b"")).await;
    drop(raw);

    let texts = audited(&sdm, "cut-first").await;
    assert_eq!(
        texts,
        [
            "SELECT 'header cut in the first write'",
            "SELECT 'still in step'"
        ]
    );
    for text in &texts {
        assert!(ran(&pg, text).await, "PostgreSQL did not log {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_and_padded_statements_are_audited_whole() {
    let pg = cluster().await;
    let sdm = Installation::start().await;
    sdm.resource(resource("db", &pg)).await;
    let session = sdm.session("sneaky", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let oid: u32 = pg
        .psql(
            "app",
            "SELECT 'query_to_xml(text,boolean,boolean,text)'::regprocedure::oid",
        )
        .unwrap()
        .parse()
        .unwrap();

    let mut raw = Raw::connect(&tunnel).await;
    raw.send(&startup(&[("user", "x"), ("database", "app")]))
        .await;
    raw.until_ready().await;
    // query_to_xml through the fast path, every argument in binary as libpq's PQfn sends it.
    let sql = b"SELECT secret FROM vault";
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes());
    for arg in [&sql[..], &[1], &[0], b""] {
        body.extend_from_slice(&(arg.len() as i32).to_be_bytes());
        body.extend_from_slice(arg);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    raw.send(&message(b'F', &body)).await;
    let answer = raw.until_ready().await;
    let result = answer
        .iter()
        .find(|(tag, _)| *tag == b'V')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .unwrap_or_else(|| panic!("no FunctionCallResponse in {answer:?}"));
    assert!(result.contains("crown jewels"), "the call ran: {result}");

    // A statement behind 9 KiB of comment.
    let padded = format!("/*{}*/ SELECT 'behind the padding'", "-".repeat(9 * 1024));
    raw.send(&query(&padded)).await;
    assert!(rows(&raw.until_ready().await).contains("behind the padding"));
    raw.send(&message(b'X', b"")).await;
    drop(raw);

    let texts = audited(&sdm, "sneaky").await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(
        texts[0],
        format!(
            "FunctionCall query_to_xml(text,boolean,boolean,text) [OID {oid}] \
             ('SELECT secret FROM vault', '\\x01', '\\x00', '')"
        )
    );
    assert_eq!(texts[1], padded, "kept whole");
    assert!(ran(&pg, "fastpath function call").await);
    assert!(ran(&pg, "*/ SELECT 'behind the padding'").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_messages_close_the_connection_and_pass_nothing() {
    let pg = cluster().await;
    let sdm = Installation::start().await;
    sdm.resource(resource("db", &pg)).await;
    let session = sdm.session("garbage", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();
    let mut raw = Raw::connect(&tunnel).await;
    raw.send(&startup(&[("user", "x"), ("database", "app")]))
        .await;
    raw.until_ready().await;
    // A length below 4 cannot be followed; what comes after it must not reach the server.
    let mut bytes = vec![b'Q', 0, 0, 0, 2];
    bytes.extend(query("SELECT 'smuggled after garbage'"));
    raw.send(&bytes).await;
    let error = raw.error().await;
    assert!(error.contains("not PostgreSQL messages"), "{error}");
    let texts = audited(&sdm, "garbage").await;
    assert!(texts.is_empty(), "{texts:?}");
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    assert!(!log.contains("smuggled after garbage"));
}

/// psql through the tunnel with `conninfo` added, as a user that does not exist, no password.
async fn psql(pg: &PgCluster, tunnel: &Tunnel, conninfo: &str, sql: &str) -> Output {
    let mut cmd = Command::new(pg.bin("psql"));
    cmd.arg(format!(
        "host={} port={} user=anyone sslmode=disable connect_timeout=20 {conninfo}",
        tunnel.host().unwrap(),
        tunnel.port().unwrap()
    ))
    .args(["-XAtc", sql])
    .env_remove("PGPASSWORD")
    .env_remove("PGDATABASE")
    .env("PGPASSFILE", "/nonexistent");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_a_database_the_resource_allows_and_never_silently_another() {
    let pg = cluster().await;
    let sdm = Installation::start().await;
    sdm.resource(resource("db", &pg).database("reports")).await;
    let session = sdm.session("typo", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();

    for asked in ["nosuchdb", "other"] {
        let out = psql(&pg, &tunnel, &format!("dbname={asked}"), "SELECT 1").await;
        assert!(!out.status.success(), "{}", said(&out));
        assert!(
            said(&out).contains(&format!(
                "resource \"db\" does not allow database \"{asked}\"; allowed: app, reports"
            )),
            "{}",
            said(&out)
        );
    }
    let out = psql(&pg, &tunnel, "dbname=reports", "SELECT current_database()").await;
    assert_eq!(said(&out).trim(), "reports");
    // No database named: libpq sends the user name, which counts as none: the stored one.
    let out = psql(&pg, &tunnel, "", "SELECT current_database()").await;
    assert_eq!(said(&out).trim(), "app");

    let refused = eventually(WAIT, async || {
        let list = sdm
            .admin
            .audit(&AuditFilter::default().account("typo"))
            .await
            .unwrap();
        list.records
            .iter()
            .filter(|r| r.outcome == "forbidden")
            .count()
            == 2
    })
    .await;
    assert!(refused, "the refused connections are in the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connections_only_where_the_resource_allows_them() {
    let pg = cluster().await;
    pg.psql("postgres", "ALTER ROLE app REPLICATION").unwrap();
    let sdm = Installation::start().await;
    sdm.resource(resource("db", &pg)).await;
    let session = sdm.session("replicator", &["db"]).await;
    let tunnel = session.connect("db").await.unwrap();

    for mode in ["database", "true"] {
        let out = psql(
            &pg,
            &tunnel,
            &format!("dbname=app replication={mode}"),
            "IDENTIFY_SYSTEM",
        )
        .await;
        assert!(!out.status.success(), "{}", said(&out));
        assert!(
            said(&out).contains("resource \"db\" does not allow replication connections"),
            "{}",
            said(&out)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut backup = Command::new(pg.bin("pg_basebackup"));
    backup
        .args([
            "-h",
            &tunnel.host().unwrap(),
            "-p",
            &tunnel.port().unwrap().to_string(),
        ])
        .args(["-U", "anyone", "-w", "-D"])
        .arg(dir.path().join("copy"))
        .env("PGPASSFILE", "/nonexistent");
    let out = tokio::task::spawn_blocking(move || backup.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success(), "pg_basebackup copied the cluster");
    assert!(
        said(&out).contains("does not allow replication"),
        "{}",
        said(&out)
    );

    let changes = ResourceChanges {
        replication: Some(true),
        ..ResourceChanges::default()
    };
    sdm.admin.update_resource("db", &changes).await.unwrap();
    let out = psql(
        &pg,
        &tunnel,
        "dbname=app replication=database",
        "IDENTIFY_SYSTEM",
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
    let system_id = pg
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .unwrap();
    assert!(said(&out).starts_with(&system_id), "{}", said(&out));
}
