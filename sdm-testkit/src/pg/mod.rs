//! Throwaway PostgreSQL clusters, one temp directory each, on a free loopback port.
//!
//! A cluster is the machine's real PostgreSQL (`initdb` + `postgres`), tuned for tests
//! (`fsync = off`, …). Its postmaster is a child of this process and receives SIGINT when the
//! process exits, so a cluster never outlives the tests that started it. As root, the cluster
//! runs as the system user `sdmtest`, created on first use.

mod binaries;
mod config;
pub(crate) mod os_user;
mod postmaster;
mod quote;
pub(crate) mod spawner;
pub(crate) mod workdir;

pub use config::{HbaAuth, PgConfig};

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::{TestkitError, process, try_free_port};
use os_user::RunAs;
use postmaster::{Launch, LaunchError};
use workdir::WorkDir;

/// The only address clusters listen on.
const HOST: &str = "127.0.0.1";
/// Ports tried when another process wins the race for a free port.
const PORT_TRIES: u32 = 5;
/// Bound on waiting for a postmaster to accept connections (all port tries together).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// initdb takes a few seconds; a shared 2-core machine can make that much longer.
const INITDB_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on a fast shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Bound on one psql invocation, setup SQL included.
const PSQL_TIMEOUT: Duration = Duration::from_secs(300);

/// A running PostgreSQL cluster in its own temp directory. Dropping it shuts the server down
/// and removes the directory.
///
/// ```no_run
/// use sdm_testkit::{PgCluster, PgConfig};
/// # fn main() -> Result<(), sdm_testkit::TestkitError> {
/// if !PgCluster::available() {
///     eprintln!("note: PostgreSQL is not installed; skipping");
///     return Ok(());
/// }
/// let pg = PgCluster::start(PgConfig::default().database("app"))?;
/// pg.psql("app", "CREATE TABLE t (id int)")?;
/// let url = pg.url("app"); // postgres://postgres:…@127.0.0.1:PORT/app
/// # let _ = url; Ok(()) }
/// ```
pub struct PgCluster {
    config: PgConfig,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    postmaster: Option<Child>,
    // Last: fields drop in order, and the directory must outlive the server (see Drop).
    work: WorkDir,
}

impl PgCluster {
    /// The directory of the server binaries: `PG_BINDIR`, else `initdb` on `PATH` with
    /// symlinks resolved, else the highest `/usr/lib/postgresql/*/bin`, else
    /// `pg_config --bindir`.
    pub fn bin_dir() -> Option<PathBuf> {
        binaries::bin_dir()
    }

    /// True when [`bin_dir`](Self::bin_dir) holds `initdb` and `postgres`. Tests skip when
    /// this is false.
    pub fn available() -> bool {
        Self::bin_dir().is_some_and(|dir| binaries::is_server_dir(&dir))
    }

    /// Creates and starts a new cluster, waiting (at most 60 s) until it accepts connections.
    ///
    /// Also removes `sdm-pg-*` temp directories left behind by processes that have died.
    pub fn start(config: PgConfig) -> Result<PgCluster, TestkitError> {
        config
            .validate()
            .map_err(|detail| TestkitError::InvalidConfig { detail })?;
        let bin_dir = Self::bin_dir().ok_or_else(|| TestkitError::NotInstalled {
            binary: "initdb".to_string(),
        })?;
        for name in ["initdb", "postgres"] {
            let path = bin_dir.join(name);
            if !path.is_file() {
                return Err(TestkitError::NotInstalled {
                    binary: path.display().to_string(),
                });
            }
        }
        let run_as = os_user::run_as()?;
        workdir::sweep_stale(&std::env::temp_dir());
        let work = WorkDir::create(run_as)?;
        initdb(&bin_dir, &work, &config, run_as)?;
        configure(&work, &config, run_as)?;

        let mut cluster = PgCluster {
            config,
            bin_dir,
            run_as,
            port: 0,
            postmaster: None,
            work,
        };
        // From here on, an early return drops the cluster, which stops it and cleans up.
        cluster.launch_on_free_port()?;
        cluster.finish_setup()?;
        Ok(cluster)
    }

