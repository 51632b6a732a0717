//! Moving bytes both ways between the client and the resource in one task, counting them and
//! letting a protocol look at them as they pass (without copying the stream).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Denied;

/// Per direction, a connection reads into a small buffer: most connections carry small
/// messages (queries, rows) or sit idle, and a gateway holds thousands of them. A read that
/// fills the buffer means a bulk transfer: the buffer then grows (×4 at a time) up to
/// [`MAX_BUFFER`], large enough for full TLS records and few syscalls per megabyte. A small
/// buffer is given back whenever its direction has nothing to read, so an idle connection
/// holds none (allocating 4 KiB again costs far less than the wake-up that brings data).
const FIRST_BUFFER: usize = 4 * 1024;
/// The largest buffer per direction.
const MAX_BUFFER: usize = 64 * 1024;

/// Sees every chunk of one direction, in order, before it is written on.
pub(crate) trait Tap: Send {
    fn observe(&mut self, bytes: &[u8]);
}

/// Looks at nothing.
pub(crate) struct NoTap;

impl Tap for NoTap {
    fn observe(&mut self, _bytes: &[u8]) {}
}

/// Which side of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// How a splice ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Both directions finished (each side closed its sending half).
    Closed,
    /// The resource closed its side while the client's was still open (only when
    /// `stop_at_upstream_eof`).
    UpstreamClosed,
    /// Reading from or writing to `side` failed.
    Failed(Side, io::Error),
    /// The connection was told to stop (access revoked).
    Stopped(Denied),
}

/// Bytes moved each way and how it ended.
#[derive(Debug)]
pub(crate) struct Spliced {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) end: End,
}

struct Pump {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    moved: u64,
    need_flush: bool,
    /// The last read filled the buffer (more was probably waiting).
    full: bool,
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

impl Pump {
    fn new() -> Pump {
        Pump {
            // Allocated by the first read (see `grow`).
            buf: Box::default(),
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            moved: 0,
            need_flush: false,
            full: false,
        }
    }

    /// Before a read into an empty buffer: allocates the first buffer, or a larger one when
    /// the last read filled it. Never called with bytes pending, so nothing is copied.
    fn grow(&mut self) {
        let want = if self.buf.is_empty() {
            FIRST_BUFFER
        } else if self.full && self.buf.len() < MAX_BUFFER {
            (self.buf.len() * 4).min(MAX_BUFFER)
        } else {
            return;
        };
        self.buf = vec![0u8; want].into_boxed_slice();
        self.full = false;
    }

