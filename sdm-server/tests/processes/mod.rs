//! `sdm-server` child processes for the tests that run the control plane and gateways as
//! separate processes, as an operator does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sdm_core::admin::{AdminClient, AuditFilter, NewResource};
use sdm_core::{ResourceKind, Session};
use sdm_proto::api::{LeaseRequest, LoginRequest, LoginResponse, ResourceList};
use sdm_testkit::EchoServer;

/// Bound on a process reaching a state it logs.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child `sdm-server` process; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The audit spool of a gateway given none, removed with the process.
    _spool: Option<tempfile::TempDir>,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `sdm-server ARGS` with `env`. A gateway given no `--audit-spool` spools in a
/// directory of its own (not the user's state directory), removed with the process.
pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdm-server"));
    command
        .env_remove("RUST_LOG")
        .env_remove("SDM_SECRET_KEY")
        .env_remove("SDM_DATABASE_URL")
        .env_remove("SDM_AUDIT_SPOOL")
        .env_remove("SDM_GATEWAY_TOKEN");
    let spool = (args.first() == Some(&"gateway")
        && !args.contains(&"--audit-spool")
        && !env.iter().any(|(k, _)| *k == "SDM_AUDIT_SPOOL"))
    .then(|| tempfile::tempdir().unwrap());
    if let Some(dir) = &spool {
        command.env("SDM_AUDIT_SPOOL", dir.path().join("spool"));
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    Proc {
        name: name.to_owned(),
        child,
        stdout,
        stderr,
        seen: Vec::new(),
        _spool: spool,
    }
}

