//! Moving bytes both ways between the client and the resource in one task, counting them and
//! letting a protocol look at them as they pass (without copying the stream). Each direction is
//! an [`sdm_relay::Pump`] (buffers sized by use, none held while idle).

use std::io;
use std::pin::Pin;
use std::task::Poll;

use sdm_relay::{Pump, PumpError};
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use sdm_relay::{NoTap, Tap};

use super::Denied;

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
    /// The connection was told to stop (access revoked, the audit trail failing).
    Stopped(Denied),
    /// The client's tap refused what the client sent (it was not sent on), for this reason.
    Refused(String),
}

/// Bytes moved each way and how it ended.
#[derive(Debug)]
pub(crate) struct Spliced {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) end: End,
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
        if !up.done() {
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
                Poll::Ready(Err(PumpError::Refused(why))) => {
                    return Poll::Ready(End::Refused(why));
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        if !down.done() {
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
                Poll::Ready(Err(PumpError::Refused(why))) => {
                    return Poll::Ready(End::Refused(why));
                }
                Poll::Ready(Ok(())) if stop_at_upstream_eof && !up.done() => {
                    return Poll::Ready(End::UpstreamClosed);
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        if up.done() && down.done() {
            Poll::Ready(End::Closed)
        } else {
            Poll::Pending
        }
    })
    .await;
    Spliced {
        up: up.moved(),
        down: down.moved(),
        end,
    }
}
