//! A throwaway MariaDB server: Debian's `mariadb-install-db` and `mariadbd`, started on a free
//! loopback port in a temp dir with the grant tables in force (users log in with passwords).
//! Root runs it as the unprivileged user PostgreSQL uses (`sdmtest`). Like the postmaster, the
//! server is tied to the test process: it gets SIGTERM (its clean shutdown) when the process
//! exits, however it exits. Administration goes through the unix socket as the server's `root`
//! user.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::TestkitError;
use crate::pg::os_user::{self, USER};
use crate::pg::spawner::spawn_tied_with;
use crate::pg::workdir::give;
use crate::process::{output_within, wait_within};

/// Bound on `mariadb-install-db`.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one `mariadb` client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the server's start: this many polls of its socket, 100 ms apart.
const START_POLLS: u32 = 600;
/// The largest packet the server takes (tests move 50 MB results).
const MAX_ALLOWED_PACKET: &str = "128M";

/// A running MariaDB server; stopped and removed when dropped.
pub struct MariaDb {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
}

impl MariaDb {
    /// Initialises a data directory and starts the server on a free port, without TLS.
    pub fn start() -> Result<MariaDb, TestkitError> {
        MariaDb::start_with(None)
    }

    /// Like [`start`](Self::start), with TLS offered on the certificate chain `cert_pem` and
    /// its key `key_pem` (PEM).
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<MariaDb, TestkitError> {
        MariaDb::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<MariaDb, TestkitError> {
        let run_as = os_user::run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("sdm-mariadb-")
            .tempdir()
            .map_err(|e| TestkitError::io("could not create a temp dir for MariaDB", e))?;
        give(dir.path(), run_as)?;
        let data = dir.path().join("data");
        // Its own temp dir: two servers bootstrapping at once in /tmp collide on temp tables.
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp)
            .map_err(|e| TestkitError::io(format!("could not create {}", tmp.display()), e))?;
        give(&tmp, run_as)?;
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if run_as.is_some() {
            install.arg(format!("--user={USER}"));
        }
        let child = install.spawn().map_err(|e| {
            TestkitError::io(
                "could not run mariadb-install-db (apt-get install mariadb-server)",
                e,
            )
        })?;
        let out = output_within(child, "mariadb-install-db", INSTALL_TIMEOUT)?;
        if !out.status.success() {
            return Err(TestkitError::CommandFailed {
                program: "mariadb-install-db".into(),
                status: out.status.to_string(),
                stderr: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let port = crate::try_free_port()
            .map_err(|e| TestkitError::io("could not find a free port for MariaDB", e))?;
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--max-allowed-packet={MAX_ALLOWED_PACKET}"))
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--skip-log-bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = run_as {
            // Switched before exec (not with --user) so that the death signal, set after the
            // switch, survives it.
            server.uid(user.uid).gid(user.gid);
        }
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server-cert.pem", cert), ("server-key.pem", key)] {
                let path = dir.path().join(name);
                fs::write(&path, pem).map_err(|e| {
                    TestkitError::io(format!("could not write {}", path.display()), e)
                })?;
                give(&path, run_as)?;
            }
            server
                .arg(format!(
                    "--ssl-cert={}",
                    dir.path().join("server-cert.pem").display()
                ))
                .arg(format!(
                    "--ssl-key={}",
                    dir.path().join("server-key.pem").display()
                ));
        } else {
            server.arg("--skip-ssl");
        }
        let child = spawn_tied_with(server, libc::SIGTERM)
            .map_err(|e| TestkitError::io("could not start mariadbd", e))?;
        let mut db = MariaDb {
            child: Some(child),
            dir,
            port,
        };
        db.wait_ready()?;
        Ok(db)
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        for _ in 0..START_POLLS {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(TestkitError::CommandFailed {
                    program: "mariadbd".into(),
                    status: status.to_string(),
                    stderr: self.log_tail(),
                });
            }
            if self.socket().exists() && self.sql("SELECT 1").is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(TestkitError::CommandTimeout {
            program: format!("mariadbd on port {} ({})", self.port, self.log_tail()),
            after: Duration::from_millis(100) * START_POLLS,
        })
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's unix socket (the `root` user logs in there without a password).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `statements` as the server's `root` user; returns what the client printed (tab
    /// separated, no column names).
    pub fn sql(&self, statements: &str) -> Result<String, TestkitError> {
        let child = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--protocol=socket",
                "-uroot",
                "--batch",
                "--skip-column-names",
            ])
            .arg("-e")
            .arg(statements)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                TestkitError::io("could not run mariadb (apt-get install mariadb-client)", e)
            })?;
        let out = output_within(child, "mariadb", CLIENT_TIMEOUT)?;
        if !out.status.success() {
            return Err(TestkitError::CommandFailed {
                program: format!("mariadb -e {statements:?}"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates `user`@`%` (and `@localhost`) with `mysql_native_password`, with every privilege on
    /// `database` (created if missing).
    pub fn create_native_user(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<(), TestkitError> {
        self.create_user(
            user,
            &format!("mysql_native_password USING PASSWORD('{password}')"),
            database,
        )
    }

    /// Creates `user` logging in with MariaDB's `ed25519` plugin (installed on first use), with
    /// every privilege on `database`.
    pub fn create_ed25519_user(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<(), TestkitError> {
        let installed = self
            .sql("SELECT COUNT(*) FROM information_schema.plugins WHERE plugin_name = 'ed25519'")?;
        if installed.trim() == "0" {
            self.sql("INSTALL SONAME 'auth_ed25519'")?;
        }
        self.create_user(
            user,
            &format!("ed25519 USING PASSWORD('{password}')"),
            database,
        )
    }

    fn create_user(&self, user: &str, via: &str, database: &str) -> Result<(), TestkitError> {
        let mut sql = format!("CREATE DATABASE IF NOT EXISTS `{database}`;");
        for host in ["%", "localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED VIA {via};\
                 GRANT ALL ON `{database}`.* TO '{user}'@'{host}';"
            ));
        }
        self.sql(&sql).map(|_| ())
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets it shut down cleanly; SIGKILL if it takes too long.
            crate::process::signal(crate::process::pid_t(child.id()), libc::SIGTERM);
            if !wait_within(&mut child, Duration::from_secs(30)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_password_users_of_both_plugins() {
        let db = MariaDb::start().unwrap();
        db.create_native_user("native", "pw1", "app").unwrap();
        db.create_ed25519_user("edwards", "pw2", "app").unwrap();
        let plugins = db
            .sql("SELECT user, plugin FROM mysql.user WHERE host = '%' ORDER BY user")
            .unwrap();
        assert_eq!(plugins, "edwards\ted25519\nnative\tmysql_native_password\n");
    }
}
