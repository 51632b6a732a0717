//! The gateway's accept loop: bounded concurrency, one task per client connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::GatewayConfig;
use super::connection;
use super::registry::Registry;
use super::verified::VerifiedLeases;

/// Connections served at once; more wait in the kernel's backlog instead of exhausting
/// file descriptors.
const MAX_CONNECTIONS: usize = 16 * 1024;

pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<GatewayConfig>,
    registry: Arc<Registry>,
    leases: Arc<VerifiedLeases>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(config.tls.clone());
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
        let (config, acceptor, shutdown) = (config.clone(), acceptor.clone(), shutdown.clone());
        let (registry, leases) = (registry.clone(), leases.clone());
        tokio::spawn(async move {
            let shared = connection::Shared {
                config: &config,
                registry: &registry,
                leases: &leases,
                acceptor: &acceptor,
            };
            connection::handle(socket, peer, shared, shutdown).await;
            drop(permit);
        });
    }
    tracing::info!("gateway stopped");
}
