//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while preparing a fixture. Messages say what failed and what to do next;
/// PostgreSQL start failures carry the tail of the server log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A PostgreSQL program could not be found.
    #[error(
        "{binary} not found: install postgresql (apt-get install postgresql) or set PG_BINDIR to the directory holding initdb and postgres"
    )]
    NotInstalled {
        /// The program that was looked for, e.g. `initdb`.
        binary: String,
    },

    /// Running as root, the unprivileged user that runs PostgreSQL could not be found or created.
    #[error(
        "running as root, and PostgreSQL refuses to run as root: could not find or create the system user `{user}` ({detail}); create it with `useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}` or run the tests as a normal user"
    )]
    OsUser {
        /// The user name (`sdmtest`).
        user: &'static str,
        /// What `getent`/`useradd` said.
        detail: String,
    },

    /// A configuration value cannot be used as given.
    #[error("invalid PgConfig: {detail}")]
    InvalidConfig {
        /// Which value and why.
        detail: String,
    },

    /// A Dockerfile could not be read as one.
    #[error("{file}: {detail}")]
    Dockerfile {
        /// The file.
        file: String,
        /// What is wrong, with the line.
        detail: String,
    },

    /// A file system or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A helper program (initdb, useradd, …) exited unsuccessfully.
    #[error("`{program}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The program and its key arguments.
        program: String,
        /// Its exit status, as text.
        status: String,
        /// Its standard error (and output, when that is where it talks).
        stderr: String,
    },

    /// A helper program did not finish in time and was killed.
    #[error("`{program}` did not finish within {}s and was killed", .after.as_secs())]
    CommandTimeout {
        /// The program.
        program: String,
        /// How long it was given.
        after: Duration,
    },

    /// The postmaster exited while starting.
    #[error(
        "PostgreSQL on 127.0.0.1:{port} exited during startup ({status}); last lines of the server log:\n{tail}"
    )]
    StartFailed {
        /// The port it was told to use.
        port: u16,
        /// Its exit status, as text.
        status: String,
        /// The server log file (removed with the cluster directory when a first start fails).
        log: PathBuf,
        /// The last lines of the server log.
        tail: String,
    },

    /// The postmaster did not accept connections within the bound; it was killed.
    #[error("PostgreSQL on 127.0.0.1:{port} did not accept connections within {}s and was killed; last lines of the server log:\n{tail}", .after.as_secs())]
    StartTimeout {
        /// The port it was told to use.
        port: u16,
        /// How long it was given.
        after: Duration,
        /// The server log file (removed with the cluster directory when a first start fails).
        log: PathBuf,
        /// The last lines of the server log.
        tail: String,
    },

    /// Every port tried was taken by another process before PostgreSQL could bind it.
    #[error(
        "PostgreSQL found every port it tried taken ({tries} tries); last lines of the server log:\n{tail}"
    )]
    NoFreePort {
        /// How many ports were tried.
        tries: u32,
        /// The server log file (removed with the cluster directory when a first start fails).
        log: PathBuf,
        /// The last lines of the server log.
        tail: String,
    },

    /// On restart, another process had taken the cluster's port.
    #[error(
        "PostgreSQL cannot restart on 127.0.0.1:{port}: another process took the port; last lines of the server log:\n{tail}"
    )]
    PortInUse {
        /// The cluster's port.
        port: u16,
        /// The server log file (removed with the cluster directory when a first start fails).
        log: PathBuf,
        /// The last lines of the server log.
        tail: String,
    },

    /// `psql` reported an error (connection, authentication or SQL).
    #[error("psql as `{user}` on database `{database}` failed ({status}): {stderr}")]
    Psql {
        /// The user psql logged in as.
        user: String,
        /// The database.
        database: String,
        /// Its exit status, as text.
        status: String,
        /// What psql printed on standard error.
        stderr: String,
    },
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }
}
