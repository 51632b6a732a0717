//! Moving bytes both ways between the client and the resource in one task, counting them and
//! letting a protocol look at them as they pass (without copying the stream).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Denied;

/// Per direction: large enough for full TLS records and bulk transfers.
const BUFFER: usize = 64 * 1024;

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
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

impl Pump {
    fn new() -> Pump {
        Pump {
            buf: vec![0u8; BUFFER].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            moved: 0,
            need_flush: false,
        }
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
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
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
