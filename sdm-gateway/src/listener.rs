//! The gateway's accept loop: bounded concurrency, one task per client connection, carried by
//! one of the [`Workers`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use sdm_proto::ErrorKind;

use super::connection;
use super::open_connections::OpenConnections;
use super::verified::VerifiedLeases;
use super::workers::Workers;
use super::{Denied, GatewayConfig};

/// Connections served at once; more wait in the kernel's backlog instead of exhausting
/// file descriptors.
const MAX_CONNECTIONS: usize = 16 * 1024;
/// After the drain, connections told to close get this long to do so (and record their end)
/// before the worker threads are stopped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn serve(
    listener: TcpListener,
    workers: Workers,
    config: Arc<GatewayConfig>,
    open_connections: Arc<OpenConnections>,
    leases: Arc<VerifiedLeases>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The record layer is sdm_relay's own: rustls hands it the traffic secrets.
    let tls = {
        let mut tls = (*config.tls).clone();
        tls.enable_secret_extraction = true;
        Arc::new(tls)
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Moved to the worker's I/O driver, which then wakes the task on its own thread.
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot hand a connection to a worker");
                continue;
            }
        };
        let (config, tls, shutdown) = (config.clone(), tls.clone(), shutdown.clone());
        let (open_connections, leases) = (open_connections.clone(), leases.clone());
        workers.spawn(|placed| async move {
            let socket = match TcpStream::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, "cannot adopt a connection");
                    return;
                }
            };
            let shared = connection::Shared {
                config: &config,
                open_connections: &open_connections,
                leases: &leases,
                tls: &tls,
            };
            connection::handle(socket, peer, shared, shutdown, placed).await;
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let open = MAX_CONNECTIONS - permits.available_permits();
    if open > 0 {
        tracing::info!(connections = open, drain = ?config.drain, "no longer accepting; letting open connections finish");
    }
    if tokio::time::timeout(config.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        let reason = Denied {
            kind: ErrorKind::Closed,
            message: format!(
                "gateway {} is shutting down; connect again (another gateway takes new connections)",
                config.name
            ),
        };
        let told = open_connections.stop_all(&reason);
        tracing::warn!(
            connections = told,
            "closing the connections still open after the drain"
        );
        if tokio::time::timeout(CLOSE_WAIT, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("connections still open after being told to close are dropped");
        }
    }
    // Joining the threads blocks; not on this runtime's thread.
    let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    tracing::info!("gateway stopped");
}
