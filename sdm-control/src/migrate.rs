//! `sdm-server migrate --from sqlite:PATH --to postgres://…`: moves an installation's state
//! from its SQLite database into PostgreSQL.
//!
//! Everything is copied as stored: accounts, token hashes, resources with their sealed
//! passwords, grants, sessions, gateways, settings (including the secret-key check) and the
//! audit trail. Nothing is decrypted or re-encrypted, so the target works with the same key
//! files (`ca.*`, `lease.key`, `secret.key` or `SDM_SECRET_KEY`) as the source. The source is
//! read in one snapshot; the target is written in one transaction, so a failure leaves it as it
//! was. A target that already holds sdm data is refused unless asked to replace it.
//!
//! ```no_run
//! # async fn run() -> Result<(), sdm_control::migrate::MigrateError> {
//! let migration = sdm_control::migrate::Migration::parse(
//!     "sqlite:/var/lib/sdm",
//!     "postgres://sdm:secret@db.internal/sdm",
//!     false,
//! )?;
//! let counts = migration.run().await?;
//! println!("copied {counts}");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use sdm_proto::error::one_line;

use crate::store::transfer::{Counts, sqlite_to_postgres};
use crate::store::{DatabaseUrl, PostgresStore, SqliteStore, StoreError};

/// The scheme that names a SQLite source.
const SQLITE_SCHEME: &str = "sqlite:";

/// A migration could not be done. Nothing was written to the target, whatever failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The source or target was not given in a usable form.
    #[error("{0}")]
    Usage(String),
    /// The SQLite database could not be opened or read.
    #[error("cannot read the SQLite database {}", path.display())]
    Source {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL database could not be reached or set up.
    #[error("cannot use the PostgreSQL database {url}")]
    Target {
        /// The URL without its password.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The target already holds an installation.
    #[error(
        "{url} already holds sdm data ({counts}); migrate into an empty database, or pass \
         --force to replace everything it holds with the source's state"
    )]
    NotEmpty {
        /// The URL without its password.
        url: String,
        /// What it holds.
        counts: String,
    },
    /// The copy failed; the target was left as it was.
    #[error("copying into {url} failed; nothing was written")]
    Copy {
        /// The URL without its password.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// What to copy where.
#[derive(Debug)]
pub struct Migration {
    from: PathBuf,
    to: DatabaseUrl,
    replace: bool,
}

/// `sqlite:PATH` → the database file (`PATH`, or `PATH/sdm.db` when `PATH` is a directory).
fn sqlite_path(from: &str) -> Result<PathBuf, MigrateError> {
    let path = from
        .strip_prefix(SQLITE_SCHEME)
        .map(|p| p.strip_prefix("//").unwrap_or(p))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            MigrateError::Usage(format!(
                "--from {from:?} is not a SQLite source; give it as sqlite:PATH, where PATH is \
                 the sdm.db file or the data directory that holds it"
            ))
        })?;
    let mut path = PathBuf::from(path);
    if path.is_dir() {
        path = path.join(crate::store::sqlite::FILE);
    }
    if !path.is_file() {
        return Err(MigrateError::Usage(format!(
            "there is no SQLite database at {}; give the sdm.db file or the data directory \
             that holds it",
            path.display()
        )));
    }
    Ok(path)
}

impl Migration {
    /// Checks a source (`sqlite:PATH`, the file or its data directory) and a target (a
    /// PostgreSQL URL). With `replace`, a target that holds data has it replaced.
    pub fn parse(from: &str, to: &str, replace: bool) -> Result<Migration, MigrateError> {
        let from = sqlite_path(from)?;
        let to = DatabaseUrl::parse(to)
            .map_err(|e| MigrateError::Usage(format!("--to: {}", one_line(&e))))?;
        Ok(Migration { from, to, replace })
    }

    /// The SQLite database file.
    pub fn source(&self) -> &Path {
        &self.from
    }

    /// The target, without its password.
    pub fn target(&self) -> String {
        self.to.redacted()
    }

    /// Copies the source into the target and returns what was copied. The source is brought
    /// to this version's schema first, as starting `sdm-server serve` on it would.
    pub async fn run(&self) -> Result<Counts, MigrateError> {
        let path = self.from.clone();
        let source = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(|e| MigrateError::Source {
                path: self.from.clone(),
                source: StoreError::backend("open the database", e),
            })?
            .map_err(|source| MigrateError::Source {
                path: self.from.clone(),
                source,
            })?;
        let url = self.to.redacted();
        let target =
            PostgresStore::connect(&self.to)
                .await
                .map_err(|source| MigrateError::Target {
                    url: url.clone(),
                    source,
                })?;
        tracing::info!(from = %self.from.display(), to = %url, "copying the installation");
        match sqlite_to_postgres(&source, &target, self.replace).await {
            Ok(counts) => Ok(counts),
            Err(StoreError::NotEmpty(counts)) => Err(MigrateError::NotEmpty { url, counts }),
            Err(source) => Err(MigrateError::Copy { url, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_targets() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sdm.db");
        std::fs::write(&db, b"").unwrap();
        let url = "postgres://sdm:hunter2@127.0.0.1:5432/sdm";
        for from in [
            format!("sqlite:{}", dir.path().display()),
            format!("sqlite:{}", db.display()),
            format!("sqlite://{}", db.display()),
        ] {
            let m = Migration::parse(&from, url, false).unwrap();
            assert_eq!(m.source(), db);
            assert_eq!(m.target(), "postgres://sdm@127.0.0.1:5432/sdm");
            assert!(!format!("{m:?}").contains("hunter2"));
        }
        let missing = dir.path().join("nope");
        for (from, expected) in [
            (db.display().to_string(), "not a SQLite source"),
            ("sqlite:".to_owned(), "not a SQLite source"),
            (
                format!("postgres://{}", db.display()),
                "not a SQLite source",
            ),
            (
                format!("sqlite:{}", missing.display()),
                "no SQLite database",
            ),
        ] {
            let err = Migration::parse(&from, url, false).unwrap_err();
            assert!(err.to_string().contains(expected), "{from}: {err}");
        }
        let err = Migration::parse(
            &format!("sqlite:{}", db.display()),
            "postgres://sdm:pw@db/sdm?sslmode=verify-full",
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
    }
}
