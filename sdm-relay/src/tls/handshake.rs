//! The handshake, by rustls's unbuffered connection: it asks for bytes and hands out bytes to
//! send until the handshake is over, then gives up its traffic secrets (and keeps what it needs
//! for key updates and tickets) so that [`TlsStream`] can take the records from there.

use std::io;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stream::{Kernel, TlsStream};

/// The handshake's first read buffer; it grows for large certificate chains up to
/// [`MAX_HANDSHAKE_BUFFER`].
const HANDSHAKE_BUFFER: usize = 16 * 1024;
const MAX_HANDSHAKE_BUFFER: usize = 256 * 1024;

/// Connects as a TLS 1.3 client to `name` over `io`. `config` must have
/// `enable_secret_extraction` set.
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut io: S,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let after = drive(&mut conn, &mut io).await?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    TlsStream::new(
        io,
        Kernel::Client(kernel),
        secrets,
        &after.early,
        &after.records,
    )
}

/// Accepts a TLS 1.3 client over `io`. `config` must have `enable_secret_extraction` set.
pub async fn accept<S>(config: Arc<ServerConfig>, mut io: S) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let after = drive(&mut conn, &mut io).await?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    TlsStream::new(
        io,
        Kernel::Server(kernel),
        secrets,
        &after.early,
        &after.records,
    )
}

/// What arrived with the end of the handshake: application data rustls already opened, and
/// records it has not looked at.
struct After {
    early: Vec<u8>,
    records: Vec<u8>,
}

/// The two kinds of unbuffered connection, for [`drive`].
trait Unbuffered {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn handshaking(&self) -> bool;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
}

enum Next {
    Process,
    Transmit,
    Read,
    /// The connection may send application data: done unless it still handshakes (a server
    /// may send before the client's Finished has arrived).
    Traffic,
}

async fn drive<C, S>(conn: &mut C, io: &mut S) -> io::Result<After>
where
    C: Unbuffered,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0u8; HANDSHAKE_BUFFER];
    let mut filled = 0;
    let mut outgoing = Vec::new();
    let mut early = Vec::new();
    loop {
        let status = conn.process(&mut incoming[..filled]);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => {
                send_alert(conn, io).await;
                return Err(tls_error(e));
            }
        };
        let next = match state {
            ConnectionState::EncodeTlsData(mut data) => {
                let start = outgoing.len();
                let mut need = 512;
                loop {
                    outgoing.resize(start + need, 0);
                    match data.encode(&mut outgoing[start..]) {
                        Ok(n) => {
                            outgoing.truncate(start + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(e)) => need = e.required_size,
                        Err(e) => return Err(tls_error(e)),
                    }
                }
                Next::Process
            }
            ConnectionState::TransmitTlsData(data) => {
                // Sent below, before the connection is asked for anything else.
                data.done();
                Next::Transmit
            }
            ConnectionState::BlockedHandshake => Next::Read,
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
                Next::Process
            }
            ConnectionState::WriteTraffic(_) => Next::Traffic,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            other => {
                return Err(tls_error(format!(
                    "unexpected TLS handshake state {other:?}"
                )));
            }
        };
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        match next {
            Next::Process => {}
            Next::Transmit => {
                io.write_all(&outgoing).await?;
                io.flush().await?;
                outgoing.clear();
            }
            Next::Traffic if !conn.handshaking() => {
                incoming.truncate(filled);
                return Ok(After {
                    early,
                    records: incoming,
                });
            }
            Next::Read | Next::Traffic => {
                if filled == incoming.len() {
                    if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                        return Err(tls_error("a TLS handshake message is too large"));
                    }
                    incoming.resize(incoming.len() * 2, 0);
                }
                let n = io.read(&mut incoming[filled..]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed during the TLS handshake",
                    ));
                }
                filled += n;
            }
        }
    }
}

/// After a failed handshake, sends the alert rustls queued to tell the peer why, if it can.
async fn send_alert<C, S>(conn: &mut C, io: &mut S)
where
    C: Unbuffered,
    S: AsyncWrite + Unpin,
{
    let mut alert = [0u8; 64];
    let n = match conn.process(&mut []).state {
        Ok(ConnectionState::EncodeTlsData(mut data)) => data.encode(&mut alert).unwrap_or(0),
        _ => 0,
    };
    if n > 0 {
        let _ = io.write_all(&alert[..n]).await;
        let _ = io.flush().await;
    }
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
