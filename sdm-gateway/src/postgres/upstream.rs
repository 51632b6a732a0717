//! The gateway's connection to a PostgreSQL server: TCP, then TLS when the resource asks for it
//! (`require`: encrypted; `verify-full`: encrypted and the certificate checked against the
//! resource's CA and host name; the rule is `sdm_proto::postgres_tls`'s).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sdm_proto::api::TlsMode;
use sdm_proto::postgres_tls::{self, TlsConfigError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::message;
use crate::Upstream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the server, plain or TLS.
pub(crate) enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects and, if configured, negotiates TLS. The error is a reason for a person.
pub(crate) async fn connect(upstream: &Upstream) -> Result<UpstreamIo, String> {
    let work = async {
        let mut tcp = TcpStream::connect((upstream.host.as_str(), upstream.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        if upstream.upstream_tls.mode == TlsMode::Disable {
            return Ok(UpstreamIo::Plain(tcp));
        }
        let config = tls_config(upstream)?;
        tcp.write_all(&message::ssl_request())
            .await
            .map_err(|e| e.to_string())?;
        match tcp.read_u8().await.map_err(|e| e.to_string())? {
            b'S' => {}
            b'N' => {
                return Err("the server does not accept TLS, but the resource requires it".into());
            }
            other => return Err(format!("unexpected answer {other:#04x} to the TLS request")),
        }
        let name = ServerName::try_from(upstream.host.clone())
            .map_err(|_| format!("{:?} is not a valid TLS server name", upstream.host))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| format!("timed out after {CONNECT_TIMEOUT:?}"))?
}

fn tls_config(upstream: &Upstream) -> Result<Arc<ClientConfig>, String> {
    let tls = &upstream.upstream_tls;
    postgres_tls::client_config(tls.mode, tls.ca_pem.as_deref()).map_err(|e| match e {
        TlsConfigError::NoCa => "verify-full needs the resource's CA certificate".to_owned(),
        TlsConfigError::BadCa(why) => format!("the resource's CA certificate is unusable: {why}"),
        TlsConfigError::Tls(why) => why,
    })
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, data),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
