//! `SDM_HOME`: the directory where the agent's socket, pid file, lock and log live.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::exit::{CliError, Exit};

/// The environment variable naming the directory.
pub const HOME_ENV_VAR: &str = "SDM_HOME";
/// The longest socket path a `sockaddr_un` holds, with room to spare for the NUL.
const MAX_SOCKET_PATH: usize = 100;

/// The agent's directory (`SDM_HOME`, default `~/.sdm`), mode 0700.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The directory named by `--home`/`SDM_HOME`, else `$HOME/.sdm`; relative paths are made
    /// absolute (the agent runs in `/`).
    pub fn resolve(configured: Option<&Path>) -> Result<Home, CliError> {
        let dir = match configured.filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".sdm"),
                None => {
                    return Err(CliError::new(
                        Exit::Usage,
                        "neither SDM_HOME nor HOME is set; set SDM_HOME to a directory for the \
                         sdm agent",
                    ));
                }
            },
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| CliError::internal(format!("cannot read the current directory: {e}")))?
                .join(dir)
        };
        Ok(Home { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The running agent's process id, for people and scripts.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }

    /// Held (flock) by the running agent: at most one agent per directory.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("agent.lock")
    }

    /// The background agent's log (its standard error).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Creates the directory (mode 0700) if missing; refuses one owned by another user and
    /// tightens one that others may read. Also checks that the socket path fits.
    pub fn ensure(&self) -> Result<(), CliError> {
        let socket = self.socket();
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(CliError::new(
                Exit::Usage,
                format!(
                    "SDM_HOME {} is too long for a Unix socket path ({} bytes, at most {}); \
                     choose a shorter SDM_HOME",
                    self.dir.display(),
                    socket.as_os_str().len(),
                    MAX_SOCKET_PATH
                ),
            ));
        }
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
        {
            Ok(()) => {}
            Err(e) => return Err(self.io_error("create", &self.dir, &e)),
        }
        let meta = fs::metadata(&self.dir).map_err(|e| self.io_error("read", &self.dir, &e))?;
        if !meta.is_dir() {
            return Err(CliError::new(
                Exit::Usage,
                format!("SDM_HOME {} is not a directory", self.dir.display()),
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(CliError::new(
                Exit::Usage,
                format!(
                    "SDM_HOME {} belongs to another user (uid {}); use a directory of your own",
                    self.dir.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io_error("restrict the mode of", &self.dir, &e))?;
        }
        Ok(())
    }

    /// The pid in the pid file, if there is a readable one.
    pub fn read_pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Writes the pid file (mode 0600), replacing any old one.
    pub fn write_pid(&self, pid: u32) -> io::Result<()> {
        let path = self.pid_file();
        let tmp = self.dir.join(format!("agent.pid.{pid}.tmp"));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            io::Write::write_all(&mut f, format!("{pid}\n").as_bytes())?;
        }
        fs::rename(&tmp, path)
    }

    /// Opens the log for appending (mode 0600), first moving a log over 1 MiB to
    /// `agent.log.1`.
    pub fn open_log(&self) -> io::Result<File> {
        let path = self.log_file();
        if fs::metadata(&path).is_ok_and(|m| m.len() > 1024 * 1024) {
            let _ = fs::rename(&path, self.dir.join("agent.log.1"));
        }
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
    }

    /// The last non-empty line of the log (to explain an agent that failed to start).
    pub fn last_log_line(&self) -> Option<String> {
        let text = fs::read_to_string(self.log_file()).ok()?;
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    }

    fn io_error(&self, what: &str, path: &Path, e: &io::Error) -> CliError {
        CliError::new(
            Exit::Usage,
            format!("cannot {what} {}: {e} (SDM_HOME)", path.display()),
        )
    }
}

/// The agent's exclusive lock on `agent.lock`; released when dropped or when the process ends.
#[derive(Debug)]
pub struct AgentLock {
    file: Option<File>,
}

impl AgentLock {
    /// Takes the lock, or returns `Ok(None)` when another process holds it.
    pub fn try_acquire(home: &Home) -> io::Result<Option<AgentLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(home.lock_file())?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(AgentLock { file: Some(file) }));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }

    /// Lets another agent start (before this process has finished exiting).
    pub fn release(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_tightens_an_open_one() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(&tmp.path().join("a/b"))).unwrap();
        home.ensure().unwrap();
        let mode = fs::metadata(home.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(home.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        home.ensure().unwrap();
        assert_eq!(fs::metadata(home.dir()).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_relative_home_is_made_absolute_and_a_long_one_is_refused() {
        let home = Home::resolve(Some(Path::new("rel/dir"))).unwrap();
        assert!(home.dir().is_absolute());
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let err = Home::resolve(Some(&long)).unwrap().ensure().unwrap_err();
        assert_eq!(err.exit, Exit::Usage);
        assert!(err.message.contains("too long"), "{err}");
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(tmp.path())).unwrap();
        let mut first = AgentLock::try_acquire(&home).unwrap().unwrap();
        assert!(AgentLock::try_acquire(&home).unwrap().is_none());
        first.release();
        assert!(AgentLock::try_acquire(&home).unwrap().is_some());
    }

    #[test]
    fn pid_file_round_trips_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(tmp.path())).unwrap();
        assert_eq!(home.read_pid(), None);
        home.write_pid(4242).unwrap();
        assert_eq!(home.read_pid(), Some(4242));
        let mode = fs::metadata(home.pid_file()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
