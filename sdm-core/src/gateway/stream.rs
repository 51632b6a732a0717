//! A connection to a gateway that reads the gateway's handshake replies before handing out
//! the resource's bytes, so application data can be written before the resource is connected.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use sdm_proto::handshake::{self, Reply};
use sdm_relay::Framed;
use sdm_relay::tls::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::error::{Error, ErrorKind};

#[derive(Debug)]
enum State {
    AwaitReady,
    AwaitConnected,
    Streaming,
    Failed(ErrorKind, String),
}

/// A TLS connection to a gateway, in handshake or streaming state. When the gateway answered
/// READY-FRAMED, streams are framed (`sdm_relay::Framed`) and the connection can carry another
/// stream after one ended cleanly both ways.
pub(crate) struct GatewayStream {
    io: Framed<Buffered>,
    state: State,
    /// The gateway frames this connection's streams.
    framed: bool,
    gateway: String,
    lease_id: Uuid,
    /// CONNECTED arrived for the current stream.
    reached: bool,
    /// Called once CONNECTED arrives (a tunnel's observer timing the set-up); `None` unless
    /// someone asked, so that nothing is called or timed otherwise.
    on_reached: Option<OnReached>,
}

/// What [`GatewayStream::on_reached`] calls.
pub(crate) type OnReached = Box<dyn FnOnce() + Send + Sync>;

/// The TLS connection, with the bytes read past the last handshake reply in front of it, and
/// an OPEN byte still to write in front of the stream's first bytes.
struct Buffered {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    pos: usize,
    open_pending: bool,
}

impl Buffered {
    /// Writes (and flushes) the OPEN byte held back, if there is one.
    fn poll_send_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.open_pending {
            if ready!(Pin::new(&mut self.tls).poll_write(cx, &[handshake::OPEN]))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.open_pending = false;
        }
        Pin::new(&mut self.tls).poll_flush(cx)
    }
}

impl std::fmt::Debug for GatewayStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayStream")
            .field("gateway", &self.gateway)
            .field("state", &self.state)
            .field("framed", &self.framed)
            .finish_non_exhaustive()
    }
}

impl GatewayStream {
    /// A stream whose HELLO has been sent; the READY reply is still to come.
    pub(crate) fn after_hello(
        tls: TlsStream<TcpStream>,
        gateway: String,
        lease_id: Uuid,
    ) -> GatewayStream {
        GatewayStream {
            io: Framed::new(Buffered {
                tls,
                buf: Vec::new(),
                pos: 0,
                open_pending: false,
            }),
            state: State::AwaitReady,
            framed: false,
            gateway,
            lease_id,
            reached: false,
            on_reached: None,
        }
    }

