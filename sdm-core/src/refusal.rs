//! What a local peer that a tunnel refuses is told before its connection closes: another OS user
//! (with the same-user check on), or any peer when no connection to the resource can be opened
//! (the lease expired while the control plane cannot be reached, say).
//!
//! For a PostgreSQL resource: what a server that refuses a login says, a FATAL `ErrorResponse`
//! (SQLSTATE [`NOT_AUTHORIZED`] or [`CANNOT_CONNECT`]) after the startup message, so that psql
//! and drivers print the reason. An
//! `SSLRequest` or `GSSENCRequest` first is answered `N` (libpq does not print errors sent in
//! answer to those). For a MySQL resource, where the server speaks first: an ERR packet in place
//! of the server's greeting (error 1045 or 1429), which the `mysql`/`mariadb` clients and drivers
//! print. For other kinds there is no protocol to say it in: the connection closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::resource::ResourceKind;

/// Bound on the whole exchange with a refused peer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest startup packet read (PostgreSQL's own limit is 10,000 bytes).
const MAX_STARTUP: usize = 10_000;
/// At most this many encryption requests before the startup message.
const MAX_REQUESTS: usize = 2;
/// What is read (and dropped) after the answer, so that closing does not reset the connection
/// before the client has read it.
const MAX_DRAIN: u64 = 64 * 1024;

/// SQLSTATE for a peer that may not use the tunnel (invalid authorization specification).
pub(crate) const NOT_AUTHORIZED: &str = "28000";
/// SQLSTATE for a connection that could not be opened (sqlclient unable to establish
/// sqlconnection).
pub(crate) const CANNOT_CONNECT: &str = "08001";

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// Protocol 3.0's startup message.
const PROTOCOL_3: u32 = 196_608;

/// The sentence a refused peer (and the log) reads.
pub(crate) fn message(resource: &str, owner: u32, peer: Option<u32>) -> String {
    let who = peer.map_or_else(
        || "a process whose OS user could not be identified".to_owned(),
        |uid| format!("OS user uid {uid}"),
    );
    format!(
        "sdm: the tunnel to {resource:?} serves only the OS user that opened it (uid {owner}); \
         a connection from {who} was refused. Open a tunnel of your own with your own token, or \
         ask its owner to open it for other users"
    )
}

/// Tells the peer why it is refused, as far as the resource's protocol allows, then closes;
/// bounded by [`REFUSAL_TIMEOUT`].
pub(crate) async fn refuse<S>(stream: S, kind: &ResourceKind, sqlstate: &str, message: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if *kind == ResourceKind::Postgres {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, postgres(stream, sqlstate, message)).await;
    } else if *kind == ResourceKind::Mysql {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, mysql(stream, sqlstate, message)).await;
    }
}

/// The ERR packet a MySQL server sends instead of its greeting: sequence id 0, no SQL state
/// (clients read the pre-4.1 layout there, as nothing was negotiated yet).
async fn mysql<S>(mut stream: S, sqlstate: &str, message: &str) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&mysql_error(sqlstate, message)).await?;
    stream.shutdown().await?;
    let mut drained = (&mut stream).take(MAX_DRAIN);
    tokio::io::copy(&mut drained, &mut tokio::io::sink()).await?;
    Ok(())
}

/// Error 1045 (access denied) for a peer that may not use the tunnel, 1429 (unable to connect
/// to a foreign data source) for a connection that could not be opened: codes a server may
/// send (clients take 2000 and above from a server as a malformed packet).
fn mysql_error(sqlstate: &str, message: &str) -> Vec<u8> {
    let code: u16 = if sqlstate == NOT_AUTHORIZED {
        1045
    } else {
        1429
    };
    // A packet holds at most 16 MiB - 1 bytes; the message is ours and short, but stay framed.
    let text = &message.as_bytes()[..message.len().min(4096)];
    let len = 3 + text.len();
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    out.push(0);
    out.push(0xff);
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(text);
    out
}

