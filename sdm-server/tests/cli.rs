//! The `sdm-server` binary: first start, restart, signals, exit codes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sdm_proto::api::routes;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

fn spawn(args: &[&str]) -> Running {
    spawn_with_key(args, None)
}

fn spawn_with_key(args: &[&str], secret_key: Option<&str>) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdm-server"));
    command.env_remove("RUST_LOG").env_remove("SDM_SECRET_KEY");
    if let Some(key) = secret_key {
        command.env("SDM_SECRET_KEY", key);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        stderr: rx,
        stderr_seen: Vec::new(),
    }
}

impl Running {
    /// Reads stderr until a line contains `needle`; returns that line.
    fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?}; saw:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit; returns the exit code, stdout, and all of stderr.
    fn wait(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sdm-server did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_seen.push(line);
        }
        (
            status.code().unwrap_or(-1),
            stdout,
            self.stderr_seen.join("\n"),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_args<'a>(data: &'a str, token_file: &'a str) -> Vec<&'a str> {
    vec![
        "serve",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file,
    ]
}

/// `https://127.0.0.1:PORT` from the "running" log line.
fn api_addr(line: &str) -> std::net::SocketAddr {
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api_url=https://"))
        .unwrap_or_else(|| panic!("no api_url in {line:?}"));
    url.parse().unwrap()
}

async fn health(data_dir: &Path, addr: std::net::SocketAddr) {
    common::Client::new(data_dir, addr)
        .get(routes::HEALTH, None)
        .await
        .expect_ok::<serde_json::Value>();
}

#[tokio::test]
async fn first_start_prints_the_token_once_and_signals_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("admin.token");
    let (d, f) = (data.to_str().unwrap(), token_file.to_str().unwrap());

    let mut first = spawn(&serve_args(d, f));
    let running = first.wait_for_stderr("sdm-server is running");
    first.wait_for_stderr("will not be shown again");
    first.wait_for_stderr("wrote the admin token");
    health(&data, api_addr(&running)).await;
    let file_token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().mode() & 0o777,
        0o600
    );
    first.signal(libc::SIGTERM);
    let (code, stdout, stderr) = first.wait();
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stderr.contains("sdm-server stopped"), "stderr: {stderr}");
    let token = stdout.trim();
    assert!(token.starts_with("sdm_adm_"), "stdout: {stdout:?}");
    assert_eq!(stdout.lines().count(), 1, "stdout holds only the token");
    assert_eq!(file_token, format!("{token}\n"));
    assert!(!stderr.contains(token), "the token is never logged");

    // A restart with the same command line: the file may exist now; no new token.
    let mut second = spawn(&serve_args(d, f));
    let running = second.wait_for_stderr("sdm-server is running");
    let addr = api_addr(&running);
    health(&data, addr).await;
    let accounts = common::Client::new(&data, addr)
        .get(routes::ADMIN_ACCOUNTS, Some(token))
        .await;
    assert_eq!(accounts.status, 200, "{}", accounts.text());
    second.signal(libc::SIGINT);
    let (code, stdout, _) = second.wait();
    assert_eq!(code, 0);
    assert_eq!(stdout, "", "the token is shown only once");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["serve"],
        vec!["serve", "--data-dir", "/tmp/x", "--lease-ttl", "2d"],
        vec!["serve", "--data-dir", "/tmp/x", "--listen", "nowhere"],
        vec!["frobnicate"],
    ] {
        let (code, _, _) = spawn(&args).wait();
        assert_eq!(code, 2, "{args:?}");
    }
    let (code, stdout, _) = spawn(&["--help"]).wait();
    assert_eq!(code, 0);
    assert!(stdout.contains("serve"));
}

#[test]
fn runtime_failures_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("taken");
    std::fs::write(&token_file, "old").unwrap();
    let mut run = spawn(&serve_args(
        data.to_str().unwrap(),
        token_file.to_str().unwrap(),
    ));
    let line = run.wait_for_stderr("sdm-server: error:");
    assert!(line.contains("already exists"), "{line}");
    let (code, _, _) = run.wait();
    assert_eq!(code, 1);
    assert!(!data.exists(), "nothing was created");

    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let mut run = spawn(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &port,
        "--gateway-listen",
        "127.0.0.1:0",
    ]);
    let line = run.wait_for_stderr("sdm-server: error:");
    assert!(line.contains("cannot listen for the API"), "{line}");
    let (code, _, _) = run.wait();
    assert_eq!(code, 1);

    // A token file that cannot be written with --admin-token-file-only: the only admin token
    // is printed rather than lost, the error says so, and the server stops.
    let fresh = dir.path().join("fresh");
    let unwritable = dir.path().join("no-such-dir/admin.token");
    let mut args = serve_args(fresh.to_str().unwrap(), unwritable.to_str().unwrap());
    args.push("--admin-token-file-only");
    let mut run = spawn(&args);
    let line = run.wait_for_stderr("sdm-server: error:");
    assert!(
        line.contains("cannot write the admin token") && line.contains("printed on stdout"),
        "{line}"
    );
    let (code, stdout, _) = run.wait();
    assert_eq!(code, 1);
    assert!(stdout.trim().starts_with("sdm_adm_"), "{stdout:?}");
}

#[test]
fn the_secret_key_can_come_from_the_environment_and_must_not_change() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ];
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut first = spawn_with_key(&args, Some(&key));
    first.wait_for_stderr("sdm-server is running");
    first.signal(libc::SIGTERM);
    let (code, _, stderr) = first.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !data.join("secret.key").exists(),
        "the key came from SDM_SECRET_KEY"
    );

    let other = base64::engine::general_purpose::STANDARD.encode([8u8; 32]);
    let mut wrong = spawn_with_key(&args, Some(&other));
    let line = wrong.wait_for_stderr("sdm-server: error:");
    assert!(line.contains("does not match this database"), "{line}");
    assert_eq!(wrong.wait().0, 1);

    let mut missing = spawn(&args);
    let line = missing.wait_for_stderr("sdm-server: error:");
    assert!(line.contains("secret.key is missing"), "{line}");
    assert_eq!(missing.wait().0, 1);

    let mut malformed = spawn_with_key(&args, Some("short"));
    let line = malformed.wait_for_stderr("sdm-server: error:");
    assert!(line.contains("SDM_SECRET_KEY"), "{line}");
    assert_eq!(malformed.wait().0, 1);
}

/// Documentation cannot drift from the binary: every flag `--help` lists is named in the README.
#[test]
fn every_flag_the_binary_takes_is_in_its_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flags = sdm_testkit::help::flags(Path::new(env!("CARGO_BIN_EXE_sdm-server"))).unwrap();
    assert!(flags.len() > 20, "{flags:?}");
    let missing: Vec<String> = flags
        .iter()
        .filter(|f| !readme.contains(&f.flag))
        .map(|f| format!("sdm-server {} {}", f.command, f.flag))
        .collect();
    assert!(
        missing.is_empty(),
        "sdm-server/README.md does not name: {missing:#?}"
    );
}
