//! The gateway's side towards the client: an SSH server that accepts any user with no key and
//! no password (the stream it runs on already carries a verified lease), then carries each
//! channel the client opens to a channel on the resource. Requests are sent on and answered
//! with the resource's own answer; agent forwarding, X11 and remote forwarding (`-R`) are
//! refused here and the session goes on.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, Pty, Sig, server};
use sdm_proto::ErrorKind;
use tokio::sync::watch;

use super::channel::{self, Backlogs, Joined};
use super::journal::{self, Journal};
use super::recording::{Recording, Terminal};
use super::resource::Resource;
use crate::Denied;

/// How long the resource has to answer a request (a pty, a command) before the client is told
/// it failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The resource's login, once it is known: the connection, or why there is none.
pub(super) type LoggedIn = Option<Result<Arc<Resource>, Denied>>;

/// The russh server handler of one client connection.
pub(super) struct ClientSide {
    pub(super) resource_name: String,
    pub(super) resource: watch::Receiver<LoggedIn>,
    pub(super) journal: Journal,
    /// Whether terminal sessions are recorded (the resource asks for it).
    pub(super) record_sessions: bool,
    /// Told once the client has authenticated (its part of the handshake is done).
    pub(super) authenticated: watch::Sender<bool>,
    /// Told once the client is in and the resource logged in.
    pub(super) ready: watch::Sender<bool>,
    /// Why the connection was ended from here, if it was.
    pub(super) failure: watch::Sender<Option<Denied>>,
    pub(super) channels: HashMap<ChannelId, Joined>,
    pub(super) backlogs: Backlogs,
}

