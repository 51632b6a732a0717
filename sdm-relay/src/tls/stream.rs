//! A TLS 1.3 connection after its handshake: records sealed into one outgoing buffer and
//! opened in place in the buffer they were read into.

use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ExtractedSecrets, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record::{
    self, ALERT, APPLICATION_DATA, DECODE_ERROR, HANDSHAKE, HEADER, Keys, MAX_CIPHERTEXT,
    MAX_PLAINTEXT, OVERHEAD, UNEXPECTED_MESSAGE, invalid, refused,
};
use crate::{FIRST_BUFFER, spare};

/// Sizes of the incoming buffer: the thread's first-size spares for messages, one whole record,
/// then four records at a time for bulk transfers (as the pump's buffer grows).
const IN_SIZES: [usize; 3] = [
    FIRST_BUFFER,
    HEADER + MAX_CIPHERTEXT,
    4 * (HEADER + MAX_CIPHERTEXT),
];
/// The most plaintext one write seals (four full records).
const MAX_WRITE: usize = 4 * MAX_PLAINTEXT;

/// KeyUpdate (RFC 8446 §4.6.3): handshake type, length, whether the peer must update too.
const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;
const WARNING: u8 = 1;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// What rustls keeps after the handshake: the secrets for key updates, and (for a client) the
/// resumption tickets the server sends later.
pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    /// The sending direction's next keys (rustls's key schedule).
    fn next_tx_keys(&mut self) -> io::Result<Keys> {
        next_keys(match self {
            Kernel::Client(c) => c.update_tx_secret(),
            Kernel::Server(s) => s.update_tx_secret(),
        })
    }

    /// The receiving direction's next keys.
    fn next_rx_keys(&mut self) -> io::Result<Keys> {
        next_keys(match self {
            Kernel::Client(c) => c.update_rx_secret(),
            Kernel::Server(s) => s.update_rx_secret(),
        })
    }

    fn protocol_version(&self) -> ProtocolVersion {
        match self {
            Kernel::Client(c) => c.protocol_version(),
            Kernel::Server(s) => s.protocol_version(),
        }
    }

    fn confidentiality_limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(c) => c.negotiated_cipher_suite(),
            Kernel::Server(s) => s.negotiated_cipher_suite(),
        };
        suite.tls13().map_or(0, |s| s.common.confidentiality_limit)
    }
}

fn next_keys(
    updated: Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error>,
) -> io::Result<Keys> {
    let (seq, secrets) = updated.map_err(|e| invalid(format!("TLS key update: {e}")))?;
    Keys::new(seq, secrets)
}

