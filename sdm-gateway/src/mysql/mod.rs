//! MySQL and MariaDB at the gateway, for resources with stored credentials: the gateway greets
//! the client itself (any user name, any password: the stream already carries a verified
//! lease), logs in upstream with the stored credentials, then splices the packets through a tap
//! that records every `COM_QUERY` and `COM_STMT_PREPARE` before it is sent on and refuses
//! `COM_CHANGE_USER`.
//!
//! Every failure reaches the client as a MySQL ERR packet naming the resource, never as a bare
//! reset.

use std::sync::Arc;
use std::time::Duration;

use sdm_proto::ErrorKind;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::finished::Finished;
use super::open_connections::is_revocation;
use super::splice::{End, Side, splice};
use super::{AuditSink, AuditUnavailable, Denied, Upstream};

mod auth;
mod database;
mod handshake;
mod packet;
mod rsa_key;
mod tap;
mod upstream;

#[cfg(test)]
mod tests;

use auth::AuthError;
use handshake::ClientHello;
use upstream::ConnectError;

/// How long a client has to answer the greeting.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long telling a client why it is closed may take (it may not be reading).
const TELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the gateway's login upstream.
const UPSTREAM_LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Error codes and SQL states the client is told.
const ER_DBACCESS_DENIED: (u16, &str) = (1044, "42000");
const ER_ACCESS_DENIED: (u16, &str) = (1045, "28000");
const ER_HANDSHAKE: (u16, &str) = (1043, "08S01");
const ER_SPECIFIC_ACCESS_DENIED: (u16, &str) = (1227, "42000");
const ER_CONNECTION_KILLED: (u16, &str) = (1927, "70100");
const ER_UNKNOWN: (u16, &str) = (1105, "HY000");
/// "Unable to connect to foreign data source": the server-side code closest to an unreachable
/// resource (client libraries take codes of 2000 and above from a server as malformed).
const ER_CONNECT_TO_FOREIGN: (u16, &str) = (1429, "HY000");

