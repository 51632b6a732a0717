//! Test support: a real sdm-server in-process, the built `sdm` binary run with its own
//! `SDM_HOME`, and agents killed when a test ends, pass or fail.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sdm_core::ResourceKind;
use sdm_core::admin::{AdminClient, Credentials, NewResource, ResourceDetails, SshSettings};
use sdm_server::{RunningServer, Server, ServerBuilder};
use sdm_testkit::PgCluster;

/// The `sdm` binary under test.
pub const SDM: &str = env!("CARGO_BIN_EXE_sdm");
/// Bound on one `sdm` invocation.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for a process to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A server of its own per test, on 127.0.0.1:0, with a runtime to drive it.
pub struct Fixture {
    server: Option<RunningServer>,
    pub admin: AdminClient,
    pub admin_token: String,
    pub api_url: String,
    pub dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub fn start() -> Fixture {
        Fixture::start_with(|b| b)
    }

    /// A server whose builder `configure` adjusts (short leases, …).
    pub fn start_with(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::Builder::new().prefix("sdmcli").tempdir().unwrap();
        let server = rt
            .block_on(
                configure(
                    Server::builder()
                        .data_dir(dir.path().join("data"))
                        .listen("127.0.0.1:0".parse().unwrap())
                        .gateway_listen("127.0.0.1:0".parse().unwrap()),
                )
                .start(),
            )
            .unwrap();
        let admin_token = server.admin_token().unwrap().to_owned();
        let admin = AdminClient::new(&admin_token).unwrap();
        Fixture {
            api_url: server.api_url().to_owned(),
            server: Some(server),
            admin,
            admin_token,
            dir,
            rt,
        }
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A new service account; its token.
    pub fn service_account(&self, name: &str) -> String {
        self.block_on(self.admin.create_service_account(name))
            .unwrap()
            .token
    }

    pub fn grant(&self, account: &str, resource: &str) {
        self.block_on(self.admin.grant(account, resource)).unwrap();
    }

    pub fn resource(
        &self,
        name: &str,
        kind: ResourceKind,
        port: u16,
        port_override: Option<u16>,
    ) -> ResourceDetails {
        let ssh = kind == ResourceKind::Ssh;
        let mut r = NewResource::new(name, kind, "127.0.0.1").port(port);
        if ssh {
            // The gateway logs in with sdm's SSH CA (these tests reach sshd through the tunnel).
            r = r.ssh(SshSettings {
                username: "sdm".into(),
                certificate_authority: true,
                ..SshSettings::default()
            });
        }
        if let Some(p) = port_override {
            r = r.port_override(p);
        }
        self.block_on(self.admin.create_resource(&r)).unwrap()
    }

    /// Each connection to `resource` in the audit trail (newest first): its record id and its
    /// lines (statements, or an SSH connection's channel lines).
    pub fn audit_by_connection(&self, resource: &str) -> Vec<(String, Vec<String>)> {
        let filter = sdm_core::admin::AuditFilter::default().resource(resource);
        let records = self.block_on(self.admin.audit(&filter)).unwrap();
        records
            .records
            .iter()
            .map(|record| {
                let id = record.id.to_string();
                let queries = self.block_on(self.admin.audit_queries(&id, 0)).unwrap();
                (id, queries.queries.into_iter().map(|q| q.text).collect())
            })
            .collect()
    }

    /// The lines of every connection to `resource` in the audit trail.
    pub fn audit_lines(&self, resource: &str) -> Vec<String> {
        self.audit_by_connection(resource)
            .into_iter()
            .flat_map(|(_, lines)| lines)
            .collect()
    }

    /// A real sshd that trusts this installation's SSH CA (as `sdm admin ssh-ca public-key`
    /// prints it), and nothing else.
    pub fn sshd_trusting_the_ca(&self) -> sdm_testkit::Sshd {
        let ca = self
            .sdm()
            .run_env(
                &["admin", "ssh-ca", "public-key"],
                &[("SDM_ADMIN_TOKEN", self.admin_token.as_str())],
            )
            .ok()
            .trim()
            .to_owned();
        sdm_testkit::Sshd::start(&sdm_testkit::SshdConfig {
            trusted_user_ca_keys: vec![ca],
            ..Default::default()
        })
        .unwrap()
    }

    /// A service account granted `resources`; its token.
    pub fn account_with(&self, name: &str, resources: &[&str]) -> String {
        let token = self.service_account(name);
        for r in resources {
            self.grant(name, r);
        }
        token
    }

    /// An `sdm` runner with its own, new `SDM_HOME`.
    pub fn sdm(&self) -> Sdm {
        Sdm::new(&self.dir.path().join(format!("home{}", next_id())))
    }

    /// Stops the server (for "API unreachable" tests).
    pub fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _guard = self.rt.enter();
            drop(server);
        }
    }
}

