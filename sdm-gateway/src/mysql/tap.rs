//! Watching the packet stream as it is spliced, without copying it: the statements a client
//! sends (`COM_QUERY`, `COM_STMT_PREPARE`) for the audit trail, and where packets begin and end
//! on both sides (so that an ERR can be added between two packets, with the sequence id the
//! client expects).
//!
//! Both are incremental parsers fed whatever bytes arrive: a packet may come in any number of
//! pieces, many packets in one, and a command of 16 MiB or more in several packets (each of the
//! maximum length but the last). The client's side refuses what it must not pass
//! (`COM_CHANGE_USER`, bytes that are not packets, a statement the audit cannot take); refused
//! bytes never reach the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use sdm_proto::ErrorKind;
use sdm_proto::audit::{AuditEvent, AuditQueryEvent};
use uuid::Uuid;

use super::packet::MAX_PAYLOAD;
use crate::AuditSink;
use crate::postgres::statement::TextCapture;
use crate::splice::Tap;

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_CHANGE_USER: u8 = 0x11;
const COM_STMT_PREPARE: u8 = 0x16;

/// Follows `length | seq | payload` framing across arbitrary chunk boundaries.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 4],
    header_len: usize,
    remaining: usize,
    in_body: bool,
    /// The packet being read continues a payload (the previous one had the maximum length).
    continued: bool,
    /// The current packet has the maximum length: the payload goes on in the next.
    continues: bool,
}

enum Piece<'a> {
    /// A packet header was completed; `first`: it starts a payload (a command).
    Start { seq: u8, first: bool },
    /// Payload bytes of the current packet; `end` when the whole payload is complete.
    Body { bytes: &'a [u8], end: bool },
}

