//! The login packets: the server's greeting (`HandshakeV10`), the client's answer
//! (`HandshakeResponse41`, or the short `SSLRequest`), and the capability flags both sides end up
//! with.
//!
//! The gateway greets the client with the upstream server's version, connection id (so that
//! `KILL QUERY <id>` from another connection reaches it), character set and status, but only the
//! capabilities it can carry: no TLS (the tunnel is encrypted), no compression (the tap reads
//! plain packets), no local files (`LOAD DATA LOCAL` would let the server read the client's
//! files), no query attributes (they change `COM_QUERY`'s layout). The upstream login then asks
//! for exactly what the client took, so both sides agree on the format of what follows.

use super::packet::Fields;

pub(crate) const LONG_PASSWORD: u32 = 1;
pub(crate) const CONNECT_WITH_DB: u32 = 1 << 3;
#[cfg(test)]
pub(crate) const LOCAL_FILES: u32 = 1 << 7;
pub(crate) const PROTOCOL_41: u32 = 1 << 9;
pub(crate) const SSL: u32 = 1 << 11;
pub(crate) const SECURE_CONNECTION: u32 = 1 << 15;
pub(crate) const PLUGIN_AUTH: u32 = 1 << 19;
#[cfg(test)]
pub(crate) const CONNECT_ATTRS: u32 = 1 << 20;
pub(crate) const PLUGIN_AUTH_LENENC: u32 = 1 << 21;

/// What the gateway can carry, whatever the upstream offers: the flags that do not change the
/// packets the tap reads nor need the gateway's help.
const CARRIED: u32 = LONG_PASSWORD
    | 1 << 1 // FOUND_ROWS
    | 1 << 2 // LONG_FLAG
    | CONNECT_WITH_DB
    | 1 << 4 // NO_SCHEMA
    | 1 << 6 // ODBC
    | 1 << 8 // IGNORE_SPACE
    | PROTOCOL_41
    | 1 << 10 // INTERACTIVE
    | 1 << 12 // IGNORE_SIGPIPE
    | 1 << 13 // TRANSACTIONS
    | SECURE_CONNECTION
    | 1 << 16 // MULTI_STATEMENTS
    | 1 << 17 // MULTI_RESULTS
    | 1 << 18 // PS_MULTI_RESULTS
    | PLUGIN_AUTH
    | PLUGIN_AUTH_LENENC
    | 1 << 22 // CAN_HANDLE_EXPIRED_PASSWORDS
    | 1 << 23 // SESSION_TRACK
    | 1 << 24; // DEPRECATE_EOF

/// What the gateway needs of the upstream server to log in.
const NEEDED: u32 = PROTOCOL_41 | SECURE_CONNECTION;

/// The upstream server's greeting.
#[derive(Debug, Clone)]
pub(crate) struct Greeting {
    pub(crate) version: Vec<u8>,
    pub(crate) connection_id: u32,
    pub(crate) capabilities: u32,
    pub(crate) charset: u8,
    pub(crate) status: u16,
    /// The scramble the password is proven over (20 bytes for the usual plugins).
    pub(crate) scramble: Vec<u8>,
    pub(crate) plugin: String,
}

