//! The gateway's connection to a MySQL or MariaDB server: TCP and the server's greeting, then
//! TLS when the resource asks for it (`require`: encrypted; `verify-full`: encrypted and the
//! certificate checked against the resource's CA and host name, by the same rule as
//! PostgreSQL's), asked for with an `SSLRequest` before the login.

use std::time::Duration;

use rustls::pki_types::ServerName;
use sdm_proto::api::TlsMode;
use sdm_proto::postgres_tls::{self, TlsConfigError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::handshake::{self, Greeting, Response};
use super::packet;
use crate::Upstream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the server, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How connecting failed.
pub(crate) enum ConnectError {
    /// Not reached, or it did not greet.
    Unreachable(String),
    /// It greeted with an error (too many connections, host blocked, …).
    Refused(String),
}

/// Connects and reads the server's greeting.
pub(crate) async fn connect(upstream: &Upstream) -> Result<(TcpStream, Greeting), ConnectError> {
    let work = async {
        let mut tcp = TcpStream::connect((upstream.host.as_str(), upstream.port))
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (_, payload) = packet::read(&mut tcp)
            .await
            .map_err(ConnectError::Unreachable)?;
        if payload.first() == Some(&packet::ERR) {
            return Err(ConnectError::Refused(packet::error_text(&payload)));
        }
        let greeting = Greeting::parse(&payload).map_err(ConnectError::Unreachable)?;
        Ok((tcp, greeting))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| ConnectError::Unreachable(format!("timed out after {CONNECT_TIMEOUT:?}")))?
}

/// Encrypts the connection if the resource asks for it, with `caps` (which then include
/// `SSL`). Returns the connection and the sequence id of the login packet.
pub(crate) async fn secure(
    tcp: TcpStream,
    greeting: &Greeting,
    caps: u32,
    client: &Response,
    upstream: &Upstream,
) -> Result<(Box<dyn Io>, u8), String> {
    let tls = &upstream.upstream_tls;
    if tls.mode == TlsMode::Disable {
        return Ok((Box::new(tcp), 1));
    }
    if greeting.capabilities & handshake::SSL == 0 {
        return Err("the server does not offer TLS, but the resource requires it".into());
    }
    let config =
        postgres_tls::client_config(tls.mode, tls.ca_pem.as_deref()).map_err(|e| match e {
            TlsConfigError::NoCa => "verify-full needs the resource's CA certificate".to_owned(),
            TlsConfigError::BadCa(why) => {
                format!("the resource's CA certificate is unusable: {why}")
            }
            TlsConfigError::Tls(why) => why,
        })?;
    let mut tcp = tcp;
    packet::write(&mut tcp, 1, &handshake::ssl_request(caps, client))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(upstream.host.clone())
        .map_err(|_| format!("{:?} is not a valid TLS server name", upstream.host))?;
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("the TLS handshake timed out after {CONNECT_TIMEOUT:?}"))?
    .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok((Box::new(stream), 2))
}
