//! The gateway handshake: the bytes a client and a gateway exchange inside TLS before the
//! connection becomes a plain byte stream to the resource.
//!
//! ```text
//! client → gateway   HELLO  "SDMG" | version:u8 = 1 | flags:u8 | lease length:u16 | lease
//! gateway → client   READY  'R'                      lease accepted
//! gateway → client   READY-FRAMED 'F'                lease accepted; streams will be framed
//! client → gateway   OPEN   'O'                      connect to the resource now
//! gateway → client   CONNECTED 'C'                   upstream connected; the stream follows
//! gateway → client   ERROR  'E' | kind code:u16 | message length:u16 | UTF-8 message, then close
//! ```
//!
//! A client may send HELLO and OPEN (and the first application bytes) in one write; a client
//! that keeps warm connections sends HELLO ahead of time and OPEN when a local connection
//! arrives. A client that sets [`FLAG_FRAMED`] in its HELLO asks for framed streams
//! (`sdm_relay::Framed`): the gateway confirms with READY-FRAMED instead of READY, both sides
//! frame the stream after OPEN (the client) and CONNECTED (the gateway), and once both of its
//! directions have ended with an end frame the connection waits for the next OPEN instead of
//! closing. A gateway that does not know the flag ignores it and answers READY, so a client
//! sets it only when it waits for READY before sending OPEN (its warm connections). Decoders
//! are incremental: they return `Ok(None)` until a whole message is buffered, and never read a
//! length field without a bound.

use crate::ErrorKind;

const MAGIC: &[u8; 4] = b"SDMG";
const VERSION: u8 = 1;
/// HELLO flag: the client frames its streams and can carry another after each.
pub const FLAG_FRAMED: u8 = 0x01;
/// Largest lease a gateway accepts in a HELLO.
pub const MAX_LEASE_LEN: usize = 1024;
/// Largest error message a client accepts.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// The OPEN byte.
pub const OPEN: u8 = b'O';
const READY: u8 = b'R';
const READY_FRAMED: u8 = b'F';
const CONNECTED: u8 = b'C';
const ERROR: u8 = b'E';

/// A malformed handshake; the peer is not speaking this protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Wrong magic bytes: not an sdm client.
    #[error("not an sdm gateway handshake")]
    Magic,
    /// A version this side does not speak.
    #[error("unsupported handshake version {0}")]
    Version(u8),
    /// A length field beyond its limit.
    #[error("handshake field too long ({0} bytes)")]
    TooLong(usize),
    /// An unknown message type.
    #[error("unexpected handshake byte {0:#04x}")]
    Unexpected(u8),
}

/// A decoded HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The signed lease, as sent.
    pub lease: &'a [u8],
    /// The client asked for framed streams ([`FLAG_FRAMED`]).
    pub framed: bool,
}