impl Greeting {
    /// Reads a `HandshakeV10` payload.
    pub(crate) fn parse(payload: &[u8]) -> Result<Greeting, String> {
        let bad = |what: &str| format!("the server's greeting is malformed ({what})");
        let mut f = Fields::new(payload);
        match f.u8() {
            Some(10) => {}
            Some(v) => return Err(format!("the server speaks protocol version {v}, not 10")),
            None => return Err(bad("empty")),
        }
        let version = f.nul_terminated().to_vec();
        let connection_id = f.u32().ok_or_else(|| bad("connection id"))?;
        let mut scramble = f.bytes(8).ok_or_else(|| bad("scramble"))?.to_vec();
        f.u8().ok_or_else(|| bad("filler"))?;
        let low = f.u16().ok_or_else(|| bad("capabilities"))?;
        let charset = f.u8().unwrap_or(0);
        let status = f.u16().unwrap_or(0);
        let high = f.u16().unwrap_or(0);
        let capabilities = u32::from(low) | u32::from(high) << 16;
        let auth_len = f.u8().unwrap_or(0);
        let _reserved = f.bytes(10);
        if capabilities & SECURE_CONNECTION != 0 {
            let n = usize::from(auth_len).saturating_sub(8).max(13);
            let part = f.bytes(n).unwrap_or_else(|| f.rest());
            // The second part ends with a NUL that is not part of the scramble.
            let part = part.strip_suffix(&[0]).unwrap_or(part);
            scramble.extend_from_slice(part);
        }
        let plugin = if capabilities & PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(f.nul_terminated()).into_owned()
        } else {
            String::new()
        };
        if capabilities & NEEDED != NEEDED {
            return Err("the server is too old: it lacks protocol 4.1 authentication".into());
        }
        Ok(Greeting {
            version,
            connection_id,
            capabilities,
            charset,
            status,
            scramble,
            plugin,
        })
    }

    /// What the gateway offers its client in front of this server.
    pub(crate) fn offered(&self) -> u32 {
        self.capabilities & CARRIED
    }

    /// The gateway's greeting to the client: this server's identity, the capabilities
    /// [`offered`](Self::offered), the gateway's own `scramble` (20 bytes) and
    /// `mysql_native_password`.
    pub(crate) fn to_client(&self, scramble: &[u8; 20]) -> Vec<u8> {
        let caps = self.offered();
        let mut p = vec![10];
        p.extend_from_slice(&self.version);
        p.push(0);
        p.extend_from_slice(&self.connection_id.to_le_bytes());
        p.extend_from_slice(&scramble[..8]);
        p.push(0);
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(self.charset);
        p.extend_from_slice(&self.status.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        // Reserved; MariaDB reads its extended capabilities from the last four: none.
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&scramble[8..]);
        p.push(0);
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientHello {
    /// It asked for TLS, which was not offered.
    Ssl,
    Response(Response),
}

/// What the gateway keeps of a `HandshakeResponse41`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) capabilities: u32,
    pub(crate) max_packet: u32,
    pub(crate) charset: u8,
    pub(crate) user: String,
    pub(crate) database: Option<String>,
}

impl ClientHello {
    pub(crate) fn parse(payload: &[u8]) -> Result<ClientHello, String> {
        let bad = |what: &str| format!("the client's login packet is malformed ({what})");
        let mut f = Fields::new(payload);
        let capabilities = f.u32().ok_or_else(|| bad("capabilities"))?;
        if capabilities & PROTOCOL_41 == 0 {
            return Err("the client does not speak protocol 4.1, which the gateway needs".into());
        }
        let max_packet = f.u32().ok_or_else(|| bad("max packet"))?;
        let charset = f.u8().ok_or_else(|| bad("charset"))?;
        f.bytes(23).ok_or_else(|| bad("filler"))?;
        if f.is_empty() && capabilities & SSL != 0 {
            return Ok(ClientHello::Ssl);
        }
        let user = String::from_utf8_lossy(f.nul_terminated()).into_owned();
        // The password proof is read past, never checked: the stream carries a verified lease.
        if capabilities & PLUGIN_AUTH_LENENC != 0 {
            let n = f.lenenc().ok_or_else(|| bad("auth response"))?;
            let n = usize::try_from(n).map_err(|_| bad("auth response"))?;
            f.bytes(n).ok_or_else(|| bad("auth response"))?;
        } else if capabilities & SECURE_CONNECTION != 0 {
            let n = f.u8().ok_or_else(|| bad("auth response"))?;
            f.bytes(usize::from(n))
                .ok_or_else(|| bad("auth response"))?;
        } else {
            f.nul_terminated();
        }
        let database = if capabilities & CONNECT_WITH_DB != 0 {
            let db = f.nul_terminated();
            (!db.is_empty()).then(|| String::from_utf8_lossy(db).into_owned())
        } else {
            None
        };
        Ok(ClientHello::Response(Response {
            capabilities,
            max_packet,
            charset,
            user,
            database,
        }))
    }
}

