//! SSH at the gateway. The client's stream is answered by an SSH server of the gateway's own,
//! presenting the resource's host key (the same on every gateway, so clients can pin it) and
//! accepting any user with no key and no password: the stream already carries a verified
//! lease. Meanwhile the gateway connects to the resource, checks its host key and logs in with
//! the stored key or a certificate sdm's CA signed for this lease. Each channel the client
//! opens is carried to a channel on the resource (`channel.rs`), and each is written to the
//! audit trail (`journal.rs`).
//!
//! Every failure after the stream is connected reaches the client as an SSH disconnect naming
//! the resource and the cause: the resource unreachable or refusing the login, its host key
//! changed, access revoked mid-session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{self, Config};
use russh::{Disconnect, MethodKind, MethodSet, SshId};
use sdm_proto::{ErrorKind, Lease};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use uuid::Uuid;

use super::finished::Finished;
use super::splice::{NoTap, splice};
use super::{AuditSink, Denied, Directory, Upstream};

mod channel;
mod client_side;
mod journal;
mod recording;
mod resource;
#[cfg(test)]
mod tests;

use client_side::ClientSide;
use journal::Journal;

/// How long the client has to read the reason it is disconnected.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Packets a channel may hold until its queue takes them (at once; see `channel::Backlog`).
pub(super) const CHANNEL_BUFFER: usize = 256;
/// Room between the client's stream and the SSH server (its reads and writes are this far apart
/// at most).
const PIPE: usize = 256 * 1024;

/// One SSH connection's facts, owned: the login to the resource runs beside the client's
/// handshake.
pub(crate) struct SshConnection {
    pub(crate) upstream: Upstream,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) lease: Lease,
    pub(crate) lease_bytes: Vec<u8>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) connection_id: Uuid,
    /// How long the client has to complete its SSH handshake.
    pub(crate) handshake_timeout: Duration,
}

