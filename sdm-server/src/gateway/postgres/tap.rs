//! Watching the message stream as it is spliced, without copying it: the queries a client sends
//! (for the audit trail), and where the server's messages begin and end (so that an error can be
//! added between two messages when the server goes away).

use std::sync::Arc;

use uuid::Uuid;

use crate::gateway::AuditSink;
use crate::gateway::splice::Tap;
use crate::store::{AuditEvent, QueryRecord};

/// Query text kept per query.
pub(crate) const MAX_QUERY_TEXT: usize = 8 * 1024;
/// A `Parse` message starts with the statement name; room for it before the query text.
const MAX_CAPTURE: usize = MAX_QUERY_TEXT + 256;

/// Follows `tag | length | body` framing across arbitrary chunk boundaries.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    in_body: bool,
    /// The stream does not look like the protocol any more; stop interpreting it.
    lost: bool,
}

enum Piece<'a> {
    /// A message header was completed.
    Start { tag: u8, body_len: usize },
    /// Body bytes of the current message; `last` when it is complete.
    Body { bytes: &'a [u8], last: bool },
}

impl Framing {
    /// Splits `bytes` into headers and bodies, calling `each` in order.
    fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() && !self.lost {
            if !self.in_body {
                let take = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < 5 {
                    return;
                }
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len < 4 {
                    self.lost = true;
                    return;
                }
                self.remaining = len - 4;
                self.in_body = true;
                each(Piece::Start {
                    tag: self.header[0],
                    body_len: self.remaining,
                });
                if self.remaining == 0 {
                    self.in_body = false;
                    each(Piece::Body {
                        bytes: &[],
                        last: true,
                    });
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            let last = self.remaining == 0;
            if last {
                self.in_body = false;
            }
            each(Piece::Body {
                bytes: &bytes[..take],
                last,
            });
            bytes = &bytes[take..];
        }
    }

    fn at_boundary(&self) -> bool {
        !self.lost && !self.in_body && self.header_len == 0
    }
}

/// Client → server: records `Query` and `Parse` texts; notices `Terminate`.
pub(crate) struct QueryTap {
    framing: Framing,
    tag: u8,
    capture: Option<Vec<u8>>,
    sink: Arc<dyn AuditSink>,
    connection_id: Uuid,
    pub(crate) queries: u64,
    pub(crate) terminated: bool,
}

impl QueryTap {
    pub(crate) fn new(sink: Arc<dyn AuditSink>, connection_id: Uuid) -> QueryTap {
        QueryTap {
            framing: Framing::default(),
            tag: 0,
            capture: None,
            sink,
            connection_id,
            queries: 0,
            terminated: false,
        }
    }

