//! One client connection: TLS, HELLO with a lease, READY, then for each stream OPEN, upstream
//! connect, splice (one stream, or one after another when the client frames them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sdm_proto::audit::{AuditEnd, AuditEvent, AuditRecord, Outcome};
use sdm_proto::handshake::{self, Reply};
use sdm_proto::{ErrorKind, Lease, ResourceKind};
use sdm_relay::Framed;
use sdm_relay::scheduling::InFlight;
use sdm_relay::tls::TlsStream;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use uuid::Uuid;

use super::mysql;
use super::open_connections::OpenConnections;
use super::postgres;
use super::prefixed::Prefixed;
use super::splice::{End, NoTap, Side, splice};
use super::ssh;
use super::verified::VerifiedLeases;
use super::{AuditUnavailable, Denied, GatewayConfig, Upstream};

/// A client may keep an accepted connection idle (warm) this long before sending OPEN.
const IDLE_BEFORE_OPEN: Duration = Duration::from_secs(60);
/// After a framed stream ended on this side, how long the client has to end its side too, and
/// how much it may still send meanwhile, before the connection is closed instead of kept.
const END_WAIT: Duration = Duration::from_secs(5);
const MAX_DISCARDED: usize = 64 * 1024;
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock difference tolerated between the control plane that signed a lease and this gateway.
const LEASE_SKEW_SECS: i64 = 30;

/// The client's connection, framed while a stream runs if the client asked for it. Boxed so
/// that moving it between the phases of a connection's task moves a pointer, not the TLS state
/// (over a kilobyte, and the task would keep a slot for each move).
type Client = Box<Framed<Prefixed<TlsStream<TcpStream>>>>;

/// What every connection of one gateway uses.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    pub(super) config: &'a GatewayConfig,
    pub(super) open_connections: &'a Arc<OpenConnections>,
    pub(super) leases: &'a VerifiedLeases,
    /// The gateway's TLS configuration, secrets extractable (see `sdm_relay::tls`).
    pub(super) tls: &'a Arc<rustls::ServerConfig>,
}

/// Serves a client's connection; `placed` counts it as busy on its thread until its handshake
/// is done (see `workers`).
pub(super) async fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Shared<'_>,
    shutdown: watch::Receiver<bool>,
    placed: InFlight,
) {
    let _ = socket.set_nodelay(true);
    serve(socket, peer, shared, shutdown, placed).await;
}

