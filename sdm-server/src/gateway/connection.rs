//! One client connection: TLS, HELLO with a lease, READY, OPEN, upstream connect, splice.

use std::net::SocketAddr;
use std::time::Duration;

use sdm_proto::handshake::{self, Reply};
use sdm_proto::{ErrorKind, Lease};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{Denied, GatewayConfig, Upstream};

/// A client may keep an accepted connection idle (warm) this long before sending OPEN.
const IDLE_BEFORE_OPEN: Duration = Duration::from_secs(60);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock difference tolerated between the control plane that signed a lease and this gateway.
const LEASE_SKEW_SECS: i64 = 30;
/// Copy buffer per direction.
const COPY_BUFFER: usize = 64 * 1024;

type Client = TlsStream<TcpStream>;

pub(super) async fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    config: &GatewayConfig,
    acceptor: &TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    tokio::select! {
        _ = serve(socket, peer, config, acceptor) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    config: &GatewayConfig,
    acceptor: &TlsAcceptor,
) {
    let greeting = tokio::time::timeout(config.handshake_timeout, greet(socket, acceptor)).await;
    let (mut client, lease_bytes, mut pending) = match greeting {
        Ok(Ok(parts)) => parts,
        Ok(Err(reason)) => {
            tracing::debug!(%peer, %reason, "gateway handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "gateway handshake timed out");
            return;
        }
    };
    let (lease, upstream) = match admit(config, &lease_bytes).await {
        Ok(pair) => pair,
        Err(denied) => return refuse(&mut client, peer, denied).await,
    };

    let mut replies = handshake::encode_reply(&Reply::Ready);
    if pending.first() == Some(&handshake::OPEN) {
        pending.remove(0);
    } else {
        // A warm connection: READY now, OPEN when the client has a use for it.
        if send(&mut client, &replies).await.is_err() {
            return;
        }
        replies.clear();
        if !pending.is_empty() {
            return refuse(&mut client, peer, protocol("bytes before OPEN")).await;
        }
        let open = tokio::time::timeout(IDLE_BEFORE_OPEN, client.read_u8()).await;
        match open {
            Ok(Ok(handshake::OPEN)) => {}
            Ok(Ok(_)) => return refuse(&mut client, peer, protocol("expected OPEN")).await,
            Ok(Err(_)) | Err(_) => return, // closed or idle too long: nothing to say
        }
        // Access may have been revoked while the connection waited.
        if let Err(denied) = admit(config, &lease_bytes).await {
            return refuse(&mut client, peer, denied).await;
        }
    }

    let mut remote = match connect_upstream(config, &upstream).await {
        Ok(remote) => remote,
        Err(denied) => {
            let mut bytes = replies;
            bytes.extend(handshake::encode_reply(&Reply::Error {
                kind: denied.kind,
                message: denied.message.clone(),
            }));
            let _ = send(&mut client, &bytes).await;
            tracing::warn!(%peer, resource = %upstream.resource_name, reason = %denied.message, "upstream refused");
            return;
        }
    };
    replies.extend(handshake::encode_reply(&Reply::Connected));
    if send(&mut client, &replies).await.is_err() {
        return;
    }
    if !pending.is_empty() && remote.write_all(&pending).await.is_err() {
        return;
    }
    tracing::debug!(%peer, resource = %upstream.resource_name, account = %lease.account_id, "connection open");
    let result = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut remote,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await;
    match result {
        Ok((up, down)) => {
            tracing::debug!(%peer, resource = %upstream.resource_name, bytes_up = up, bytes_down = down, "connection closed")
        }
        Err(e) => {
            tracing::debug!(%peer, resource = %upstream.resource_name, error = %e, "connection ended")
        }
    }
}

/// TLS, then the HELLO. Returns the lease bytes and whatever the client sent after the HELLO.
async fn greet(
    socket: TcpStream,
    acceptor: &TlsAcceptor,
) -> Result<(Client, Vec<u8>, Vec<u8>), String> {
    let mut client = acceptor
        .accept(socket)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        match handshake::decode_hello(&buf) {
            Ok(Some((hello, n))) => {
                let lease = hello.lease.to_vec();
                buf.drain(..n);
                return Ok((client, lease, buf));
            }
            Ok(None) => {}
            Err(e) => {
                let reply = handshake::encode_reply(&Reply::Error {
                    kind: ErrorKind::InvalidArgument,
                    message: format!("not an sdm client: {e}"),
                });
                let _ = send(&mut client, &reply).await;
                return Err(e.to_string());
            }
        }
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed during HELLO".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Verifies the lease offline, then asks the directory whether it still holds.
async fn admit(config: &GatewayConfig, lease_bytes: &[u8]) -> Result<(Lease, Upstream), Denied> {
    let lease = config
        .leases
        .verify(lease_bytes, sdm_proto::unix_now(), LEASE_SKEW_SECS)
        .map_err(|e| Denied {
            kind: ErrorKind::Unauthenticated,
            message: format!("gateway {} refused the lease: {e}", config.name),
        })?;
    let upstream = config.directory.authorize(&lease).await?;
    Ok((lease, upstream))
}

async fn connect_upstream(
    config: &GatewayConfig,
    upstream: &Upstream,
) -> Result<TcpStream, Denied> {
    let target = (upstream.host.as_str(), upstream.port);
    let refused = |reason: String| Denied {
        kind: ErrorKind::UpstreamRefused,
        message: format!(
            "gateway {} could not reach resource {:?} at {}:{}: {reason}",
            config.name, upstream.resource_name, upstream.host, upstream.port
        ),
    };
    let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| refused(format!("timed out after {UPSTREAM_CONNECT_TIMEOUT:?}")))?
        .map_err(|e| refused(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn refuse(client: &mut Client, peer: SocketAddr, denied: Denied) {
    tracing::info!(%peer, kind = %denied.kind, reason = %denied.message, "gateway refused a connection");
    let reply = handshake::encode_reply(&Reply::Error {
        kind: denied.kind,
        message: denied.message,
    });
    let _ = send(client, &reply).await;
}

async fn send(client: &mut Client, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

fn protocol(what: &str) -> Denied {
    Denied {
        kind: ErrorKind::InvalidArgument,
        message: format!("gateway handshake violated: {what}"),
    }
}