    fn finish(&mut self, body: Vec<u8>) {
        let text = match self.tag {
            b'Q' => body.split(|&b| b == 0).next().unwrap_or(&[]),
            // Parse: statement name, then the query.
            b'P' => body.split(|&b| b == 0).nth(1).unwrap_or(&[]),
            _ => return,
        };
        let end = text.len().min(MAX_QUERY_TEXT);
        let mut text = String::from_utf8_lossy(&text[..end]).into_owned();
        if text.trim().is_empty() {
            return;
        }
        if end == MAX_QUERY_TEXT {
            text.push('…');
        }
        self.queries += 1;
        self.sink.record(AuditEvent::Query(QueryRecord {
            connection_id: self.connection_id,
            seq: self.queries,
            at: sdm_proto::unix_now(),
            text,
        }));
    }
}

impl Tap for QueryTap {
    fn observe(&mut self, bytes: &[u8]) {
        let mut framing = std::mem::take(&mut self.framing);
        framing.feed(bytes, |piece| match piece {
            Piece::Start { tag, body_len } => {
                self.tag = tag;
                if tag == b'X' {
                    self.terminated = true;
                }
                self.capture = matches!(tag, b'Q' | b'P')
                    .then(|| Vec::with_capacity(body_len.min(MAX_CAPTURE)));
            }
            Piece::Body { bytes, last } => {
                if let Some(capture) = self.capture.as_mut() {
                    let room = MAX_CAPTURE.saturating_sub(capture.len());
                    capture.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                if last && let Some(body) = self.capture.take() {
                    self.finish(body);
                }
            }
        });
        self.framing = framing;
    }
}

/// Server → client: message boundaries, whether the session got going, the last error.
#[derive(Default)]
pub(crate) struct ServerTap {
    framing: Framing,
    tag: u8,
    error: Option<Vec<u8>>,
    /// A `ReadyForQuery` was seen: the login succeeded.
    pub(crate) ready: bool,
    /// The message of the last `ErrorResponse` before the login succeeded.
    pub(crate) login_error: Option<String>,
    /// The message of a FATAL or PANIC error: the server ended the session.
    pub(crate) fatal: Option<String>,
    /// The last complete message was an `ErrorResponse`.
    pub(crate) last_was_error: bool,
}

impl ServerTap {
    /// Whether an `ErrorResponse` can be added now without breaking a message.
    pub(crate) fn at_boundary(&self) -> bool {
        self.framing.at_boundary()
    }
}

impl Tap for ServerTap {
    fn observe(&mut self, bytes: &[u8]) {
        let mut framing = std::mem::take(&mut self.framing);
        framing.feed(bytes, |piece| match piece {
            Piece::Start { tag, .. } => {
                self.tag = tag;
                self.error = (tag == b'E').then(Vec::new);
            }
            Piece::Body { bytes, last } => {
                if let Some(e) = self.error.as_mut() {
                    let room = 1024usize.saturating_sub(e.len());
                    e.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                if last {
                    self.last_was_error = self.tag == b'E';
                    if self.tag == b'Z' {
                        self.ready = true;
                    }
                    if let Some(body) = self.error.take() {
                        let fields = super::message::error_fields(&body);
                        let text = super::message::field(&fields, b'M').map(str::to_owned);
                        let severity = super::message::field(&fields, b'V')
                            .or_else(|| super::message::field(&fields, b'S'));
                        if matches!(severity, Some("FATAL" | "PANIC")) {
                            self.fatal.clone_from(&text);
                        }
                        if !self.ready {
                            self.login_error = text;
                        }
                    }
                }
            }
        });
        self.framing = framing;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::gateway::postgres::message::message;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl AuditSink for Collect {
        fn record(&self, event: AuditEvent) {
            if let AuditEvent::Query(q) = event {
                self.0.lock().unwrap().push(q.text);
            }
        }
    }

    #[test]
    fn queries_are_found_across_any_chunking() {
        let mut stream = Vec::new();
        stream.extend(message(b'Q', b"SELECT 1\0"));
        stream.extend(message(b'P', b"stmt1\0SELECT $1::int\0\0\0"));
        stream.extend(message(b'B', b"\0stmt1\0\0\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'd', &[7u8; 300]));
        stream.extend(message(b'Q', b"SELECT 'caf\xc3\xa9'\0"));
        stream.extend(message(b'X', b""));
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let sink = Arc::new(Collect::default());
            let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
            for part in stream.chunks(chunk) {
                tap.observe(part);
            }
            assert_eq!(
                *sink.0.lock().unwrap(),
                ["SELECT 1", "SELECT $1::int", "SELECT 'café'"],
                "chunk size {chunk}"
            );
            assert!(tap.terminated);
            assert_eq!(tap.queries, 3);
        }
    }

    #[test]
    fn long_queries_are_cut_and_garbage_stops_parsing() {
        let sink = Arc::new(Collect::default());
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
        let mut q = b"SELECT '".to_vec();
        q.extend(std::iter::repeat_n(b'x', 100_000));
        q.extend_from_slice(b"'\0");
        tap.observe(&message(b'Q', &q));
        tap.observe(&[b'Q', 0, 0, 0, 1]); // length below 4: not the protocol
        tap.observe(&message(b'Q', b"SELECT 2\0"));
        let got = sink.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].len() <= MAX_QUERY_TEXT + '…'.len_utf8());
    }

    #[test]
    fn server_tap_tracks_boundaries_and_login_errors() {
        let mut tap = ServerTap::default();
        let err = crate::gateway::postgres::message::error_response(
            "28P01",
            "password authentication failed",
            None,
        );
        tap.observe(&err[..3]);
        assert!(!tap.at_boundary());
        tap.observe(&err[3..]);
        assert!(tap.at_boundary());
        assert!(tap.last_was_error);
        assert_eq!(
            tap.login_error.as_deref(),
            Some("password authentication failed")
        );
        tap.observe(&message(b'Z', b"I"));
        assert!(tap.ready && !tap.last_was_error);
        tap.fatal = None;
        let shutdown = crate::gateway::postgres::message::error_response(
            "57P01",
            "terminating connection",
            None,
        );
        tap.observe(&shutdown);
        assert_eq!(tap.fatal.as_deref(), Some("terminating connection"));
    }

    proptest::proptest! {
        #[test]
        fn taps_take_any_stream_in_any_chunks(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000),
            chunk in 1usize..700,
        ) {
            let sink = Arc::new(Collect::default());
            let mut queries = QueryTap::new(sink.clone(), Uuid::nil());
            let mut server = ServerTap::default();
            for part in bytes.chunks(chunk) {
                queries.observe(part);
                server.observe(part);
            }
            for text in sink.0.lock().unwrap().iter() {
                proptest::prop_assert!(text.len() <= MAX_QUERY_TEXT + '…'.len_utf8());
            }
        }
    }
}
