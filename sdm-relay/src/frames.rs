//! Streams that end without ending their connection.
//!
//! A TCP or TLS connection can carry one stream: its end is the connection's end. To carry one
//! stream after another, each direction of a stream is cut into frames, and an empty frame
//! marks its end:
//!
//! ```text
//! frame   length:u32 (big-endian, 1..=MAX_FRAME) | that many bytes of the stream
//! end     length:u32 = 0                         this direction of the stream has ended
//! ```
//!
//! [`Framed`] does this over any stream. Each direction passes bytes through untouched until it
//! is started ([`Framed::start_reading`], [`Framed::start_writing`], or both with
//! [`Framed::start`]): the handshake before a stream, or a peer that does not frame. A stream whose two
//! directions both ended with an end frame leaves the connection ready for the next stream
//! ([`Framed::finished`]); anything else (the connection closing, a frame cut short, a stream
//! abandoned inside a frame) does not.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame written or accepted; more than a relay buffer holds.
pub const MAX_FRAME: usize = 1 << 20;
pub(crate) const HEADER: usize = 4;

/// A stream over `S`, framed in each direction once started; see the module documentation.
#[derive(Debug)]
pub struct Framed<S> {
    inner: S,
    read_framed: bool,
    write_framed: bool,
    reading: Reading,
    writing: Writing,
}

#[derive(Debug, Default)]
struct Reading {
    header: [u8; HEADER],
    header_len: usize,
    /// Bytes of the current frame not yet read.
    left: usize,
    /// The end frame arrived.
    ended: bool,
    /// The connection ended (or broke) instead.
    closed: bool,
}

#[derive(Debug, Default)]
struct Writing {
    header: [u8; HEADER],
    /// Bytes of `header` already written; `HEADER` when none is pending.
    header_sent: usize,
    /// Bytes of the current frame not yet written.
    left: usize,
    /// The end frame is written (or being written).
    ending: bool,
    ended: bool,
}

impl Writing {
    fn idle() -> Writing {
        Writing {
            header_sent: HEADER,
            ..Writing::default()
        }
    }

    fn begin(&mut self, len: usize) {
        self.header = u32::try_from(len).unwrap_or(0).to_be_bytes();
        self.header_sent = 0;
        self.left = len;
    }
}

impl<S> Framed<S> {
    /// `inner`, passing bytes through until started.
    pub fn new(inner: S) -> Framed<S> {
        Framed {
            inner,
            read_framed: false,
            write_framed: false,
            reading: Reading::default(),
            writing: Writing::idle(),
        }
    }

    /// From now on both directions are framed: a new stream begins.
    pub fn start(&mut self) {
        self.start_reading();
        self.start_writing();
    }

    /// From now on what is read is framed.
    pub fn start_reading(&mut self) {
        self.read_framed = true;
        self.reading = Reading::default();
    }

    /// From now on what is written is framed.
    pub fn start_writing(&mut self) {
        self.write_framed = true;
        self.writing = Writing::idle();
    }

    /// Whether the framed stream ended cleanly both ways, so the connection can carry another;
    /// if so, bytes pass through again until the next start.
    pub fn finished(&mut self) -> bool {
        let clean =
            self.read_framed && self.write_framed && self.reading.ended && self.writing.ended;
        if clean {
            self.read_framed = false;
            self.write_framed = false;
        }
        clean
    }

    /// Whether the end frame of the incoming direction arrived.
    pub fn read_ended(&self) -> bool {
        self.read_framed && self.reading.ended
    }

    /// The stream underneath, for the bytes between streams.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection ended inside a frame",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_framed {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let reading = &mut this.reading;
        if reading.ended || reading.closed || out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let result = ready!(poll_read_frames(&mut this.inner, reading, cx, out));
        if result.is_err() {
            // Nothing after a broken frame can be trusted: the stream reads as ended from now
            // on, and the connection is not finished.
            reading.closed = true;
        }
        Poll::Ready(result)
    }
}