impl Proc {
    /// Reads stderr until a line contains `needle`; returns that line.
    pub fn wait_for(&mut self, needle: &str) -> String {
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.stderr.recv_timeout(left) {
                    Ok(line) => {
                        self.seen.push(line.clone());
                        if line.contains(needle) {
                            return line;
                        }
                    }
                    Err(_) => panic!(
                        "{}: no stderr line with {needle:?}; saw:\n{}",
                        self.name,
                        self.seen.join("\n")
                    ),
                }
            }
        })
    }

    pub fn first_stdout_line(&mut self) -> String {
        tokio::task::block_in_place(|| {
            self.stdout
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{}: nothing on stdout", self.name))
        })
    }

    /// The stdout lines not read yet.
    pub fn stdout_so_far(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.stdout.try_recv().ok()).collect()
    }

    /// Everything written to stderr so far.
    pub fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit (bounded); returns the exit code (-1 for a signal) and all of stderr.
    pub fn wait_exit(&mut self) -> (i32, String) {
        let status = tokio::task::block_in_place(|| {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("{} did not exit", self.name);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        tokio::task::block_in_place(|| {
            while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(300)) {
                self.seen.push(line);
            }
        });
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }

    /// Kills it as a crash would, and reaps it (so its sockets are closed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a text log line, or of `key` in a JSON one (`--log-format json`).
pub fn field(line: &str, key: &str) -> String {
    if line.starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        return match &event[key] {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => panic!("no {key} in {line:?}"),
            other => other.to_string(),
        };
    }
    let needle = format!("{key}=");
    let start = line
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        + needle.len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// `sdm-server serve` on SQLite in `data`, its API on `listen`, its gateway on any port.
pub fn spawn_control_plane(data: &std::path::Path, listen: &str) -> Proc {
    spawn_control_plane_with(data, listen, &[])
}

/// [`spawn_control_plane`] with more arguments.
pub fn spawn_control_plane_with(data: &std::path::Path, listen: &str, more: &[&str]) -> Proc {
    let mut args = vec![
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        listen,
        "--gateway-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(more);
    spawn("control plane", &args, &[])
}

/// A control plane process (`serve`) with its embedded gateway, in a temporary data dir.
pub struct ControlPlane {
    pub proc: Proc,
    pub url: String,
    pub api_addr: SocketAddr,
    /// The embedded gateway's address when it first started.
    pub gateway_addr: SocketAddr,
    pub admin_token: String,
    pub admin: AdminClient,
    pub client: crate::common::Client,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
}

pub async fn control_plane() -> ControlPlane {
    control_plane_with(&[]).await
}

/// A control plane process started with more arguments (kept for [`ControlPlane::restart`]).
pub async fn control_plane_with(more: &[&str]) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut proc = spawn_control_plane_with(&data, "127.0.0.1:0", more);
    let admin_token = proc.first_stdout_line();
    let running = proc.wait_for("sdm-server is running");
    let url = field(&running, "api_url");
    let api_addr: SocketAddr = field(&running, "api_addr").parse().unwrap();
    let gateway_addr: SocketAddr = field(&running, "gateway_addr").parse().unwrap();
    let admin = AdminClient::new(&admin_token).unwrap();
    let client = crate::common::Client::new(&data, api_addr);
    ControlPlane {
        proc,
        url,
        api_addr,
        gateway_addr,
        admin_token,
        admin,
        client,
        dir,
        args: more.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// A standalone gateway process.
pub struct Gw {
    pub proc: Proc,
    pub name: String,
    pub addr: SocketAddr,
}

/// Starts `sdm-server gateway` with `token` and `args`, and waits until it registered.
pub fn gateway(name: &str, token: &str, args: &[&str]) -> Gw {
    let mut full = vec!["gateway", "--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    let mut proc = spawn(name, &full, &[("SDM_GATEWAY_TOKEN", token)]);
    let line = proc.wait_for("gateway registered with the control plane");
    Gw {
        proc,
        name: field(&line, "name"),
        addr: field(&line, "address").parse().unwrap(),
    }
}

impl ControlPlane {
    /// Starts it again, after a kill, at the same address on the same data.
    pub fn restart(&mut self) {
        let data = self.dir.path().join("data");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut proc = spawn_control_plane_with(&data, &self.api_addr.to_string(), &args);
        proc.wait_for("sdm-server is running");
        self.proc = proc;
    }

    /// A gateway identity allowing `tags`, and a gateway process using it.
    pub async fn gateway(&self, name: &str, tags: &[(&str, &str)], args: &[&str]) -> Gw {
        let token = self.gateway_token(name, tags).await;
        let mut full = args.to_vec();
        full.extend_from_slice(&["--control-plane", self.url.as_str()]);
        gateway(name, &token, &full)
    }

    pub async fn gateway_token(&self, name: &str, tags: &[(&str, &str)]) -> String {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.admin.create_gateway(name, tags).await.unwrap().token
    }

    /// A service account granted `resources`, logged in through the real client library.
    pub async fn session(&self, account: &str, resources: &[&str]) -> (String, Session) {
        let token = self
            .admin
            .create_service_account(account)
            .await
            .unwrap()
            .token;
        for r in resources {
            self.admin.grant(account, r).await.unwrap();
        }
        let session = Session::login(&token).await.unwrap();
        (token, session)
    }

    /// Stops the control plane as a crash would, replaces its lease-signing key (as an operator
    /// rotating it would: a missing `lease.key` is created anew) and starts it again at the same
    /// address on the same data.
    pub fn restart_with_a_new_lease_key(&mut self) {
        self.proc.kill();
        let data = self.dir.path().join("data");
        std::fs::remove_file(data.join("lease.key")).unwrap();
        let mut proc = spawn_control_plane(&data, &self.api_addr.to_string());
        let running = proc.wait_for("sdm-server is running");
        assert_eq!(field(&running, "api_url"), self.url);
        self.proc = proc;
    }

    /// A TCP resource for an echo server, pinned to gateways by `pin` (if any).
    pub async fn echo_resource(&self, name: &str, echo: &EchoServer, pin: Option<&str>) {
        let mut resource = NewResource::new(name, ResourceKind::Tcp, "127.0.0.1").port(echo.port());
        if let Some(pin) = pin {
            resource = resource.tag("sdm.gateway", pin);
        }
        self.admin.create_resource(&resource).await.unwrap();
    }

    /// Connections through `gateway` that ended well, per the audit trail.
    pub async fn ok_through(&self, resource: &str, gateway: &str, since: i64) -> usize {
        let records = self
            .admin
            .audit(
                &AuditFilter::default()
                    .resource(resource)
                    .since(since)
                    .limit(1000),
            )
            .await
            .unwrap()
            .records;
        records
            .iter()
            .filter(|r| r.gateway == gateway && r.outcome == "ok")
            .count()
    }

    /// A lease for `resource` by raw API calls, as a client would get it.
    pub async fn raw_lease(&self, token: &str, resource: &str) -> crate::common::Reply {
        let login: LoginResponse = self
            .client
            .post("/v1/login", Some(token), &LoginRequest::default())
            .await
            .expect_ok();
        let list: ResourceList = self
            .client
            .get("/v1/resources", Some(token))
            .await
            .expect_ok();
        let id = list
            .resources
            .iter()
            .find(|r| r.name == resource)
            .unwrap()
            .id;
        self.client
            .post(
                "/v1/leases",
                Some(token),
                &LeaseRequest {
                    session_id: login.session_id,
                    resource_id: id,
                },
            )
            .await
    }
}