/// A request the client makes on a channel, sent on to the resource.
enum Request<'a> {
    Pty {
        term: &'a str,
        size: (u32, u32, u32, u32),
        modes: &'a [(Pty, u32)],
    },
    Env(&'a str, &'a str),
    Shell,
    Exec(&'a [u8]),
    Subsystem(&'a str),
}

impl ClientSide {
    /// The logged-in resource, waiting for the login if it is still under way.
    async fn logged_in(&mut self) -> Result<Arc<Resource>, Denied> {
        let state = match self.resource.wait_for(Option::is_some).await {
            Ok(state) => state.clone(),
            Err(_) => None,
        };
        match state {
            Some(Ok(resource)) => Ok(resource),
            Some(Err(denied)) => Err(denied),
            None => Err(self.gone()),
        }
    }

    fn gone(&self) -> Denied {
        Denied {
            kind: ErrorKind::UpstreamRefused,
            message: format!(
                "resource {:?}: the connection to it ended",
                self.resource_name
            ),
        }
    }

    /// Writes an audit line before what it describes happens; false (and the client is
    /// refused) when it cannot be kept.
    fn audited(&self, text: String) -> bool {
        match self.journal.write(text) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(resource = %self.resource_name, reason = %why, "an ssh request was refused: the audit trail cannot record it");
                false
            }
        }
    }

    /// Sends `request` on to the resource's side of `channel` and answers the client with the
    /// resource's answer.
    async fn forward(
        &mut self,
        channel: ChannelId,
        request: Request<'_>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(joined) = self.channels.get_mut(&channel) else {
            return session.channel_failure(channel);
        };
        let to = &joined.resource;
        let sent = match request {
            Request::Pty { term, size, modes } => {
                to.request_pty(true, term, size.0, size.1, size.2, size.3, modes)
                    .await
            }
            Request::Env(name, value) => to.set_env(true, name, value).await,
            Request::Shell => to.request_shell(true).await,
            Request::Exec(command) => to.exec(true, command).await,
            Request::Subsystem(name) => to.request_subsystem(true, name).await,
        };
        let granted = sent.is_ok()
            && matches!(
                tokio::time::timeout(ANSWER_TIMEOUT, joined.answers.recv()).await,
                Ok(Some(true))
            );
        if granted {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// Writes the line for a channel's request, then forwards it; refused when the line cannot
    /// be kept. A shell or command on a terminal is recorded when the resource asks for it:
    /// the recording starts before the request goes on.
    async fn forward_audited(
        &mut self,
        channel: ChannelId,
        line: &str,
        request: Request<'_>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let terminal = match (&request, self.channels.get(&channel)) {
            (Request::Shell | Request::Exec(_), Some(joined)) if self.record_sessions => {
                joined.terminal.clone()
            }
            _ => None,
        };
        let line = match terminal {
            Some(_) => format!("{line}, recorded"),
            None => line.to_owned(),
        };
        if !self.audited(channel::named(channel, &line)) {
            return session.channel_failure(channel);
        }
        if let (Some(terminal), Some(joined)) = (terminal, self.channels.get(&channel)) {
            match Recording::start(self.journal.clone(), u32::from(channel), &terminal, &line) {
                Ok(recording) => {
                    *joined
                        .recording
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(recording);
                }
                Err(why) => {
                    tracing::warn!(resource = %self.resource_name, reason = %why, "a terminal session was refused: the audit trail cannot record it");
                    return session.channel_failure(channel);
                }
            }
        }
        self.forward(channel, request, session).await
    }

    /// Answers the client's request to open `channel` as the resource answered the same
    /// request; an accepted channel is joined to the resource's.
    async fn answer_open(
        &mut self,
        channel: Channel<Msg>,
        opened: Result<Channel<russh::client::Msg>, russh::Error>,
        what: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        match opened {
            Ok(on_resource) => {
                let id = channel.id();
                reply.accept().await;
                let joined = channel::join(
                    channel,
                    session.handle(),
                    on_resource,
                    &self.backlogs,
                    self.journal.clone(),
                );
                self.channels.insert(id, joined);
            }
            Err(e) => {
                tracing::info!(resource = %self.resource_name, what, error = %e, "the resource refused a channel");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    }
}

impl server::Handler for ClientSide {
    type Error = russh::Error;

    /// The client may send no faster than the resource takes (see `channel::Backlog`).
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        self.backlogs.upward.window()
    }

    // Any user, any way: the lease under this stream is the credential.
    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    /// The client is in once the resource has logged in too; if it cannot, the client is
    /// disconnected with the reason.
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.send_replace(true);
        match self.logged_in().await {
            Ok(_) => {
                self.ready.send_replace(true);
                Ok(())
            }
            Err(denied) => {
                session.disconnect(Disconnect::ByApplication, &denied.message, "en")?;
                self.failure.send_replace(Some(denied));
                Ok(())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(resource) = self.logged_in().await else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let opened = resource.channel_open_session().await;
        self.answer_open(channel, opened, "a session", reply, session)
            .await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(resource) = self.logged_in().await else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let id = channel.id();
        if !self.audited(channel::named(
            id,
            &format!("direct-tcpip to {host}:{port}"),
        )) {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let opened = resource
            .channel_open_direct_tcpip(host, port, originator_address, originator_port)
            .await;
        self.answer_open(channel, opened, "a forwarded connection", reply, session)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(joined) = self.channels.get_mut(&channel) {
            joined.terminal = Some(Terminal {
                term: term.to_owned(),
                width: col_width,
                height: row_height,
            });
        }
        let size = (col_width, row_height, pix_width, pix_height);
        self.forward(channel, Request::Pty { term, size, modes }, session)
            .await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward(channel, Request::Env(name, value), session)
            .await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.forward_audited(channel, "shell", Request::Shell, session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = format!("exec {}", journal::command_line(command));
        self.forward_audited(channel, &line, Request::Exec(command), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = format!("subsystem {name}");
        self.forward_audited(channel, &line, Request::Subsystem(name), session)
            .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(joined) = self.channels.get(&channel) {
            if let Some(recording) = joined
                .recording
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                // Should this fail, the next output fails too and ends the session.
                let _ = recording.resize(col_width, row_height);
            }
            let _ = joined
                .resource
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(joined) = self.channels.get(&channel) {
            let _ = joined.resource.signal(signal).await;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = self.audited(channel::named(channel, "refused: X11 forwarding"));
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self.audited(channel::named(channel, "refused: agent forwarding"));
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self.audited(format!(
            "refused: remote forwarding (-R) from {address}:{port}"
        ));
        Ok(false)
    }
}
