//! Addresses as people write them: `host:port` (IPv6 in brackets) and the `https://host[:port][/prefix]`
//! URLs of control planes. One grammar for the client library, the gateway and the server.
//!
//! Hosts come back without brackets (`::1`, not `[::1]`); [`authority`] puts them back.

/// Why an address or URL was refused. The text reads after the address: `"x:0" has an invalid
/// port "0"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The URL does not start with `https://`.
    #[error("is not https")]
    NotHttps,
    /// Nothing before the port.
    #[error("has no host")]
    NoHost,
    /// `[` without `]`.
    #[error("has an unclosed '['")]
    UnclosedBracket,
    /// Something other than `:port` after `]`.
    #[error("has text after ']'")]
    TextAfterBracket,
    /// `::1:8443` instead of `[::1]:8443`.
    #[error("has an IPv6 address without [brackets]")]
    BareIpv6,
    /// Not a number from 1 to 65535.
    #[error("has an invalid port {0:?}")]
    InvalidPort(String),
    /// A port is required here.
    #[error("has no port")]
    NoPort,
    /// `user@host`.
    #[error("has user information")]
    UserInfo,
    /// `?…` or `#…`.
    #[error("has a query or a fragment")]
    QueryOrFragment,
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` into the host (without brackets) and the
/// port, if one is given. Port 0 is refused: nothing can be reached there.
pub fn split_host_port(text: &str) -> Result<(String, Option<u16>), AddrError> {
    if text.contains('@') {
        return Err(AddrError::UserInfo);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(AddrError::UnclosedBracket)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(AddrError::TextAfterBracket),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return Err(AddrError::BareIpv6),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(AddrError::NoHost);
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(AddrError::InvalidPort(p.to_owned())),
            Ok(p) => Some(p),
        },
        None => None,
    };
    Ok((host.to_owned(), port))
}

/// `host:port` or `[v6]:port`, the port required: (host without brackets, port).
pub fn host_and_port(text: &str) -> Result<(String, u16), AddrError> {
    match split_host_port(text)? {
        (host, Some(port)) => Ok((host, port)),
        (_, None) => Err(AddrError::NoPort),
    }
}

/// `host:port`, with brackets around an IPv6 host: what a `Host` header or a URL carries.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A parsed `https://host[:port][/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port; 443 when the URL has none.
    pub port: u16,
    /// Path prefix without a trailing `/` (`""` for none), e.g. `/sdm`.
    pub prefix: String,
}

impl HttpsUrl {
    /// Parses `https://host[:port][/prefix]`: no user information, query or fragment.
    pub fn parse(url: &str) -> Result<HttpsUrl, AddrError> {
        let rest = url.strip_prefix("https://").ok_or(AddrError::NotHttps)?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(AddrError::QueryOrFragment);
        }
        let (host, port) = split_host_port(authority)?;
        Ok(HttpsUrl {
            host,
            port: port.unwrap_or(443),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `host:port` (brackets around IPv6): the `Host` header.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// `https://host:port/prefix`, to which API paths (`/v1/…`) are appended.
    pub fn base(&self) -> String {
        format!("https://{}{}", self.authority(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_forms() {
        assert_eq!(
            split_host_port("gw.example.com:8444"),
            Ok(("gw.example.com".into(), Some(8444)))
        );
        assert_eq!(
            split_host_port("[::1]:8444"),
            Ok(("::1".into(), Some(8444)))
        );
        assert_eq!(split_host_port("[::1]"), Ok(("::1".into(), None)));
        assert_eq!(split_host_port("host"), Ok(("host".into(), None)));
        assert_eq!(host_and_port("[::1]:9"), Ok(("::1".into(), 9)));
        assert_eq!(host_and_port("host"), Err(AddrError::NoPort));
        assert_eq!(host_and_port("[::1]"), Err(AddrError::NoPort));
        for (bad, why) in [
            ("", AddrError::NoHost),
            (":80", AddrError::NoHost),
            ("[::1", AddrError::UnclosedBracket),
            ("[::1]x", AddrError::TextAfterBracket),
            ("::1:8443", AddrError::BareIpv6),
            ("h:0", AddrError::InvalidPort("0".into())),
            ("h:99999", AddrError::InvalidPort("99999".into())),
            ("h:port", AddrError::InvalidPort("port".into())),
            ("u@h:1", AddrError::UserInfo),
        ] {
            assert_eq!(split_host_port(bad), Err(why), "{bad}");
        }
        assert_eq!(authority("::1", 5), "[::1]:5");
        assert_eq!(authority("a.b", 5), "a.b:5");
    }

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://cp.example.com:8443/sdm/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("cp.example.com", 8443, "/sdm")
        );
        assert_eq!(u.base(), "https://cp.example.com:8443/sdm");
        let u = HttpsUrl::parse("https://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(HttpsUrl::parse("https://x").unwrap().port, 443);
        for (bad, why) in [
            ("http://x:1", AddrError::NotHttps),
            ("x:1", AddrError::NotHttps),
            ("https://", AddrError::NoHost),
            ("https://:8443", AddrError::NoHost),
            ("https://u@x:1", AddrError::UserInfo),
            ("https://x:1/?q", AddrError::QueryOrFragment),
            ("https://x:1?q", AddrError::QueryOrFragment),
            ("https://x:1#f", AddrError::QueryOrFragment),
            ("https://x:0", AddrError::InvalidPort("0".into())),
            ("https://::1:8443", AddrError::BareIpv6),
        ] {
            assert_eq!(HttpsUrl::parse(bad), Err(why), "{bad}");
        }
    }
}
