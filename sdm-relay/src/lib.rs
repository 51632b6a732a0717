#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod frames;
pub mod scheduling;
mod spare;
pub mod tls;
pub use frames::{Framed, MAX_FRAME};

/// Per direction, a connection reads into a small buffer: most connections carry small
/// messages (queries, rows) or sit idle, and a gateway holds thousands of them. A read that
/// fills the buffer means a bulk transfer: the buffer then grows (×4 at a time) up to
/// [`MAX_BUFFER`], large enough for full TLS records and few syscalls per megabyte. A small
/// buffer is given back whenever its direction has nothing to read, so an idle connection
/// holds none; the thread keeps a few for the next reads (`spare.rs`), so that a connection
/// trading small messages does not allocate and zero one per message.
///
/// The larger sizes leave room for a frame header ([`Framed`]): a full buffer, framed, then
/// still fills whole 16 KiB TLS records, where four bytes more would need a record of their own.
const SIZES: [usize; 3] = [FIRST_BUFFER, 16 * 1024 - frames::HEADER, MAX_BUFFER];
const FIRST_BUFFER: usize = 4 * 1024;
/// The largest buffer per direction.
const MAX_BUFFER: usize = 64 * 1024 - frames::HEADER;

/// Sees every chunk of one direction, in order, before it is written on, and may stop it: a
/// protocol's audit records what passes and refuses what it cannot record.
pub trait Tap: Send {
    /// Called with each chunk read, before it is written. An error refuses the chunk: nothing
    /// of it is written, and the pump fails with [`PumpError::Refused`].
    fn observe(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// Called before the chunk last observed is written: `Pending` holds it back while the tap
    /// finishes what it needs to (say, looking up a name to record), and an error refuses it
    /// as in [`observe`](Tap::observe).
    fn poll_release(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// Looks at nothing.
pub struct NoTap;

impl Tap for NoTap {
    fn observe(&mut self, _bytes: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Moves one direction of a connection; see the crate documentation for its buffer.
#[derive(Debug)]
pub struct Pump {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    moved: u64,
    need_flush: bool,
    /// The last read filled the buffer (more was probably waiting).
    full: bool,
    /// The tap has not released the chunk in the buffer yet.
    held: bool,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.give_back_small_buffer();
    }
}

/// Which half of a pump failed.
#[derive(Debug)]
pub enum PumpError {
    /// Reading from its reader.
    Read(io::Error),
    /// Writing to (or flushing, or closing) its writer.
    Write(io::Error),
    /// The tap refused a chunk (which was not written), for this reason.
    Refused(String),
}

impl Default for Pump {
    fn default() -> Pump {
        Pump::new()
    }
}

impl Pump {
    /// A pump holding no buffer yet.
    pub fn new() -> Pump {
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
            held: false,
        }
    }

    /// Bytes written on so far.
    pub fn moved(&self) -> u64 {
        self.moved
    }

    /// Whether the reader ended and everything read was written (and flushed).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Before a read into an empty buffer: takes a first-size buffer (a spare one if the thread
    /// has it), or allocates a larger one when the last read filled it (a first-size buffer it
    /// replaces goes back to the spares). Never called with bytes pending, so nothing is copied.
    fn grow(&mut self) {
        if self.buf.is_empty() {
            self.buf = spare::take();
            self.full = false;
            return;
        }
        let want = if self.full
            && let Some(&larger) = SIZES.iter().find(|&&size| size > self.buf.len())
        {
            larger
        } else {
            return;
        };
        self.give_back_small_buffer();
        self.buf = vec![0u8; want].into_boxed_slice();
        self.full = false;
    }

    /// Gives a first-size buffer back to the thread's spares (larger ones are kept while the
    /// transfer that grew them lasts).
    fn give_back_small_buffer(&mut self) {
        if self.buf.len() == FIRST_BUFFER {
            spare::give_back(std::mem::take(&mut self.buf));
        }
    }

    /// Moves bytes until the reader is exhausted (then, with `shutdown`, closes the writer's
    /// sending half), or until one side is not ready.
    pub fn poll_pump<R, W>(
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
                        self.give_back_small_buffer();
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
                            tap.observe(&self.buf[..n]).map_err(PumpError::Refused)?;
                            self.pos = 0;
                            self.cap = n;
                            self.full = n == self.buf.len();
                            self.held = true;
                        }
                    }
                }
            }
            if self.held {
                match tap.poll_release(cx) {
                    Poll::Ready(Ok(())) => self.held = false,
                    Poll::Ready(Err(reason)) => {
                        return Poll::Ready(Err(PumpError::Refused(reason)));
                    }
                    Poll::Pending => {
                        // What was written before the held chunk goes out meanwhile.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(PumpError::Write)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
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

/// Moves bytes both ways between `a` and `b` until each has ended its sending half (which is
/// then closed on the other), or until one fails. Returns the bytes moved from `a` to `b` and
/// from `b` to `a`.
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut moved = (0, 0);
    relay_counted(a, b, &mut moved).await?;
    Ok(moved)
}

/// [`relay`], keeping the bytes moved so far from `a` to `b` and from `b` to `a` in `moved`
/// however it ends: also when it fails, or when it is dropped midway (a caller that counts
/// traffic counts what a cut connection carried too).
pub async fn relay_counted<A, B>(a: &mut A, b: &mut B, moved: &mut (u64, u64)) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut forth = Pump::new();
    let mut back = Pump::new();
    std::future::poll_fn(|cx| {
        let mut failed = None;
        if !forth.done
            && let Poll::Ready(Err(e)) =
                forth.poll_pump(cx, Pin::new(&mut *a), Pin::new(&mut *b), &mut NoTap, true)
        {
            failed = Some(e);
        } else if !back.done
            && let Poll::Ready(Err(e)) =
                back.poll_pump(cx, Pin::new(&mut *b), Pin::new(&mut *a), &mut NoTap, true)
        {
            failed = Some(e);
        }
        *moved = (forth.moved, back.moved);
        if let Some(e) = failed {
            Poll::Ready(Err(e.into_inner()))
        } else if forth.done && back.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

impl PumpError {
    /// The I/O error, whichever half failed (a refusal becomes an error of kind `Other`).
    pub fn into_inner(self) -> io::Error {
        match self {
            PumpError::Read(e) | PumpError::Write(e) => e,
            PumpError::Refused(reason) => io::Error::other(reason),
        }
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
        let mut poll = |pump: &mut Pump| poll_once(pump, &mut reader, &mut writer, &mut NoTap);
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

    /// Keeps every chunk it is shown.
    #[derive(Default)]
    struct Seen(Vec<u8>);

    impl Tap for Seen {
        fn observe(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Polls `pump` once from `reader` to `writer`; true if it waits.
    fn poll_once(
        pump: &mut Pump,
        reader: &mut tokio::io::DuplexStream,
        writer: &mut tokio::io::DuplexStream,
        tap: &mut dyn Tap,
    ) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        pump.poll_pump(&mut cx, Pin::new(reader), Pin::new(writer), tap, true)
            .is_pending()
    }

    #[tokio::test]
    async fn a_spare_buffer_shows_the_next_connection_only_its_own_bytes() {
        // One connection moves a secret and goes idle: its buffer becomes the thread's spare.
        let (mut source, mut reader) = duplex(1024);
        let (mut writer, _sink) = duplex(1024);
        let mut first = Pump::new();
        source
            .write_all(b"password=hunter2 and more")
            .await
            .unwrap();
        assert!(poll_once(&mut first, &mut reader, &mut writer, &mut NoTap));
        let spares = spare::kept();
        assert!(spares >= 1, "the idle direction's buffer was kept");

        // The next connection on this thread reads two bytes into that buffer.
        let (mut source, mut reader) = duplex(1024);
        let (mut writer, mut sink) = duplex(1024);
        let mut next = Pump::new();
        let mut seen = Seen::default();
        source.write_all(b"hi").await.unwrap();
        source.shutdown().await.unwrap();
        assert!(
            !poll_once(&mut next, &mut reader, &mut writer, &mut seen),
            "done"
        );
        assert_eq!(spare::kept(), spares - 1, "it took the spare buffer");
        assert_eq!(seen.0, b"hi", "the tap saw only this connection's bytes");
        drop(writer);
        let mut out = Vec::new();
        sink.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hi", "only this connection's bytes were written");
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

    #[tokio::test]
    async fn a_direction_that_grows_gives_its_small_buffer_back() {
        spare::give_back(vec![0u8; FIRST_BUFFER].into_boxed_slice());
        let spares = spare::kept();
        let mut pump = Pump::new();
        pump_all(&mut pump, vec![7u8; 3 * FIRST_BUFFER]).await;
        assert!(
            pump.buf.len() > FIRST_BUFFER,
            "the transfer grew the buffer"
        );
        assert_eq!(
            spare::kept(),
            spares,
            "the spare it started with went back when it grew"
        );
    }

    #[tokio::test]
    async fn a_relay_that_fails_still_says_what_it_moved() {
        let (mut a, mut far_a) = duplex(64);
        let (mut b, mut far_b) = duplex(64);
        let relayed = tokio::spawn(async move {
            let mut moved = (0, 0);
            let result = relay_counted(&mut a, &mut b, &mut moved).await;
            (result, moved)
        });
        far_a.write_all(b"hello").await.unwrap();
        let mut forth = [0u8; 5];
        far_b.read_exact(&mut forth).await.unwrap();
        far_b.write_all(b"hi").await.unwrap();
        let mut back = [0u8; 2];
        far_a.read_exact(&mut back).await.unwrap();
        // b's peer goes away: the next bytes for it cannot be written.
        drop(far_b);
        far_a.write_all(b"more").await.unwrap();
        let (result, moved) = relayed.await.unwrap();
        assert!(result.is_err(), "{result:?}");
        assert_eq!(moved, (5, 2));
    }

    #[tokio::test]
    async fn relay_moves_both_ways_and_passes_each_end_on() {
        let (mut client, mut a) = duplex(64 * 1024);
        let (mut b, mut server) = duplex(64 * 1024);
        let relayed = tokio::spawn(async move { relay(&mut a, &mut b).await });
        let upload: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
        let expected = upload.clone();
        let server_side = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(b"done").await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        client.write_all(&upload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"done");
        assert!(
            server_side.await.unwrap() == expected,
            "bytes changed on the way"
        );
        let (forth, back) = relayed.await.unwrap().unwrap();
        assert_eq!((forth, back), (500_000, 4));
    }

    /// Refuses the chunk that contains `stop`; holds each chunk for one poll first.
    struct Gate {
        stop: u8,
        held_once: bool,
    }

    impl Tap for Gate {
        fn observe(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.held_once = false;
            match bytes.contains(&self.stop) {
                true => Err("refused".into()),
                false => Ok(()),
            }
        }

        fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            if self.held_once {
                return Poll::Ready(Ok(()));
            }
            self.held_once = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_tap_holds_chunks_back_and_refuses_one_without_writing_it() {
        let (mut source, mut reader) = duplex(1024);
        let (mut writer, mut sink) = duplex(1024);
        let mut pump = Pump::new();
        let mut gate = Gate {
            stop: b'!',
            held_once: false,
        };
        source.write_all(b"first").await.unwrap();
        let mut pumping = std::pin::pin!(std::future::poll_fn(|cx| {
            pump.poll_pump(
                cx,
                Pin::new(&mut reader),
                Pin::new(&mut writer),
                &mut gate,
                true,
            )
        }));
        let mut out = [0u8; 5];
        tokio::select! {
            ended = &mut pumping => panic!("the pump ended early: {ended:?}"),
            read = sink.read_exact(&mut out) => read.unwrap(),
        };
        assert_eq!(&out, b"first");
        source.write_all(b"then!").await.unwrap();
        match pumping.await {
            Err(PumpError::Refused(why)) => assert_eq!(why, "refused"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(writer);
        let mut rest = Vec::new();
        sink.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the refused chunk was not written");
    }

    #[tokio::test]
    async fn relay_reports_a_failing_side() {
        let (client, mut a) = duplex(1024);
        let (mut b, server) = duplex(1024);
        drop(server);
        let relayed = tokio::spawn(async move { relay(&mut a, &mut b).await });
        let mut client = client;
        // The write into a closed peer fails; the relay ends with that error.
        let _ = client.write_all(b"hello").await;
        let err = relayed.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