/// Runs `phase` unless the gateway is shutting down first (then false): a connection that is
/// greeting or waiting idle for OPEN is simply closed at shutdown, while one carrying a stream
/// runs on through the drain and is then stopped with its reason (see `listener`).
async fn unless_stopping(
    shutdown: &mut watch::Receiver<bool>,
    phase: impl Future<Output = bool>,
) -> bool {
    tokio::select! {
        open = phase => open,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Shared<'_>,
    mut shutdown: watch::Receiver<bool>,
    placed: InFlight,
) {
    let config = shared.config;
    // Each phase's future is boxed and freed when the phase ends, so that a connection's task
    // holds only what its current phase needs (the gateway holds thousands of idle ones).
    let greeting = tokio::select! {
        greeting = tokio::time::timeout(
            config.handshake_timeout,
            Box::pin(greet(socket, shared.tls)),
        ) => greeting,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let (mut client, greeted) = match greeting {
        Ok(Ok(parts)) => parts,
        Ok(Err(reason)) => {
            tracing::debug!(%peer, %reason, "gateway handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "gateway handshake timed out");
            return;
        }
    };
    // The lease's signature and lifetime are checked now; whether it still grants access is
    // asked of the directory once per stream, when the connection is put to use (OPEN). A warm
    // connection is only a promise: asking at HELLO too would double the directory's work for
    // every connection and could not spare the question at OPEN (access may be revoked meanwhile).
    let lease = match verify(config, shared.leases, &greeted.lease) {
        Ok(lease) => lease,
        Err(denied) => return refuse(&mut client, peer, denied).await,
    };
    // Handshake done: from here on, only a stream makes the connection busy.
    drop(placed);
    let ready = if greeted.framed {
        Reply::ReadyFramed
    } else {
        Reply::Ready
    };
    let mut replies = handshake::encode_reply(&ready);
    if !greeted.opened {
        // A warm connection: READY now, OPEN when the client has a use for it.
        if send(&mut client, &replies).await.is_err() {
            return;
        }
        replies.clear();
        if client.get_ref().has_prefix() {
            return refuse(&mut client, peer, protocol("bytes before OPEN")).await;
        }
        if !unless_stopping(&mut shutdown, await_open(&mut client, peer, config, &lease)).await {
            return;
        }
    }
    let stream = Stream {
        peer,
        lease: &lease,
        lease_bytes: &greeted.lease,
        framed: greeted.framed,
    };
    // A framed connection carries one stream after another until one does not end cleanly.
    while Box::pin(stream.serve(&mut client, shared, replies)).await
        && unless_stopping(&mut shutdown, await_open(&mut client, peer, config, &lease)).await
    {
        replies = Vec::new();
    }
}

/// What the client sent before its first stream.
struct Greeted {
    lease: Vec<u8>,
    /// The client asked for framed streams.
    framed: bool,
    /// OPEN came with the HELLO (a connection put to use at once).
    opened: bool,
}

/// Waits for the next OPEN on an idle connection, then checks the lease again (it may have
/// expired while the connection waited). False when the connection should close.
async fn await_open(
    client: &mut Client,
    peer: SocketAddr,
    config: &GatewayConfig,
    lease: &Lease,
) -> bool {
    match tokio::time::timeout(IDLE_BEFORE_OPEN, client.read_u8()).await {
        Ok(Ok(handshake::OPEN)) => {}
        Ok(Ok(_)) => {
            refuse(client, peer, protocol("expected OPEN")).await;
            return false;
        }
        Ok(Err(_)) | Err(_) => return false, // closed or idle too long: nothing to say
    }
    if let Err(denied) = check_expiry(config, lease) {
        refuse(client, peer, denied).await;
        return false;
    }
    true
}

/// One stream of a connection: from OPEN to its end.
struct Stream<'a> {
    peer: SocketAddr,
    lease: &'a Lease,
    lease_bytes: &'a [u8],
    framed: bool,
}

impl Stream<'_> {
    /// Asks the directory, connects the resource, carries the stream and records it; `replies`
    /// are handshake bytes still to send before CONNECTED. Returns whether the connection can
    /// carry another stream.
    async fn serve(&self, client: &mut Client, shared: Shared<'_>, mut replies: Vec<u8>) -> bool {
        let Stream {
            peer,
            lease,
            lease_bytes,
            framed,
        } = *self;
        let config = shared.config;
        let asked = Instant::now();
        let _in_flight = InFlight::count();
        let upstream = match config.directory.authorize(lease, lease_bytes).await {
            Ok(upstream) => upstream,
            Err(denied) => {
                record_refusal(config, lease, peer, &denied);
                refuse(client, peer, denied).await;
                return false;
            }
        };

        // A stream is served only while its audit events can be kept.
        let record = config
            .audit
            .admit()
            .and_then(|()| Record::start(config, lease, &upstream, peer));
        // From here on, revoking access also ends this stream.
        let registration = shared.open_connections.register(lease, lease_bytes);
        // CONNECTED, after the replies still to send; the stream follows (framed if asked).
        let connected = async |client: &mut Client, mut replies: Vec<u8>| {
            replies.extend(handshake::encode_reply(&Reply::Connected));
            let sent = send(client, &replies).await.is_ok();
            if sent && framed {
                client.start();
            }
            sent
        };
        let went_away = || Some((ErrorKind::Closed, "the client went away".into()));
        // MySQL with stored credentials is logged in by the gateway; without, it passes through.
        let mysql = upstream.kind == ResourceKind::Mysql && upstream.credentials.is_some();
        if upstream.kind == ResourceKind::Postgres || mysql {
            // PostgreSQL and MySQL failures are told to the client in its own protocol, so the
            // stream is declared connected first.
            let (record, unrecordable) = match record {
                Ok(record) => (Some(record), None),
                Err(why) => (None, Some(unrecordable(config, peer, &upstream, why))),
            };
            if !connected(client, replies).await {
                if let Some(record) = record {
                    record.end(config, 0, 0, 0, went_away());
                }
                return false;
            }
            // Upstream authentication follows in the protocol's handler: set-up ends here.
            config.metrics.connection_set_up(asked.elapsed());
            let id = record.as_ref().map_or_else(Uuid::nil, |r| r.id);
            let finished = if mysql {
                Box::pin(mysql::serve(
                    &mut **client,
                    &upstream,
                    config.audit.clone(),
                    id,
                    unrecordable,
                    registration.stopped(),
                ))
                .await
            } else {
                Box::pin(postgres::serve(
                    &mut **client,
                    &upstream,
                    config.audit.clone(),
                    id,
                    unrecordable,
                    registration.stopped(),
                ))
                .await
            };
            let Some(record) = record else {
                return false;
            };
            let clean = finished.failure.is_none();
            record.end(
                config,
                finished.up,
                finished.down,
                finished.queries,
                finished.failure,
            );
            return framed && clean && Box::pin(end_stream(client)).await;
        }
        let record = match record {
            Ok(record) => record,
            Err(why) => {
                let why = unrecordable(config, peer, &upstream, why);
                replies.extend(handshake::encode_reply(&Reply::Error {
                    kind: ErrorKind::GatewayUnreachable,
                    message: why.to_string(),
                }));
                let _ = send(client, &replies).await;
                return false;
            }
        };

        if upstream.ssh.is_some() {
            // SSH failures are told to the client as an SSH disconnect, so the stream is
            // declared connected first; the SSH session then uses the whole stream.
            if !connected(client, replies).await {
                record.end(config, 0, 0, 0, went_away());
                return false;
            }
            config.metrics.connection_set_up(asked.elapsed());
            let connection = ssh::SshConnection {
                upstream,
                directory: config.directory.clone(),
                lease: lease.clone(),
                lease_bytes: lease_bytes.to_vec(),
                audit: config.audit.clone(),
                connection_id: record.id,
                handshake_timeout: config.handshake_timeout,
            };
            let finished = Box::pin(ssh::serve(
                &mut **client,
                connection,
                registration.stopped(),
            ))
            .await;
            record.end(
                config,
                finished.up,
                finished.down,
                finished.queries,
                finished.failure,
            );
            return false;
        }
        let mut remote = match Box::pin(connect_upstream(config, &upstream)).await {
            Ok(remote) => remote,
            Err(denied) => {
                replies.extend(handshake::encode_reply(&Reply::Error {
                    kind: denied.kind,
                    message: denied.message.clone(),
                }));
                let _ = send(client, &replies).await;
                tracing::warn!(%peer, resource = %upstream.resource_name, reason = %denied.message, "upstream refused");
                record.end(config, 0, 0, 0, Some((denied.kind, denied.message)));
                return false;
            }
        };
        if !connected(client, replies).await {
            record.end(config, 0, 0, 0, went_away());
            return false;
        }
        config.metrics.connection_set_up(asked.elapsed());
        let spliced = Box::pin(splice(
            &mut **client,
            &mut remote,
            &mut NoTap,
            &mut NoTap,
            false,
            registration.stopped(),
        ))
        .await;
        let clean = matches!(spliced.end, End::Closed);
        let failure = match spliced.end {
            End::Stopped(denied) => Some((denied.kind, denied.message)),
            End::Failed(Side::Upstream, e) => Some((
                ErrorKind::UpstreamRefused,
                format!("resource {:?} failed: {e}", upstream.resource_name),
            )),
            End::Failed(Side::Client, _) | End::Closed | End::UpstreamClosed | End::Refused(_) => {
                None
            }
        };
        record.end(config, spliced.up, spliced.down, 0, failure);
        framed && clean && Box::pin(end_stream(client)).await
    }
}

/// After a framed stream that ended without a failure: ends this side of it (if its handler did
/// not), then waits a bounded time for the client's end, discarding what the resource can no
/// longer take (PostgreSQL streams end when the server closes). Whether the connection can
/// carry another stream.
async fn end_stream(client: &mut Client) -> bool {
    let finish = async {
        client.shutdown().await.ok()?;
        let mut sink = [0u8; 4096];
        let mut discarded = 0;
        while !client.read_ended() {
            let n = client.read(&mut sink).await.ok()?;
            discarded += n;
            if (n == 0 && !client.read_ended()) || discarded > MAX_DISCARDED {
                return None;
            }
        }
        Some(())
    };
    matches!(tokio::time::timeout(END_WAIT, finish).await, Ok(Some(()))) && client.finished()
}

/// The audit record of one connection.
struct Record {
    id: Uuid,
    resource: String,
}

impl Record {
    fn start(
        config: &GatewayConfig,
        lease: &Lease,
        upstream: &Upstream,
        peer: SocketAddr,
    ) -> Result<Record, AuditUnavailable> {
        let id = Uuid::new_v4();
        config
            .audit
            .record(AuditEvent::Started(Box::new(AuditRecord {
                id,
                account_id: lease.account_id,
                account_name: upstream.account_name.clone(),
                resource_id: lease.resource_id,
                resource_name: upstream.resource_name.clone(),
                gateway: config.name.clone(),
                session_id: lease.session_id,
                lease_id: lease.id,
                labels: upstream.labels.clone(),
                client_addr: peer.to_string(),
                started_at: sdm_proto::unix_now(),
                ended_at: None,
                bytes_up: 0,
                bytes_down: 0,
                outcome: Outcome::Open,
                error: None,
                query_count: 0,
            })))?;
        config.metrics.connection_opened(&upstream.resource_name);
        Ok(Record {
            id,
            resource: upstream.resource_name.clone(),
        })
    }

    fn end(
        self,
        config: &GatewayConfig,
        up: u64,
        down: u64,
        queries: u64,
        failure: Option<(ErrorKind, String)>,
    ) {
        tracing::debug!(resource = %self.resource, bytes_up = up, bytes_down = down, queries, failure = ?failure, "connection closed");
        config.metrics.connection_closed(&self.resource, up, down);
        let (outcome, error) = match failure {
            None => (Outcome::Ok, None),
            Some((kind, message)) => (Outcome::Error(kind), Some(message)),
        };
        let ended = config.audit.record(AuditEvent::Ended(AuditEnd {
            id: self.id,
            ended_at: sdm_proto::unix_now(),
            bytes_up: up,
            bytes_down: down,
            outcome,
            error,
            query_count: queries,
        }));
        if let Err(why) = ended {
            tracing::error!(connection = %self.id, resource = %self.resource, reason = %why, "the end of a connection could not be recorded");
        }
    }
}

/// A refused connection whose lease was genuine still leaves a record: who tried what, and why
/// it was refused.
fn record_refusal(config: &GatewayConfig, lease: &Lease, peer: SocketAddr, denied: &Denied) {
    let now = sdm_proto::unix_now();
    let recorded = config
        .audit
        .record(AuditEvent::Started(Box::new(AuditRecord {
            id: Uuid::new_v4(),
            account_id: lease.account_id,
            account_name: String::new(),
            resource_id: lease.resource_id,
            resource_name: String::new(),
            gateway: config.name.clone(),
            session_id: lease.session_id,
            lease_id: lease.id,
            labels: Default::default(),
            client_addr: peer.to_string(),
            started_at: now,
            ended_at: Some(now),
            bytes_up: 0,
            bytes_down: 0,
            outcome: Outcome::Error(denied.kind),
            error: Some(denied.message.clone()),
            query_count: 0,
        })));
    if let Err(why) = recorded {
        tracing::warn!(%peer, account = %lease.account_id, reason = %denied.message, "a refused connection could not be recorded: {why}");
    }
}

/// A stream the audit trail cannot record is refused; the refusal says why, and since it cannot
/// be recorded, it is logged.
fn unrecordable(
    config: &GatewayConfig,
    peer: SocketAddr,
    upstream: &Upstream,
    why: AuditUnavailable,
) -> AuditUnavailable {
    tracing::warn!(%peer, resource = %upstream.resource_name, account = %upstream.account_name, reason = %why, "connection refused: the audit trail cannot record it");
    AuditUnavailable(format!(
        "gateway {} is not accepting connections: its audit trail cannot be written ({})",
        config.name, why.0
    ))
}

/// TLS, then the HELLO (and an OPEN right behind it).
async fn greet(
    socket: TcpStream,
    tls: &Arc<rustls::ServerConfig>,
) -> Result<(Client, Greeted), String> {
    let mut tls = sdm_relay::tls::accept(tls.clone(), socket)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    loop {
        match handshake::decode_hello(&buf) {
            Ok(Some((hello, n))) => {
                let greeted = Greeted {
                    lease: hello.lease.to_vec(),
                    framed: hello.framed,
                    opened: buf.get(n) == Some(&handshake::OPEN),
                };
                buf.drain(..n + usize::from(greeted.opened));
                return Ok((Box::new(Framed::new(Prefixed::new(buf, tls))), greeted));
            }
            Ok(None) => {}
            Err(e) => {
                let reply = handshake::encode_reply(&Reply::Error {
                    kind: ErrorKind::InvalidArgument,
                    message: format!("not an sdm client: {e}"),
                });
                let _ = send(&mut tls, &reply).await;
                return Err(e.to_string());
            }
        }
        buf.reserve(512);
        let n = tls
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed during HELLO".into());
        }
    }
}

