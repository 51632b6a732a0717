//! What kind of cluster to start: authentication method, superuser, databases, settings.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// The pg_hba.conf method for TCP connections (the unix socket is always `trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HbaAuth {
    /// `trust`: no password asked.
    Trust,
    /// `password`: clear-text password (stored as SCRAM).
    Password,
    /// `md5`: MD5 challenge; the password is stored as MD5 so the MD5 exchange really happens.
    Md5,
    /// `scram-sha-256`: the default of current PostgreSQL releases.
    #[default]
    Scram,
}

impl HbaAuth {
    /// The method name as written in pg_hba.conf.
    pub fn method(self) -> &'static str {
        match self {
            HbaAuth::Trust => "trust",
            HbaAuth::Password => "password",
            HbaAuth::Md5 => "md5",
            HbaAuth::Scram => "scram-sha-256",
        }
    }

    /// The `password_encryption` the superuser's password is stored with.
    pub(crate) fn password_encryption(self) -> &'static str {
        match self {
            HbaAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// How to set up a [`PgCluster`](crate::PgCluster). `Default` gives SCRAM authentication, the
/// superuser `postgres` with a random 24-character password, and no extra databases.
///
/// ```
/// use sdm_testkit::{HbaAuth, PgConfig};
/// let config = PgConfig::default()
///     .auth(HbaAuth::Md5)
///     .database("app")
///     .setting("max_connections", "50");
/// assert_eq!(config.databases, ["app"]);
/// ```
#[derive(Clone)]
pub struct PgConfig {
    /// The pg_hba.conf method for 127.0.0.1 and ::1.
    pub auth: HbaAuth,
    /// The bootstrap superuser's name.
    pub superuser: String,
    /// The bootstrap superuser's password (no line breaks).
    pub password: String,
    /// Databases to create besides `postgres`.
    pub databases: Vec<String>,
    /// Extra postgresql.conf settings, written after the testkit's own so they win. The port
    /// is chosen by the testkit and passed on the command line, so `port` here has no effect.
    pub settings: Vec<(String, String)>,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            auth: HbaAuth::default(),
            superuser: "postgres".to_string(),
            password: random_password(),
            databases: Vec::new(),
            settings: Vec::new(),
        }
    }
}

impl PgConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the authentication method.
    pub fn auth(mut self, auth: HbaAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the superuser's name.
    pub fn superuser(mut self, name: impl Into<String>) -> Self {
        self.superuser = name.into();
        self
    }

    /// Sets the superuser's password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = password.into();
        self
    }

    /// Adds a database to create.
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.databases.push(name.into());
        self
    }

    /// Adds a postgresql.conf setting.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Rejects values that would corrupt the files they are written to.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.superuser.is_empty() || self.superuser.contains(['\0', '\n', '\r']) {
            return Err(format!(
                "superuser {:?} must be non-empty and on one line",
                self.superuser
            ));
        }
        // initdb reads the password file's first line.
        if self.password.is_empty() || self.password.contains(['\0', '\n', '\r']) {
            return Err("password must be non-empty and on one line".to_string());
        }
        for name in &self.databases {
            if name.is_empty() || name.contains('\0') {
                return Err(format!("database name {name:?} must be non-empty"));
            }
        }
        for (name, value) in &self.settings {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !plain {
                return Err(format!("setting name {name:?} is not a parameter name"));
            }
            if value.contains(['\0', '\n', '\r']) {
                return Err(format!("setting {name} must be on one line"));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("auth", &self.auth)
            .field("superuser", &self.superuser)
            .field("password", &"<redacted>")
            .field("databases", &self.databases)
            .field("settings", &self.settings)
            .finish()
    }
}

/// 24 random letters and digits: safe in URLs, conninfo strings and SQL literals unquoted.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const LEN: usize = 24;
    let mut out = String::with_capacity(LEN);
    let mut fallback = 0u64;
    while out.len() < LEN {
        let mut buf = [0u8; 64];
        if !fill_from_urandom(&mut buf) {
            fill_from_hasher(&mut buf, &mut fallback);
        }
        // Rejection sampling: 248 = 4 × 62, so accepted bytes map uniformly.
        for byte in buf.into_iter().filter(|b| *b < 248) {
            if out.len() == LEN {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
        }
    }
    out
}

fn fill_from_urandom(buf: &mut [u8]) -> bool {
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok()
}

/// Without /dev/urandom, std's per-process random hash keys are the next best source.
fn fill_from_hasher(buf: &mut [u8], counter: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(*counter);
        *counter += 1;
        let bytes = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_password_is_24_random_alphanumerics() {
        let a = PgConfig::default().password;
        let b = PgConfig::default().password;
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn hasher_fallback_also_gives_passwords() {
        let mut buf = [0u8; 20];
        let mut counter = 0;
        fill_from_hasher(&mut buf, &mut counter);
        assert_eq!(counter, 3);
        assert_ne!(buf, [0u8; 20]);
    }

    #[test]
    fn methods_match_pg_hba_names() {
        assert_eq!(HbaAuth::default(), HbaAuth::Scram);
        let names: Vec<_> = [
            HbaAuth::Trust,
            HbaAuth::Password,
            HbaAuth::Md5,
            HbaAuth::Scram,
        ]
        .into_iter()
        .map(HbaAuth::method)
        .collect();
        assert_eq!(names, ["trust", "password", "md5", "scram-sha-256"]);
    }

    #[test]
    fn debug_hides_the_password() {
        let config = PgConfig::default().password("hunter2hunter2");
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn validation_rejects_what_would_break_files() {
        assert!(PgConfig::default().validate().is_ok());
        assert!(PgConfig::default().password("a\nb").validate().is_err());
        assert!(
            PgConfig::default()
                .setting("x = 1\ny", "2")
                .validate()
                .is_err()
        );
        assert!(
            PgConfig::default()
                .setting("work_mem", "4MB\n")
                .validate()
                .is_err()
        );
        assert!(
            PgConfig::default()
                .setting("auto_explain.log_min_duration", "0")
                .validate()
                .is_ok()
        );
    }
}
