//! Parsing `https://host:port[/prefix]` URLs and `host:port` addresses without a URL crate.

use crate::error::{Error, Result};

/// A parsed control plane URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// As given (for messages).
    pub url: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (443 when absent).
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why: &str| {
            Error::invalid_argument(format!(
                "invalid sdm API URL {url:?}: {why} (expected https://host:port)"
            ))
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("it must start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        if path.contains(['?', '#']) {
            return Err(bad("query strings are not allowed"));
        }
        Ok(Endpoint {
            url: url.to_owned(),
            host,
            port: port.unwrap_or(443),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` header value.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`.
pub(crate) fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !host.is_empty() => {
            Some((host.to_owned(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((authority.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("127.0.0.1", 8443, "")
        );
        let e = Endpoint::parse("https://sdm.example.com/base/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("sdm.example.com", 443, "/base")
        );
        let e = Endpoint::parse("https://[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.authority(), "[::1]:9000");
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "http://127.0.0.1:80",
            "https://",
            "https://host:notaport",
            "https://user@host",
            "https://host:1/x?y",
            "127.0.0.1:8443",
            "https://host:99999",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