/// Reads the next bytes of the current frame, or the next frame's header first.
fn poll_read_frames<S: AsyncRead + Unpin>(
    inner: &mut S,
    reading: &mut Reading,
    cx: &mut Context<'_>,
    out: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    while reading.left == 0 {
        let mut rb = ReadBuf::new(&mut reading.header[reading.header_len..]);
        ready!(Pin::new(&mut *inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            if reading.header_len > 0 {
                return Poll::Ready(Err(cut_short()));
            }
            // The connection ended between frames: the stream ends with it.
            reading.closed = true;
            return Poll::Ready(Ok(()));
        }
        reading.header_len += n;
        if reading.header_len < HEADER {
            continue;
        }
        reading.header_len = 0;
        let len = u32::from_be_bytes(reading.header) as usize;
        if len == 0 {
            reading.ended = true;
            return Poll::Ready(Ok(()));
        }
        if len > MAX_FRAME {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
            )));
        }
        reading.left = len;
    }
    let want = out.remaining().min(reading.left);
    let mut rb = ReadBuf::new(out.initialize_unfilled_to(want));
    ready!(Pin::new(&mut *inner).poll_read(cx, &mut rb))?;
    let n = rb.filled().len();
    if n == 0 {
        return Poll::Ready(Err(cut_short()));
    }
    out.advance(n);
    reading.left -= n;
    Poll::Ready(Ok(()))
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Writes what is left of the pending header, with up to `data.len()` bytes of the frame
    /// behind it (in one write, so that both go in one TLS record). Returns the bytes of
    /// `data` written.
    fn poll_write_framed(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let writing = &mut self.writing;
        let take = data.len().min(writing.left);
        loop {
            if writing.header_sent == HEADER {
                if take == 0 {
                    return Poll::Ready(Ok(0));
                }
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &data[..take]))?;
                writing.left -= n;
                return Poll::Ready(Ok(n));
            }
            let bufs = [
                IoSlice::new(&writing.header[writing.header_sent..]),
                IoSlice::new(&data[..take]),
            ];
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let of_header = n.min(HEADER - writing.header_sent);
            writing.header_sent += of_header;
            let of_data = n - of_header;
            writing.left -= of_data;
            if of_data > 0 {
                return Poll::Ready(Ok(of_data));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.write_framed {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.writing.ending {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "this direction of the stream has ended",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.writing.left == 0 {
            this.writing.begin(data.len().min(MAX_FRAME));
        }
        this.poll_write_framed(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.write_framed {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        Pin::new(this).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        !self.write_framed && self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// Framed, this writes the end frame and keeps the connection; otherwise it shuts the
    /// connection's sending half.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_framed {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if !this.writing.ending {
            if this.writing.left > 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the stream was ended inside a frame",
                )));
            }
            this.writing.begin(0);
            this.writing.ending = true;
        }
        while this.writing.header_sent < HEADER {
            ready!(this.poll_write_framed(cx, &[]))?;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.writing.ended = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    fn pair(capacity: usize) -> (Framed<DuplexStream>, Framed<DuplexStream>) {
        let (a, b) = duplex(capacity);
        let (mut a, mut b) = (Framed::new(a), Framed::new(b));
        a.start();
        b.start();
        (a, b)
    }

    #[tokio::test]
    async fn streams_end_both_ways_and_the_connection_carries_the_next() {
        let (mut a, mut b) = pair(64 * 1024);
        for round in 0..3u8 {
            let upload: Vec<u8> = (0..300_000u32).map(|i| (i as u8) ^ round).collect();
            let expected = upload.clone();
            let far = tokio::spawn(async move {
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.unwrap();
                b.write_all(b"done").await.unwrap();
                b.shutdown().await.unwrap();
                (b, got)
            });
            a.write_all(&upload).await.unwrap();
            a.shutdown().await.unwrap();
            let mut reply = Vec::new();
            a.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, b"done");
            let (back, got) = far.await.unwrap();
            b = back;
            assert!(got == expected, "bytes changed in round {round}");
            assert!(a.finished() && b.finished(), "round {round} ended cleanly");
            // Between streams bytes pass through untouched (the next OPEN, say).
            a.write_all(b"O").await.unwrap();
            assert_eq!(b.read_u8().await.unwrap(), b'O');
            a.start();
            b.start();
        }
    }

    #[tokio::test]
    async fn a_stream_is_unfinished_until_both_directions_ended() {
        let (mut a, mut b) = pair(1024);
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        assert!(!a.finished(), "a has not read b's end");
        assert!(!b.finished(), "b has not ended its own direction");
        assert!(b.read_ended());
        b.shutdown().await.unwrap();
        assert!(b.finished());
        assert_eq!(a.read(&mut [0u8; 8]).await.unwrap(), 0);
        assert!(a.finished());
    }

    #[tokio::test]
    async fn a_closed_connection_ends_the_stream_but_is_not_finished() {
        let (a, b) = duplex(1024);
        let mut b = Framed::new(b);
        b.start();
        drop(a);
        assert_eq!(b.read(&mut [0u8; 8]).await.unwrap(), 0);
        b.shutdown().await.ok();
        assert!(!b.finished());
    }

    #[tokio::test]
    async fn a_frame_cut_short_or_too_long_is_an_error() {
        let (mut raw, b) = duplex(1024);
        let mut b = Framed::new(b);
        b.start();
        raw.write_all(&[0, 0, 0, 9, b'x', b'y']).await.unwrap();
        drop(raw);
        let mut got = Vec::new();
        let err = b.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"xy");

        let (mut raw, b) = duplex(1024);
        let mut b = Framed::new(b);
        b.start();
        raw.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let err = b.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");
        // What follows a broken frame is not read as frames, even a well-formed end.
        raw.write_all(&[0, 0, 0, 0]).await.unwrap();
        assert_eq!(b.read(&mut [0u8; 8]).await.unwrap(), 0);
        assert!(!b.read_ended());
        b.shutdown().await.unwrap();
        assert!(!b.finished());
    }

    #[tokio::test]
    async fn frames_are_what_the_peer_sees_on_the_wire() {
        let (a, mut raw) = duplex(1024);
        let mut a = Framed::new(a);
        a.write_all(b"O").await.unwrap();
        a.start();
        a.write_all(b"hello").await.unwrap();
        a.write_all(b"").await.unwrap();
        a.shutdown().await.unwrap();
        let err = a.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        drop(a);
        let mut wire = Vec::new();
        raw.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire, b"O\0\0\0\x05hello\0\0\0\0");
    }

    /// A writer that takes at most `limit` bytes per call and is pending every other call,
    /// so headers and frames are written in pieces.
    struct Trickle {
        wire: Vec<u8>,
        limit: usize,
        pending: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.pending = !this.pending;
            if this.pending {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = data.len().min(this.limit);
            this.wire.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_keep_the_frames_whole() {
        let mut a = Framed::new(Trickle {
            wire: Vec::new(),
            limit: 3,
            pending: false,
        });
        a.start();
        a.write_all(b"0123456789").await.unwrap();
        a.write_all(b"ab").await.unwrap();
        a.shutdown().await.unwrap();
        let wire = std::mem::take(&mut a.get_mut().wire);
        // Read back through a framed reader: the same bytes, then the end.
        let (mut raw, b) = duplex(1024);
        raw.write_all(&wire).await.unwrap();
        drop(raw);
        let mut b = Framed::new(b);
        b.start();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"0123456789ab");
        assert!(b.read_ended());
    }
}
