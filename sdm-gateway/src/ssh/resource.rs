//! The gateway's side towards the SSH server: connect, check the server's host key against the
//! recorded one (or record the first), log in with the stored key or the CA's certificate.

use std::sync::Arc;
use std::time::Duration;

use russh::keys::{
    Certificate, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelId, client};
use sdm_proto::{ErrorKind, Lease};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::channel::{Backlog, WINDOW};
use crate::{Denied, Directory, Upstream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in connection to the resource.
pub(super) type Resource = client::Handle<ResourceSide>;

/// What the gateway needs to reach one resource, owned (it runs beside the client's handshake).
pub(super) struct Login {
    pub(super) upstream: Upstream,
    pub(super) directory: Arc<dyn Directory>,
    pub(super) lease: Lease,
    pub(super) lease_bytes: Vec<u8>,
}

/// Connects and logs in; `closed` is told why the resource went away, whenever it does.
pub(super) async fn log_in(
    login: Login,
    backlog: Arc<Backlog>,
    closed: watch::Sender<Option<String>>,
) -> Result<Resource, Denied> {
    let up = &login.upstream;
    let name = &up.resource_name;
    let refused = |why: String| Denied {
        kind: ErrorKind::UpstreamRefused,
        message: format!("resource {name:?}: {why}"),
    };
    let Some(ssh) = &up.ssh else {
        return Err(refused("no SSH settings reached the gateway".into()));
    };
    let user = up
        .credentials
        .as_ref()
        .map(|c| c.username.clone())
        .unwrap_or_default();
    let key = PrivateKey::from_openssh(&ssh.private_key)
        .map_err(|e| refused(format!("the stored login key cannot be read: {e}")))?;
    let certificate = match &ssh.certificate {
        Some(line) => Some(
            Certificate::from_openssh(line)
                .map_err(|e| refused(format!("sdm's certificate cannot be read: {e}")))?,
        ),
        None => None,
    };
    let known = ssh
        .known_host_keys
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line).ok())
        .collect::<Vec<_>>();
    if known.len() != ssh.known_host_keys.len() {
        return Err(refused("a recorded host key cannot be read".into()));
    }

    let target = format!("{}:{}", up.host, up.port);
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((up.host.as_str(), up.port)),
    )
    .await
    .map_err(|_| {
        refused(format!(
            "{target} did not answer within {CONNECT_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| refused(format!("cannot connect to {target}: {e}")))?;
    let _ = tcp.set_nodelay(true);

    let (verdict_tx, verdict_rx) = watch::channel(None);
    let side = ResourceSide {
        known,
        login: Arc::new(login_facts(&login)),
        verdict: verdict_tx,
        closed,
        backlog,
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        window_size: WINDOW,
        channel_buffer_size: super::CHANNEL_BUFFER,
        nodelay: true,
        ..Default::default()
    });
    let handshake =
        tokio::time::timeout(CONNECT_TIMEOUT, client::connect_stream(config, tcp, side))
            .await
            .map_err(|_| refused(format!("{target} did not complete the SSH handshake")))?;
    let mut resource = match handshake {
        Ok(resource) => resource,
        Err(e) => {
            // A refused host key is the reason the handshake failed: say that, not the symptom.
            let verdict = verdict_rx.borrow().clone();
            return Err(verdict
                .unwrap_or_else(|| refused(format!("SSH handshake with {target} failed: {e}"))));
        }
    };

    let key = Arc::new(key);
    let how = if certificate.is_some() {
        "sdm's SSH certificate (is sdm's CA in the server's TrustedUserCAKeys?)"
    } else {
        "the stored key"
    };
    let authenticated = match certificate {
        Some(certificate) => {
            resource
                .authenticate_openssh_cert(&user, key, certificate)
                .await
        }
        None => {
            let hash = resource
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            resource
                .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key, hash))
                .await
        }
    }
    .map_err(|e| refused(format!("logging in as {user:?} failed: {e}")))?;
    if !authenticated.success() {
        return Err(refused(format!(
            "the server refused user {user:?} with {how}"
        )));
    }
    Ok(resource)
}

/// What recording a first host key needs.
struct LoginFacts {
    name: String,
    directory: Arc<dyn Directory>,
    lease: Lease,
    lease_bytes: Vec<u8>,
}

fn login_facts(login: &Login) -> LoginFacts {
    LoginFacts {
        name: login.upstream.resource_name.clone(),
        directory: login.directory.clone(),
        lease: login.lease.clone(),
        lease_bytes: login.lease_bytes.clone(),
    }
}

/// The russh client handler: checks the server's host key, hears why it went away.
pub(super) struct ResourceSide {
    known: Vec<PublicKey>,
    login: Arc<LoginFacts>,
    /// Why the host key was refused, if it was.
    verdict: watch::Sender<Option<Denied>>,
    closed: watch::Sender<Option<String>>,
    /// What came from the resource and is not yet sent to the client.
    backlog: Arc<Backlog>,
}

impl client::Handler for ResourceSide {
    type Error = russh::Error;

    /// The resource may send no faster than the client takes (see `channel::Backlog`).
    fn adjust_window(&mut self, _channel: ChannelId, _window: u32) -> u32 {
        self.backlog.window()
    }

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key: offered, .. } = offered else {
            self.refuse("it presented a host certificate; sdm checks host keys".into());
            return Ok(false);
        };
        let LoginFacts { name, .. } = &*self.login;
        if self
            .known
            .iter()
            .any(|k| k.key_data() == offered.key_data())
        {
            return Ok(true);
        }
        let line = offered.to_openssh().unwrap_or_default();
        if !self.known.is_empty() {
            tracing::error!(resource = %name, offered = %line, "an ssh resource's host key changed; connection refused");
            self.refuse(format!(
                "its host key changed (it now presents {line}); an admin must check the server and set the new key"
            ));
            return Ok(false);
        }
        // None recorded yet: the first key seen is recorded, and only it is accepted afterwards.
        let facts = self.login.clone();
        match facts
            .directory
            .record_host_key(&facts.lease, &facts.lease_bytes, &line)
            .await
        {
            Ok(()) => {
                tracing::info!(resource = %name, host_key = %line, "recorded an ssh resource's host key on first use");
                Ok(true)
            }
            Err(denied) => {
                self.verdict.send_replace(Some(denied));
                Ok(false)
            }
        }
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                format!(
                    "resource {:?} disconnected: {}",
                    self.login.name, info.message
                )
            }
            client::DisconnectReason::Error(e) => {
                format!(
                    "the connection to resource {:?} failed: {e}",
                    self.login.name
                )
            }
        };
        self.closed.send_replace(Some(why));
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

impl ResourceSide {
    fn refuse(&self, why: String) {
        self.verdict.send_replace(Some(Denied {
            kind: ErrorKind::UpstreamRefused,
            message: format!("resource {:?}: {why}", self.login.name),
        }));
    }
}