    /// Waits for READY (the lease was accepted), leaving CONNECTED to come after OPEN.
    pub(crate) async fn wait_ready(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_handshake(cx, true)).await
    }

    /// Waits for CONNECTED (the gateway reached the resource).
    pub(crate) async fn wait_connected(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_handshake(cx, false)).await
    }

    /// Opens the next stream on a connection that is waiting after READY (or after its last
    /// stream). The OPEN byte goes out with the stream's first bytes, in one TLS record and one
    /// write, or alone as soon as the stream is read from (for protocols where the server
    /// speaks first).
    pub(crate) fn open(&mut self) {
        self.reached = false;
        self.on_reached = None;
        self.io.get_mut().open_pending = true;
        if self.framed {
            self.io.start_writing();
        }
    }

    /// After the stream was carried: whether it ended cleanly both ways on a connection that
    /// can carry another, which then waits for the next [`open`](Self::open).
    pub(crate) fn end_stream(&mut self) -> bool {
        let again = self.framed && matches!(self.state, State::Streaming) && self.io.finished();
        if again {
            self.state = State::AwaitConnected;
        }
        again
    }

    /// Calls `reached` once the gateway answers CONNECTED for the current stream (at once if
    /// it has); it runs inside a read or write of the stream, so it must be quick.
    pub(crate) fn on_reached(&mut self, reached: OnReached) {
        if self.reached {
            reached();
        } else {
            self.on_reached = Some(reached);
        }
    }

    /// The lease this connection presented in its HELLO.
    pub(crate) fn lease_id(&self) -> Uuid {
        self.lease_id
    }

    /// Whether the gateway has closed this (idle) connection, checked without blocking.
    pub(crate) fn looks_closed(&mut self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let raw = self.io.get_mut();
        // Idle connections carry nothing until OPEN, so anything readable means the peer
        // closed or misbehaved; only "would block" is healthy.
        raw.pos < raw.buf.len()
            || raw.tls.has_buffered_input()
            || !matches!(
                Pin::new(raw.tls.get_mut()).poll_peek(&mut cx, &mut buf),
                Poll::Pending
            )
    }

    pub(crate) fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Drives the handshake until READY (`stop_at_ready`) or CONNECTED, or a failure.
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        stop_at_ready: bool,
    ) -> Poll<Result<(), Error>> {
        loop {
            match &self.state {
                State::Streaming => return Poll::Ready(Ok(())),
                State::AwaitConnected if stop_at_ready => return Poll::Ready(Ok(())),
                State::Failed(kind, message) => {
                    return Poll::Ready(Err(Error::new(*kind, message.clone())));
                }
                State::AwaitReady | State::AwaitConnected => {}
            }
            let raw = self.io.get_mut();
            match handshake::decode_reply(&raw.buf[raw.pos..]) {
                Ok(Some((reply, n))) => {
                    raw.pos += n;
                    if raw.pos == raw.buf.len() {
                        raw.buf.clear();
                        raw.pos = 0;
                    }
                    self.state = match (&self.state, reply) {
                        (State::AwaitReady, Reply::Ready) => State::AwaitConnected,
                        (State::AwaitReady, Reply::ReadyFramed) => {
                            self.framed = true;
                            State::AwaitConnected
                        }
                        (State::AwaitConnected, Reply::Connected) => {
                            if self.framed {
                                self.io.start_reading();
                            }
                            self.reached = true;
                            if let Some(reached) = self.on_reached.take() {
                                reached();
                            }
                            State::Streaming
                        }
                        (_, Reply::Error { kind, message }) => State::Failed(kind, message),
                        (_, other) => State::Failed(
                            ErrorKind::Internal,
                            format!("gateway {} sent {other:?} out of order", self.gateway),
                        ),
                    };
                }
                Ok(None) => {
                    let mut chunk = [0u8; 2048];
                    let mut rb = ReadBuf::new(&mut chunk);
                    // An OPEN held back goes out before the reply to it is awaited.
                    let read = match ready!(raw.poll_send_open(cx)) {
                        Ok(()) => ready!(Pin::new(&mut raw.tls).poll_read(cx, &mut rb)),
                        Err(e) => Err(e),
                    };
                    match read {
                        Ok(()) if rb.filled().is_empty() => {
                            self.state = State::Failed(
                                ErrorKind::GatewayUnreachable,
                                format!(
                                    "gateway {} closed the connection during the handshake",
                                    self.gateway
                                ),
                            );
                        }
                        Ok(()) => raw.buf.extend_from_slice(rb.filled()),
                        Err(e) => {
                            self.state = State::Failed(
                                ErrorKind::GatewayUnreachable,
                                format!(
                                    "gateway {} failed during the handshake: {}",
                                    self.gateway,
                                    crate::error::describe_io(&e)
                                ),
                            );
                        }
                    }
                }
                Err(e) => {
                    self.state = State::Failed(
                        ErrorKind::Internal,
                        format!("gateway {} sent a malformed handshake: {e}", self.gateway),
                    );
                }
            }
        }
    }
}

/// Recovers the sdm error carried inside an I/O error from a [`GatewayStream`].
pub(crate) fn error_from_io(e: &io::Error) -> Option<Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .map(Error::detached)
}

impl AsyncRead for GatewayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !matches!(this.state, State::Streaming) {
            ready!(this.poll_handshake(cx, false)).map_err(io::Error::other)?;
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl AsyncWrite for GatewayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl AsyncRead for Buffered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.buf.len() {
            let n = out.remaining().min(this.buf.len() - this.pos);
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.buf.len() {
                this.buf = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tls).poll_read(cx, out)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_open(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_open(cx))?;
        Pin::new(&mut this.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.open_pending {
            // OPEN and the stream's first bytes in one record.
            let open = [handshake::OPEN];
            let mut with_open = Vec::with_capacity(bufs.len() + 1);
            with_open.push(io::IoSlice::new(&open));
            with_open.extend(bufs.iter().map(|b| io::IoSlice::new(b)));
            let n = ready!(Pin::new(&mut this.tls).poll_write_vectored(cx, &with_open))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.open_pending = false;
            if n > 1 {
                return Poll::Ready(Ok(n - 1));
            }
        }
        Pin::new(&mut this.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}
