//! The store's connection URL: libpq's two forms (`postgres://user:password@host:port/db?…`
//! and `key=value …`), with libpq's TLS parameters, which tokio-postgres does not parse
//! itself:
//!
//! - `sslmode`: `disable` (or `allow`): clear text; `prefer` (the default): TLS when the server
//!   offers it, unverified, else clear text; `require`: TLS, unverified (libpq's meaning);
//!   `verify-full`: TLS, the certificate checked against `sslrootcert` and the host name.
//!   `verify-ca` is refused: it would accept any certificate the CA ever signed, for any host.
//! - `sslrootcert=FILE`: the PEM CA certificate(s) for `verify-full`, read when the URL is
//!   parsed so that a missing file is reported at start, naming the file.

use std::str::FromStr;
use std::sync::Arc;

use rustls::ClientConfig;
use sdm_proto::api::TlsMode;
use sdm_proto::postgres_tls::{self, TlsConfigError};
use tokio_postgres::Config;
use tokio_postgres::config::{Host, SslMode};

use super::CONNECT_TIMEOUT;
use super::tls::MakeRustlsConnect;
use crate::store::StoreError;

/// A PostgreSQL connection URL. Its `Debug` and `Display` leave the password out.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub(super) config: Config,
    tls: Arc<ClientConfig>,
    /// The `sslmode` given, shown by [`DatabaseUrl::redacted`].
    sslmode: Option<&'static str>,
}

/// The TLS parameters taken out of a URL.
#[derive(Default)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl TlsParams {
    /// Keeps `key`'s value if it is a TLS parameter; false for any other key.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return false,
        }
        true
    }
}

fn refused(why: impl Into<String>) -> StoreError {
    StoreError::backend("use the PostgreSQL URL", why.into())
}

impl DatabaseUrl {
    /// Parses and checks a URL, reading its `sslrootcert` file if it names one.
    pub fn parse(text: &str) -> Result<DatabaseUrl, StoreError> {
        let text = text.trim();
        let (rest, params) = if text.starts_with("postgres://") || text.starts_with("postgresql://")
        {
            split_url(text)?
        } else {
            split_key_values(text)?
        };
        let mut config = Config::from_str(&rest)
            .map_err(|e| StoreError::backend("parse the PostgreSQL URL", e))?;
        let (sslmode, ssl, tls_mode) = match params.sslmode.as_deref() {
            None => (None, SslMode::Prefer, TlsMode::Require),
            Some("disable") => (Some("disable"), SslMode::Disable, TlsMode::Require),
            Some("allow") => (Some("allow"), SslMode::Disable, TlsMode::Require),
            Some("prefer") => (Some("prefer"), SslMode::Prefer, TlsMode::Require),
            Some("require") => (Some("require"), SslMode::Require, TlsMode::Require),
            Some("verify-full") => (Some("verify-full"), SslMode::Require, TlsMode::VerifyFull),
            Some("verify-ca") => {
                return Err(refused(
                    "sslmode=verify-ca is not supported, since it accepts a certificate the CA \
                     issued for any host: use sslmode=verify-full (the certificate must name the \
                     host the URL gives)",
                ));
            }
            Some(other) => {
                return Err(refused(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-full"
                )));
            }
        };
        let ca_pem = match (&params.sslrootcert, tls_mode) {
            (Some(path), TlsMode::VerifyFull) => Some(read_ca(path)?),
            (None, TlsMode::VerifyFull) => {
                return Err(refused(
                    "sslmode=verify-full needs sslrootcert=FILE, the PEM certificate of the CA \
                     that signed the database server's certificate",
                ));
            }
            (Some(_), _) => {
                return Err(refused(
                    "sslrootcert is only used with sslmode=verify-full; add sslmode=verify-full \
                     to have the database's certificate checked (or drop sslrootcert)",
                ));
            }
            (None, _) => None,
        };
        let tls = postgres_tls::client_config(tls_mode, ca_pem.as_deref()).map_err(|e| {
            let path = params.sslrootcert.as_deref().unwrap_or_default();
            match e {
                TlsConfigError::BadCa(why) => refused(format!("sslrootcert {path}: {why}")),
                other => refused(other.to_string()),
            }
        })?;
        config.ssl_mode(ssl);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sdm-server");
        }
        if config.get_hosts().is_empty() {
            return Err(refused(
                "it names no host; give one, e.g. postgres://sdm@db.internal:5432/sdm",
            ));
        }
        Ok(DatabaseUrl {
            config,
            tls,
            sslmode,
        })
    }

    /// `postgres://user@host:port/dbname` (and `?sslmode=…` when given), without the password.
    pub fn redacted(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(Host::Tcp(name)) if name.contains(':') => format!("[{name}]"),
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => String::new(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
        let db = c.get_dbname().unwrap_or_default();
        let mode = self
            .sslmode
            .map(|m| format!("?sslmode={m}"))
            .unwrap_or_default();
        format!("postgres://{user}{host}:{port}/{db}{mode}")
    }

    /// What connections to this URL negotiate TLS with (used only when `sslmode` asks for it).
    pub(super) fn tls(&self) -> MakeRustlsConnect {
        MakeRustlsConnect::new(self.tls.clone())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn read_ca(path: &str) -> Result<String, StoreError> {
    std::fs::read_to_string(path).map_err(|e| {
        refused(format!(
            "cannot read sslrootcert {path}: {}",
            sdm_proto::error::describe_io(&e)
        ))
    })
}

/// The URL form: the TLS parameters leave the query string, the rest stays as written.
fn split_url(text: &str) -> Result<(String, TlsParams), StoreError> {
    let mut params = TlsParams::default();
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !params.take(key, percent_decode(value)?) {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| refused(format!("{text:?} holds a malformed %-escape")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| refused(format!("{text:?} decodes to invalid UTF-8")))
}

/// The `key=value` form: the TLS parameters leave it, the other pairs stay as written. A value
/// is a run of non-blank characters or single-quoted, with `\` escaping the next character.
fn split_key_values(text: &str) -> Result<(String, TlsParams), StoreError> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not a pair: tokio-postgres reports it.
            return Ok((text.to_owned(), TlsParams::default()));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = text.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '\'' if quoted => {
                    end = at + 1;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        if !params.take(&key, value) {
            kept.push(&text[start..end]);
        }
    }
    Ok((kept.join(" "), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_both_forms_and_the_rest_stays() {
        let (rest, p) =
            split_url("postgres://sdm@db/sdm?connect_timeout=2&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://sdm@db/sdm?connect_timeout=2");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let (rest, p) = split_key_values(
            "host=db  sslmode = verify-full user='s d\\'m' sslrootcert='/etc/my ca.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(rest, "host=db user='s d\\'m' dbname=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        assert!(percent_decode("%zz").is_err());
    }
}
