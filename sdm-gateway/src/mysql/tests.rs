//! The MySQL handler between the real `mariadb` command-line client and a real MariaDB server:
//! each test puts the gateway's MySQL side on a loopback port, as the gateway does behind a
//! verified lease, and drives it as a job would: any user name, no password.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdm_proto::audit::AuditEvent;
use sdm_proto::{ErrorKind, ResourceKind};
use sdm_testkit::MariaDb;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::handshake::{self, Greeting};
use super::{packet, serve};
use crate::finished::Finished;
use crate::{AuditSink, AuditUnavailable, Denied, Upstream};

/// Statements as the audit trail would keep them; with `failing`, a trail that cannot be
/// written.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>, AtomicBool);

impl AuditSink for Lines {
    fn record(&self, event: AuditEvent) -> Result<(), AuditUnavailable> {
        if self.1.load(Ordering::SeqCst) {
            return Err(AuditUnavailable("the disk is full".into()));
        }
        if let AuditEvent::Query(q) = event {
            self.0.lock().unwrap().push(q.text);
        }
        Ok(())
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The gateway's MySQL side on a loopback port, in front of one resource (which a test may
/// change between connections).
struct Gateway {
    port: u16,
    upstream: Arc<Mutex<Upstream>>,
    lines: Arc<Lines>,
    finished: mpsc::UnboundedReceiver<Finished>,
    stop: watch::Sender<Option<Denied>>,
}

fn upstream(port: u16, user: &str, password: &str) -> Upstream {
    Upstream {
        resource_name: "shop".into(),
        kind: ResourceKind::Mysql,
        host: "127.0.0.1".into(),
        port,
        credentials: Some(sdm_proto::api::Credentials {
            username: user.into(),
            password: password.into(),
            database: Some("app".into()),
        }),
        upstream_tls: Default::default(),
        account_name: "etl-bot".into(),
        labels: Default::default(),
        databases: Vec::new(),
        replication: false,
        ssh: None,
    }
}

impl Gateway {
    async fn start(upstream: Upstream) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Lines::default());
        let upstream = Arc::new(Mutex::new(upstream));
        let (done, finished) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(None::<Denied>);
        let (sink, resource) = (lines.clone(), upstream.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let resource = resource.lock().unwrap().clone();
                let sink: Arc<dyn AuditSink> = sink.clone();
                let mut stopped = stopped.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let stop = async move {
                        let why = stopped.wait_for(Option::is_some).await.unwrap();
                        why.clone().unwrap()
                    };
                    let finished =
                        serve(&mut socket, &resource, sink, Uuid::new_v4(), None, stop).await;
                    let _ = done.send(finished);
                });
            }
        });
        Gateway {
            port,
            upstream,
            lines,
            finished,
            stop,
        }
    }

    /// The `mariadb` client as a job runs it against the tunnel: a user name, no password.
    fn client(&self, extra: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("mariadb");
        command
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P"])
            .arg(self.port.to_string())
            .args(["-u", "job", "--skip-ssl", "--batch", "--skip-column-names"])
            .arg("--max-allowed-packet=128M")
            .args(extra)
            .kill_on_drop(true);
        command
    }

    async fn sql(&self, statements: &str) -> Output {
        let mut command = self.client(&[]);
        command.arg("-e").arg(statements);
        bounded(command).await
    }

    async fn next_finished(&mut self) -> Finished {
        tokio::time::timeout(Duration::from_secs(60), self.finished.recv())
            .await
            .expect("the connection did not end")
            .unwrap()
    }
}

