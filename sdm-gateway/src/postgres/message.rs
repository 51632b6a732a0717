//! The parts of the PostgreSQL wire protocol (v3) the gateway reads and writes: the startup
//! packet, authentication messages, errors. The startup packet (which only a frontend sends) is
//! parsed here; backend messages are cut from the stream here, within a length limit, and
//! parsed by `postgres-protocol`. No length field is trusted beyond its limit.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, ErrorFields, Header};

/// `SSLRequest` code.
pub(crate) const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest` code.
pub(crate) const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest` code.
pub(crate) const CANCEL_REQUEST: u32 = 80_877_102;
/// Largest startup packet accepted (PostgreSQL's own limit).
pub(crate) const MAX_STARTUP: usize = 10_000;
/// Largest backend message read during authentication.
pub(crate) const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// What a client sends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Startup {
    /// Asks for TLS; answered `N` (the tunnel is already encrypted).
    Ssl,
    /// Asks for GSSAPI encryption; answered `N`.
    GssEnc,
    /// Cancels a running query of another connection; the whole 16-byte packet.
    Cancel(Vec<u8>),
    /// A normal start.
    Start {
        /// Protocol minor version asked for (3.x).
        minor: u16,
        /// Parameters in the order sent (`user`, `database`, `application_name`, …).
        params: Vec<(String, String)>,
        /// The packet as received.
        raw: Vec<u8>,
    },
}

/// Why a startup packet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StartupError {
    #[error("invalid startup packet length {0}")]
    Length(usize),
    #[error("unsupported frontend protocol {0}.{1}: this gateway speaks 3.0")]
    Protocol(u16, u16),
    #[error("invalid startup packet layout")]
    Layout,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses the first packet from `buf`: `Ok(None)` until it is complete.
pub(crate) fn parse_startup(buf: &[u8]) -> Result<Option<(Startup, usize)>, StartupError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = be32(buf) as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(StartupError::Length(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = &buf[..len];
    let code = be32(&packet[4..8]);
    let startup = match code {
        SSL_REQUEST if len == 8 => Startup::Ssl,
        GSSENC_REQUEST if len == 8 => Startup::GssEnc,
        CANCEL_REQUEST if len == 16 => Startup::Cancel(packet.to_vec()),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => return Err(StartupError::Layout),
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(StartupError::Protocol(major, minor));
            }
            Startup::Start {
                minor,
                params: parse_params(&packet[8..])?,
                raw: packet.to_vec(),
            }
        }
    };
    Ok(Some((startup, len)))
}

/// `name\0value\0 … \0`
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstring(body).ok_or(StartupError::Layout)?;
        if name.is_empty() {
            return if rest.is_empty() {
                Ok(params)
            } else {
                Err(StartupError::Layout)
            };
        }
        let (value, rest) = cstring(rest).ok_or(StartupError::Layout)?;
        params.push((name, value));
        body = rest;
    }
}

/// A NUL-terminated string at the start of `b`, and what follows it.
fn cstring(b: &[u8]) -> Option<(String, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((
        String::from_utf8_lossy(&b[..end]).into_owned(),
        &b[end + 1..],
    ))
}

/// A message with a one-byte tag and a length: `tag | len:i32 | body`.
pub(crate) fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A StartupMessage for protocol 3.0 with these parameters.
pub(crate) fn startup_message(params: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x0003_0000u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// An `SSLRequest` packet.
pub(crate) fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

/// `NegotiateProtocolVersion`: the newest minor version spoken, and options not recognised.
pub(crate) fn negotiate_protocol_version(minor: u16, unrecognised: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u32::from(minor).to_be_bytes());
    body.extend_from_slice(&(unrecognised.len() as u32).to_be_bytes());
    for o in unrecognised {
        body.extend_from_slice(o.as_bytes());
        body.push(0);
    }
    message(b'v', &body)
}

