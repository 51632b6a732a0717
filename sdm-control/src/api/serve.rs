//! Serving the router over TLS: an accept loop on a `TcpListener`, one task per connection,
//! at most [`MAX_CONNECTIONS`] at once and a configurable number per source address, a bounded
//! wait for the first request, hyper's HTTP/1.1 with keep-alive, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::PeerAddr;
use crate::accept::{AcceptFailures, SourceLimit, SourceSlot};

/// Most connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Most connections one source address (an IPv6 /64) holds at once, by default; more are
/// closed as soon as they are accepted, so that one source cannot take every slot.
pub const DEFAULT_CONNECTIONS_PER_SOURCE: usize = 256;
/// Request line and headers together may not exceed this (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a new connection has to finish the TLS handshake and send the headers of its first
/// request; a connection that sends nothing is closed after it.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a later request's headers; an idle keep-alive connection is closed
/// after it. Longer than the 30 s clients keep a connection idle (docs/PROTOCOL.md), so that a
/// client never reuses a connection the server is closing.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// Serves `router` on `listener` until `stop` turns true (or its sender is dropped); then
/// stops accepting, lets in-flight requests finish for up to `drain`, and closes the rest.
/// Connections from one source beyond `per_source` are closed at once.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    per_source: usize,
) {
    let acceptor = TlsAcceptor::from(tls);
    let sources = SourceLimit::new("API", "--api-connections-per-source", per_source);
    let mut failures = AcceptFailures::new("API");
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tokio::select! {
                _ = connections.join_next() => continue,
                _ = stopped(&mut stop) => break,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures.accepted();
                // Over its source's limit, the connection is closed here (dropped) unread.
                let Some(slot) = sources.admit(peer.ip()) else {
                    continue;
                };
                connections.spawn(connection(
                    stream,
                    peer,
                    slot,
                    acceptor.clone(),
                    router.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => {
                let pause = failures.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped(&mut stop) => break,
                }
            }
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::debug!(open, "waiting for API connections to finish");
    }
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing API connections that did not finish in time"
        );
    }
    connections.shutdown().await;
}

/// Resolves once a stop is requested (or nobody can request one any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: SourceSlot,
    acceptor: TlsAcceptor,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let first_request_by = Instant::now() + FIRST_REQUEST_TIMEOUT;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout_at(first_request_by, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "API TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "API TLS handshake timed out");
            return;
        }
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    // Told of every request (hyper calls the service once a request's headers are read).
    let requested = Arc::new(Notify::new());
    let service = {
        let requested = requested.clone();
        let inner = TowerToHyperService::new(router.layer(axum::Extension(PeerAddr(peer))));
        hyper::service::service_fn(move |request| {
            requested.notify_one();
            inner.call(request)
        })
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        }
        () = no_request_by(first_request_by, &requested) => {
            tracing::debug!(%peer, "closing an API connection that sent no request in time");
        }
        _ = stopped(&mut stop) => {
            // Finish the request in flight, then close; the caller bounds how long this may take.
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        }
    }
}

/// Resolves at `deadline` if no request arrived before it; never, once one did.
async fn no_request_by(deadline: Instant, requested: &Notify) {
    if tokio::time::timeout_at(deadline, requested.notified())
        .await
        .is_ok()
    {
        std::future::pending::<()>().await;
    }
}