async fn postgres<S>(mut stream: S, sqlstate: &str, message: &str) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for _ in 0..=MAX_REQUESTS {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if !(8..=MAX_STARTUP).contains(&len) {
            return Ok(());
        }
        match code {
            SSL_REQUEST | GSSENC_REQUEST if len == 8 => stream.write_all(b"N").await?,
            PROTOCOL_3 => {
                let mut rest = vec![0u8; len - 8];
                stream.read_exact(&mut rest).await?;
                stream.write_all(&error_response(sqlstate, message)).await?;
                stream.shutdown().await?;
                let mut drained = (&mut stream).take(MAX_DRAIN);
                tokio::io::copy(&mut drained, &mut tokio::io::sink()).await?;
                return Ok(());
            }
            // A cancel request, or something that is not PostgreSQL: nothing to say.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Most first bytes of a local client kept for [`Replayable::replay`] (a PostgreSQL client sends
/// an 8-byte request and a startup message of at most 10,000 bytes before the server answers).
const MAX_KEPT: usize = 16 * 1024;

/// A local client's stream that keeps the bytes read from it until the first byte is written to
/// it (the resource has answered), so that a gateway's refusal of the stream, which comes after
/// the client's first bytes went out, can still be told in the client's protocol: the refusal
/// reads those bytes again ([`replay`](Self::replay)) and answers them.
pub(crate) struct Replayable<S> {
    inner: S,
    kept: Vec<u8>,
    /// Still keeping what is read (nothing was written and `MAX_KEPT` was not passed).
    keeping: bool,
    /// Replaying: the next kept byte to hand out.
    replay_at: Option<usize>,
}

impl<S> Replayable<S> {
    pub(crate) fn new(inner: S) -> Replayable<S> {
        Replayable {
            inner,
            kept: Vec::new(),
            keeping: true,
            replay_at: None,
        }
    }

    /// Reads start again from the first byte kept, then go on with the stream; false (and
    /// nothing changes) when the bytes were not all kept or the client was already answered.
    pub(crate) fn replay(&mut self) -> bool {
        if !self.keeping {
            return false;
        }
        self.keeping = false;
        self.replay_at = Some(0);
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(at) = this.replay_at {
            let rest = &this.kept[at.min(this.kept.len())..];
            if !rest.is_empty() {
                let n = rest.len().min(out.remaining());
                out.put_slice(&rest[..n]);
                this.replay_at = Some(at + n);
                return Poll::Ready(Ok(()));
            }
        }
        let before = out.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
        if this.keeping {
            let new = &out.filled()[before..];
            if this.kept.len() + new.len() > MAX_KEPT {
                this.keeping = false;
                this.kept = Vec::new();
            } else {
                this.kept.extend_from_slice(new);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.keeping && this.replay_at.is_none() {
            // The resource answered: a refusal can no longer come first.
            this.keeping = false;
            this.kept = Vec::new();
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A FATAL `ErrorResponse` with `sqlstate`.
fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::with_capacity(message.len() + 32);
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        fields.push(code);
        // A NUL would end the field early; the message is ours, but keep the framing sound.
        fields.extend(value.bytes().filter(|b| *b != 0));
        fields.push(0);
    }
    fields.push(0);
    let len = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(fields.len() + 5);
    out.push(b'E');
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup() -> Vec<u8> {
        let body = b"user\0etl\0database\0app\0\0";
        let mut out = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn a_postgres_client_reads_the_reason_after_declining_ssl() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let refusal = tokio::spawn(async move {
            refuse(server, &ResourceKind::Postgres, NOT_AUTHORIZED, "go away").await;
        });
        let mut client = client;
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        // Split at every byte: the reader must not assume a message arrives in one piece.
        for b in ssl.iter().chain(startup().iter()) {
            client.write_all(&[*b]).await.unwrap();
        }
        drop(client.shutdown().await);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        refusal.await.unwrap();
        assert_eq!(answer[0], b'N');
        assert_eq!(
            &answer[1..],
            error_response(NOT_AUTHORIZED, "go away").as_slice()
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("28000") && text.contains("Mgo away"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn other_kinds_and_garbage_get_no_answer() {
        let (mut client, server) = tokio::io::duplex(1024);
        refuse(server, &ResourceKind::Tcp, NOT_AUTHORIZED, "go away").await;
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());

        let (mut client, server) = tokio::io::duplex(1024);
        let refusal = tokio::spawn(async move {
            refuse(server, &ResourceKind::Postgres, NOT_AUTHORIZED, "go away").await;
        });
        client.write_all(&[0xff; 8]).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        refusal.await.unwrap();
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn a_refusal_after_the_first_bytes_went_elsewhere_answers_them_again() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut client = client;
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        client.write_all(&ssl).await.unwrap();
        // The tunnel read the SSLRequest and sent it to a gateway, which refused the stream.
        let mut local = Replayable::new(server);
        let mut first = [0u8; 8];
        local.read_exact(&mut first).await.unwrap();
        assert!(local.replay());
        let refusal = tokio::spawn(async move {
            refuse(&mut local, &ResourceKind::Postgres, CANNOT_CONNECT, "no").await;
        });
        client.write_all(&startup()).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        drop(client);
        refusal.await.unwrap();
        assert_eq!(answer[0], b'N');
        assert_eq!(
            &answer[1..],
            error_response(CANNOT_CONNECT, "no").as_slice()
        );
    }

    #[tokio::test]
    async fn once_the_resource_answered_nothing_is_replayed() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut local = Replayable::new(server);
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        local.read_exact(&mut buf).await.unwrap();
        local.write_all(b"S").await.unwrap();
        assert!(!local.replay());
    }

    #[tokio::test]
    async fn a_mysql_client_reads_the_reason_in_place_of_the_greeting() {
        for (code, number) in [(NOT_AUTHORIZED, 1045u16), (CANNOT_CONNECT, 1429)] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let refusal = tokio::spawn(async move {
                refuse(server, &ResourceKind::Mysql, code, "sdm: go away").await;
            });
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            refusal.await.unwrap();
            let len = usize::from(answer[0]) | usize::from(answer[1]) << 8;
            assert_eq!((len + 4, answer[2], answer[3]), (answer.len(), 0, 0));
            assert_eq!(answer[4], 0xff);
            assert_eq!(u16::from_le_bytes([answer[5], answer[6]]), number);
            assert_eq!(&answer[7..], b"sdm: go away");
        }
    }

    #[test]
    fn the_error_response_is_framed() {
        let e = error_response(CANNOT_CONNECT, "a\0b");
        assert_eq!(e[0], b'E');
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len());
        assert_eq!(*e.last().unwrap(), 0);
    }
}
