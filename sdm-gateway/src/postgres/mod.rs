//! PostgreSQL at the gateway: the client's startup is answered here (TLS and GSS encryption
//! requests get `N`: the tunnel is already encrypted), cancel requests are passed on, and with
//! stored credentials the gateway logs in itself, so the client connects with any user name and
//! no password. The startup may ask only for what the resource allows (database,
//! replication). After the login, bytes are spliced; every client message after the startup,
//! including any that came with it, passes the query tap, which records each statement before
//! it is sent on.
//!
//! Every failure reaches the client as a PostgreSQL `ErrorResponse` naming the resource, never as
//! a bare reset.

use std::sync::Arc;
use std::time::Duration;

use sdm_proto::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::finished::Finished;
use super::open_connections::is_revocation;
use super::splice::{End, Side, Tap, splice};
use super::{AuditSink, AuditUnavailable, Denied, Upstream};

mod auth;
mod catalog;
mod function_call;
pub(crate) mod message;
mod startup;
pub(crate) mod statement;
mod tap;
mod upstream;

use auth::AuthError;
use message::Startup;

/// How long a client has to send its startup message.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long telling a client that stalled why it is closed may take.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one client connection to a PostgreSQL resource. With `unrecordable`, the audit trail
/// cannot record the connection: the client's startup is answered with that refusal.
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
    let (startup, leftover) =
        match tokio::time::timeout(STARTUP_TIMEOUT, Box::pin(read_startup(client))).await {
            Ok(Ok(s)) => s,
            Ok(Err(why)) => {
                let text = format!("sdm: invalid startup from the client: {why}");
                let _ = tell(client, &message::error_response("08P01", &text, None)).await;
                return Finished::failed(ErrorKind::InvalidArgument, text);
            }
            Err(_) => {
                // Said in the client's protocol, so that a driver that stalled reports why it
                // was closed; bounded, as the client may not be reading either.
                let text = format!(
                    "sdm: the client sent no startup message within {} s",
                    STARTUP_TIMEOUT.as_secs()
                );
                let response = message::error_response("08P01", &text, None);
                let _ = tokio::time::timeout(TELL_TIMEOUT, tell(client, &response)).await;
                return Finished::failed(ErrorKind::Timeout, text);
            }
        };
    let (minor, params, raw) = match startup {
        Startup::Start { minor, params, raw } => (minor, params, raw),
        Startup::Cancel(packet) => return cancel(resource, &packet).await,
        Startup::Ssl | Startup::GssEnc => {
            return Finished::failed(
                ErrorKind::Internal,
                "encryption request after startup".into(),
            );
        }
    };
    if let Some(why) = unrecordable {
        let text = why.to_string();
        let hint = "Try again later; an admin must make the audit trail writable again.";
        let _ = tell(client, &message::error_response("57P03", &text, Some(hint))).await;
        return Finished::failed(ErrorKind::GatewayUnreachable, text);
    }
    let database = match startup::admit(resource, &params) {
        Ok(database) => database,
        Err(refusal) => {
            let response =
                message::error_response(refusal.code, &refusal.message, Some(&refusal.hint));
            let _ = tell(client, &response).await;
            return Finished::failed(ErrorKind::Forbidden, refusal.message);
        }
    };
    // Everything the client sends from here on is recorded before it is sent on, starting with
    // what came in the same read as the startup.
    let mut queries = tap::QueryTap::new(audit, connection_id)
        .with_catalog(catalog::Catalog::of(resource, &database));
    let mut replies = tap::ServerTap::default();

    // The phases before the splice are boxed: an idle session's task keeps only the splice.
    let mut server = match Box::pin(upstream::connect(resource)).await {
        Ok(s) => s,
        Err(why) => {
            let text = format!(
                "sdm: cannot connect to resource \"{name}\" at {}:{}: {why}",
                resource.host, resource.port
            );
            let hint = "The database may be down or unreachable from the gateway; try again later.";
            let _ = tell(client, &message::error_response("08001", &text, Some(hint))).await;
            return Finished::failed(ErrorKind::UpstreamRefused, text);
        }
    };

    if let Some(creds) = &resource.credentials {
        let (startup, dropped) = startup::login_params(creds, database, params);
        let login = async {
            server
                .write_all(&message::startup_message(&startup))
                .await
                .map_err(|e| AuthError::Failed(format!("the connection failed: {e}")))?;
            auth::log_in(&mut server, creds).await
        };
        match Box::pin(login).await {
            Ok(logged_in) => {
                let mut hello = Vec::new();
                if minor > 0 || !dropped.is_empty() {
                    hello.extend(message::negotiate_protocol_version(0, &dropped));
                }
                hello.extend(logged_in.forward);
                if tell(client, &hello).await.is_err() {
                    return Finished::failed(
                        ErrorKind::Closed,
                        "the client went away during login".into(),
                    );
                }
            }
            Err(e) => {
                let (code, why) = match e {
                    AuthError::Rejected(fields) => (
                        message::field(&fields, b'C').unwrap_or("28000").to_owned(),
                        message::field(&fields, b'M')
                            .unwrap_or("login refused")
                            .to_owned(),
                    ),
                    AuthError::Failed(why) => ("28000".to_owned(), why),
                };
                let text = format!(
                    "sdm: resource \"{name}\" refused the gateway's login with the stored credentials: {why}"
                );
                let hint = "An admin must update the credentials stored for this resource.";
                let _ = tell(client, &message::error_response(&code, &text, Some(hint))).await;
                return Finished::failed(ErrorKind::UpstreamRefused, text);
            }
        }
    } else if server.write_all(&raw).await.is_err() {
        let text = format!("sdm: resource \"{name}\" closed the connection at startup");
        let _ = tell(client, &message::error_response("08006", &text, None)).await;
        return Finished::failed(ErrorKind::UpstreamRefused, text);
    }
    if !leftover.is_empty() {
        let recorded = async {
            queries.observe(&leftover)?;
            std::future::poll_fn(|cx| queries.poll_release(cx)).await
        };
        if let Err(why) = recorded.await {
            let text = refused_text(name, &why);
            let _ = tell(client, &message::error_response("08P01", &text, None)).await;
            return Finished {
                up: 0,
                down: 0,
                queries: queries.queries,
                failure: Some((queries.refusal_kind(), text)),
            };
        }
        if server.write_all(&leftover).await.is_err() {
            return Finished::failed(
                ErrorKind::UpstreamRefused,
                format!("resource \"{name}\" went away"),
            );
        }
    }

    let spliced = Box::pin(splice(
        client,
        &mut server,
        &mut queries,
        &mut replies,
        true,
        stop,
    ))
    .await;
    if let End::Stopped(denied) = &spliced.end {
        let text = if is_revocation(denied.kind) {
            format!(
                "sdm: access to resource \"{name}\" was revoked: {}",
                denied.message
            )
        } else {
            format!("sdm: {}", denied.message)
        };
        if !replies.last_was_error && replies.at_boundary() {
            let _ = tell(client, &message::error_response("57P01", &text, None)).await;
        }
        let _ = client.shutdown().await;
        return Finished {
            up: spliced.up,
            down: spliced.down,
            queries: queries.queries,
            failure: Some((denied.kind, text)),
        };
    }
    if let End::Refused(why) = &spliced.end {
        let text = refused_text(name, why);
        if replies.at_boundary() {
            let _ = tell(client, &message::error_response("08P01", &text, None)).await;
        }
        let _ = client.shutdown().await;
        return Finished {
            up: spliced.up,
            down: spliced.down,
            queries: queries.queries,
            failure: Some((queries.refusal_kind(), text)),
        };
    }
    let lost = match &spliced.end {
        End::Closed | End::Stopped(_) | End::Refused(_) => None,
        End::UpstreamClosed if queries.terminated => None,
        End::UpstreamClosed => Some("closed the connection".to_owned()),
        End::Failed(Side::Upstream, e) => Some(format!("failed: {e}")),
        End::Failed(Side::Client, e) => {
            tracing::debug!(resource = %name, error = %e, "client connection ended");
            None
        }
    };
    let mut failure = None;
    if let Some(how) = lost {
        let text = format!("sdm: the connection to resource \"{name}\" was lost: the server {how}");
        // Between two messages the client can be told why; inside one it can only be cut off.
        if !replies.last_was_error && replies.at_boundary() {
            let _ = tell(client, &message::error_response("08006", &text, None)).await;
        }
        failure = Some((ErrorKind::UpstreamRefused, text));
    }
    let _ = client.shutdown().await;
    if failure.is_none()
        && let Some(why) = replies.fatal.take()
    {
        failure = Some((
            ErrorKind::UpstreamRefused,
            format!("resource \"{name}\" ended the session: {why}"),
        ));
    }
    if !replies.ready
        && let Some(why) = replies.login_error.take()
    {
        failure = Some((
            ErrorKind::UpstreamRefused,
            format!("login to resource \"{name}\" failed: {why}"),
        ));
    }
    Finished {
        up: spliced.up,
        down: spliced.down,
        queries: queries.queries,
        failure,
    }
}