/// Serves one client stream to an ssh resource until either side ends it or `stop` resolves
/// (access revoked, the audit trail failing): then the client is disconnected with the reason.
pub(crate) async fn serve<C>(
    client: &mut C,
    connection: SshConnection,
    stop: impl Future<Output = Denied>,
) -> Finished
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let name = connection.upstream.resource_name.clone();
    let host_key = connection
        .upstream
        .ssh
        .as_ref()
        .map(|ssh| PrivateKey::from_openssh(&ssh.host_key));
    let Some(Ok(host_key)) = host_key else {
        tracing::error!(resource = %name, "an ssh resource's host key did not reach the gateway intact");
        return Finished::failed(
            ErrorKind::Internal,
            format!("resource {name:?}: the gateway has no host key to present for it"),
        );
    };
    let journal = Journal::new(connection.audit.clone(), connection.connection_id);
    let record_sessions = connection
        .upstream
        .ssh
        .as_ref()
        .is_some_and(|ssh| ssh.record_sessions);

    // The login to the resource, beside the client's handshake.
    let (resource_tx, resource_rx) = watch::channel(None);
    let (closed_tx, mut closed_rx) = watch::channel(None);
    let login = resource::Login {
        upstream: connection.upstream,
        directory: connection.directory,
        lease: connection.lease,
        lease_bytes: connection.lease_bytes,
    };
    let backlogs = channel::Backlogs::default();
    let downward = backlogs.downward.clone();
    let login = AbortOnDrop(tokio::spawn(async move {
        let logged_in = resource::log_in(login, downward, closed_tx)
            .await
            .map(Arc::new);
        if let Err(denied) = &logged_in {
            tracing::warn!(reason = %denied.message, "an ssh resource refused the gateway's login");
        }
        resource_tx.send_replace(Some(logged_in));
    }));

    let (authenticated_tx, mut authenticated_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let (failure_tx, failure_rx) = watch::channel(None);
    let handler = ClientSide {
        resource_name: name.clone(),
        resource: resource_rx.clone(),
        journal: journal.clone(),
        record_sessions,
        authenticated: authenticated_tx,
        ready: ready_tx,
        failure: failure_tx,
        channels: HashMap::new(),
        backlogs,
    };
    let config = Arc::new(server_config(host_key));
    let (mut near, far) = tokio::io::duplex(PIPE);
    let handshake_timeout = connection.handshake_timeout;

    let session = async {
        // The client's own part of the handshake (up to its authentication) has the handshake
        // timeout; waiting for the resource's login after that is bounded by the login's.
        let client_part = async {
            let running = server::run_stream(config, far, handler)
                .await
                .map_err(|e| e.to_string())?;
            let authenticated = authenticated_rx.wait_for(|yes| *yes).await.is_ok();
            Ok::<_, String>((running, authenticated))
        };
        let (running, authenticated) = match tokio::time::timeout(handshake_timeout, client_part)
            .await
        {
            Err(_) => {
                return Some((
                    ErrorKind::Timeout,
                    format!(
                        "the client did not complete its SSH handshake within {handshake_timeout:?}"
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Some((
                    ErrorKind::InvalidArgument,
                    format!("the client's SSH handshake failed: {e}"),
                ));
            }
            Ok(Ok(started)) => started,
        };
        let handle = running.handle();
        let mut running = Box::pin(running);
        // Not ready when the handler is gone (the session ended) before saying so.
        if !authenticated || ready_rx.wait_for(|ready| *ready).await.is_err() {
            let _ = running.await;
            let failure = failure_rx.borrow().clone();
            return Some(failure.map_or_else(
                || {
                    (
                        ErrorKind::Closed,
                        "the client left during the SSH handshake".into(),
                    )
                },
                |denied| (denied.kind, denied.message),
            ));
        }
        let why = tokio::select! {
            _ = &mut running => return None,
            denied = stop => (denied.kind, denied.message),
            closed = closed_rx.wait_for(Option::is_some) => {
                let why = closed.ok().and_then(|why| why.clone()).unwrap_or_default();
                (ErrorKind::UpstreamRefused, why)
            }
        };
        let _ = handle
            .disconnect(Disconnect::ByApplication, why.1.clone(), "en".into())
            .await;
        let _ = tokio::time::timeout(TELL_TIMEOUT, running).await;
        Some(why)
    };

    let splice = async {
        let spliced = splice(
            client,
            &mut near,
            &mut NoTap,
            &mut NoTap,
            true,
            std::future::pending(),
        )
        .await;
        // The SSH server sees the client gone.
        drop(near);
        spliced
    };
    let mut splice = std::pin::pin!(splice);
    let mut session = std::pin::pin!(session);
    let (spliced, failure) = tokio::select! {
        spliced = &mut splice => (Some(spliced), session.await),
        failure = &mut session => {
            // What the server still has for the client (its disconnect) is flushed, briefly.
            (tokio::time::timeout(TELL_TIMEOUT, splice).await.ok(), failure)
        }
    };
    drop(login);
    if let Some(Ok(resource)) = resource_rx.borrow().as_ref() {
        let resource = resource.clone();
        tokio::spawn(async move {
            let _ = resource
                .disconnect(Disconnect::ByApplication, "", "en")
                .await;
        });
    }
    // The connection gone, its channels end at once; their last lines come before its end.
    let _ = tokio::time::timeout(TELL_TIMEOUT, journal.all_closed()).await;
    let (up, down) = spliced.map_or((0, 0), |s| (s.up, s.down));
    Finished {
        up,
        down,
        queries: journal.lines(),
        failure,
    }
}

fn server_config(host_key: PrivateKey) -> Config {
    Config {
        server_id: SshId::Standard("SSH-2.0-sdm".into()),
        methods: MethodSet::from(
            &[
                MethodKind::None,
                MethodKind::PublicKey,
                MethodKind::Password,
                MethodKind::KeyboardInteractive,
            ][..],
        ),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: channel::WINDOW,
        channel_buffer_size: CHANNEL_BUFFER,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// A task that ends when its owner does.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