/// A TLS 1.3 stream over `S` whose records sdm seals and opens itself; see the module
/// documentation.
pub struct TlsStream<S> {
    io: S,
    kernel: Kernel,
    rx: Keys,
    tx: Keys,
    /// Records sealed under one key before it is replaced (the suite's confidentiality limit).
    records_per_key: u64,
    /// Keys replaced so far, both directions.
    key_updates: u64,
    /// What was read: plaintext opened and not yet handed out (`plain`, in front of `read_at`),
    /// then records not yet opened (`read_at..filled`). Empty while there is nothing.
    inbuf: Box<[u8]>,
    plain: Range<usize>,
    read_at: usize,
    filled: usize,
    /// The last read filled the buffer: a bulk transfer, the next buffer is larger.
    in_full: bool,
    /// The last read was a message's worth (less than a first-size buffer), not bulk.
    in_small: bool,
    /// The peer's close_notify arrived: the end of what it sends.
    read_closed: bool,
    /// Reading failed; every later read fails the same way.
    read_error: Option<(io::ErrorKind, String)>,
    /// Sealed records not yet written (from `written` on).
    out: Vec<u8>,
    written: usize,
    /// Our close_notify is sealed: nothing more may be written.
    write_closed: bool,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("rx_seq", &self.rx.seq())
            .field("tx_seq", &self.tx.seq())
            .field("key_updates", &self.key_updates)
            .field("read_closed", &self.read_closed)
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    /// The stream after a handshake: `early` is plaintext that arrived with it, `records` the
    /// bytes read past it.
    pub(super) fn new(
        io: S,
        kernel: Kernel,
        secrets: ExtractedSecrets,
        early: &[u8],
        records: &[u8],
    ) -> io::Result<TlsStream<S>> {
        if kernel.protocol_version() != ProtocolVersion::TLSv1_3 {
            return Err(invalid("the peer did not negotiate TLS 1.3"));
        }
        let records_per_key = kernel.confidentiality_limit();
        let (rx_seq, rx) = secrets.rx;
        let (tx_seq, tx) = secrets.tx;
        let mut stream = TlsStream {
            io,
            rx: Keys::new(rx_seq, rx)?,
            tx: Keys::new(tx_seq, tx)?,
            kernel,
            records_per_key,
            key_updates: 0,
            inbuf: Box::default(),
            plain: 0..0,
            read_at: 0,
            filled: 0,
            in_full: false,
            in_small: true,
            read_closed: false,
            read_error: None,
            out: Vec::new(),
            written: 0,
            write_closed: false,
        };
        let held = early.len() + records.len();
        if held > 0 {
            let mut inbuf = vec![0u8; held.max(FIRST_BUFFER)].into_boxed_slice();
            inbuf[..early.len()].copy_from_slice(early);
            inbuf[early.len()..held].copy_from_slice(records);
            stream.inbuf = inbuf;
            stream.plain = 0..early.len();
            stream.read_at = early.len();
            stream.filled = held;
        }
        Ok(stream)
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The connection underneath; reading from or writing to it directly breaks the stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Whether bytes were read from the connection that have not been handed out yet.
    pub fn has_buffered_input(&self) -> bool {
        !self.plain.is_empty() || self.read_at < self.filled
    }

    /// Replaces the sending key every `records` records instead of at the suite's limit (tests
    /// drive key updates with it).
    #[doc(hidden)]
    pub fn update_keys_every(&mut self, records: u64) {
        self.records_per_key = records.min(self.kernel.confidentiality_limit());
    }

    /// Keys replaced so far, sending and receiving.
    pub fn key_updates(&self) -> u64 {
        self.key_updates
    }

    /// Bytes of buffers held now.
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        self.inbuf.len() + self.out.capacity()
    }