/// An `ErrorResponse` (severity FATAL unless given) with SQLSTATE `code`.
pub(crate) fn error_response(code: &str, message_text: &str, hint: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message_text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    if let Some(hint) = hint {
        body.push(b'H');
        body.extend_from_slice(hint.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// The fields of an `ErrorResponse` or `NoticeResponse` body, also of one cut short: the fields
/// before the cut.
pub(crate) fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut whole = BytesMut::from(&message(b'E', body)[..]);
    match backend::Message::parse(&mut whole) {
        Ok(Some(backend::Message::ErrorResponse(error))) => fields(error.fields()),
        _ => Vec::new(),
    }
}

/// The fields of a parsed `ErrorResponse` or `NoticeResponse` up to the first malformed one,
/// values as text.
pub(crate) fn fields(mut fields: ErrorFields<'_>) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while let Ok(Some(f)) = fields.next() {
        out.push((
            f.type_(),
            String::from_utf8_lossy(f.value_bytes()).into_owned(),
        ));
    }
    out
}

/// One field of an error.
pub(crate) fn field(fields: &[(u8, String)], tag: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v.as_str())
}

/// A backend message read whole, as received (tag, length and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendMessage {
    pub(crate) tag: u8,
    pub(crate) raw: BytesMut,
}

impl BackendMessage {
    /// The message parsed by `postgres-protocol`; an error for a tag or an authentication
    /// request it does not know, or a body that does not fit the tag.
    pub(crate) fn parse(&self) -> Result<backend::Message, String> {
        let mut raw = self.raw.clone();
        match backend::Message::parse(&mut raw) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err("incomplete message".into()),
            Err(e) => Err(format!("malformed {:?} message: {e}", char::from(self.tag))),
        }
    }

    /// The method number of an authentication request (`R`).
    pub(crate) fn auth_method(&self) -> Option<u32> {
        let code = self.raw.get(5..9).filter(|_| self.tag == b'R')?;
        Some(be32(code))
    }
}