/// HELLO bytes for this lease, asking for framed streams or not.
pub fn encode_hello(lease: &[u8], framed: bool) -> Vec<u8> {
    let len = u16::try_from(lease.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(8 + lease.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(if framed { FLAG_FRAMED } else { 0 });
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&lease[..usize::from(len)]);
    out
}

/// Decodes a HELLO from the start of `buf`: `Ok(None)` means more bytes are needed;
/// `Ok(Some((hello, n)))` means the first `n` bytes were the HELLO.
pub fn decode_hello(buf: &[u8]) -> Result<Option<(Hello<'_>, usize)>, HandshakeError> {
    let have = buf.len().min(MAGIC.len());
    if buf[..have] != MAGIC[..have] {
        return Err(HandshakeError::Magic);
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    if buf[4] != VERSION {
        return Err(HandshakeError::Version(buf[4]));
    }
    let len = usize::from(u16::from_be_bytes([buf[6], buf[7]]));
    if len > MAX_LEASE_LEN {
        return Err(HandshakeError::TooLong(len));
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    Ok(Some((
        Hello {
            lease: &buf[8..8 + len],
            // Unknown flags are ignored: a later client may ask for more than this side knows.
            framed: buf[5] & FLAG_FRAMED != 0,
        },
        8 + len,
    )))
}

/// A gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The lease was accepted; send OPEN when ready.
    Ready,
    /// The lease was accepted and streams on this connection will be framed (the client
    /// asked); send OPEN when ready.
    ReadyFramed,
    /// The resource is connected; the stream follows.
    Connected,
    /// Refused; the gateway closes the connection after this.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// For a person.
        message: String,
    },
}

/// The bytes of a reply.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Ready => vec![READY],
        Reply::Connected => vec![CONNECTED],
        Reply::ReadyFramed => vec![READY_FRAMED],
        Reply::Error { kind, message } => {
            let mut end = message.len().min(MAX_MESSAGE_LEN);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let msg = &message.as_bytes()[..end];
            let mut out = Vec::with_capacity(5 + msg.len());
            out.push(ERROR);
            out.extend_from_slice(&kind.code().to_be_bytes());
            out.extend_from_slice(&u16::try_from(msg.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(msg);
            out
        }
    }
}

/// Decodes one reply from the start of `buf` (see [`decode_hello`] for the result's meaning).
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, HandshakeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        READY => Ok(Some((Reply::Ready, 1))),
        CONNECTED => Ok(Some((Reply::Connected, 1))),
        READY_FRAMED => Ok(Some((Reply::ReadyFramed, 1))),
        ERROR => {
            if buf.len() < 5 {
                return Ok(None);
            }
            let kind = ErrorKind::from_code(u16::from_be_bytes([buf[1], buf[2]]));
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if len > MAX_MESSAGE_LEN {
                return Err(HandshakeError::TooLong(len));
            }
            if buf.len() < 5 + len {
                return Ok(None);
            }
            let message = String::from_utf8_lossy(&buf[5..5 + len]).into_owned();
            Ok(Some((Reply::Error { kind, message }, 5 + len)))
        }
        other => Err(HandshakeError::Unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_waits_for_more() {
        for framed in [false, true] {
            let bytes = encode_hello(&[9u8; 156], framed);
            for cut in 0..bytes.len() {
                assert_eq!(decode_hello(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
            let mut with_tail = bytes.clone();
            with_tail.push(OPEN);
            let (hello, n) = decode_hello(&with_tail).unwrap().unwrap();
            assert_eq!(hello.lease, &[9u8; 156][..]);
            assert_eq!(hello.framed, framed);
            assert_eq!(n, bytes.len());
        }
        // Flags this side does not know are ignored.
        let mut bytes = encode_hello(&[1u8; 4], false);
        bytes[5] = 0x80;
        let (hello, _) = decode_hello(&bytes).unwrap().unwrap();
        assert!(!hello.framed);
    }

    #[test]
    fn hello_rejects_garbage_early() {
        assert_eq!(decode_hello(b"GET / HTTP/1.1"), Err(HandshakeError::Magic));
        assert_eq!(decode_hello(b"X"), Err(HandshakeError::Magic));
        assert_eq!(
            decode_hello(b"SDMG\x07\x00\x00\x00"),
            Err(HandshakeError::Version(7))
        );
        assert_eq!(
            decode_hello(b"SDMG\x01\x00\xff\xff"),
            Err(HandshakeError::TooLong(65535))
        );
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ready,
            Reply::Connected,
            Reply::ReadyFramed,
            Reply::Error {
                kind: ErrorKind::Forbidden,
                message: "no grant for resource pg".into(),
            },
        ] {
            let bytes = encode_reply(&reply);
            assert_eq!(decode_reply(&bytes), Ok(Some((reply, bytes.len()))));
            if bytes.len() > 1 {
                assert_eq!(decode_reply(&bytes[..bytes.len() - 1]), Ok(None));
            }
        }
        assert_eq!(decode_reply(b"Z"), Err(HandshakeError::Unexpected(b'Z')));
        // A long message is cut at a character boundary, never mid-character.
        let long = "é".repeat(2000);
        let bytes = encode_reply(&Reply::Error {
            kind: ErrorKind::Internal,
            message: long,
        });
        let (reply, _) = decode_reply(&bytes).unwrap().unwrap();
        let Reply::Error { message, .. } = reply else {
            panic!("not an error")
        };
        assert!(message.chars().all(|c| c == 'é'));
    }
}
