//! Watching the message stream as it is spliced, without copying it: the statements a client
//! sends (for the audit trail), and where the server's messages begin and end (so that an error
//! can be added between two messages when the server goes away).
//!
//! Both are incremental parsers fed whatever bytes arrive: a message may come in any number of
//! pieces, and many messages in one. The client's side refuses what it cannot follow or
//! record, and the refused bytes never reach the server: a message PostgreSQL has not received
//! whole does not run.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use sdm_proto::ErrorKind;
use sdm_proto::audit::{AuditEvent, AuditQueryEvent};
use uuid::Uuid;

use super::catalog::Catalog;
use super::function_call::CallReader;
use super::statement::TextCapture;
use crate::AuditSink;
use crate::splice::Tap;

/// Follows `tag | length | body` framing across arbitrary chunk boundaries.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    in_body: bool,
    /// The stream does not look like the protocol any more: a length below 4.
    lost: bool,
}

enum Piece<'a> {
    /// A message header was completed.
    Start { tag: u8 },
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

/// What is being read of the client's current message.
enum Reading {
    /// Nothing: a message that is not recorded.
    Skip,
    /// `Query`: the text, up to its NUL.
    Query(TextCapture),
    /// `Parse`: the statement name (skipped), then the text up to its NUL.
    Parse { in_name: bool, text: TextCapture },
    /// `FunctionCall`.
    Call(Box<CallReader>),
}

/// Client → server: records every `Query`, `Parse` and `FunctionCall`; notices `Terminate`.
pub(crate) struct QueryTap {
    framing: Framing,
    reading: Reading,
    /// The current message's text ended (its NUL was seen).
    text_done: bool,
    sink: Arc<dyn AuditSink>,
    connection_id: Uuid,
    pub(crate) queries: u64,
    pub(crate) terminated: bool,
    /// Why the tap refused the stream, once it did.
    refused: Option<(ErrorKind, String)>,
    /// Where function names are looked up; `None`: calls are recorded with their OID alone.
    catalog: Option<Catalog>,
    /// Function names looked up so far (`None`: not found, or the look-up failed).
    names: HashMap<u32, Option<String>>,
    /// Calls complete but not recorded yet: their function's name is being looked up, and the
    /// chunk that completed them is held until they are recorded.
    unnamed: Vec<Unnamed>,
    lookup: Option<NameLookup>,
}

/// A look-up of function names in progress.
type NameLookup = Pin<Box<dyn Future<Output = HashMap<u32, String>> + Send>>;

/// A `FunctionCall` waiting for its function's name.
struct Unnamed {
    seq: u64,
    at: i64,
    oid: u32,
    arguments: String,
}

impl QueryTap {
    pub(crate) fn new(sink: Arc<dyn AuditSink>, connection_id: Uuid) -> QueryTap {
        QueryTap {
            framing: Framing::default(),
            reading: Reading::Skip,
            text_done: false,
            sink,
            connection_id,
            queries: 0,
            terminated: false,
            refused: None,
            catalog: None,
            names: HashMap::new(),
            unnamed: Vec::new(),
            lookup: None,
        }
    }

    /// Looks the names of called functions up in `catalog` before recording the calls.
    pub(crate) fn with_catalog(mut self, catalog: Option<Catalog>) -> QueryTap {
        self.catalog = catalog;
        self
    }

    fn start(&mut self, tag: u8) {
        self.text_done = false;
        self.reading = match tag {
            b'Q' => Reading::Query(TextCapture::default()),
            b'P' => Reading::Parse {
                in_name: true,
                text: TextCapture::default(),
            },
            b'F' => Reading::Call(Box::new(CallReader::new())),
            b'X' => {
                self.terminated = true;
                Reading::Skip
            }
            _ => Reading::Skip,
        };
    }

    fn body(&mut self, mut bytes: &[u8]) {
        let text = match &mut self.reading {
            Reading::Skip => return,
            Reading::Call(call) => return call.feed(bytes),
            Reading::Query(text) => text,
            Reading::Parse { in_name, text } => {
                if *in_name {
                    let Some(nul) = bytes.iter().position(|&b| b == 0) else {
                        return;
                    };
                    *in_name = false;
                    bytes = &bytes[nul + 1..];
                }
                text
            }
        };
        if self.text_done {
            return;
        }
        let end = bytes.iter().position(|&b| b == 0);
        text.push(&bytes[..end.unwrap_or(bytes.len())]);
        self.text_done = end.is_some();
    }