fn next_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The shared PostgreSQL cluster of this test process.
pub fn pg() -> &'static PgCluster {
    PgCluster::shared()
        .expect("these tests need PostgreSQL's initdb/pg_ctl (scripts/install-deps.sh)")
}

/// What one `sdm` invocation did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success; {self:#?}");
        &self.stdout
    }

    /// Asserts the exit code and that stderr is exactly one line; returns that line.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "wrong exit code; {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr; {self:#?}");
        assert!(lines[0].starts_with("sdm: "), "{self:#?}");
        lines[0]
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs the `sdm` binary with a clean environment (no `SDM_*` from the caller) and its own
/// `SDM_HOME`. Dropping it kills the agent of that home, if one still runs.
pub struct Sdm {
    pub home: PathBuf,
}

impl Sdm {
    pub fn new(home: &Path) -> Sdm {
        Sdm {
            home: home.to_path_buf(),
        }
    }

    /// The command, ready to run: `SDM_HOME` set, nothing else of sdm's inherited.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(SDM);
        c.args(args).env_clear().env("SDM_HOME", &self.home);
        for keep in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(keep) {
                c.env(keep, v);
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[], None)
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_with(args, env, None)
    }

    /// Runs with extra environment variables and optional standard input, within a bound.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
        let mut c = self.command(args);
        c.envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        output_within(c, stdin, COMMAND_TIMEOUT)
    }

    /// `sdm login` with this service token in `SDM_SERVICE_TOKEN`; asserts success.
    #[track_caller]
    pub fn login(&self, token: &str) -> Out {
        let out = self.run_env(&["login"], &[("SDM_SERVICE_TOKEN", token)]);
        out.ok();
        out
    }

    /// The pid in `SDM_HOME/agent.pid`.
    pub fn agent_pid(&self) -> Option<i32> {
        fs::read_to_string(self.home.join("agent.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Kills the agent of this home if it runs: SIGTERM, then SIGKILL.
    pub fn kill_agent(&self) {
        let Some(pid) = self.agent_pid() else {
            return;
        };
        if !is_sdm_agent(pid) {
            return;
        }
        signal(pid, libc::SIGTERM);
        if !wait_exit(pid, EXIT_TIMEOUT) {
            signal(pid, libc::SIGKILL);
            wait_exit(pid, EXIT_TIMEOUT);
        }
    }
}

impl Drop for Sdm {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

fn output_within(mut c: Command, stdin: Option<&str>, timeout: Duration) -> Out {
    let mut child = c.spawn().expect("run sdm");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            signal(i32::try_from(pid).unwrap(), libc::SIGKILL);
            panic!("sdm {:?} did not finish within {timeout:?}", c.get_args());
        }
    };
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn signal(pid: i32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// True while `pid` runs (a zombie has exited).
pub fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn is_sdm_agent(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.iter().any(|a| a.ends_with(b"sdm")) && args.iter().any(|a| *a == b"listen")
        })
        .unwrap_or(false)
}

/// Waits (bounded) until `pid` has exited; true when it has.
pub fn wait_exit(pid: i32, limit: Duration) -> bool {
    eventually(limit, || !is_running(pid))
}

/// Polls `check` with backoff until it holds, for at most `limit`.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Replaces every `{key}` in `template`.
pub fn fill(template: &str, values: &BTreeMap<&str, String>) -> String {
    let mut text = template.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    text
}

/// Reads a golden file of `tests/golden/`.
pub fn golden(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces the values of the keys in `volatile` (ids, times, pids) by `"<key>"`, at any depth.
pub fn redact(value: &mut serde_json::Value, volatile: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if volatile.contains(&k.as_str()) && !v.is_null() {
                    *v = serde_json::Value::String(format!("<{k}>"));
                } else {
                    redact(v, volatile);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                redact(v, volatile);
            }
        }
        _ => {}
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    sdm_testkit::free_port()
}

/// psql through `port` as the cluster's superuser with its password. Returns (exit code,
/// stdout, stderr).
pub fn psql(port: u16, sql: &str) -> (i32, String, String) {
    let pg = pg();
    psql_as(port, pg.superuser(), Some(pg.password()), sql)
}

/// psql through `port` as `user`, with `password` or none (`-w`: never prompt).
pub fn psql_as(port: u16, user: &str, password: Option<&str>, sql: &str) -> (i32, String, String) {
    let out = output_within(
        psql_command("127.0.0.1", port, user, password, sql),
        None,
        COMMAND_TIMEOUT,
    );
    (out.code, out.stdout.trim().to_owned(), out.stderr)
}

/// psql through `port` as the database user `user`, without a password, run by another OS
/// user of this host (the tests run as root), with libpq's default `sslmode=prefer`.
pub fn psql_as_os_user(
    os_user: &sdm_testkit::OsUser,
    port: u16,
    user: &str,
    sql: &str,
) -> (i32, String, String) {
    psql_on_as_os_user(os_user, "127.0.0.1", port, user, sql)
}

/// psql to `host` (an address, or a Unix socket's directory) and `port`, as the database user
/// `user` without a password, run by this OS user.
pub fn psql_on(host: &str, port: u16, user: &str, sql: &str) -> (i32, String, String) {
    let out = output_within(
        psql_command(host, port, user, None, sql),
        None,
        COMMAND_TIMEOUT,
    );
    (out.code, out.stdout.trim().to_owned(), out.stderr)
}

/// [`psql_on`] run by another OS user of this host (the tests run as root).
pub fn psql_on_as_os_user(
    os_user: &sdm_testkit::OsUser,
    host: &str,
    port: u16,
    user: &str,
    sql: &str,
) -> (i32, String, String) {
    let mut c = psql_command(host, port, user, None, sql);
    c.uid(os_user.uid)
        .gid(os_user.gid)
        .current_dir("/")
        .env("HOME", "/")
        .env("PGSSLMODE", "prefer");
    let out = output_within(c, None, COMMAND_TIMEOUT);
    (out.code, out.stdout.trim().to_owned(), out.stderr)
}

fn psql_command(host: &str, port: u16, user: &str, password: Option<&str>, sql: &str) -> Command {
    let pg = pg();
    let mut c = Command::new(pg.bin("psql"));
    c.args(["-X", "-A", "-t", "-w", "-h", host, "-p"])
        .arg(port.to_string())
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "20")
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c
}

/// A datasource on the shared PostgreSQL cluster with its credentials stored, so that clients
/// log in with any user name and no password.
pub fn pg_resource(fx: &Fixture, name: &str, port_override: Option<u16>) {
    let pg = pg();
    let mut r = NewResource::new(name, ResourceKind::Postgres, "127.0.0.1")
        .port(pg.port())
        .credentials(Credentials {
            username: pg.superuser().to_owned(),
            password: pg.password().to_owned(),
            database: Some("postgres".to_owned()),
        });
    if let Some(p) = port_override {
        r = r.port_override(p);
    }
    fx.block_on(fx.admin.create_resource(&r)).unwrap();
}