/// Verifies the lease offline: signature, key, lifetime (with the tolerated clock difference).
fn verify(
    config: &GatewayConfig,
    leases: &VerifiedLeases,
    lease_bytes: &[u8],
) -> Result<Lease, Denied> {
    leases
        .verify(lease_bytes, sdm_proto::unix_now(), LEASE_SKEW_SECS)
        .map_err(|e| Denied {
            kind: ErrorKind::Unauthenticated,
            message: format!("gateway {} refused the lease: {e}", config.name),
        })
}

/// A verified lease that waited (warm) may have expired meanwhile.
fn check_expiry(config: &GatewayConfig, lease: &Lease) -> Result<(), Denied> {
    if sdm_proto::unix_now() > lease.expires_at.saturating_add(LEASE_SKEW_SECS) {
        return Err(Denied {
            kind: ErrorKind::Unauthenticated,
            message: format!(
                "gateway {} refused the lease: it expired while the connection waited",
                config.name
            ),
        });
    }
    Ok(())
}

async fn connect_upstream(
    config: &GatewayConfig,
    upstream: &Upstream,
) -> Result<TcpStream, Denied> {
    let target = (upstream.host.as_str(), upstream.port);
    let refused = |reason: String| Denied {
        kind: ErrorKind::UpstreamRefused,
        message: format!(
            "gateway {} could not reach resource {:?} at {}:{}: {reason}",
            config.name, upstream.resource_name, upstream.host, upstream.port
        ),
    };
    let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| refused(format!("timed out after {UPSTREAM_CONNECT_TIMEOUT:?}")))?
        .map_err(|e| refused(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn refuse(client: &mut Client, peer: SocketAddr, denied: Denied) {
    tracing::info!(%peer, kind = %denied.kind, reason = %denied.message, "gateway refused a connection");
    let reply = handshake::encode_reply(&Reply::Error {
        kind: denied.kind,
        message: denied.message,
    });
    let _ = send(client, &reply).await;
}

async fn send<W: AsyncWrite + Unpin + ?Sized>(client: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

fn protocol(what: &str) -> Denied {
    Denied {
        kind: ErrorKind::InvalidArgument,
        message: format!("gateway handshake violated: {what}"),
    }
}
