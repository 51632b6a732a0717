//! PostgreSQL refuses to run as root, so root runs it as the unprivileged user `sdmtest`.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestkitError;

/// The system user that owns clusters started by root.
pub(crate) const USER: &str = "sdmtest";

/// Bounds the create-or-find loop; each round waits a little longer.
const ATTEMPTS: u32 = 10;

/// The uid/gid a cluster's processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` for a normal user (run PostgreSQL as ourselves); for root, `sdmtest`, created once.
pub(crate) fn run_as() -> Result<Option<RunAs>, TestkitError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    static FOUND: Mutex<Option<RunAs>> = Mutex::new(None);
    let mut found = FOUND.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(run_as) = *found {
        return Ok(Some(run_as));
    }
    let run_as = find_or_create()?;
    *found = Some(run_as);
    Ok(Some(run_as))
}

/// Finds the user, creating it if needed. Several test processes may get here at once, and
/// concurrent `useradd` runs are not reliably serialized by useradd itself (seen here: two
/// succeed and the second rewrites the uid the first one reported), so creation happens
/// under a machine-wide lock file, and the look-up is repeated inside it.
fn find_or_create() -> Result<RunAs, TestkitError> {
    if let Some(run_as) = lookup()? {
        return Ok(run_as);
    }
    let _lock = CreationLock::acquire()?;
    let mut detail = String::new();
    for attempt in 1..=ATTEMPTS {
        if let Some(run_as) = lookup()? {
            return Ok(run_as);
        }
        if let Err(message) = useradd() {
            detail = message;
        }
        if let Some(run_as) = lookup()? {
            return Ok(run_as);
        }
        thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
    }
    Err(TestkitError::OsUser { user: USER, detail })
}

/// An exclusive `flock` on a fixed path (not `$TMPDIR`, which differs between processes),
/// released on drop.
struct CreationLock {
    _file: File,
}

impl CreationLock {
    /// Bound on waiting for another process's useradd.
    const WAIT: Duration = Duration::from_secs(60);

    fn acquire() -> Result<CreationLock, TestkitError> {
        let dir = if Path::new("/run/lock").is_dir() {
            "/run/lock"
        } else {
            "/tmp"
        };
        let path = Path::new(dir).join("sdm-testkit-useradd.lock");
        let fail = |detail: String| TestkitError::OsUser { user: USER, detail };
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            // Never follow a link someone planted at a fixed path in a shared directory.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| fail(format!("could not open {}: {e}", path.display())))?;
        let deadline = Instant::now() + Self::WAIT;
        loop {
            // SAFETY: flock on a descriptor we own; no pointers involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(CreationLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != ErrorKind::WouldBlock {
                return Err(fail(format!("could not lock {}: {err}", path.display())));
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "{} stayed locked for {}s",
                    path.display(),
                    Self::WAIT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The user's uid and primary gid from `getent passwd`, or `None` when it does not exist.
fn lookup() -> Result<Option<RunAs>, TestkitError> {
    let out = Command::new("getent")
        .args(["passwd", USER])
        .output()
        .map_err(|e| TestkitError::OsUser {
            user: USER,
            detail: format!("could not run getent: {e}"),
        })?;
    if !out.status.success() {
        // Exit 2: no such user.
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    parse_passwd(&line)
        .map(Some)
        .ok_or_else(|| TestkitError::OsUser {
            user: USER,
            detail: format!("unexpected getent output {line:?}"),
        })
}

fn useradd() -> Result<(), String> {
    let args = [
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        USER,
    ];
    // root's PATH normally has /usr/sbin, but not every harness passes it on.
    let out = match Command::new("useradd").args(args).output() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Command::new("/usr/sbin/useradd").args(args).output()
        }
        other => other,
    };
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "useradd {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("could not run useradd: {e}")),
    }
}

/// `name:x:uid:gid:gecos:home:shell` → uid and gid.
fn parse_passwd(line: &str) -> Option<RunAs> {
    let mut fields = line.trim().split(':');
    if fields.next()? != USER {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(RunAs { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_getent_lines() {
        assert_eq!(
            parse_passwd("sdmtest:x:998:997::/home/sdmtest:/usr/sbin/nologin\n"),
            Some(RunAs { uid: 998, gid: 997 })
        );
        assert_eq!(parse_passwd("other:x:1:1::/:/bin/sh"), None);
        assert_eq!(parse_passwd("sdmtest:x:abc"), None);
    }
}