/// The flags of the gateway's own login upstream: what the client took of the offer, what the
/// login needs, the database flag when one is named, TLS when used.
pub(crate) fn upstream_capabilities(
    greeting: &Greeting,
    client: &Response,
    database: bool,
    tls: bool,
) -> u32 {
    let mut caps = client.capabilities & greeting.offered() & !CONNECT_WITH_DB;
    caps |= NEEDED | (greeting.capabilities & (PLUGIN_AUTH | PLUGIN_AUTH_LENENC));
    if database {
        caps |= CONNECT_WITH_DB;
    }
    if tls {
        caps |= SSL;
    }
    caps
}

/// The `SSLRequest` that asks the server for TLS.
pub(crate) fn ssl_request(caps: u32, client: &Response) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&client.max_packet.to_le_bytes());
    p.push(client.charset);
    p.extend_from_slice(&[0; 23]);
    p
}

/// The gateway's `HandshakeResponse41` upstream.
pub(crate) fn login(
    caps: u32,
    client: &Response,
    user: &str,
    auth: &[u8],
    database: Option<&str>,
    plugin: &str,
) -> Vec<u8> {
    let mut p = ssl_request(caps, client);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    if caps & PLUGIN_AUTH_LENENC != 0 {
        super::packet::put_lenenc(&mut p, auth.len());
    } else {
        p.push(auth.len().min(255) as u8);
    }
    p.extend_from_slice(auth);
    if let Some(db) = database {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    if caps & PLUGIN_AUTH != 0 {
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting as captured from `mariadbd` (scramble bytes replaced).
    pub(crate) fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&0xf7feu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81bfu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn the_client_is_greeted_with_the_servers_identity_and_only_what_can_be_carried() {
        let greeting = Greeting::parse(&mariadb_greeting()).unwrap();
        assert_eq!(greeting.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(greeting.plugin, "mysql_native_password");
        assert_eq!(greeting.connection_id, 42);
        assert_ne!(
            greeting.capabilities & (SSL | LOCAL_FILES | CONNECT_ATTRS),
            0
        );
        let ours = [9u8; 20];
        let to_client = Greeting::parse(&greeting.to_client(&ours)).unwrap();
        assert_eq!(to_client.version, greeting.version);
        assert_eq!(to_client.connection_id, 42);
        assert_eq!(to_client.scramble, ours);
        assert_eq!(
            to_client.capabilities & (SSL | LOCAL_FILES | CONNECT_ATTRS | 1 << 5),
            0
        );
        assert_eq!(to_client.capabilities & PLUGIN_AUTH, PLUGIN_AUTH);
    }

    #[test]
    fn client_responses_are_read_whatever_their_shape() {
        let mut p = Vec::new();
        let caps = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | LOCAL_FILES;
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"job\0");
        p.push(20);
        p.extend_from_slice(&[1; 20]);
        p.extend_from_slice(b"app\0caching_sha2_password\0");
        let ClientHello::Response(r) = ClientHello::parse(&p).unwrap() else {
            panic!("not a response");
        };
        assert_eq!(
            (r.user.as_str(), r.database.as_deref()),
            ("job", Some("app"))
        );
        let greeting = Greeting::parse(&mariadb_greeting()).unwrap();
        let up = upstream_capabilities(&greeting, &r, false, false);
        assert_eq!(
            up & (LOCAL_FILES | CONNECT_WITH_DB | SSL),
            0,
            "never local files"
        );
        // Cut anywhere, the packet is refused or read, never a panic.
        for n in 0..p.len() {
            let _ = ClientHello::parse(&p[..n]);
        }
        let ssl = ssl_request(caps | SSL, &r);
        assert_eq!(ClientHello::parse(&ssl), Ok(ClientHello::Ssl));
        assert!(ClientHello::parse(&[0; 32]).unwrap_err().contains("4.1"));
    }
}
