//! Large reads under a TLS connection while its peer streams.
//!
//! rustls asks its socket for 4 KiB at a time, so a bulk transfer costs four or five read
//! syscalls (and as many trips through the runtime) per 16 KiB record. [`ReadAhead`] passes
//! those reads straight through until one fills the request, a sign that more is waiting; from
//! then on it reads up to [`AHEAD`] bytes at once and hands them out from memory. It drops its
//! buffer as soon as the socket has nothing to read or a read comes back short, so a connection
//! trading small messages, or sitting idle, holds none and pays no extra copy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read takes while the peer streams: four full TLS records.
const AHEAD: usize = 64 * 1024;

/// `inner`, read in large chunks while its peer streams. Writes go straight to `inner`.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read ahead; empty (unallocated) unless the peer streams.
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    /// The last read filled what was asked: read ahead next time.
    streaming: bool,
}

impl<S> ReadAhead<S> {
    /// `inner`, holding no buffer yet.
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: Box::default(),
            pos: 0,
            cap: 0,
            streaming: false,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream underneath, to act on directly (bytes read ahead stay here).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Bytes read from the stream underneath and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.cap - self.pos
    }

    /// Hands out what was read ahead, into `out`.
    fn hand_out(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.cap - self.pos);
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }

    /// Done streaming: the buffer goes.
    fn stop_streaming(&mut self) {
        self.streaming = false;
        self.buf = Box::default();
        (self.pos, self.cap) = (0, 0);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.cap {
            this.hand_out(out);
            return Poll::Ready(Ok(()));
        }
        let wanted = out.remaining();
        if !this.streaming {
            if !this.buf.is_empty() {
                this.stop_streaming();
            }
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            let n = out.filled().len() - before;
            this.streaming = n > 0 && n == wanted;
            return Poll::Ready(Ok(()));
        }
        if this.buf.is_empty() {
            this.buf = vec![0u8; AHEAD].into_boxed_slice();
        }
        let mut ahead = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.inner).poll_read(cx, &mut ahead) {
            Poll::Pending => {
                this.stop_streaming();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                this.stop_streaming();
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                let n = ahead.filled().len();
                (this.pos, this.cap) = (0, n);
                // A short read: the peer no longer streams. What came is handed out; the
                // buffer goes once it is empty.
                this.streaming = n > wanted;
                this.hand_out(out);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    /// A stream that counts the reads that reached it.
    struct Counted {
        inner: DuplexStream,
        reads: usize,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, out)
        }
    }

    fn counted(inner: DuplexStream) -> ReadAhead<Counted> {
        ReadAhead::new(Counted { inner, reads: 0 })
    }

    /// Reads 4 KiB at a time, as rustls does, until `len` bytes came.
    async fn read_like_tls(stream: &mut ReadAhead<Counted>, len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() < len {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "ended after {} of {len} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn a_stream_is_read_in_large_chunks_and_arrives_whole_and_in_order() {
        let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut source, inner) = duplex(2 * 1024 * 1024);
        source.write_all(&bytes).await.unwrap();
        let mut stream = counted(inner);
        let got = read_like_tls(&mut stream, bytes.len()).await;
        assert!(got == bytes, "bytes changed on the way");
        // 4 KiB reads would reach the stream 245 times.
        let reads = stream.get_ref().reads;
        assert!(reads <= 1 + bytes.len().div_ceil(AHEAD), "{reads} reads");
    }

    #[tokio::test]
    async fn small_messages_pass_straight_through_and_no_buffer_is_held() {
        let (mut source, inner) = duplex(64 * 1024);
        let mut stream = counted(inner);
        for i in 0..10u8 {
            let message = [i; 100];
            source.write_all(&message).await.unwrap();
            assert_eq!(read_like_tls(&mut stream, 100).await, message);
            assert!(stream.buf.is_empty(), "message {i}: a buffer is held");
        }
        assert_eq!(stream.get_ref().reads, 10, "one read per message");
    }

    #[tokio::test]
    async fn a_stream_that_pauses_gives_its_buffer_up() {
        let (mut source, inner) = duplex(1024 * 1024);
        let mut stream = counted(inner);
        source.write_all(&[1u8; 200_000]).await.unwrap();
        read_like_tls(&mut stream, 200_000).await;
        assert!(!stream.buf.is_empty(), "streaming: it reads ahead");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 4096];
        let mut out = ReadBuf::new(&mut chunk);
        assert!(
            Pin::new(&mut stream)
                .poll_read(&mut cx, &mut out)
                .is_pending()
        );
        assert!(stream.buf.is_empty(), "idle: no buffer held");
        assert_eq!(stream.buffered(), 0);
        source.write_all(b"after the pause").await.unwrap();
        assert_eq!(read_like_tls(&mut stream, 15).await, b"after the pause");
        assert!(
            stream.buf.is_empty(),
            "a short message does not start streaming"
        );
    }

    #[tokio::test]
    async fn the_end_of_the_stream_arrives_after_every_byte() {
        let (mut source, inner) = duplex(1024 * 1024);
        let mut stream = counted(inner);
        source.write_all(&[2u8; 100_000]).await.unwrap();
        source.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100_000);
        assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 0, "still ended");
    }

    #[tokio::test]
    async fn writes_go_straight_through_and_stay_vectored() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        let mut stream = ReadAhead::new(client.unwrap());
        let (mut far, _) = accepted.unwrap();
        assert!(
            stream.is_write_vectored(),
            "rustls writes records with writev"
        );
        let parts = [io::IoSlice::new(b"two "), io::IoSlice::new(b"parts")];
        let n = stream.write_vectored(&parts).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = vec![0u8; n];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, &b"two parts"[..n]);
        far.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
