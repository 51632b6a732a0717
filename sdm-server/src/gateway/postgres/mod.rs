//! PostgreSQL at the gateway: the client's startup is answered here (TLS and GSS encryption
//! requests get `N`: the tunnel is already encrypted), cancel requests are passed on, and with
//! stored credentials the gateway logs in itself, so the client connects with any user name and
//! no password. After the login, bytes are spliced; the client's queries are recorded on the way.
//!
//! Every failure reaches the client as a PostgreSQL `ErrorResponse` naming the resource, never as
//! a bare reset.

use std::sync::Arc;
use std::time::Duration;

use sdm_proto::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::splice::{End, Side, splice};
use super::{AuditSink, Denied, Upstream};

mod auth;
pub(crate) mod message;
mod tap;
mod upstream;

use auth::AuthError;
use message::Startup;

/// How long a client has to send its startup message.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened on one connection.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) queries: u64,
    pub(crate) failure: Option<(ErrorKind, String)>,
}

impl Finished {
    fn failed(kind: ErrorKind, message: String) -> Finished {
        Finished {
            up: 0,
            down: 0,
            queries: 0,
            failure: Some((kind, message)),
        }
    }
}

/// Serves one client connection to a PostgreSQL resource.
pub(crate) async fn serve<C>(
    client: &mut C,
    resource: &Upstream,
    audit: Arc<dyn AuditSink>,
    connection_id: Uuid,
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
                return Finished::failed(
                    ErrorKind::Timeout,
                    "the client sent no startup message".into(),
                );
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
        let client_database = params
            .iter()
            .find(|(k, _)| k == "database")
            .map(|(_, v)| v.clone());
        let dropped: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        let database = creds
            .database
            .clone()
            .or(client_database)
            .unwrap_or_else(|| creds.username.clone());
        let mut startup = vec![
            ("user".to_owned(), creds.username.clone()),
            ("database".to_owned(), database),
        ];
        startup.extend(
            params
                .into_iter()
                .filter(|(k, _)| k != "user" && k != "database" && !k.starts_with("_pq_.")),
        );
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
    if !leftover.is_empty() && server.write_all(&leftover).await.is_err() {
        return Finished::failed(
            ErrorKind::UpstreamRefused,
            format!("resource \"{name}\" went away"),
        );
    }

    let mut queries = tap::QueryTap::new(audit, connection_id);
    let mut replies = tap::ServerTap::default();
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
        let text = format!(
            "sdm: access to resource \"{name}\" was revoked: {}",
            denied.message
        );
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
    let lost = match &spliced.end {
        End::Closed | End::Stopped(_) => None,
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
