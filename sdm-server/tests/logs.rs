//! The logs an operator ships: `--log-format json` writes one JSON object per event and line,
//! and neither format holds a secret even at trace level. A control plane and a standalone
//! gateway run as processes with `--log trace`; a job logs in, opens a tunnel and queries a real
//! PostgreSQL whose password only the gateway holds; a wrong token is tried. Then every line
//! both processes wrote is searched for the tokens (whole, and their 32-byte secrets in the
//! encodings a log could hold) and the database password.
//!
//! docs/OPERATIONS.md ("Logs") names these tests.

mod common;
mod processes;
mod support;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sdm_core::Session;
use sdm_proto::Token;
use sdm_testkit::{HbaAuth, PgCluster, PgConfig};

use processes::control_plane_with;
use support::{app_cluster, app_db_resource, pg_connect};

const PASSWORD: &str = "Pw-logs-51be-never-logged";

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_event_per_line_and_hold_no_secret_at_trace_level() {
    let Some(lines) = a_job_runs_with_logs("json").await else {
        return;
    };
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(event[key].is_string(), "no {key} in {line}");
        }
    }
    // Events of every kind made it: start-up, the job's lease and its query's audit at trace.
    let all = lines.join("\n");
    assert!(
        all.contains(r#""message":"sdm-server is running""#),
        "{all}"
    );
    assert!(all.contains(r#""level":"TRACE""#), "no trace events");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_hold_no_secret_at_trace_level() {
    let Some(lines) = a_job_runs_with_logs("text").await else {
        return;
    };
    let all = lines.join("\n");
    assert!(all.contains("sdm-server is running"), "{all}");
    assert!(all.contains("TRACE"), "no trace events");
}

/// Runs the job against processes logging in `format` at trace level; checks that no secret is
/// in their logs and returns the lines (None without PostgreSQL).
async fn a_job_runs_with_logs(format: &str) -> Option<Vec<String>> {
    if !PgCluster::available() {
        eprintln!("note: PostgreSQL is not installed; skipping");
        return None;
    }
    let pg = app_cluster(PgConfig::default().auth(HbaAuth::Scram), PASSWORD, &[]).await;
    let logging = ["--log", "trace", "--log-format", format];
    let mut cp = control_plane_with(&logging).await;
    let gw_token = cp.gateway_token("gw-logs", &[("dc", "db")]).await;
    let mut gw_args = logging.to_vec();
    gw_args.extend_from_slice(&["--control-plane", cp.url.as_str()]);
    let mut gw = processes::gateway("gw-logs", &gw_token, &gw_args);
    cp.admin
        .create_resource(&app_db_resource("app-db", &pg, PASSWORD, Some("dc=db")))
        .await
        .unwrap();
    let (job_token, session) = cp.session("etl", &["app-db"]).await;
    let tunnel = session.connect("app-db").await.unwrap();
    let (client, connection) = pg_connect(&tunnel).await.unwrap();
    let row = client.query_one("select 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(client);
    let _ = connection.await;
    tunnel.close();
    session.logout().await.unwrap();
    // A wrong secret for the job's token id: a failed check is logged, not the token.
    let wrong = with_another_secret(&job_token);
    assert!(Session::login(&wrong).await.is_err());

    let mut lines: Vec<String> = Vec::new();
    for proc in [&mut cp.proc, &mut gw.proc] {
        lines.extend(proc.stderr_so_far().lines().map(str::to_owned));
    }
    let all = lines.join("\n");
    for (what, token) in [
        ("the admin token", cp.admin_token.as_str()),
        ("the gateway token", gw_token.as_str()),
        ("the job's token", job_token.as_str()),
        ("the wrong token", wrong.as_str()),
    ] {
        for (encoding, shown) in secret_forms(token) {
            assert!(
                !all.contains(&shown),
                "{what} ({encoding}) is in the {format} log"
            );
        }
    }
    assert!(
        !all.contains(PASSWORD),
        "the database password is in the {format} log"
    );
    Some(lines)
}

/// The whole token, and its secret as hex, base64 and base64url.
fn secret_forms(token: &str) -> Vec<(&'static str, String)> {
    let secret = Token::parse(token).unwrap().secret;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("whole", token.to_owned()),
        ("secret in hex", hex),
        ("secret in base64", STANDARD.encode(secret)),
        ("secret in base64url", URL_SAFE_NO_PAD.encode(secret)),
    ]
}

/// The same token id with another secret, so the server gets as far as looking the id up.
fn with_another_secret(token: &str) -> String {
    let mut wrong = Token::parse(token).unwrap();
    for b in &mut wrong.secret {
        *b ^= 0x5a;
    }
    wrong.encode()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_start_says_why_in_its_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let mut proc = processes::spawn(
        "control plane",
        &[
            "--log-format",
            "json",
            "serve",
            "--data-dir",
            not_a_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (code, stderr) = proc.wait_exit();
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    let event: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {stderr}"));
    assert_eq!(event["level"], "ERROR", "{last}");
    assert_eq!(event["message"], "sdm-server stopped", "{last}");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains(not_a_dir.to_str().unwrap()),
        "the error does not name the data dir: {last}"
    );
}