    /// Moves bytes until the reader is exhausted (then, with `shutdown`, closes the writer's
    /// sending half), or until one side is not ready.
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        tap: &mut dyn Tap,
        shutdown: bool,
    ) -> Poll<Result<(), PumpError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                self.grow();
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        if self.buf.len() == FIRST_BUFFER {
                            self.buf = Box::default();
                        }
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(PumpError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PumpError::Read(e))),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            tap.observe(&self.buf[..n]);
                            self.pos = 0;
                            self.cap = n;
                            self.full = n == self.buf.len();
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.cap])
                )
                .map_err(PumpError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(PumpError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.moved += n as u64;
                self.need_flush = true;
            }
            if self.eof && self.pos == self.cap {
                ready!(writer.as_mut().poll_flush(cx)).map_err(PumpError::Write)?;
                self.need_flush = false;
                if shutdown {
                    ready!(writer.as_mut().poll_shutdown(cx)).map_err(PumpError::Write)?;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Splices `client` and `upstream` until both are done, one fails, or `stop` resolves. With
/// `stop_at_upstream_eof`, the resource closing its side ends the splice at once without
/// closing the client's, so that the caller can still tell the client why.
pub(crate) async fn splice<C, U>(
    client: &mut C,
    upstream: &mut U,
    up_tap: &mut dyn Tap,
    down_tap: &mut dyn Tap,
    stop_at_upstream_eof: bool,
    stop: impl Future<Output = Denied>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Pump::new();
    let mut down = Pump::new();
    let mut stop = std::pin::pin!(stop);
    let end = std::future::poll_fn(|cx| {
        if let Poll::Ready(reason) = stop.as_mut().poll(cx) {
            return Poll::Ready(End::Stopped(reason));
        }
        if !up.done {
            match up.poll_pump(
                cx,
                Pin::new(&mut *client),
                Pin::new(&mut *upstream),
                up_tap,
                true,
            ) {
                Poll::Ready(Err(PumpError::Read(e))) => {
                    return Poll::Ready(End::Failed(Side::Client, e));
                }
                Poll::Ready(Err(PumpError::Write(e))) => {
                    return Poll::Ready(End::Failed(Side::Upstream, e));
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        if !down.done {
            let shutdown = !stop_at_upstream_eof;
            match down.poll_pump(
                cx,
                Pin::new(&mut *upstream),
                Pin::new(&mut *client),
                down_tap,
                shutdown,
            ) {
                Poll::Ready(Err(PumpError::Read(e))) => {
                    return Poll::Ready(End::Failed(Side::Upstream, e));
                }
                Poll::Ready(Err(PumpError::Write(e))) => {
                    return Poll::Ready(End::Failed(Side::Client, e));
                }
                Poll::Ready(Ok(())) if stop_at_upstream_eof && !up.done => {
                    return Poll::Ready(End::UpstreamClosed);
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        if up.done && down.done {
            Poll::Ready(End::Closed)
        } else {
            Poll::Pending
        }
    })
    .await;
    Spliced {
        up: up.moved,
        down: down.moved,
        end,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// Reads `reader` to its end while `pump` moves it into `writer`.
    async fn pump_all(pump: &mut Pump, bytes: Vec<u8>) -> Vec<u8> {
        let (mut source, mut reader) = duplex(256 * 1024);
        let (mut writer, mut sink) = duplex(256 * 1024);
        let feed = tokio::spawn(async move {
            source.write_all(&bytes).await.unwrap();
            source.shutdown().await.unwrap();
        });
        let drain = tokio::spawn(async move {
            let mut out = Vec::new();
            sink.read_to_end(&mut out).await.unwrap();
            out
        });
        std::future::poll_fn(|cx| {
            pump.poll_pump(
                cx,
                Pin::new(&mut reader),
                Pin::new(&mut writer),
                &mut NoTap,
                true,
            )
        })
        .await
        .map_err(|_| "pump failed")
        .unwrap();
        feed.await.unwrap();
        drain.await.unwrap()
    }

    #[tokio::test]
    async fn small_messages_keep_the_small_buffer() {
        let mut pump = Pump::new();
        assert!(
            pump.buf.is_empty(),
            "nothing is allocated before the first read"
        );
        let out = pump_all(&mut pump, b"SELECT 1".to_vec()).await;
        assert_eq!(out, b"SELECT 1");
        assert_eq!(pump.buf.len(), FIRST_BUFFER);
    }

    #[tokio::test]
    async fn an_idle_direction_gives_its_small_buffer_back() {
        let mut pump = Pump::new();
        let (mut source, mut reader) = duplex(1024);
        let (mut writer, mut sink) = duplex(1024);
        let mut poll = |pump: &mut Pump| {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            pump.poll_pump(
                &mut cx,
                Pin::new(&mut reader),
                Pin::new(&mut writer),
                &mut NoTap,
                true,
            )
            .is_pending()
        };
        assert!(poll(&mut pump), "nothing to read yet");
        assert!(pump.buf.is_empty(), "idle: no buffer held");
        source.write_all(b"SELECT 1").await.unwrap();
        assert!(poll(&mut pump), "moved what there was, then waits");
        assert!(pump.buf.is_empty(), "idle again: the buffer was given back");
        assert_eq!(pump.moved, 8);
        let mut out = [0u8; 8];
        sink.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"SELECT 1");
    }

    #[tokio::test]
    async fn bulk_grows_the_buffer_and_moves_every_byte_in_order() {
        let mut pump = Pump::new();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let out = pump_all(&mut pump, bytes.clone()).await;
        assert_eq!(out.len(), bytes.len());
        assert!(out == bytes, "bytes changed on the way");
        assert_eq!(pump.moved, bytes.len() as u64);
        assert_eq!(pump.buf.len(), MAX_BUFFER);
    }
}
