//! Serving the router over TLS: an accept loop on a `TcpListener`, one task per connection,
//! a bounded TLS handshake, hyper's HTTP/1.1 with keep-alive, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::PeerAddr;

/// Most connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Request line and headers together may not exceed this (hyper answers 431 beyond it).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers; an idle keep-alive connection is closed after
/// it too. Longer than the 30 s clients keep a connection idle, so that a client never reuses a
/// connection the server is closing.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Pause after a failed `accept` (for example: out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop` turns true (or its sender is dropped); then
/// stops accepting, lets in-flight requests finish for up to `drain`, and closes the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
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
                connections.spawn(connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    router.clone(),
                    stop.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an API connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
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
    acceptor: TlsAcceptor,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
    let router = router.layer(axum::Extension(PeerAddr(peer)));
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
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