    /// The kind of error the client's connection ends with after the tap refused it.
    pub(crate) fn refusal_kind(&self) -> ErrorKind {
        self.refused
            .as_ref()
            .map_or(ErrorKind::InvalidArgument, |(kind, _)| *kind)
    }

    /// The current message is complete: its record, if it has one.
    fn end(&mut self) -> Result<(), (ErrorKind, String)> {
        let text = match std::mem::replace(&mut self.reading, Reading::Skip) {
            Reading::Skip => return Ok(()),
            Reading::Query(text) | Reading::Parse { text, .. } => {
                let text = text.finish();
                if text.trim().is_empty() {
                    return Ok(());
                }
                text
            }
            Reading::Call(call) => {
                let (oid, arguments) = (call.oid(), call.arguments());
                self.queries += 1;
                let unnamed = Unnamed {
                    seq: self.queries,
                    at: sdm_proto::unix_now(),
                    oid,
                    arguments,
                };
                if self.catalog.is_some() && !self.names.contains_key(&oid) {
                    self.unnamed.push(unnamed);
                    return Ok(());
                }
                return self.record_call(unnamed);
            }
        };
        self.queries += 1;
        self.record(self.queries, sdm_proto::unix_now(), text)
    }

    fn record_call(&self, call: Unnamed) -> Result<(), (ErrorKind, String)> {
        let text = match self.names.get(&call.oid) {
            Some(Some(name)) => {
                format!("FunctionCall {name} [OID {}] {}", call.oid, call.arguments)
            }
            _ => format!("FunctionCall [OID {}] {}", call.oid, call.arguments),
        };
        self.record(call.seq, call.at, text)
    }

    fn record(&self, seq: u64, at: i64, text: String) -> Result<(), (ErrorKind, String)> {
        self.sink
            .record(AuditEvent::Query(AuditQueryEvent {
                connection_id: self.connection_id,
                seq,
                at,
                text,
            }))
            .map_err(|e| (ErrorKind::GatewayUnreachable, e.to_string()))
    }