/// Serves one client connection to a MySQL resource with stored credentials. With
/// `unrecordable`, the audit trail cannot record the connection: the client is told so instead
/// of being greeted.
pub(crate) async fn serve<C>(
    client: &mut C,
    resource: &Upstream,
    audit: Arc<dyn AuditSink>,
    connection_id: Uuid,
    unrecordable: Option<AuditUnavailable>,
    stop: impl Future<Output = Denied>,
) -> Finished
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let name = &resource.resource_name;
    if let Some(why) = unrecordable {
        let text = format!("sdm: resource \"{name}\": {why}; try again later");
        tell(client, 0, ER_UNKNOWN, &text).await;
        return Finished::failed(ErrorKind::GatewayUnreachable, text);
    }
    let Some(creds) = &resource.credentials else {
        let text = format!("sdm: resource \"{name}\" has no stored credentials");
        tell(client, 0, ER_UNKNOWN, &text).await;
        return Finished::failed(ErrorKind::Internal, text);
    };
    let (tcp, greeting) = match Box::pin(upstream::connect(resource)).await {
        Ok(connected) => connected,
        Err(ConnectError::Unreachable(why)) => {
            let text = format!(
                "sdm: cannot connect to resource \"{name}\" at {}:{}: {why}; the database may \
                 be down or unreachable from the gateway",
                resource.host, resource.port
            );
            tell(client, 0, ER_CONNECT_TO_FOREIGN, &text).await;
            return Finished::failed(ErrorKind::UpstreamRefused, text);
        }
        Err(ConnectError::Refused(why)) => {
            let text = format!("sdm: resource \"{name}\" refused the connection: {why}");
            tell(client, 0, ER_CONNECT_TO_FOREIGN, &text).await;
            return Finished::failed(ErrorKind::UpstreamRefused, text);
        }
    };

    // The client's side of the login: greeted with the gateway's scramble, its proof ignored.
    let mut scramble = [0u8; 20];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut scramble).is_err() {
        let text = "sdm: the gateway could not draw random bytes".to_owned();
        tell(client, 0, ER_UNKNOWN, &text).await;
        return Finished::failed(ErrorKind::Internal, text);
    }
    for b in &mut scramble {
        // Printable and never NUL, as servers make them (some clients stop at a NUL).
        *b = b'!' + *b % 94;
    }
    let answer = async {
        packet::write(client, 0, &greeting.to_client(&scramble))
            .await
            .map_err(|e| e.to_string())?;
        let (_, payload) = packet::read(client).await?;
        ClientHello::parse(&payload)
    };
    let hello = match tokio::time::timeout(LOGIN_TIMEOUT, answer).await {
        Ok(Ok(ClientHello::Response(hello))) => hello,
        Ok(Ok(ClientHello::Ssl)) => {
            let text = format!(
                "sdm: resource \"{name}\": the gateway does not offer TLS here (the tunnel is \
                 already encrypted); connect without it (e.g. --skip-ssl, ssl-mode=DISABLED)"
            );
            // The client waits for a TLS handshake, not a packet; tell it anyway.
            tell(client, 2, ER_HANDSHAKE, &text).await;
            return Finished::failed(ErrorKind::InvalidArgument, text);
        }
        Ok(Err(why)) => {
            let text = format!("sdm: resource \"{name}\": invalid login from the client: {why}");
            tell(client, 2, ER_HANDSHAKE, &text).await;
            return Finished::failed(ErrorKind::InvalidArgument, text);
        }
        Err(_) => {
            let text = format!(
                "sdm: resource \"{name}\": the client did not log in within {} s",
                LOGIN_TIMEOUT.as_secs()
            );
            tell(client, 2, ER_HANDSHAKE, &text).await;
            return Finished::failed(ErrorKind::Timeout, text);
        }
    };
    let database = match database::admit(resource, hello.database.as_deref()) {
        Ok(db) => db,
        Err(text) => {
            tell(client, 2, ER_DBACCESS_DENIED, &text).await;
            return Finished::failed(ErrorKind::Forbidden, text);
        }
    };

    // The gateway's side of the login, with the stored credentials.
    let tls = resource.upstream_tls.mode != sdm_proto::api::TlsMode::Disable;
    let caps = handshake::upstream_capabilities(&greeting, &hello, database.is_some(), tls);
    let login = async {
        let (mut server, seq) = upstream::secure(tcp, &greeting, caps, &hello, resource)
            .await
            .map_err(AuthError::Failed)?;
        // A plugin the gateway cannot start with: begin with the usual one, the server switches.
        let (plugin, proof) =
            match auth::proof(&greeting.plugin, &creds.password, &greeting.scramble) {
                Ok(proof) => (greeting.plugin.clone(), proof),
                Err(_) => (
                    "mysql_native_password".to_owned(),
                    auth::native(&creds.password, &greeting.scramble),
                ),
            };
        let first = handshake::login(
            caps,
            &hello,
            &creds.username,
            &proof,
            database.as_deref(),
            &plugin,
        );
        packet::write(&mut server, seq, &first)
            .await
            .map_err(|e| AuthError::Failed(format!("the connection failed: {e}")))?;
        let login = auth::Login {
            password: &creds.password,
            tls,
        };
        let ok = auth::finish(&mut server, plugin, greeting.scramble.clone(), &login).await?;
        Ok::<_, AuthError>((server, ok))
    };
    let (mut server, ok) = match tokio::time::timeout(UPSTREAM_LOGIN_TIMEOUT, Box::pin(login)).await
    {
        Ok(Ok(logged_in)) => logged_in,
        Ok(Err(e)) => {
            let why = match e {
                AuthError::Rejected(why) | AuthError::Failed(why) => why,
            };
            let text = format!(
                "sdm: resource \"{name}\" refused the gateway's login with the stored \
                     credentials: {why}; an admin must update the credentials stored for this \
                     resource"
            );
            tell(client, 2, ER_ACCESS_DENIED, &text).await;
            return Finished::failed(ErrorKind::UpstreamRefused, text);
        }
        Err(_) => {
            let text = format!(
                "sdm: resource \"{name}\" did not finish the gateway's login within {} s",
                UPSTREAM_LOGIN_TIMEOUT.as_secs()
            );
            tell(client, 2, ER_ACCESS_DENIED, &text).await;
            return Finished::failed(ErrorKind::UpstreamRefused, text);
        }
    };
    // The server's OK (its status and session state) is the client's, numbered for the client.
    if packet::write(client, 2, &ok).await.is_err() {
        return Finished::failed(
            ErrorKind::Closed,
            "the client went away during login".into(),
        );
    }

    let last = tap::LastPacket::default();
    let mut queries = tap::QueryTap::new(audit, connection_id, last.clone());
    let mut replies = tap::ServerTap::new(last.clone());
    let spliced = Box::pin(splice(
        client,
        &mut server,
        &mut queries,
        &mut replies,
        true,
        stop,
    ))
    .await;
    let (up, down) = (spliced.up, spliced.down);
    let finished = |failure| Finished {
        up,
        down,
        queries: queries.queries,
        failure,
    };
    let failure = match spliced.end {
        End::Stopped(denied) => {
            let text = if is_revocation(denied.kind) {
                format!(
                    "sdm: access to resource \"{name}\" was revoked: {}",
                    denied.message
                )
            } else {
                format!("sdm: {}", denied.message)
            };
            if replies.at_boundary() {
                tell(client, last.next_seq(), ER_CONNECTION_KILLED, &text).await;
            }
            Some((denied.kind, text))
        }
        End::Refused(why) => {
            let kind = queries.refusal_kind();
            let code = match kind {
                ErrorKind::Forbidden => ER_SPECIFIC_ACCESS_DENIED,
                _ => ER_UNKNOWN,
            };
            let text =
                format!("sdm: the gateway closed the connection to resource \"{name}\": {why}");
            if replies.at_boundary() {
                tell(client, last.next_seq(), code, &text).await;
            }
            Some((kind, text))
        }
        End::UpstreamClosed if queries.quit => None,
        End::UpstreamClosed | End::Failed(Side::Upstream, _) => {
            let how = match &spliced.end {
                End::Failed(_, e) => format!("failed: {e}"),
                _ => "closed the connection".to_owned(),
            };
            let text =
                format!("sdm: the connection to resource \"{name}\" was lost: the server {how}");
            if replies.at_boundary() {
                tell(client, last.next_seq(), ER_CONNECTION_KILLED, &text).await;
            }
            Some((ErrorKind::UpstreamRefused, text))
        }
        End::Failed(Side::Client, e) => {
            tracing::debug!(resource = %name, error = %e, "client connection ended");
            None
        }
        End::Closed => None,
    };
    let _ = client.shutdown().await;
    finished(failure)
}

/// Sends the client an ERR packet, bounded in time (it may not be reading).
async fn tell<C: AsyncWrite + Unpin>(
    client: &mut C,
    seq: u8,
    (code, state): (u16, &str),
    text: &str,
) {
    let bytes = packet::error(seq, code, state, text);
    let send = async {
        client.write_all(&bytes).await?;
        client.flush().await
    };
    let _ = tokio::time::timeout(TELL_TIMEOUT, send).await;
}