async fn bounded(mut command: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the mariadb client did not finish")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server with a `mysql_native_password` user `native` owning database `app`.
fn server() -> MariaDb {
    let db = MariaDb::start().unwrap();
    db.create_native_user("native", "n-secret", "app").unwrap();
    db.sql("CREATE TABLE app.t (n INT)").unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_runs_with_the_stored_credentials_and_the_audit_shows_it() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let out = gateway
        .sql("SELECT CONCAT('he', 'llo'), DATABASE(), SUBSTRING_INDEX(USER(), '@', 1)")
        .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\tapp\tnative\n");
    assert_eq!(
        gateway.lines.all(),
        ["SELECT CONCAT('he', 'llo'), DATABASE(), SUBSTRING_INDEX(USER(), '@', 1)"]
    );
    let finished = gateway.next_finished().await;
    assert_eq!(finished.failure, None);
    assert_eq!(finished.queries, 1);
    assert!(finished.up > 0 && finished.down > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_user_logs_in_and_the_database_named_is_used_when_allowed() {
    let db = server();
    db.create_ed25519_user("edwards", "e-secret", "reports")
        .unwrap();
    let mut up = upstream(db.port(), "edwards", "e-secret");
    up.credentials.as_mut().unwrap().database = Some("reports".into());
    up.databases = vec!["app".into()];
    db.sql("GRANT ALL ON app.* TO 'edwards'@'%'; GRANT ALL ON app.* TO 'edwards'@'localhost'; GRANT ALL ON app.* TO 'edwards'@'127.0.0.1'").unwrap();
    let gateway = Gateway::start(up).await;

    let out = gateway
        .sql("SELECT DATABASE(), SUBSTRING_INDEX(USER(), '@', 1)")
        .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "reports\tedwards\n",
        "the stored database"
    );

    let mut named = gateway.client(&["app"]);
    named.arg("-e").arg("SELECT DATABASE()");
    let out = bounded(named).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "app\n",
        "an allowed database the client names"
    );

    let mut other = gateway.client(&["mysql"]);
    other.arg("-e").arg("SELECT 1");
    let out = bounded(other).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ERROR 1044 (42000)")
            && stderr.contains("resource \"shop\" does not allow database \"mysql\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_result_and_a_17_mb_statement_pass_intact() {
    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let out = gateway
        .sql("SELECT REPEAT('x', 50 * 1024 * 1024); SELECT 'after'")
        .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = out.stdout;
    let expected_len = 50 * 1024 * 1024 + 1 + "after\n".len();
    assert_eq!(stdout.len(), expected_len);
    assert!(stdout[..50 * 1024 * 1024].iter().all(|&b| b == b'x'));
    assert!(stdout.ends_with(b"\nafter\n"));

    // A statement of more than one 16 MiB packet, sent through stdin.
    let literal = "y".repeat(17 * 1024 * 1024);
    let statement = format!("SELECT LENGTH('{literal}') AS n, 'tail-marker'");
    let mut command = gateway.client(&[]);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(statement.as_bytes()).await.unwrap();
        stdin.write_all(b";\n").await.unwrap();
    });
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\ttail-marker\n", 17 * 1024 * 1024)
    );
    let lines = gateway.lines.all();
    let last = lines.last().unwrap();
    assert!(last.starts_with("SELECT LENGTH('yyy"), "{}", &last[..40]);
    assert!(
        last.ends_with("') AS n, 'tail-marker'"),
        "the end of a long statement is kept"
    );
    assert!(last.contains("bytes not recorded]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_at_once_each_get_their_own_answer() {
    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut runs = Vec::new();
    for i in 1..=8u64 {
        let mut command = gateway.client(&[]);
        command.arg("-e").arg(format!(
            "SELECT {i}, SUM(seq) FROM seq_1_to_{}",
            100_000 * i
        ));
        runs.push(tokio::spawn(bounded(command)));
    }
    for (i, run) in (1..=8u64).zip(runs) {
        let out = run.await.unwrap();
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        let n = 100_000 * i;
        assert_eq!(text(&out.stdout), format!("{i}\t{}\n", n * (n + 1) / 2));
    }
    assert_eq!(gateway.lines.all().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_run_and_are_audited() {
    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let out = gateway
        .sql("PREPARE s FROM 'SELECT ? * 2'; SET @a = 21; EXECUTE s USING @a; DEALLOCATE PREPARE s")
        .await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
    assert_eq!(
        gateway.lines.all(),
        [
            "PREPARE s FROM 'SELECT ? * 2'",
            "SET @a = 21",
            "EXECUTE s USING @a",
            "DEALLOCATE PREPARE s"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_mysql_async_driver_queries_and_prepares_through_the_gateway() {
    use mysql_async::prelude::Queryable;

    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    // Any user, no password: the gateway logs in with the stored credentials.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(gateway.port)
        .user(Some("rust-job"))
        .db_name(Some("app"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    // A parameter makes the driver prepare the statement (binary protocol).
    let sum: Option<i64> = conn
        .exec_first("SELECT CAST(SUM(n) AS SIGNED) FROM t WHERE n >= ?", (2,))
        .await
        .unwrap();
    assert_eq!(sum, Some(5));
    let rows: Vec<(i64, String)> = conn
        .query("SELECT seq, REPEAT('x', seq % 50) FROM seq_1_to_5000")
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    assert!(rows.iter().all(|(n, s)| s.len() as i64 == n % 50));
    conn.disconnect().await.unwrap();
    let lines = gateway.lines.all();
    assert!(
        lines.contains(&"SELECT CAST(SUM(n) AS SIGNED) FROM t WHERE n >= ?".to_string()),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_from_a_second_connection_through_the_tunnel_works() {
    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut sleeper = gateway.client(&[]);
    sleeper.arg("-e").arg("SELECT SLEEP(600) AS slept");
    let sleeping = tokio::spawn(bounded(sleeper));
    // Bounded wait until the statement runs upstream.
    let mut id = String::new();
    for _ in 0..300 {
        id = db
            .sql("SELECT id FROM information_schema.processlist WHERE info = 'SELECT SLEEP(600) AS slept'")
            .unwrap()
            .trim()
            .to_owned();
        if !id.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!id.is_empty(), "the sleep never started");
    let out = gateway.sql(&format!("KILL QUERY {id}")).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let out = sleeping.await.unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ERROR 1317 (70100) at line 1: Query execution was interrupted"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile_is_refused() {
    let db = server();
    let gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "1\n2\n").unwrap();
    let mut command = gateway.client(&["--local-infile=1"]);
    command.arg("-e").arg(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t",
        file.path().display()
    ));
    let out = bounded(command).await;
    assert!(!out.status.success(), "stdout: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("ERROR"), "{}", text(&out.stderr));
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.t").unwrap(), "0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_stored_password_is_told_naming_the_resource_and_the_next_connection_works() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "wrong")).await;
    let out = gateway.sql("SELECT 1").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ERROR 1045 (28000)")
            && stderr.contains(
                "resource \"shop\" refused the gateway's login with the stored credentials"
            )
            && stderr.contains("Access denied for user 'native'"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong"), "the password is never shown");
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::UpstreamRefused);

    *gateway.upstream.lock().unwrap() = upstream(db.port(), "native", "n-secret");
    let out = gateway.sql("SELECT 'fixed'").await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fixed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_told_naming_the_resource() {
    let port = sdm_testkit::free_port();
    let mut gateway = Gateway::start(upstream(port, "native", "n-secret")).await;
    let out = gateway.sql("SELECT 1").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ERROR 1429 (HY000)")
            && stderr.contains(&format!(
                "cannot connect to resource \"shop\" at 127.0.0.1:{port}"
            )),
        "{stderr}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::UpstreamRefused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_audit_cannot_record_does_not_run() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    gateway.lines.1.store(true, Ordering::SeqCst);
    let out = gateway.sql("INSERT INTO t VALUES (1)").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("resource \"shop\"") && stderr.contains("the disk is full"),
        "{stderr}"
    );
    assert_eq!(db.sql("SELECT COUNT(*) FROM app.t").unwrap(), "0\n");
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::GatewayUnreachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_mid_query_ends_the_connection_with_the_reason() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut sleeper = gateway.client(&[]);
    sleeper.arg("-e").arg("SELECT SLEEP(600) AS revoked");
    let sleeping = tokio::spawn(bounded(sleeper));
    for _ in 0..300 {
        let running = db
            .sql("SELECT COUNT(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(600) AS revoked'")
            .unwrap();
        if running.trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
        .stop
        .send(Some(Denied {
            kind: ErrorKind::Forbidden,
            message: "the grant was removed".into(),
        }))
        .unwrap();
    let out = sleeping.await.unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ERROR 1927 (70100)")
            && stderr.contains("access to resource \"shop\" was revoked: the grant was removed"),
        "{stderr}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::Forbidden);
}

/// Logs in by hand (no command-line client sends `COM_CHANGE_USER` or garbage): the greeting,
/// a response with any user and no password, the OK.
async fn hand_login(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (seq, greeting) = packet::read(&mut s).await.unwrap();
    assert_eq!(seq, 0);
    let greeting = Greeting::parse(&greeting).unwrap();
    assert_eq!(greeting.plugin, "mysql_native_password");
    let caps = handshake::PROTOCOL_41 | handshake::SECURE_CONNECTION | handshake::PLUGIN_AUTH;
    let mut response = caps.to_le_bytes().to_vec();
    response.extend_from_slice(&(1u32 << 24).to_le_bytes());
    response.push(45);
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(b"anyone\0\0mysql_native_password\0");
    packet::write(&mut s, 1, &response).await.unwrap();
    let (seq, ok) = packet::read(&mut s).await.unwrap();
    assert_eq!((seq, ok[0]), (2, packet::OK), "{}", packet::error_text(&ok));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_is_refused_with_an_error_and_never_reaches_the_server() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut s = hand_login(gateway.port).await;
    packet::write(&mut s, 0, b"\x11root\0\0app\0")
        .await
        .unwrap();
    let (seq, err) = packet::read(&mut s).await.unwrap();
    assert_eq!(seq, 1);
    let why = packet::error_text(&err);
    assert!(
        why.contains("resource \"shop\"")
            && why.contains("COM_CHANGE_USER is refused")
            && why.ends_with("(error 1227)"),
        "{why}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::Forbidden);
    // The gateway goes on serving.
    let out = gateway.sql("SELECT 'still here'").await;
    assert_eq!(text(&out.stdout), "still here\n", "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_client_gets_an_error_and_the_gateway_keeps_serving() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut s = TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    packet::read(&mut s).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, err) = packet::read(&mut s).await.unwrap();
    let why = packet::error_text(&err);
    assert!(
        why.contains("resource \"shop\": invalid login from the client"),
        "{why}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::InvalidArgument);
    let out = gateway.sql("SELECT 'still here'").await;
    assert_eq!(text(&out.stdout), "still here\n", "{}", text(&out.stderr));
}

/// A CA and a server certificate it signs for 127.0.0.1: (CA PEM, chain PEM, key PEM).
fn tls_material() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_require_and_verify_full_encrypt_and_a_wrong_ca_is_refused() {
    use sdm_proto::api::{TlsMode, UpstreamTls};
    let (ca, chain, key) = tls_material();
    let db = MariaDb::start_with_tls(&chain, &key).unwrap();
    db.create_native_user("native", "n-secret", "app").unwrap();
    let cipher = "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS \
                  WHERE VARIABLE_NAME = 'Ssl_cipher'";

    for tls in [
        UpstreamTls {
            mode: TlsMode::Require,
            ca_pem: None,
        },
        UpstreamTls {
            mode: TlsMode::VerifyFull,
            ca_pem: Some(ca.clone()),
        },
    ] {
        let mut up = upstream(db.port(), "native", "n-secret");
        up.upstream_tls = tls.clone();
        let gateway = Gateway::start(up).await;
        let out = gateway.sql(cipher).await;
        assert!(out.status.success(), "{tls:?}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "1\n",
            "{tls:?}: the gateway's login is encrypted"
        );
    }

    // Another CA: refused before the password is sent, naming the resource.
    let (other_ca, _, _) = tls_material();
    let mut up = upstream(db.port(), "native", "n-secret");
    up.upstream_tls = UpstreamTls {
        mode: TlsMode::VerifyFull,
        ca_pem: Some(other_ca),
    };
    let mut gateway = Gateway::start(up).await;
    let out = gateway.sql("SELECT 1").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("resource \"shop\"") && stderr.contains("TLS handshake failed"),
        "{stderr}"
    );
    let (kind, _) = gateway.next_finished().await.failure.unwrap();
    assert_eq!(kind, ErrorKind::UpstreamRefused);

    // A server without TLS, for a resource that requires it: refused.
    let plain = server();
    let mut up = upstream(plain.port(), "native", "n-secret");
    up.upstream_tls = UpstreamTls {
        mode: TlsMode::Require,
        ca_pem: None,
    };
    let gateway = Gateway::start(up).await;
    let out = gateway.sql("SELECT 1").await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the server does not offer TLS, but the resource requires it"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_protocol_prepare_is_audited_and_quit_ends_cleanly() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut s = hand_login(gateway.port).await;
    // COM_STMT_PREPARE, as drivers with server-side prepared statements send it.
    packet::write(&mut s, 0, b"\x16SELECT ? + 1 AS next")
        .await
        .unwrap();
    let (seq, prepared) = packet::read(&mut s).await.unwrap();
    assert_eq!(
        (seq, prepared[0]),
        (1, packet::OK),
        "{}",
        packet::error_text(&prepared)
    );
    // One parameter and one column definition follow (each ended by an EOF packet).
    for _ in 0..4 {
        packet::read(&mut s).await.unwrap();
    }
    packet::write(&mut s, 0, b"\x01").await.unwrap(); // COM_QUIT
    let finished = gateway.next_finished().await;
    assert_eq!(finished.failure, None);
    assert_eq!(gateway.lines.all(), ["SELECT ? + 1 AS next"]);
}

/// A job's Python code with PyMySQL (Debian's python3-pymysql), on the gateway's port.
const PYMYSQL_JOB: &str = r#"
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="job", password="",
                       database="app", connect_timeout=30, read_timeout=120)
with conn.cursor() as cur:
    cur.executemany("INSERT INTO t (n) VALUES (%s)", [(1,), (2,), (3,)])
    conn.commit()
    cur.execute("SELECT SUM(n), COUNT(*) FROM t WHERE n > %s", (0,))
    print(*cur.fetchone())
    cur.execute("SELECT seq, REPEAT('z', 1000) FROM seq_1_to_20000")
    rows = cur.fetchall()
    print(len(rows), sum(r[0] for r in rows), all(len(r[1]) == 1000 for r in rows))
conn.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_runs_parameterised_statements_and_they_are_audited() {
    let db = server();
    let mut gateway = Gateway::start(upstream(db.port(), "native", "n-secret")).await;
    let mut job = tokio::process::Command::new("/usr/bin/python3");
    job.args(["-c", PYMYSQL_JOB])
        .arg(gateway.port.to_string())
        .kill_on_drop(true);
    let out = bounded(job).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "6 3\n20000 200010000 True\n");
    let lines = gateway.lines.all();
    assert!(
        lines.contains(&"INSERT INTO t (n) VALUES (1),(2),(3)".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"SELECT SUM(n), COUNT(*) FROM t WHERE n > 0".to_owned()));
    assert_eq!(gateway.next_finished().await.failure, None);
}