/// What the client is told when the tap refuses its bytes.
fn refused_text(resource: &str, why: &str) -> String {
    format!("sdm: the gateway closed the connection to resource \"{resource}\": {why}")
}

/// Reads the client's first packets, answering encryption requests with `N`. Returns the
/// startup (or cancel) packet and any bytes that came after it.
async fn read_startup<C>(client: &mut C) -> Result<(Startup, Vec<u8>), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        match message::parse_startup(&buf).map_err(|e| e.to_string())? {
            Some((Startup::Ssl | Startup::GssEnc, n)) => {
                buf.drain(..n);
                tell(client, b"N").await.map_err(|e| e.to_string())?;
            }
            Some((startup, n)) => {
                buf.drain(..n);
                return Ok((startup, buf));
            }
            None => {
                let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("the client closed the connection before starting".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Passes a cancel request to the server that owns the backend (the key is the server's own:
/// the gateway forwards `BackendKeyData` unchanged).
async fn cancel(resource: &Upstream, packet: &[u8]) -> Finished {
    let result = async {
        let mut server = upstream::connect(resource).await?;
        server.write_all(packet).await.map_err(|e| e.to_string())?;
        server.flush().await.map_err(|e| e.to_string())?;
        // The server closes after reading it; wait for that (bounded) so it is not cut short.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), server.read(&mut sink)).await;
        Ok::<(), String>(())
    }
    .await;
    match result {
        Ok(()) => Finished {
            up: packet.len() as u64,
            down: 0,
            queries: 0,
            failure: None,
        },
        Err(why) => Finished::failed(
            ErrorKind::UpstreamRefused,
            format!(
                "cancel request to resource \"{}\" failed: {why}",
                resource.resource_name
            ),
        ),
    }
}

async fn tell<C: AsyncWrite + Unpin>(client: &mut C, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}