    /// The tap refuses what follows, for this reason.
    fn refuse(&mut self, refused: (ErrorKind, String)) -> String {
        let why = refused.1.clone();
        self.refused = Some(refused);
        why
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
            match piece {
                Piece::Start { tag } => self.start(tag),
                Piece::Body { bytes, last } => {
                    self.body(bytes);
                    if last {
                        result = self.end();
                    }
                }
            }
        });
        let lost = framing.lost;
        self.framing = framing;
        if result.is_ok() && lost {
            result = Err((
                ErrorKind::InvalidArgument,
                "the client sent bytes that are not PostgreSQL messages".into(),
            ));
        }
        result.map_err(|refused| self.refuse(refused))
    }

    /// Holds the chunk while the names of the functions it calls are looked up, then records
    /// the calls.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        if self.unnamed.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if self.lookup.is_none()
            && let Some(catalog) = self.catalog.clone()
        {
            let mut oids: Vec<u32> = self.unnamed.iter().map(|c| c.oid).collect();
            oids.sort_unstable();
            oids.dedup();
            self.lookup = Some(Box::pin(catalog.names(oids)));
        }
        if let Some(lookup) = self.lookup.as_mut() {
            let mut names = ready!(lookup.as_mut().poll(cx));
            self.lookup = None;
            for call in &self.unnamed {
                let name = names.remove(&call.oid);
                self.names.entry(call.oid).or_insert(name);
            }
        }
        for call in std::mem::take(&mut self.unnamed) {
            if let Err(refused) = self.record_call(call) {
                return Poll::Ready(Err(self.refuse(refused)));
            }
        }
        Poll::Ready(Ok(()))
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
    fn observe(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut framing = std::mem::take(&mut self.framing);
        framing.feed(bytes, |piece| match piece {
            Piece::Start { tag } => {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::collect::Collect;
    use crate::postgres::message::message;
    use crate::postgres::statement::MAX_STATEMENT;

    fn call(oid: u32, text_arg: &[u8]) -> Vec<u8> {
        let mut body = oid.to_be_bytes().to_vec();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&(text_arg.len() as i32).to_be_bytes());
        body.extend_from_slice(text_arg);
        body.extend_from_slice(&0i16.to_be_bytes());
        message(b'F', &body)
    }

    /// Feeds `stream` in pieces cut at `cuts`; what was recorded, and whether a piece was refused.
    fn tap_in_pieces(stream: &[u8], cuts: &[usize], sink: &Arc<Collect>) -> (QueryTap, bool) {
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        for cut in cuts {
            if tap.observe(&stream[at..cut]).is_err() {
                return (tap, true);
            }
            at = cut;
        }
        (tap, false)
    }

    #[test]
    fn statements_are_found_across_any_chunking() {
        let mut stream = Vec::new();
        stream.extend(message(b'Q', b"SELECT 1\0"));
        stream.extend(message(b'P', b"stmt1\0SELECT $1::int\0\0\0"));
        stream.extend(message(b'B', b"\0stmt1\0\0\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'd', &[7u8; 300]));
        stream.extend(call(2925, b"SELECT secret FROM vault"));
        stream.extend(message(b'Q', b"SELECT 'caf\xc3\xa9'\0"));
        stream.extend(message(b'X', b""));
        for chunk in [1, 2, 3, 5, 7, 64, stream.len()] {
            let sink = Collect::new(usize::MAX);
            let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
            for part in stream.chunks(chunk) {
                tap.observe(part).unwrap();
            }
            assert_eq!(
                sink.texts(),
                [
                    "SELECT 1",
                    "SELECT $1::int",
                    "FunctionCall [OID 2925] ('SELECT secret FROM vault')",
                    "SELECT 'café'"
                ],
                "chunk size {chunk}"
            );
            assert!(tap.terminated);
            assert_eq!(tap.queries, 4);
        }
    }

    #[test]
    fn a_statement_behind_padding_is_recorded_with_its_end() {
        let sink = Collect::new(usize::MAX);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
        let mut q = b"/*".to_vec();
        q.extend(std::iter::repeat_n(b'-', 9 * 1024));
        q.extend_from_slice(b"*/ DELETE FROM accounts\0");
        tap.observe(&message(b'Q', &q)).unwrap();
        let mut long = b"/*".to_vec();
        long.extend(std::iter::repeat_n(b'-', 2 * MAX_STATEMENT));
        long.extend_from_slice(b"*/ DROP TABLE audit\0");
        for part in message(b'P', &[b"s\0".as_slice(), &long, b"\0\0"].concat()).chunks(1000) {
            tap.observe(part).unwrap();
        }
        let texts = sink.texts();
        assert_eq!(texts[0].len(), q.len() - 1, "kept whole");
        assert!(texts[0].ends_with("*/ DELETE FROM accounts"));
        assert!(texts[1].ends_with("*/ DROP TABLE audit"), "the end is kept");
        assert!(texts[1].contains("bytes not recorded]"), "with a marker");
        assert!(texts[1].len() < MAX_STATEMENT + 100);
    }

    #[test]
    fn bytes_that_are_not_messages_are_refused_and_stay_refused() {
        let sink = Collect::new(usize::MAX);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
        tap.observe(&message(b'Q', b"SELECT 1\0")).unwrap();
        let why = tap.observe(&[b'Q', 0, 0, 0, 1]).unwrap_err();
        assert!(why.contains("not PostgreSQL messages"), "{why}");
        assert_eq!(tap.refusal_kind(), ErrorKind::InvalidArgument);
        assert!(tap.observe(&message(b'Q', b"SELECT 2\0")).is_err());
        assert_eq!(sink.texts(), ["SELECT 1"]);
    }

    #[test]
    fn a_statement_the_audit_cannot_take_is_refused_before_it_is_sent() {
        let sink = Collect::new(1);
        let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
        tap.observe(&message(b'Q', b"SELECT 1\0")).unwrap();
        let second = message(b'Q', b"SELECT 2\0");
        tap.observe(&second[..8]).unwrap();
        let why = tap.observe(&second[8..]).unwrap_err();
        assert!(why.contains("audit"), "{why}");
        assert_eq!(tap.refusal_kind(), ErrorKind::GatewayUnreachable);
    }

    #[test]
    fn server_tap_tracks_boundaries_and_login_errors() {
        let mut tap = ServerTap::default();
        let err = crate::postgres::message::error_response(
            "28P01",
            "password authentication failed",
            None,
        );
        tap.observe(&err[..3]).unwrap();
        assert!(!tap.at_boundary());
        tap.observe(&err[3..]).unwrap();
        assert!(tap.at_boundary());
        assert!(tap.last_was_error);
        assert_eq!(
            tap.login_error.as_deref(),
            Some("password authentication failed")
        );
        tap.observe(&message(b'Z', b"I")).unwrap();
        assert!(tap.ready && !tap.last_was_error);
        tap.fatal = None;
        let shutdown =
            crate::postgres::message::error_response("57P01", "terminating connection", None);
        tap.observe(&shutdown).unwrap();
        assert_eq!(tap.fatal.as_deref(), Some("terminating connection"));
    }

    /// A client message, and the statement text the audit must show for it (if any).
    fn client_message() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
        let text = "[ -~]{1,40}";
        prop_oneof![
            text.prop_map(|t: String| {
                let t = format!("SELECT '{t}'");
                (message(b'Q', format!("{t}\0").as_bytes()), Some(t))
            }),
            ("[a-z0-9]{0,8}", text).prop_map(|(name, t): (String, String)| {
                let t = format!("SELECT {t}");
                let body = format!("{name}\0{t}\0\0\0");
                (message(b'P', body.as_bytes()), Some(t))
            }),
            (any::<u32>(), text).prop_map(|(oid, t): (u32, String)| {
                let shown = format!("FunctionCall [OID {oid}] ('{}')", t.replace('\'', "''"));
                (call(oid, t.as_bytes()), Some(shown))
            }),
            (
                prop::sample::select(vec![b'B', b'E', b'D', b'S', b'H', b'd', b'C']),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(tag, body)| (message(tag, &body), None)),
        ]
    }

    proptest! {
        /// For every way of cutting a stream of messages into writes, the tap records exactly
        /// the statements in it, in order.
        #[test]
        fn every_statement_is_recorded_whatever_the_cuts(
            messages in prop::collection::vec(client_message(), 0..30),
            cuts in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(|(m, _)| m.clone()).collect();
            let expected: Vec<String> = messages.into_iter().filter_map(|(_, t)| t).collect();
            let sink = Collect::new(usize::MAX);
            let (tap, refused) = tap_in_pieces(&stream, &cuts, &sink);
            prop_assert!(!refused);
            prop_assert_eq!(sink.texts(), expected);
            prop_assert!(tap.framing.at_boundary());
        }

        /// A statement the audit cannot take never reaches the server: the piece holding its
        /// last byte is refused, and nothing after it is let through.
        #[test]
        fn no_statement_passes_unrecorded(
            messages in prop::collection::vec(client_message(), 1..20),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            room in 0usize..10,
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(|(m, _)| m.clone()).collect();
            let sink = Collect::new(room);
            let mut tap = QueryTap::new(sink.clone(), Uuid::nil());
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut passed = Vec::new();
            let mut at = 0;
            for cut in cuts {
                if tap.observe(&stream[at..cut]).is_err() {
                    break;
                }
                passed.extend_from_slice(&stream[at..cut]);
                at = cut;
            }
            // Every statement complete in what passed was recorded (a refused piece may hold
            // statements recorded before the one that did not fit: recorded, never run).
            let passed_statements = Collect::new(usize::MAX);
            QueryTap::new(passed_statements.clone(), Uuid::nil()).observe(&passed).unwrap();
            prop_assert!(sink.texts().starts_with(&passed_statements.texts()));
        }

        #[test]
        fn taps_take_any_stream_in_any_chunks(
            bytes in prop::collection::vec(any::<u8>(), 0..5000),
            chunk in 1usize..700,
        ) {
            let sink = Collect::new(usize::MAX);
            let mut queries = QueryTap::new(sink.clone(), Uuid::nil());
            let mut server = ServerTap::default();
            for part in bytes.chunks(chunk) {
                let _ = queries.observe(part);
                server.observe(part).unwrap();
            }
            for text in sink.texts() {
                prop_assert!(text.len() <= 4 * MAX_STATEMENT);
            }
        }
    }
}