    /// One cluster for the whole test process, default configuration, started on first use.
    ///
    /// It is never dropped: its postmaster shuts down when the process exits (parent-death
    /// signal), and its temp directory is removed by the stale-directory sweep of the next
    /// [`start`](Self::start) on this machine. A failed start is retried by the next call.
    pub fn shared() -> Result<&'static PgCluster, TestkitError> {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        static STARTING: Mutex<()> = Mutex::new(());
        if let Some(cluster) = SHARED.get() {
            return Ok(cluster);
        }
        let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cluster) = SHARED.get() {
            return Ok(cluster);
        }
        let cluster = PgCluster::start(PgConfig::default())?;
        Ok(SHARED.get_or_init(|| cluster))
    }

    /// Fast shutdown (SIGINT, then SIGKILL after 10 s). The data stays, so
    /// [`restart`](Self::restart) brings the same cluster back; the directory is removed on
    /// drop. Does nothing when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            postmaster::shutdown(&mut child, STOP_GRACE);
        }
    }

    /// SIGKILL to the postmaster and its backends, as in a crash. The next
    /// [`restart`](Self::restart) runs crash recovery. Does nothing when already stopped.
    ///
    /// `synchronous_commit` is off, so commits of the last moments may be lost, as after a
    /// real crash; run `CHECKPOINT` (as a statement of its own) first to keep them.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            postmaster::crash(&mut child);
        }
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// is running). Fails with [`TestkitError::PortInUse`] if another process took the port.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch(self.port).run(deadline) {
                Ok(child) => {
                    self.postmaster = Some(child);
                    return Ok(());
                }
                // Backends of a killed postmaster may hold the shared memory a little longer.
                Err(LaunchError::Leftover) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(LaunchError::Leftover) => {
                    return Err(TestkitError::StartTimeout {
                        port: self.port,
                        after: START_TIMEOUT,
                        log: self.log_path(),
                        tail: postmaster::tail(&self.work.log),
                    });
                }
                Err(LaunchError::PortTaken) => {
                    return Err(TestkitError::PortInUse {
                        port: self.port,
                        log: self.log_path(),
                        tail: postmaster::tail(&self.work.log),
                    });
                }
                Err(LaunchError::Fatal(e)) => return Err(e),
            }
        }
    }

    /// `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authentication method of TCP connections.
    pub fn auth(&self) -> HbaAuth {
        self.config.auth
    }

    /// The superuser's name.
    pub fn superuser(&self) -> &str {
        &self.config.superuser
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.config.password
    }

    /// PGDATA.
    pub fn data_dir(&self) -> &Path {
        &self.work.data
    }

    /// The directory of the unix socket (`local` connections are `trust`).
    pub fn socket_dir(&self) -> &Path {
        &self.work.socket
    }

    /// The server log: everything the postmaster writes, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.work.log.clone()
    }

    /// The postmaster's pid, or `None` after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Child::id)
    }

    /// A libpq keyword connection string for `dbname` as the superuser:
    /// `host=127.0.0.1 port=N user=U password=P dbname=D` (values quoted when needed).
    pub fn conn_string(&self, dbname: &str) -> String {
        format!(
            "host={HOST} port={} user={} password={} dbname={}",
            self.port,
            quote::conninfo_value(&self.config.superuser),
            quote::conninfo_value(&self.config.password),
            quote::conninfo_value(dbname),
        )
    }

    /// A `postgres://U:P@127.0.0.1:N/D` URL for `dbname` as the superuser, percent-encoded.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{}:{}@{HOST}:{}/{}",
            quote::url_component(&self.config.superuser),
            quote::url_component(&self.config.password),
            self.port,
            quote::url_component(dbname),
        )
    }

    /// A PostgreSQL program: from the server directory if there, else from `PATH` (Debian's
    /// `psql` and `pgbench` wrappers live in /usr/bin).
    pub fn bin(&self, name: &str) -> PathBuf {
        binaries::program(&self.bin_dir, name)
    }

    /// Runs `sql` with `psql` over TCP as the superuser and returns its trimmed output
    /// (unaligned, tuples only: one row per line, columns separated by `|`).
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, TestkitError> {
        self.psql_as(
            &self.config.superuser,
            Some(&self.config.password),
            dbname,
            sql,
        )
    }

    /// Like [`psql`](Self::psql) but as `user` with `password` (`None`: send none), over TCP
    /// to 127.0.0.1, so pg_hba.conf's method applies. Errors carry psql's standard error.
    pub fn psql_as(
        &self,
        user: &str,
        password: Option<&str>,
        dbname: &str,
        sql: &str,
    ) -> Result<String, TestkitError> {
        self.run_psql(OsStr::new(HOST), user, password, dbname, sql)
    }

    /// psql over the unix socket, where every user is trusted: setup that must work for
    /// every authentication method.
    fn psql_local(&self, dbname: &str, sql: &str) -> Result<String, TestkitError> {
        let socket = self.work.socket.clone();
        self.run_psql(
            socket.as_os_str(),
            &self.config.superuser,
            None,
            dbname,
            sql,
        )
    }

    fn run_psql(
        &self,
        host: &OsStr,
        user: &str,
        password: Option<&str>,
        dbname: &str,
        sql: &str,
    ) -> Result<String, TestkitError> {
        let program = self.bin("psql");
        let mut command = Command::new(&program);
        command
            .args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(host)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only what we pass may decide where psql connects and how it authenticates.
        for var in [
            "PGPASSWORD",
            "PGHOSTADDR",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGTARGETSESSIONATTRS",
            "PGSSLCERT",
            "PGSSLKEY",
            "PGSSLROOTCERT",
        ] {
            command.env_remove(var);
        }
        command
            // A path that does not exist: no ~/.pgpass fallback, and no warning either.
            .env("PGPASSFILE", self.work.root().join("no-pgpass"))
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .env("PGGSSENCMODE", "disable")
            .env("PGCLIENTENCODING", "UTF8")
            .env("PGAPPNAME", "sdm-testkit")
            .env("LC_ALL", "C");
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let child = command
            .spawn()
            .map_err(|e| TestkitError::io(format!("could not run {}", program.display()), e))?;
        let out = process::output_within(child, "psql", PSQL_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(TestkitError::Psql {
                user: user.to_string(),
                database: dbname.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn launch(&self, port: u16) -> Launch<'_> {
        Launch {
            postgres: self.bin_dir.join("postgres"),
            data_dir: &self.work.data,
            work_dir: self.work.root(),
            log: &self.work.log,
            port,
            run_as: self.run_as,
        }
    }

    /// Picks a free port and starts there; another process may grab the port between our
    /// probe and the postmaster's bind, so a few ports are tried.
    fn launch_on_free_port(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + START_TIMEOUT;
        for _ in 0..PORT_TRIES {
            let port = try_free_port()
                .map_err(|e| TestkitError::io("could not find a free TCP port on 127.0.0.1", e))?;
            self.port = port;
            match self.launch(port).run(deadline) {
                Ok(child) => {
                    self.postmaster = Some(child);
                    return Ok(());
                }
                Err(LaunchError::PortTaken | LaunchError::Leftover) => {}
                Err(LaunchError::Fatal(e)) => return Err(e),
            }
        }
        Err(TestkitError::NoFreePort {
            tries: PORT_TRIES,
            log: self.log_path(),
            tail: postmaster::tail(&self.work.log),
        })
    }

    /// Stores the password under the configured `password_encryption` (md5 for
    /// [`HbaAuth::Md5`], so the MD5 exchange really happens) and creates the databases.
    fn finish_setup(&self) -> Result<(), TestkitError> {
        // initdb hashed the password with its own default; set it again under ours.
        let set_password = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote::sql_ident(&self.config.superuser),
            quote::sql_literal(&self.config.password),
        );
        self.psql_local("postgres", &set_password)?;
        for name in &self.config.databases {
            self.psql_local(
                "postgres",
                &format!("CREATE DATABASE {}", quote::sql_ident(name)),
            )?;
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        // `work` drops after this and removes the temp directory with everything in it.
    }
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("host", &HOST)
            .field("port", &self.port)
            .field("auth", &self.config.auth)
            .field("superuser", &self.config.superuser)
            .field("password", &"<redacted>")
            .field("data_dir", &self.work.data)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Runs initdb with the superuser, password and authentication methods of `config`.
fn initdb(
    bin_dir: &Path,
    work: &WorkDir,
    config: &PgConfig,
    run_as: Option<RunAs>,
) -> Result<(), TestkitError> {
    let pwfile = work.root().join("pwfile");
    workdir::write_private(&pwfile, &format!("{}\n", config.password), run_as)?;
    let program = bin_dir.join("initdb");
    let mut command = Command::new(&program);
    command
        .arg("-D")
        .arg(&work.data)
        .args(["-U", &config.superuser, "--pwfile"])
        .arg(&pwfile)
        .arg(format!("--auth-host={}", config.auth.method()))
        .args([
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(work.root())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    // Tied like the postmaster: initdb runs postgres in bootstrap mode for a while.
    let spawned = spawner::spawn_tied(command)
        .map_err(|e| TestkitError::io(format!("could not run {}", program.display()), e));
    let result = spawned.and_then(|child| process::output_within(child, "initdb", INITDB_TIMEOUT));
    let _ = fs::remove_file(&pwfile);
    let out = result?;
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(TestkitError::CommandFailed {
        program: format!("initdb -D {}", work.data.display()),
        status: out.status.to_string(),
        stderr: said,
    })
}

/// Writes pg_hba.conf (loopback only) and the testkit's postgresql.conf settings.
fn configure(work: &WorkDir, config: &PgConfig, run_as: Option<RunAs>) -> Result<(), TestkitError> {
    let method = config.auth.method();
    let hba = format!(
        "# written by sdm-testkit\n\
         local all all trust\n\
         host all all 127.0.0.1/32 {method}\n\
         host all all ::1/128 {method}\n"
    );
    workdir::rewrite(&work.data.join("pg_hba.conf"), &hba, run_as)?;

    let socket = work.socket.to_string_lossy();
    let mut settings: Vec<(&str, String)> = vec![
        ("listen_addresses", HOST.to_string()),
        ("unix_socket_directories", socket.into_owned()),
        ("fsync", "off".to_string()),
        ("synchronous_commit", "off".to_string()),
        ("full_page_writes", "off".to_string()),
        ("max_connections", "200".to_string()),
        ("logging_collector", "off".to_string()),
        ("lc_messages", "C".to_string()),
        (
            "password_encryption",
            config.auth.password_encryption().to_string(),
        ),
    ];
    // Later lines win in postgresql.conf, so the caller's settings override ours.
    settings.extend(config.settings.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let mut conf = String::from("\n# added by sdm-testkit\n");
    for (name, value) in settings {
        conf.push_str(&format!("{name} = {}\n", quote::conf_value(&value)));
    }
    workdir::append(&work.data.join("postgresql.conf"), &conf, run_as)
}
