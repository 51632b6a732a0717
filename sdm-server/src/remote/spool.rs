//! [`Spool`]: the standalone gateway's audit batches kept on its own disk while no control plane
//! takes them, uploaded in order when one does.
//!
//! Each batch is one file, `<sequence>.batch`, holding the upload body. A batch is written to a
//! temporary file, fsync'd, renamed into place and the directory fsync'd, so that after a crash
//! (or `kill -9`) a batch is either wholly there or not there at all. A batch file is removed
//! only after the control plane took it; a crash between the two uploads it again at the next
//! start, which the control plane ignores (records are keyed by connection and position).
//!
//! The directory is the gateway's own: created `0700`, refused when another user owns it or
//! others may write to it, and locked (`flock`) for as long as the gateway runs, so that two
//! gateway processes never upload one spool. Its size is bounded: a batch that would pass the
//! bound is refused, and the gateway then refuses new connections (see `AuditPolicy`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Default bound on the spool's size.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

const SUFFIX: &str = "batch";
const LOCK: &str = "lock";

/// Why the spool cannot be used or cannot take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Taking the batch would pass the bound.
    #[error(
        "the audit spool {dir} is full ({used} of {max} bytes); new connections are refused until \
         a control plane takes the spooled events"
    )]
    Full {
        /// The directory.
        dir: String,
        /// Bytes spooled.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The directory is not the gateway's own.
    #[error("the audit spool {dir} cannot be used: {why}")]
    Unsafe {
        /// The directory.
        dir: String,
        /// Why.
        why: String,
    },
    /// A file operation failed (disk full, I/O error, permissions).
    #[error("the audit spool {dir}: {what}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A directory of audit batches waiting for a control plane.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Holds the `flock` while the spool is open.
    _lock: File,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number and size of each batch, oldest first.
    batches: VecDeque<(u64, u64)>,
    bytes: u64,
    next: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, bounded to `max_bytes`, and takes its lock. Batches
    /// an earlier process left are kept, to be uploaded first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let shown = dir.display().to_string();
        let io = |what| {
            let dir = shown.clone();
            move |source| SpoolError::Io { dir, what, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create the directory"))?;
        check_owned(dir, &shown)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK))
            .map_err(io("cannot open the lock file"))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError::Unsafe {
                dir: shown,
                why: "another gateway process is using it; give each gateway process its own \
                      --audit-spool directory"
                    .into(),
            });
        }
        let mut state = State::default();
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io("cannot list the directory"))? {
            let entry = entry.map_err(io("cannot list the directory"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(&format!(".{SUFFIX}"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = entry.metadata().map_err(io("cannot read a batch"))?.len();
                found.push((seq, len));
            } else if name.ends_with(".tmp") {
                // A batch whose write a crash interrupted: it was never acknowledged as kept.
                let _ = fs::remove_file(entry.path());
            }
        }
        found.sort_unstable();
        for (seq, len) in found {
            state.batches.push_back((seq, len));
            state.bytes += len;
            state.next = seq + 1;
        }
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{SUFFIX}"))
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> SpoolError + '_ {
        move |source| SpoolError::Io {
            dir: self.dir.display().to_string(),
            what,
            source,
        }
    }

    /// Whether no batch waits.
    pub fn is_empty(&self) -> bool {
        self.state().batches.is_empty()
    }

    /// Batches and bytes waiting.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.state();
        (state.batches.len(), state.bytes)
    }

    /// Keeps `body` durably, after every batch already kept.
    pub fn push(&self, body: &[u8]) -> Result<(), SpoolError> {
        let len = body.len() as u64;
        let seq = {
            let state = self.state();
            if state.bytes + len > self.max_bytes {
                return Err(SpoolError::Full {
                    dir: self.dir.display().to_string(),
                    used: state.bytes,
                    max: self.max_bytes,
                });
            }
            state.next
        };
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(body)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(self.io("cannot write a batch")(e));
        }
        let mut state = self.state();
        state.batches.push_back((seq, len));
        state.bytes += len;
        state.next = seq + 1;
        Ok(())
    }

    /// The oldest batch: its sequence number and body.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let Some((seq, _)) = self.state().batches.front().copied() else {
            return Ok(None);
        };
        let body = fs::read(self.path(seq)).map_err(self.io("cannot read a batch"))?;
        Ok(Some((seq, body)))
    }

    /// Removes batch `seq` (the oldest), once the control plane took it (or refused it as
    /// invalid).
    pub fn remove(&self, seq: u64) -> Result<(), SpoolError> {
        match fs::remove_file(self.path(seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("cannot remove an uploaded batch")(e)),
        }
        let mut state = self.state();
        if state.batches.front().map(|(s, _)| *s) == Some(seq)
            && let Some((_, len)) = state.batches.pop_front()
        {
            state.bytes -= len;
        }
        Ok(())
    }
}