impl Framing {
    fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            if !self.in_body {
                let take = (4 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < 4 {
                    return;
                }
                self.header_len = 0;
                let [a, b, c, seq] = self.header;
                let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
                self.remaining = len;
                self.continues = len == MAX_PAYLOAD;
                self.in_body = true;
                each(Piece::Start {
                    seq,
                    first: !self.continued,
                });
                if len == 0 {
                    self.finish_packet(&mut each);
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            let done = self.remaining == 0;
            each(Piece::Body {
                bytes: &bytes[..take],
                end: done && !self.continues,
            });
            bytes = &bytes[take..];
            if done {
                self.in_body = false;
                self.continued = self.continues;
            }
        }
    }

    /// An empty packet: it ends the payload it belongs to (or is one by itself).
    fn finish_packet(&mut self, each: &mut impl FnMut(Piece<'_>)) {
        self.in_body = false;
        self.continued = false;
        each(Piece::Body {
            bytes: &[],
            end: true,
        });
    }

    /// Between two payloads: an ERR can be added here.
    fn at_boundary(&self) -> bool {
        !self.in_body && self.header_len == 0 && !self.continued
    }
}

/// The sequence id of the last packet seen, and from which side: the ERR the gateway adds
/// continues that numbering.
#[derive(Debug, Default, Clone)]
pub(crate) struct LastPacket(Arc<AtomicU16>);

const FROM_SERVER: u16 = 1 << 8;

impl LastPacket {
    fn saw(&self, seq: u8, from_server: bool) {
        let side = if from_server { FROM_SERVER } else { 0 };
        self.0.store(side | u16::from(seq), Ordering::Relaxed);
    }

    /// The sequence id of an ERR sent now: the answer to the client's last packet if the
    /// server had not answered it yet, else the answer to the client's next command.
    pub(crate) fn next_seq(&self) -> u8 {
        let last = self.0.load(Ordering::Relaxed);
        if last & FROM_SERVER == 0 {
            (last as u8).wrapping_add(1)
        } else {
            1
        }
    }
}

/// What is being read of the client's current command.
enum Reading {
    Skip,
    Statement(TextCapture),
}

/// Client → server: records every `COM_QUERY` and `COM_STMT_PREPARE`; refuses
/// `COM_CHANGE_USER`; notices `COM_QUIT`.
pub(crate) struct QueryTap {
    framing: Framing,
    reading: Reading,
    sink: Arc<dyn AuditSink>,
    connection_id: Uuid,
    last: LastPacket,
    /// The next byte is a command's first (its command byte).
    at_command: bool,
    pub(crate) queries: u64,
    pub(crate) quit: bool,
    /// Why the tap refused the stream, once it did.
    refused: Option<(ErrorKind, String)>,
}

impl QueryTap {
    pub(crate) fn new(sink: Arc<dyn AuditSink>, connection_id: Uuid, last: LastPacket) -> QueryTap {
        QueryTap {
            framing: Framing::default(),
            reading: Reading::Skip,
            sink,
            connection_id,
            last,
            at_command: false,
            queries: 0,
            quit: false,
            refused: None,
        }
    }

    /// The kind of error the connection ends with after the tap refused it.
    pub(crate) fn refusal_kind(&self) -> ErrorKind {
        self.refused
            .as_ref()
            .map_or(ErrorKind::InvalidArgument, |(kind, _)| *kind)
    }

    fn command(&mut self, command: u8) -> Result<(), (ErrorKind, String)> {
        self.reading = match command {
            COM_QUERY | COM_STMT_PREPARE => Reading::Statement(TextCapture::default()),
            COM_QUIT => {
                self.quit = true;
                Reading::Skip
            }
            COM_CHANGE_USER => {
                return Err((
                    ErrorKind::Forbidden,
                    "COM_CHANGE_USER is refused: the gateway logs in with the resource's \
                     stored credentials, and a connection cannot switch to others"
                        .into(),
                ));
            }
            _ => Reading::Skip,
        };
        Ok(())
    }

    fn body(&mut self, mut bytes: &[u8]) -> Result<(), (ErrorKind, String)> {
        if self.at_command
            && let Some((&command, rest)) = bytes.split_first()
        {
            self.at_command = false;
            self.command(command)?;
            bytes = rest;
        }
        if let Reading::Statement(text) = &mut self.reading {
            text.push(bytes);
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), (ErrorKind, String)> {
        self.at_command = false;
        let Reading::Statement(text) = std::mem::replace(&mut self.reading, Reading::Skip) else {
            return Ok(());
        };
        let text = text.finish();
        if text.trim().is_empty() {
            return Ok(());
        }
        self.queries += 1;
        self.sink
            .record(AuditEvent::Query(AuditQueryEvent {
                connection_id: self.connection_id,
                seq: self.queries,
                at: sdm_proto::unix_now(),
                text,
            }))
            .map_err(|e| (ErrorKind::GatewayUnreachable, e.to_string()))
    }
}

impl Tap for QueryTap {
    fn observe(&mut self, bytes: &[u8]) -> Result<(), String> {
        if let Some((_, why)) = &self.refused {
            return Err(why.clone());
        }
        let mut framing = std::mem::take(&mut self.framing);
        let mut result = Ok(());
        framing.feed(bytes, |piece| {
            if result.is_err() {
                return;
            }
            result = match piece {
                Piece::Start { seq, first } => {
                    self.last.saw(seq, false);
                    if first {
                        self.reading = Reading::Skip;
                        self.at_command = true;
                    }
                    Ok(())
                }
                Piece::Body { bytes, end } => self
                    .body(bytes)
                    .and_then(|()| if end { self.end() } else { Ok(()) }),
            };
        });
        self.framing = framing;
        result.map_err(|refused| {
            let why = refused.1.clone();
            self.refused = Some(refused);
            why
        })
    }
}

/// Server → client: packet boundaries and sequence ids.
pub(crate) struct ServerTap {
    framing: Framing,
    last: LastPacket,
}

impl ServerTap {
    pub(crate) fn new(last: LastPacket) -> ServerTap {
        ServerTap {
            framing: Framing::default(),
            last,
        }
    }

    /// Whether an ERR can be added now without breaking a packet.
    pub(crate) fn at_boundary(&self) -> bool {
        self.framing.at_boundary()
    }
}

impl Tap for ServerTap {
    fn observe(&mut self, bytes: &[u8]) -> Result<(), String> {
        let last = &self.last;
        self.framing.feed(bytes, |piece| {
            if let Piece::Start { seq, .. } = piece {
                last.saw(seq, true);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::collect::Collect;
    use crate::mysql::packet::encode;

    fn command(code: u8, body: &[u8]) -> Vec<u8> {
        encode(0, &[&[code], body].concat())
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(command(COM_QUERY, b"SELECT 1"));
        s.extend(command(0x0e, b"")); // COM_PING
        s.extend(command(COM_STMT_PREPARE, b"SELECT ? + 1"));
        s.extend(command(0x17, &[1, 0, 0, 0, 0, 1, 0, 0, 0])); // COM_STMT_EXECUTE
        s.extend(command(COM_QUERY, "SELECT 'café'".as_bytes()));
        s.extend(command(COM_QUIT, b""));
        s
    }

    #[test]
    fn statements_are_found_when_fed_byte_by_byte_and_in_any_chunks() {
        let stream = stream();
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let sink = Collect::new(usize::MAX);
            let mut tap = QueryTap::new(sink.clone(), Uuid::nil(), LastPacket::default());
            for part in stream.chunks(chunk) {
                tap.observe(part).unwrap();
            }
            assert_eq!(
                sink.texts(),
                ["SELECT 1", "SELECT ? + 1", "SELECT 'café'"],
                "chunk size {chunk}"
            );
            assert!(tap.quit);
            assert_eq!(tap.queries, 3);
            assert!(tap.framing.at_boundary());
        }
    }

    #[test]
    fn a_statement_over_16_mib_is_one_statement_and_what_follows_is_a_command() {
        // Exactly one maximum packet: an empty packet ends it.
        let mut text = vec![b'-'; MAX_PAYLOAD - 1 - 12];
        text.extend_from_slice(b" DELETE FROM t");
        let mut exact = vec![b'/'; MAX_PAYLOAD - 1];
        exact[..2].copy_from_slice(b"--");
        let mut stream = command(COM_QUERY, &text);
        stream.extend(command(COM_QUERY, &exact));
        stream.extend(command(COM_QUERY, b"SELECT 2"));
        let sink = Collect::new(usize::MAX);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil(), LastPacket::default());
        for part in stream.chunks(1 << 20) {
            tap.observe(part).unwrap();
        }
        let texts = sink.texts();
        assert_eq!(texts.len(), 3, "three statements");
        assert!(
            texts[0].ends_with(" DELETE FROM t"),
            "the end of a long one is kept"
        );
        assert!(texts[0].contains("bytes not recorded]"));
        assert_eq!(texts[2], "SELECT 2");
    }

    #[test]
    fn change_user_is_refused_before_any_of_it_passes() {
        let sink = Collect::new(usize::MAX);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil(), LastPacket::default());
        tap.observe(&command(COM_QUERY, b"SELECT 1")).unwrap();
        let change = command(COM_CHANGE_USER, b"root\0\0");
        tap.observe(&change[..4]).unwrap();
        let why = tap.observe(&change[4..]).unwrap_err();
        assert!(why.contains("COM_CHANGE_USER"), "{why}");
        assert_eq!(tap.refusal_kind(), ErrorKind::Forbidden);
        assert!(
            tap.observe(&command(COM_QUERY, b"SELECT 2")).is_err(),
            "stays refused"
        );
        assert_eq!(sink.texts(), ["SELECT 1"]);
    }

    #[test]
    fn a_statement_the_audit_cannot_take_is_refused_before_it_is_sent() {
        let sink = Collect::new(1);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil(), LastPacket::default());
        tap.observe(&command(COM_QUERY, b"SELECT 1")).unwrap();
        let second = command(COM_QUERY, b"SELECT 2");
        tap.observe(&second[..7]).unwrap();
        let why = tap.observe(&second[7..]).unwrap_err();
        assert!(why.contains("full"), "{why}");
        assert_eq!(tap.refusal_kind(), ErrorKind::GatewayUnreachable);
    }

    #[test]
    fn the_added_error_continues_the_numbering() {
        let last = LastPacket::default();
        let mut client = QueryTap::new(Collect::new(usize::MAX), Uuid::nil(), last.clone());
        let mut server = ServerTap::new(last.clone());
        client
            .observe(&command(COM_QUERY, b"SELECT SLEEP(10)"))
            .unwrap();
        assert_eq!(last.next_seq(), 1, "the answer to the query");
        let column_count = encode(1, &[1]);
        server.observe(&column_count[..2]).unwrap();
        assert!(!server.at_boundary());
        server.observe(&column_count[2..]).unwrap();
        assert!(server.at_boundary());
        assert_eq!(
            last.next_seq(),
            1,
            "the server answered: the next command's answer"
        );
    }

    /// A client command, and the statement text the audit must show for it (if any).
    fn client_command() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, Option<String>)> {
        use proptest::prelude::*;
        let text = "[ -~]{1,40}";
        prop_oneof![
            text.prop_map(|t: String| {
                let t = format!("SELECT '{t}'");
                (command(COM_QUERY, t.as_bytes()), Some(t))
            }),
            text.prop_map(|t: String| {
                let t = format!("SELECT ? + {t}");
                (command(COM_STMT_PREPARE, t.as_bytes()), Some(t))
            }),
            (
                prop::sample::select(vec![0x0e, 0x17, 0x18, 0x19, 0x1a, 0x02, 0x1f]),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(code, body)| (command(code, &body), None)),
        ]
    }

    proptest::proptest! {
        /// For every way of cutting a stream of commands into writes, the tap records exactly
        /// the statements in it, in order.
        #[test]
        fn every_statement_is_recorded_whatever_the_cuts(
            commands in proptest::collection::vec(client_command(), 0..30),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..40),
        ) {
            let stream: Vec<u8> = commands.iter().flat_map(|(c, _)| c.clone()).collect();
            let expected: Vec<String> = commands.into_iter().filter_map(|(_, t)| t).collect();
            let sink = Collect::new(usize::MAX);
            let mut tap = QueryTap::new(sink.clone(), Uuid::nil(), LastPacket::default());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut at = 0;
            for cut in cuts {
                proptest::prop_assert!(tap.observe(&stream[at..cut]).is_ok());
                at = cut;
            }
            proptest::prop_assert_eq!(sink.texts(), expected);
            proptest::prop_assert!(tap.framing.at_boundary());
        }
    }

    #[test]
    fn taps_take_any_bytes_in_any_chunks_without_panicking() {
        // A fixed pseudo-random stream (xorshift), cut in every chunk size up to 40.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for chunk in 1..40 {
            let last = LastPacket::default();
            let mut client = QueryTap::new(Collect::new(usize::MAX), Uuid::nil(), last.clone());
            let mut server = ServerTap::new(last);
            for part in bytes.chunks(chunk) {
                let _ = client.observe(part);
                server.observe(part).unwrap();
            }
        }
    }
}
