//! `sdm-server backup`: a consistent copy of a SQLite installation's database, taken with
//! SQLite's online backup while the server runs.
//!
//! The copy is read in one step under one read transaction, so it is a snapshot of a single
//! moment; in WAL mode that read blocks no writer. It is written to `FILE.partial` (0600,
//! created new), checked with `PRAGMA integrity_check`, synced, and only then renamed to `FILE`:
//! a backup that fails leaves nothing that looks like one. Keys are not in the database; they
//! are backed up apart (docs/OPERATIONS.md, "Backup").

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// How long the backup waits for a moment when the database is not locked by a writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of the one copying step while a writer holds the database (each after a pause).
const BUSY_TRIES: u32 = 100;

/// Why a backup was not made (nothing was left at the destination).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source database is not there.
    #[error(
        "there is no database at {0}: is this the --data-dir of an installation on SQLite? (On PostgreSQL, back up with pg_dump.)"
    )]
    NoDatabase(String),
    /// The destination or its temporary file exists already.
    #[error("{0} already exists; choose another path or remove it")]
    Exists(String),
    /// The destination's directory is missing or not writable, or a write failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The copy did not pass SQLite's integrity check.
    #[error("the copy failed SQLite's integrity check: {0}")]
    Corrupt(String),
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the backup file.
    pub bytes: u64,
    /// Accounts (admins and service accounts).
    pub accounts: i64,
    /// Resources.
    pub resources: i64,
    /// Connections in the audit trail.
    pub audit_records: i64,
}

/// Copies the database at `database` to the new file `to`.
pub fn backup(database: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.display().to_string()));
    }
    if to.exists() {
        return Err(BackupError::Exists(to.display().to_string()));
    }
    let partial = partial_path(to);
    // create_new: never follows a link planted at the path, never overwrites.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(partial.display().to_string()),
            _ => BackupError::Write {
                path: partial.display().to_string(),
                source,
            },
        })?;
    let made = copy_into(database, &partial).and_then(|report| {
        sync(&partial)?;
        std::fs::rename(&partial, to).map_err(|source| BackupError::Write {
            path: to.display().to_string(),
            source,
        })?;
        if let Some(dir) = to.parent() {
            // The rename is durable once the directory is synced.
            let _ = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .and_then(|d| d.sync_all());
        }
        Ok(report)
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn copy_into(database: &Path, partial: &Path) -> Result<BackupReport, BackupError> {
    let sqlite = |what| move |source| BackupError::Sqlite { what, source };
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("open the database"))?;
    source
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite("set busy_timeout"))?;
    let mut copy = Connection::open(partial).map_err(sqlite("open the backup file"))?;
    {
        let backup = Backup::new(&source, &mut copy).map_err(sqlite("start the backup"))?;
        let mut tries = 0;
        // -1: every page in one step, so the copy is one snapshot (a copy made in several
        // steps starts over whenever the server writes in between).
        while backup.step(-1).map_err(sqlite("copy the database"))? != StepResult::Done {
            tries += 1;
            if tries >= BUSY_TRIES {
                return Err(BackupError::Sqlite {
                    what: "copy the database",
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked".into()),
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite("check the copy"))?;
    if check != "ok" {
        return Err(BackupError::Corrupt(check));
    }
    let count = |table: &str| -> Result<i64, BackupError> {
        copy.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sqlite("count the copied rows"))
    };
    let report = BackupReport {
        bytes: 0,
        accounts: count("accounts")?,
        resources: count("resources")?,
        audit_records: count("audit_connections")?,
    };
    // Whatever the source's journal mode, the copy is one self-contained file.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite("make the copy one file"))?;
    drop(copy);
    let bytes = std::fs::metadata(partial)
        .map_err(|source| BackupError::Write {
            path: partial.display().to_string(),
            source,
        })?
        .len();
    Ok(BackupReport { bytes, ..report })
}

fn sync(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| BackupError::Write {
            path: path.display().to_string(),
            source,
        })
}