/// Refuses a directory another user owns or others may write to (or read: it holds statements).
fn check_owned(dir: &Path, shown: &str) -> Result<(), SpoolError> {
    let meta = fs::metadata(dir).map_err(|source| SpoolError::Io {
        dir: shown.to_owned(),
        what: "cannot read the directory",
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let unsafe_dir = |why: String| SpoolError::Unsafe {
        dir: shown.to_owned(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to the gateway's user (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        // Ours: tighten it, as the data dir is.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| unsafe_dir(format!("its mode is {mode:o} and cannot be made 700: {e}")))?;
        tracing::warn!(
            dir = shown,
            "the audit spool's mode was {mode:o}; it is now 700"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_in_order_across_a_reopen_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        {
            let spool = Spool::open(&path, 100).unwrap();
            spool.push(b"first").unwrap();
            spool.push(b"second").unwrap();
            assert_eq!(spool.usage(), (2, 11));
            let full = spool.push(&[b'x'; 90]).unwrap_err();
            assert!(
                full.to_string().contains("is full (11 of 100 bytes)"),
                "{full}"
            );
            // Another process cannot take the same spool.
            let busy = Spool::open(&path, 100).unwrap_err();
            assert!(
                busy.to_string().contains("another gateway process"),
                "{busy}"
            );
            // A write a crash cut short is not a batch.
            fs::write(path.join("00000000000000000009.tmp"), b"half").unwrap();
        }
        let spool = Spool::open(&path, 100).unwrap();
        assert!(!path.join("00000000000000000009.tmp").exists());
        let (seq, body) = spool.oldest().unwrap().unwrap();
        assert_eq!(body, b"first");
        spool.remove(seq).unwrap();
        spool.push(b"third").unwrap();
        let mut rest = Vec::new();
        while let Some((seq, body)) = spool.oldest().unwrap() {
            rest.push(String::from_utf8(body).unwrap());
            spool.remove(seq).unwrap();
        }
        assert_eq!(rest, ["second", "third"]);
        assert!(spool.is_empty());
        assert_eq!(spool.usage(), (0, 0));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_loose_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        let _spool = Spool::open(&path, 100).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    /// Another local user who made the spool directory first (or swapped it) could read the
    /// statements in it or plant batches to be uploaded in the gateway's name: refused, and
    /// nothing in it is touched.
    #[test]
    fn a_directory_of_another_user_is_refused_and_left_alone() {
        let Some(other) = sdm_testkit::other_os_user().unwrap() else {
            eprintln!("skipped: needs root to give a directory to another OS user");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        fs::create_dir(&path).unwrap();
        let planted = path.join("00000000000000000001.batch");
        fs::write(&planted, b"planted").unwrap();
        std::os::unix::fs::chown(&path, Some(other.uid), Some(other.gid)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();

        let refused = Spool::open(&path, 100).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("it belongs to uid {}", other.uid)),
            "{refused}"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777, "the other user's directory was changed");
        assert_eq!(fs::read(&planted).unwrap(), b"planted");
    }
}