    /// Seals a KeyUpdate under the current key, then switches to the next one.
    fn update_tx_key(&mut self, request: u8) -> io::Result<()> {
        self.tx.seal(&mut self.out, HANDSHAKE, 5, |out| {
            out.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, request])
        })?;
        self.tx = self.kernel.next_tx_keys()?;
        self.key_updates += 1;
        Ok(())
    }

    /// Seals `len` bytes of `bufs`, starting `skip` bytes in, as records of application data.
    fn seal(&mut self, bufs: &[IoSlice<'_>], mut skip: usize, mut len: usize) -> io::Result<()> {
        self.out
            .reserve(len + len.div_ceil(MAX_PLAINTEXT) * OVERHEAD);
        while len > 0 {
            // Counted from the key's first record (the handshake's tickets included).
            if self.tx.seq() >= self.records_per_key {
                self.update_tx_key(UPDATE_NOT_REQUESTED)?;
            }
            let n = len.min(MAX_PLAINTEXT);
            self.tx.seal(&mut self.out, APPLICATION_DATA, n, |out| {
                gather(bufs, skip, n, out)
            })?;
            skip += n;
            len -= n;
        }
        Ok(())
    }

    /// The whole record at `read_at`, if it has arrived: its header and body length.
    fn whole_record(&self) -> io::Result<Option<([u8; HEADER], usize)>> {
        let Some(header) = self.inbuf[..self.filled].get(self.read_at..self.read_at + HEADER)
        else {
            return Ok(None);
        };
        let header: [u8; HEADER] = [header[0], header[1], header[2], header[3], header[4]];
        let len = record::body_len(header)?;
        if self.filled - self.read_at < HEADER + len {
            return Ok(None);
        }
        Ok(Some((header, len)))
    }

    /// Opens the whole record at `read_at`: application data becomes `plain`; alerts and
    /// post-handshake messages are acted on.
    fn open(&mut self, header: [u8; HEADER], len: usize) -> io::Result<()> {
        let body = self.read_at + HEADER;
        let (content_type, n) = self.rx.open(header, &mut self.inbuf[body..body + len])?;
        self.read_at = body + len;
        match content_type {
            APPLICATION_DATA => self.plain = body..body + n,
            ALERT => self.alert(body, n)?,
            HANDSHAKE => {
                let messages = self.inbuf[body..body + n].to_vec();
                self.post_handshake(&messages)?;
            }
            other => {
                return Err(refused(
                    UNEXPECTED_MESSAGE,
                    format!("unexpected TLS content type {other}"),
                ));
            }
        }
        Ok(())
    }

    fn alert(&mut self, at: usize, n: usize) -> io::Result<()> {
        match self.inbuf[at..at + n] {
            [_, CLOSE_NOTIFY] => {
                self.read_closed = true;
                Ok(())
            }
            [_, USER_CANCELED] => Ok(()),
            [_, description] => Err(invalid(format!(
                "the peer sent TLS alert {description} and closed the connection"
            ))),
            _ => Err(refused(DECODE_ERROR, "a malformed TLS alert")),
        }
    }

    /// KeyUpdate and NewSessionTicket, the messages TLS 1.3 sends after its handshake. A
    /// message split across records is refused: rustls, the only peer, never splits these.
    fn post_handshake(&mut self, mut messages: &[u8]) -> io::Result<()> {
        while !messages.is_empty() {
            let &[kind, a, b, c, ref rest @ ..] = messages else {
                return Err(split_message());
            };
            let len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
            if rest.len() < len {
                return Err(split_message());
            }
            let (body, rest) = rest.split_at(len);
            messages = rest;
            match (kind, body) {
                (KEY_UPDATE, &[request @ (UPDATE_NOT_REQUESTED | UPDATE_REQUESTED)]) => {
                    // A new key starts with the next record (RFC 8446 §4.6.3).
                    if !messages.is_empty() {
                        return Err(refused(
                            UNEXPECTED_MESSAGE,
                            "a TLS KeyUpdate not at the end of its record",
                        ));
                    }
                    self.rx = self.kernel.next_rx_keys()?;
                    self.key_updates += 1;
                    if request == UPDATE_REQUESTED && !self.write_closed {
                        self.update_tx_key(UPDATE_NOT_REQUESTED)?;
                    }
                }
                (NEW_SESSION_TICKET, ticket) => match &mut self.kernel {
                    Kernel::Client(client) => client
                        .handle_new_session_ticket(ticket)
                        .map_err(|e| refused(DECODE_ERROR, format!("TLS session ticket: {e}")))?,
                    Kernel::Server(_) => {
                        return Err(refused(
                            UNEXPECTED_MESSAGE,
                            "a client sent a TLS session ticket",
                        ));
                    }
                },
                _ => {
                    return Err(refused(
                        UNEXPECTED_MESSAGE,
                        format!("unexpected TLS handshake message {kind} after the handshake"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Copies opened plaintext into `out`, opening the records already read as `out` has room.
    fn copy_out(&mut self, out: &mut ReadBuf<'_>) -> io::Result<()> {
        loop {
            if !self.plain.is_empty() {
                let n = out.remaining().min(self.plain.len());
                out.put_slice(&self.inbuf[self.plain.start..self.plain.start + n]);
                self.plain.start += n;
                if !self.plain.is_empty() {
                    return Ok(());
                }
            }
            if self.read_closed || out.remaining() == 0 {
                return Ok(());
            }
            match self.whole_record()? {
                Some((header, len)) => self.open(header, len)?,
                None => return Ok(()),
            }
        }
    }

    /// Before a read: room in `inbuf` for the rest of the record at `read_at` (or at least a
    /// header), moving the part already read to the front or into a larger buffer.
    fn make_room(&mut self) {
        if self.read_at == self.filled {
            self.read_at = 0;
            self.filled = 0;
        }
        let partial = self.filled - self.read_at;
        let need = match self.whole_record() {
            Ok(None) if partial >= HEADER => {
                let len = u16::from_be_bytes([
                    self.inbuf[self.read_at + 3],
                    self.inbuf[self.read_at + 4],
                ]);
                HEADER + usize::from(len)
            }
            _ => HEADER,
        };
        let size = self.inbuf.len();
        let by_use = if size == 0 {
            IN_SIZES[0]
        } else if self.in_full
            && let Some(&larger) = IN_SIZES.iter().find(|&&s| s > size)
        {
            larger
        } else {
            size
        };
        let by_record = IN_SIZES
            .iter()
            .copied()
            .find(|&s| s >= need)
            .unwrap_or(need);
        let want = by_use.max(by_record);
        if want != size {
            let mut larger = if want == FIRST_BUFFER {
                spare::take()
            } else {
                vec![0u8; want].into_boxed_slice()
            };
            larger[..partial].copy_from_slice(&self.inbuf[self.read_at..self.filled]);
            self.give_back_inbuf();
            self.inbuf = larger;
            (self.read_at, self.filled) = (0, partial);
        } else if self.inbuf.len() - self.read_at < need {
            self.inbuf.copy_within(self.read_at..self.filled, 0);
            (self.read_at, self.filled) = (0, partial);
        }
        self.plain = 0..0;
        self.in_full = false;
    }

    fn give_back_inbuf(&mut self) {
        let inbuf = std::mem::take(&mut self.inbuf);
        if inbuf.len() == FIRST_BUFFER {
            spare::give_back(inbuf);
        }
    }
}

impl<S: AsyncRead + Unpin> TlsStream<S> {
    /// Reads more records into `inbuf`. `Ready(Ok(()))` means something was read; the end of
    /// the connection without the peer's close_notify is an error (it may be a truncation).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.make_room();
        let space = &mut self.inbuf[self.filled..];
        let room = space.len();
        let mut rb = ReadBuf::new(space);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Pending => {
                // Nothing waiting after messages: the buffer goes back (an idle connection holds
                // none). A bulk transfer that outran its sender keeps its larger buffer.
                if self.filled == 0 && (self.in_small || self.inbuf.len() == FIRST_BUFFER) {
                    self.give_back_inbuf();
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    let message = if self.filled > self.read_at {
                        "the connection closed in the middle of a TLS record"
                    } else {
                        "the connection closed without a TLS close_notify (the data may be cut short)"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, message)));
                }
                self.filled += n;
                self.in_full = n == room;
                self.in_small = n < FIRST_BUFFER;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Writes the sealed records still waiting; the buffer goes once it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Tells the peer why something it sent was refused, with a fatal alert (RFC 8446 §6.2)
    /// written as far as the connection takes it now (a flush or shutdown sends the rest);
    /// nothing is written after it. A cut connection and the peer's own alerts get no answer.
    fn answer_refusal(&mut self, cx: &mut Context<'_>, error: &io::Error) {
        let Some(description) = record::alert_for(error) else {
            return;
        };
        if self.write_closed {
            return;
        }
        self.write_closed = true;
        let sealed = self.tx.seal(&mut self.out, ALERT, 2, |out| {
            out.extend_from_slice(&[FATAL, description])
        });
        if sealed.is_ok() {
            let _ = self.poll_write_out(cx);
        }
    }
}

/// rustls, the only peer, never splits a message after the handshake across records.
fn split_message() -> io::Error {
    refused(
        UNEXPECTED_MESSAGE,
        "a TLS handshake message split across records",
    )
}

/// Appends `n` bytes of `bufs`, starting `skip` bytes in, to `out`.
fn gather(bufs: &[IoSlice<'_>], mut skip: usize, mut n: usize, out: &mut Vec<u8>) {
    for buf in bufs {
        if n == 0 {
            break;
        }
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        let take = (buf.len() - skip).min(n);
        out.extend_from_slice(&buf[skip..skip + take]);
        skip = 0;
        n -= take;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((kind, message)) = &this.read_error {
            return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
        }
        let before = out.filled().len();
        loop {
            let step = match this.copy_out(out) {
                Ok(())
                    if out.filled().len() > before || this.read_closed || out.remaining() == 0 =>
                {
                    return Poll::Ready(Ok(()));
                }
                Ok(()) => ready!(this.poll_fill(cx)),
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                // It stays: the stream cannot be read past a record it refused. What was read
                // before it is handed out first.
                this.read_error = Some((e.kind(), e.to_string()));
                this.answer_refusal(cx, &e);
                if out.filled().len() > before {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(e));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was sealed before goes out first: at most one write's records wait here.
        ready!(this.poll_write_out(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS stream is closed for writing (shut down, or a fatal alert was sent)",
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = total.min(MAX_WRITE);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        this.seal(bufs, 0, n)?;
        // The records are ours now; what the socket does not take yet, a flush sends.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            ready!(this.poll_write_out(cx))?;
            this.tx.seal(&mut this.out, ALERT, 2, |out| {
                out.extend_from_slice(&[WARNING, CLOSE_NOTIFY])
            })?;
            this.write_closed = true;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<S> Drop for TlsStream<S> {
    fn drop(&mut self) {
        self.give_back_inbuf();
    }
}