/// Takes one whole message from the front of `buf`: `Ok(None)` until complete. A length over
/// `max` is an error before any of the body is awaited.
pub(crate) fn take_message(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BackendMessage>, String> {
    let header = match Header::parse(buf) {
        Ok(Some(header)) => header,
        Ok(None) => return Ok(None),
        Err(_) => {
            let len = buf.get(1..5).map_or(0, be32) as i32;
            return Err(format!("invalid message length {len}"));
        }
    };
    let len = usize::try_from(header.len()).unwrap_or(usize::MAX);
    if len > max {
        return Err(format!("invalid message length {len}"));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    Ok(Some(BackendMessage {
        tag: header.tag(),
        raw: buf.split_to(len + 1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trips() {
        let params = vec![
            ("user".to_owned(), "anything".to_owned()),
            ("database".to_owned(), "app".to_owned()),
        ];
        let packet = startup_message(&params);
        for cut in 0..packet.len() {
            assert_eq!(parse_startup(&packet[..cut]), Ok(None));
        }
        let (startup, n) = parse_startup(&packet).unwrap().unwrap();
        assert_eq!(n, packet.len());
        assert_eq!(
            startup,
            Startup::Start {
                minor: 0,
                params,
                raw: packet.clone()
            }
        );
    }

    #[test]
    fn special_requests_and_garbage() {
        assert_eq!(
            parse_startup(&ssl_request()).unwrap().unwrap().0,
            Startup::Ssl
        );
        let mut gss = ssl_request();
        gss[4..].copy_from_slice(&GSSENC_REQUEST.to_be_bytes());
        assert_eq!(parse_startup(&gss).unwrap().unwrap().0, Startup::GssEnc);
        let mut cancel = vec![0, 0, 0, 16];
        cancel.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        cancel.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            parse_startup(&cancel).unwrap().unwrap().0,
            Startup::Cancel(_)
        ));
        assert_eq!(
            parse_startup(b"\xff\xff\xff\xff\x00\x03\x00\x00"),
            Err(StartupError::Length(0xffff_ffff))
        );
        assert_eq!(
            parse_startup(b"GET / HTTP/1.1\r\n"),
            Err(StartupError::Length(0x4745_5420))
        );
        assert_eq!(
            parse_startup(b"\x00\x00\x00\x08\x00\x02\x00\x00"),
            Err(StartupError::Protocol(2, 0))
        );
        // Parameters without their terminator.
        assert_eq!(
            parse_startup(b"\x00\x00\x00\x0d\x00\x03\x00\x00user\x00"),
            Err(StartupError::Layout)
        );
    }

    #[test]
    fn errors_encode_and_parse() {
        let e = error_response("28P01", "password authentication failed", Some("fix it"));
        let mut buf = BytesMut::from(&e[..]);
        let m = take_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(m.tag, b'E');
        assert_eq!(m.raw, e);
        assert!(buf.is_empty());
        let all = error_fields(&e[5..]);
        assert_eq!(field(&all, b'C'), Some("28P01"));
        assert_eq!(field(&all, b'M'), Some("password authentication failed"));
        assert_eq!(field(&all, b'H'), Some("fix it"));
        let Ok(backend::Message::ErrorResponse(parsed)) = m.parse() else {
            panic!("not an error response");
        };
        assert_eq!(fields(parsed.fields()), all);
        // Cut short (the tap keeps the first KiB of a body): the whole fields before the cut.
        let cut = error_fields(&e[5..e.len() - 9]);
        assert_eq!(field(&cut, b'M'), Some("password authentication failed"));
        assert_eq!(field(&cut, b'H'), None);
        let mut huge = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(take_message(&mut huge, 1024).is_err());
        let mut negative = BytesMut::from(&[b'D', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(take_message(&mut negative, 1024).is_err());
        let mut short = BytesMut::from(&[b'Z', 0, 0, 0, 3][..]);
        assert!(take_message(&mut short, 1024).is_err());
    }

    #[test]
    fn backend_messages_wait_for_their_last_byte() {
        let mut stream = message(b'R', &10u32.to_be_bytes());
        stream.extend(message(b'S', b"client_encoding\0UTF8\0"));
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let first = take_message(&mut buf, 1024).unwrap();
            assert_eq!(first.is_some(), cut >= 9, "{cut}");
        }
        let mut buf = BytesMut::from(&stream[..]);
        let auth = take_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(auth.auth_method(), Some(10));
        let status = take_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(status.auth_method(), None);
        assert!(matches!(
            status.parse(),
            Ok(backend::Message::ParameterStatus(_))
        ));
        assert!(buf.is_empty());
        // A tag postgres-protocol does not know is cut all the same, and not parsed.
        let mut buf = BytesMut::from(&message(b'v', &[0, 0, 0, 0, 0, 0, 0, 0])[..]);
        let negotiate = take_message(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(negotiate.tag, b'v');
        assert!(negotiate.parse().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn the_startup_parser_takes_anything(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12_000)) {
            if let Ok(Some((startup, n))) = parse_startup(&bytes) {
                proptest::prop_assert!(n <= bytes.len() && n <= MAX_STARTUP);
                if let Startup::Start { raw, .. } = startup {
                    proptest::prop_assert_eq!(raw.len(), n);
                }
            }
        }

        #[test]
        fn startup_messages_survive_any_split(
            params in proptest::collection::vec(("[a-z_]{1,20}", "[ -~]{0,40}"), 0..10),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let params: Vec<(String, String)> = params;
            let packet = startup_message(&params);
            proptest::prop_assert_eq!(parse_startup(&packet[..cut.index(packet.len())]), Ok(None));
            let (startup, _) = parse_startup(&packet).unwrap().unwrap();
            proptest::prop_assert_eq!(startup, Startup::Start { minor: 0, params, raw: packet.clone() });
        }

        #[test]
        fn backend_messages_and_error_fields_take_anything(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(m)) = take_message(&mut buf, 1024) {
                proptest::prop_assert!(m.raw.len() <= 1025);
                let _ = m.parse();
                let _ = m.auth_method();
            }
            let _ = error_fields(&bytes);
        }
    }
}
