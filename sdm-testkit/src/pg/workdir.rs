//! The temp directory a cluster lives in, and the sweep of directories left by dead processes.
//!
//! Layout of `$TMPDIR/sdm-pg-XXXXXX/`: `owner.pid` (the test process), `data/` (PGDATA),
//! `sock/` (unix socket), `server.log`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tempfile::TempDir;

use super::os_user::{RunAs, USER};
use crate::TestkitError;
use crate::process;

/// Recognisable prefix so that the sweep finds our directories and only ours.
pub(crate) const PREFIX: &str = "sdm-pg-";
const OWNER_FILE: &str = "owner.pid";
/// A directory without an owner file is only swept once it is clearly not being set up.
const UNOWNED_GRACE: Duration = Duration::from_secs(3600);

/// Paths inside a cluster's directory.
pub(crate) struct WorkDir {
    pub(crate) temp: TempDir,
    pub(crate) data: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
}

impl WorkDir {
    /// Creates the directory, records this process as its owner, and hands it to `run_as`.
    pub(crate) fn create(run_as: Option<RunAs>) -> Result<WorkDir, TestkitError> {
        let parent = std::env::temp_dir();
        if run_as.is_some() {
            check_traversable(&parent)?;
        }
        let temp = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| {
                TestkitError::io(
                    format!("could not create a temp dir in {}", parent.display()),
                    e,
                )
            })?;
        let root = temp.path();
        let owner = root.join(OWNER_FILE);
        fs::write(&owner, format!("{}\n", std::process::id()))
            .map_err(|e| TestkitError::io(format!("could not write {}", owner.display()), e))?;
        let socket = root.join("sock");
        fs::create_dir(&socket)
            .map_err(|e| TestkitError::io(format!("could not create {}", socket.display()), e))?;
        give(root, run_as)?;
        give(&socket, run_as)?;
        Ok(WorkDir {
            data: root.join("data"),
            log: root.join("server.log"),
            socket,
            temp,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        self.temp.path()
    }
}

/// Makes `path` owned by the user PostgreSQL runs as (nothing to do for a normal user).
pub(crate) fn give(path: &Path, run_as: Option<RunAs>) -> Result<(), TestkitError> {
    match run_as {
        Some(user) => chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
            TestkitError::io(format!("could not chown {} to {USER}", path.display()), e)
        }),
        None => Ok(()),
    }
}

/// The unprivileged user must be able to walk down to its directory.
fn check_traversable(dir: &Path) -> Result<(), TestkitError> {
    let real = fs::canonicalize(dir)
        .map_err(|e| TestkitError::io(format!("could not resolve {}", dir.display()), e))?;
    for ancestor in real.ancestors() {
        let meta = fs::metadata(ancestor)
            .map_err(|e| TestkitError::io(format!("could not stat {}", ancestor.display()), e))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(TestkitError::InvalidConfig {
                detail: format!(
                    "{} is not searchable by other users, so {USER} cannot reach a cluster under {}; set TMPDIR to a directory such as /tmp",
                    ancestor.display(),
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Removes `sdm-pg-*` directories whose owner process and postmaster are both gone, e.g.
/// after a test process crashed or used [`PgCluster::shared`](crate::PgCluster::shared).
/// Best effort: anything unreadable or still in use is left alone.
pub(crate) fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(PREFIX));
        // symlink_metadata: never follow a link planted in a shared /tmp.
        let is_dir = entry.path().symlink_metadata().is_ok_and(|m| m.is_dir());
        if is_ours && is_dir && is_stale(&entry.path()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn is_stale(dir: &Path) -> bool {
    match read_pid(&dir.join(OWNER_FILE)) {
        Some(owner) => {
            if owner == process::pid_t(std::process::id()) || process::is_running(owner) {
                return false;
            }
        }
        None => {
            // Being created right now, or not ours after all: wait until it is old.
            let age = fs::symlink_metadata(dir)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            if age.is_none_or(|age| age < UNOWNED_GRACE) {
                return false;
            }
        }
    }
    // The owner is gone, but its postmaster may still be finishing its shutdown.
    let postmaster = read_pid(&dir.join("data").join("postmaster.pid"));
    !postmaster.is_some_and(process::is_running)
}

/// The first line of a pid file.
fn read_pid(path: &Path) -> Option<libc::pid_t> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Writes `contents` to `path` and gives it to `run_as`, mode 0600.
pub(crate) fn write_private(
    path: &Path,
    contents: &str,
    run_as: Option<RunAs>,
) -> Result<(), TestkitError> {
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| {
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(contents.as_bytes())
        });
    result.map_err(|e| TestkitError::io(format!("could not write {}", path.display()), e))?;
    give(path, run_as)
}

/// Appends `contents` to a file PostgreSQL owns, keeping its owner.
pub(crate) fn append(
    path: &Path,
    contents: &str,
    run_as: Option<RunAs>,
) -> Result<(), TestkitError> {
    let result = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()));
    result.map_err(|e| TestkitError::io(format!("could not append to {}", path.display()), e))?;
    keep_owner(path, run_as)
}

/// Replaces the contents of a file PostgreSQL owns, keeping its owner.
pub(crate) fn rewrite(
    path: &Path,
    contents: &str,
    run_as: Option<RunAs>,
) -> Result<(), TestkitError> {
    fs::write(path, contents)
        .map_err(|e| TestkitError::io(format!("could not write {}", path.display()), e))?;
    keep_owner(path, run_as)
}

fn keep_owner(path: &Path, run_as: Option<RunAs>) -> Result<(), TestkitError> {
    let owned = fs::metadata(path)
        .is_ok_and(|m| run_as.is_none_or(|user| m.uid() == user.uid && m.gid() == user.gid));
    if owned { Ok(()) } else { give(path, run_as) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_dirs_of_dead_owners_only() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str, owner: Option<String>| {
            let dir = parent.path().join(name);
            fs::create_dir(&dir).unwrap();
            if let Some(owner) = owner {
                fs::write(dir.join(OWNER_FILE), owner).unwrap();
            }
            dir
        };
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id().to_string();
        child.wait().unwrap();

        let stale = make("sdm-pg-dead", Some(dead.clone()));
        let mine = make("sdm-pg-mine", Some(std::process::id().to_string()));
        let fresh = make("sdm-pg-fresh", None);
        let foreign = make("other-dead", Some(dead));
        sweep_stale(parent.path());

        assert!(!stale.exists());
        assert!(mine.exists());
        assert!(fresh.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        write_private(&path, "secret\n", None).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "secret\n");
    }
}
