//! Starting, stopping and crashing the postmaster process.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::os_user::RunAs;
use super::spawner;
use crate::TestkitError;
use crate::process;

/// PostgreSQL's own words once it is up (with lc_messages = 'C').
const READY: &str = "database system is ready to accept connections";
/// How much of the server log an error carries.
const TAIL_LINES: usize = 40;

/// Everything needed to launch one postmaster.
pub(crate) struct Launch<'a> {
    pub(crate) postgres: PathBuf,
    pub(crate) data_dir: &'a Path,
    pub(crate) work_dir: &'a Path,
    pub(crate) log: &'a Path,
    pub(crate) port: u16,
    pub(crate) run_as: Option<RunAs>,
}

/// Why a launch failed, sorted by what the caller should do about it.
pub(crate) enum LaunchError {
    /// Another process holds the port: try another one.
    PortTaken,
    /// Debris of a killed postmaster (its backends still hold the shared memory or the lock
    /// file): try again in a moment.
    Leftover,
    /// Anything else.
    Fatal(TestkitError),
}

impl Launch<'_> {
    /// Starts `postgres -D DATA -p PORT` as a tied child and waits until it accepts
    /// connections or `deadline` passes.
    pub(crate) fn run(&self, deadline: Instant) -> Result<Child, LaunchError> {
        let began = Instant::now();
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log)
            .map_err(|e| fatal_io(format!("could not open {}", self.log.display()), e))?;
        // Only this launch's lines count when looking for READY or for an error.
        let offset = log_file.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log_file
            .try_clone()
            .map_err(|e| fatal_io(format!("could not reopen {}", self.log.display()), e))?;

        let mut command = Command::new(&self.postgres);
        command
            .arg("-D")
            .arg(self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .current_dir(self.work_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr);
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let mut child = spawner::spawn_tied(command)
            .map_err(|e| fatal_io(format!("could not start {}", self.postgres.display()), e))?;

        let mut pause = Duration::from_millis(20);
        loop {
            let exited = match child.try_wait() {
                Ok(status) => status,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fatal_io("could not check on the postmaster".to_string(), e));
                }
            };
            let new_lines = read_from(self.log, offset);
            if let Some(status) = exited {
                return Err(self.classify_exit(&status.to_string(), &new_lines));
            }
            if new_lines.contains(READY) && self.accepts_tcp() {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Fatal(TestkitError::StartTimeout {
                    port: self.port,
                    after: began.elapsed(),
                    log: self.log.to_path_buf(),
                    tail: tail(self.log),
                }));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn accepts_tcp(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }

    fn classify_exit(&self, status: &str, new_lines: &str) -> LaunchError {
        if new_lines.contains("Address already in use") {
            LaunchError::PortTaken
        } else if new_lines.contains("pre-existing shared memory block")
            || (new_lines.contains("lock file") && new_lines.contains("already exists"))
        {
            LaunchError::Leftover
        } else {
            LaunchError::Fatal(TestkitError::StartFailed {
                port: self.port,
                status: status.to_string(),
                log: self.log.to_path_buf(),
                tail: tail(self.log),
            })
        }
    }
}

fn fatal_io(context: String, e: std::io::Error) -> LaunchError {
    LaunchError::Fatal(TestkitError::io(context, e))
}

/// Fast shutdown: SIGINT (abort sessions, checkpoint, exit), then SIGKILL after `grace`.
pub(crate) fn shutdown(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
        return;
    }
    process::signal(process::pid_t(child.id()), libc::SIGINT);
    if !process::wait_within(child, grace) {
        crash(child);
    }
}

/// SIGKILL to the postmaster and then to its children, as a machine crash would leave it;
/// waits (bounded) until they are gone so the shared memory is free for a restart.
pub(crate) fn crash(child: &mut Child) {
    let pid = process::pid_t(child.id());
    // Listed before the kill: once the postmaster dies they are reparented and unfindable.
    let backends = process::children_of(pid);
    let _ = child.kill();
    let _ = child.wait();
    for backend in &backends {
        process::signal(*backend, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends.iter().any(|b| process::is_running(*b)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

/// The log written since `offset`, lossily decoded.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// The last lines of the server log, for error messages.
pub(crate) fn tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let text = read_from(path, len.saturating_sub(MAX_BYTES));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    if lines.is_empty() {
        "(empty)".to_string()
    } else {
        lines[start..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        let tail = tail(&log);
        assert!(tail.starts_with("line 60\n"), "{tail}");
        assert!(tail.ends_with("line 99"));
        assert_eq!(super::tail(&dir.path().join("missing")), "(empty)");
    }
}
