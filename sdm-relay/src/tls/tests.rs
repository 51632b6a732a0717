//! The record layer against itself and against rustls's own, over loopback TCP; and an
//! attacker on the wire between two of its ends.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use sdm_proto::server_tls::{ALPN_GATEWAY, Leaf, LeafResolver};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};
use tokio::net::{TcpListener, TcpStream};

use super::record::{BAD_RECORD_MAC, RECORD_OVERFLOW, UNEXPECTED_MESSAGE};
use super::{TlsStream, accept, connect};

/// A CA, a leaf it issued for `localhost`, and the gateway's server and client configurations
/// (sdm_proto's, as the gateway and the client library build them), secrets extractable.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let resolver = LeafResolver::new(Leaf { chain, key }).unwrap();
    let mut server =
        (*sdm_proto::server_tls::server_config(resolver, ALPN_GATEWAY).unwrap()).clone();
    server.enable_secret_extraction = true;
    let fingerprint = sdm_proto::sha256(ca.der());
    let mut client =
        (*sdm_proto::pinned_ca::client_config(fingerprint, ALPN_GATEWAY, 8).unwrap()).clone();
    client.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(client))
}

fn localhost() -> rustls::pki_types::ServerName<'static> {
    sdm_proto::pinned_ca::server_name("localhost").unwrap()
}

/// A connected pair of loopback TCP sockets.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// Our client and our server over loopback TCP.
async fn our_pair() -> (TlsStream<TcpStream>, TlsStream<TcpStream>) {
    let (server_config, client_config) = configs();
    let (c, s) = tcp_pair().await;
    let (client, server) = tokio::join!(
        connect(client_config, localhost(), c),
        accept(server_config, s)
    );
    (client.unwrap(), server.unwrap())
}

/// Our client connected to rustls's server (tokio-rustls) over loopback TCP.
async fn ours_to_rustls(
    client_config: &Arc<ClientConfig>,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> (
    TlsStream<TcpStream>,
    tokio_rustls::server::TlsStream<TcpStream>,
) {
    let (c, s) = tcp_pair().await;
    let (ours, theirs) = tokio::join!(
        connect(client_config.clone(), localhost(), c),
        acceptor.accept(s)
    );
    (ours.unwrap(), theirs.unwrap())
}

/// `len` bytes that differ from their neighbours, so that a byte moved or lost shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes `data` in writes of the given sizes (cycled), then closes the sending half.
async fn send_in_pieces(io: &mut (impl AsyncWrite + Unpin), data: &[u8], sizes: &[usize]) {
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        io.write_all(&data[at..end]).await.unwrap();
        at = end;
    }
    io.shutdown().await.unwrap();
}

async fn read_to_end(io: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    io.read_to_end(&mut all).await?;
    Ok(all)
}

const SIZES: &[usize] = &[1, 100, 16 * 1024, 16 * 1024 + 1, 70_000, 5, 64 * 1024];

#[tokio::test]
async fn bytes_cross_both_ways_and_close_notify_ends_each_direction() {
    let (mut client, mut server) = our_pair().await;
    let up = pattern(1 << 20);
    let down = pattern(300_000);
    let (sent, received) = tokio::join!(
        async {
            send_in_pieces(&mut client, &up, SIZES).await;
            read_to_end(&mut client).await.unwrap()
        },
        async {
            let received = read_to_end(&mut server).await.unwrap();
            send_in_pieces(&mut server, &down, &[3, 40_000]).await;
            received
        },
    );
    assert!(
        received == up,
        "the server received other bytes than were sent"
    );
    assert!(
        sent == down,
        "the client received other bytes than were sent"
    );
}

#[tokio::test]
async fn it_interoperates_with_rustls_as_client_and_as_server() {
    let (server_config, client_config) = configs();
    let data = pattern(200_000);

    // Our client, rustls's server.
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
    let (mut ours, mut theirs) = ours_to_rustls(&client_config, &acceptor).await;
    tokio::join!(send_in_pieces(&mut ours, &data, SIZES), async {
        // rustls's server echoes what it received.
        let got = read_to_end(&mut theirs).await.unwrap();
        send_in_pieces(&mut theirs, &got, &[1000]).await;
    });
    assert!(read_to_end(&mut ours).await.unwrap() == data);

    // The tickets rustls's server sent after the handshake were kept: the next connection
    // resumes.
    let (mut ours, mut theirs) = ours_to_rustls(&client_config, &acceptor).await;
    assert_eq!(
        theirs.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    ours.write_all(b"resumed").await.unwrap();
    ours.flush().await.unwrap();
    let mut got = [0u8; 7];
    theirs.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"resumed");

    // Rustls's client, our server.
    let (c, s) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let (theirs, ours) = tokio::join!(connector.connect(localhost(), c), accept(server_config, s));
    let (mut theirs, mut ours) = (theirs.unwrap(), ours.unwrap());
    let (_, received) = tokio::join!(send_in_pieces(&mut theirs, &data, SIZES), async {
        let got = read_to_end(&mut ours).await.unwrap();
        send_in_pieces(&mut ours, &got, &[16 * 1024 + 3]).await;
        got
    });
    assert!(received == data);
    assert!(read_to_end(&mut theirs).await.unwrap() == data);
}

#[tokio::test]
async fn key_updates_either_way_keep_the_stream_intact() {
    let (server_config, client_config) = configs();
    let data = pattern(400_000);

    // Ours replaces its sending key every 3 records; rustls checks every KeyUpdate it gets.
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
    let (mut ours, mut theirs) = ours_to_rustls(&client_config, &acceptor).await;
    ours.update_keys_every(3);
    let (_, received) = tokio::join!(
        send_in_pieces(&mut ours, &data, SIZES),
        read_to_end(&mut theirs)
    );
    assert!(received.unwrap() == data);
    // At least 25 full records went: a new key after every third.
    assert!(ours.key_updates() >= 8, "{ours:?}");

    // rustls replaces its sending key between writes (and asks for ours to be replaced too).
    let (mut ours, mut theirs) = ours_to_rustls(&client_config, &acceptor).await;
    let (_, received) = tokio::join!(
        async {
            for chunk in data.chunks(50_000) {
                theirs.write_all(chunk).await.unwrap();
                theirs.get_mut().1.refresh_traffic_keys().unwrap();
            }
            theirs.shutdown().await.unwrap();
            // Ours answered each request with its own update: rustls still reads it.
            let echo = read_to_end(&mut theirs).await.unwrap();
            assert_eq!(echo, b"done");
        },
        async {
            let received = read_to_end(&mut ours).await.unwrap();
            ours.write_all(b"done").await.unwrap();
            ours.shutdown().await.unwrap();
            received
        },
    );
    assert!(received == data);
    // Eight updates received, each answered when rustls asked for it.
    assert!(ours.key_updates() >= 8, "{ours:?}");

    // Ours to ours, every record under a new key, both ways.
    let (mut client, mut server) = our_pair().await;
    client.update_keys_every(1);
    server.update_keys_every(1);
    let (echo, received) = tokio::join!(
        async {
            send_in_pieces(&mut client, &data, &[1, 20_000]).await;
            read_to_end(&mut client).await.unwrap()
        },
        async {
            let received = read_to_end(&mut server).await.unwrap();
            send_in_pieces(&mut server, &received, &[33_333]).await;
            received
        },
    );
    assert!(received == data && echo == data);
    // Over 40 records each way, each sent and received under a key of its own.
    assert!(client.key_updates() >= 80, "{client:?}");
    assert!(server.key_updates() >= 80, "{server:?}");
}

#[tokio::test]
async fn a_wrong_certificate_fails_the_handshake_on_both_sides_without_a_panic() {
    let (server_config, _) = configs();
    let (_, other_client) = configs();
    let (c, s) = tcp_pair().await;
    let (client, server) = tokio::join!(
        connect(other_client, localhost(), c),
        accept(server_config, s)
    );
    let client = client.unwrap_err();
    assert!(client.to_string().contains("certificate"), "{client}");
    assert!(server.is_err());
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let (server_config, _) = configs();
    let (mut c, s) = tcp_pair().await;
    let (_, server) = tokio::join!(
        async {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            c
        },
        accept(server_config, s)
    );
    assert!(server.is_err());
}

/// Our client and server with the client's bytes passing through the test after the handshake:
/// `from_client` carries what the client writes, `to_server` what the server reads.
struct Wire {
    client: TlsStream<DuplexStream>,
    server: TlsStream<DuplexStream>,
    from_client: ReadHalf<DuplexStream>,
    to_server: WriteHalf<DuplexStream>,
}

async fn on_a_wire() -> Wire {
    let (server_config, client_config) = configs();
    let (client_io, client_far) = tokio::io::duplex(1 << 20);
    let (server_io, server_far) = tokio::io::duplex(1 << 20);
    let (mut from_client, mut to_client) = tokio::io::split(client_far);
    let (mut from_server, mut to_server) = tokio::io::split(server_far);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                n = from_client.read(&mut buf) => {
                    let n = n.unwrap();
                    to_server.write_all(&buf[..n]).await.unwrap();
                }
            }
        }
        (from_client, to_server)
    });
    let (client, server) = tokio::join!(
        connect(client_config, localhost(), client_io),
        accept(server_config, server_io)
    );
    stop.send(()).unwrap();
    let (from_client, to_server) = relay.await.unwrap();
    Wire {
        client: client.unwrap(),
        server: server.unwrap(),
        from_client,
        to_server,
    }
}

impl Wire {
    /// The next record the client wrote, as it was on the wire.
    async fn next_record(&mut self) -> Vec<u8> {
        let mut header = [0u8; 5];
        self.from_client.read_exact(&mut header).await.unwrap();
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut record = header.to_vec();
        record.resize(5 + len, 0);
        self.from_client.read_exact(&mut record[5..]).await.unwrap();
        record
    }

    /// The client writes `message` (one record); returns the record.
    async fn client_sends(&mut self, message: &[u8]) -> Vec<u8> {
        self.client.write_all(message).await.unwrap();
        self.client.flush().await.unwrap();
        self.next_record().await
    }

    async fn deliver(&mut self, bytes: &[u8]) {
        self.to_server.write_all(bytes).await.unwrap();
        self.to_server.flush().await.unwrap();
    }

    /// What the server reads next: bytes, or the error.
    async fn server_reads(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.server.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[tokio::test]
async fn a_record_changed_on_the_wire_is_refused_and_nothing_of_it_is_read() {
    for at in [0, 3, 4, 5, 10, 20] {
        let mut wire = on_a_wire().await;
        let good = wire.client_sends(b"first").await;
        let mut changed = wire.client_sends(b"second, changed in transit").await;
        changed[at] ^= 0x40;
        wire.deliver(&good).await;
        wire.deliver(&changed).await;
        // A longer length (bytes 3 and 4) waits for the rest of the record: the end comes.
        wire.to_server.shutdown().await.unwrap();
        assert_eq!(wire.server_reads().await.unwrap(), b"first");
        let error = wire.server_reads().await.unwrap_err();
        let expected = if at == 3 || at == 4 {
            io::ErrorKind::UnexpectedEof
        } else {
            io::ErrorKind::InvalidData
        };
        assert_eq!(error.kind(), expected, "byte {at}: {error}");
        // It stays refused.
        assert!(wire.server_reads().await.is_err());
    }
}

#[tokio::test]
async fn a_record_replayed_dropped_or_reordered_is_refused() {
    let mut wire = on_a_wire().await;
    let one = wire.client_sends(b"one").await;
    wire.deliver(&one).await;
    wire.deliver(&one).await;
    assert_eq!(wire.server_reads().await.unwrap(), b"one");
    let replayed = wire.server_reads().await.unwrap_err();
    assert!(
        replayed.to_string().contains("bad_record_mac"),
        "{replayed}"
    );

    let mut wire = on_a_wire().await;
    let _dropped = wire.client_sends(b"one").await;
    let two = wire.client_sends(b"two").await;
    wire.deliver(&two).await;
    assert!(wire.server_reads().await.is_err(), "a record went missing");
}

#[tokio::test]
async fn the_connection_ending_without_close_notify_is_an_error_not_the_end() {
    let mut wire = on_a_wire().await;
    let one = wire.client_sends(b"one").await;
    wire.deliver(&one).await;
    wire.to_server.shutdown().await.unwrap();
    assert_eq!(wire.server_reads().await.unwrap(), b"one");
    let cut = wire.server_reads().await.unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");

    // Cut inside a record.
    let mut wire = on_a_wire().await;
    let one = wire.client_sends(b"one").await;
    wire.deliver(&one[..one.len() - 1]).await;
    wire.to_server.shutdown().await.unwrap();
    let cut = wire.server_reads().await.unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
}

#[tokio::test]
async fn records_split_at_every_byte_arrive_intact() {
    let mut wire = on_a_wire().await;
    let mut records = Vec::new();
    let mut sent = Vec::new();
    for message in [&b"a"[..], &pattern(20_000), b"", &pattern(16 * 1024)] {
        if message.is_empty() {
            continue;
        }
        wire.client.write_all(message).await.unwrap();
        wire.client.flush().await.unwrap();
        sent.extend_from_slice(message);
    }
    wire.client.shutdown().await.unwrap();
    drop(wire.client);
    wire.from_client.read_to_end(&mut records).await.unwrap();
    let mut to_server = wire.to_server;
    let feed = tokio::spawn(async move {
        for byte in records {
            to_server.write_all(&[byte]).await.unwrap();
            to_server.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let received = read_to_end(&mut wire.server).await.unwrap();
    feed.await.unwrap();
    assert!(received == sent);
}

#[tokio::test]
async fn garbage_after_the_handshake_is_refused_without_a_panic() {
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        &[21, 3, 3, 0, 2, 2, 40],         // a plaintext fatal alert
        &[23, 3, 3, 0xff, 0xff, 0, 0, 0], // longer than any record may be
        &[23, 3, 3, 0, 3, 1, 2, 3],       // shorter than its tag
    ];
    for garbage in cases {
        let mut wire = on_a_wire().await;
        wire.deliver(garbage).await;
        let error = wire.server_reads().await.unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::InvalidData,
            "{garbage:?}: {error}"
        );
    }
}

#[tokio::test]
async fn what_is_refused_is_answered_with_a_fatal_alert_and_nothing_after_it() {
    // What the client sends, how it is spoiled on the wire, and the alert that must come back.
    type Spoil = fn(Vec<u8>) -> Vec<u8>;
    fn change_a_byte(mut record: Vec<u8>) -> Vec<u8> {
        record[10] ^= 0x40;
        record
    }
    fn change_the_outer_type(mut record: Vec<u8>) -> Vec<u8> {
        record[0] = 21;
        record
    }
    let cases: [(&str, Spoil, u8); 5] = [
        ("a changed byte", change_a_byte, BAD_RECORD_MAC),
        (
            "a changed outer type",
            change_the_outer_type,
            UNEXPECTED_MESSAGE,
        ),
        (
            "HTTP",
            |_| b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            UNEXPECTED_MESSAGE,
        ),
        (
            "a length over 2^14 + 256",
            |_| vec![23, 3, 3, 0xff, 0xff, 0],
            RECORD_OVERFLOW,
        ),
        (
            "shorter than its tag",
            |_| vec![23, 3, 3, 0, 3, 1, 2, 3],
            BAD_RECORD_MAC,
        ),
    ];
    for (what, spoil, alert) in cases {
        let mut wire = on_a_wire().await;
        let record = wire.client_sends(b"spoiled in transit").await;
        wire.deliver(&spoil(record)).await;
        assert!(wire.server_reads().await.is_err(), "{what}");
        // The client hears why, sealed under the key it expects.
        let mut buf = [0u8; 64];
        let heard = tokio::time::timeout(Duration::from_secs(20), wire.client.read(&mut buf))
            .await
            .expect("the client heard nothing")
            .unwrap_err();
        assert!(
            heard.to_string().contains(&format!("TLS alert {alert} ")),
            "{what}: {heard}"
        );
        // The server writes nothing after its alert.
        let more = wire.server.write(b"more").await.unwrap_err();
        assert_eq!(more.kind(), io::ErrorKind::BrokenPipe, "{what}: {more}");
    }

    // A connection cut short is not answered: nobody is there to hear it.
    let mut wire = on_a_wire().await;
    wire.to_server.shutdown().await.unwrap();
    let cut = wire.server_reads().await.unwrap_err();
    assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
    wire.server.write_all(b"still open").await.unwrap();
    wire.server.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let n = wire.client.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"still open");
}

#[tokio::test]
async fn an_idle_stream_holds_no_buffer() {
    let (mut client, mut server) = our_pair().await;
    client.write_all(&pattern(100_000)).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; 100_000];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(
        client.buffered_bytes(),
        0,
        "the sealed records went and their buffer too"
    );
    // A bulk transfer keeps its larger buffer; a message after it, then nothing: the read that
    // finds nothing gives the buffer back.
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut ping = [0u8; 4];
    server.read_exact(&mut ping).await.unwrap();
    let mut one = [0u8; 1];
    let idle =
        tokio::time::timeout(std::time::Duration::from_millis(50), server.read(&mut one)).await;
    assert!(idle.is_err(), "nothing was sent");
    assert_eq!(server.buffered_bytes(), 0);
}

/// Moves bytes from `from` to `to` one at a time until `from` ends.
async fn trickle(mut from: ReadHalf<DuplexStream>, mut to: WriteHalf<DuplexStream>) {
    let mut byte = [0u8; 1];
    while let Ok(1) = from.read(&mut byte).await {
        if to.write_all(&byte).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    let _ = to.shutdown().await;
}

#[tokio::test]
async fn a_handshake_split_at_every_byte_completes_and_the_stream_works() {
    let (server_config, client_config) = configs();
    let (client_io, client_far) = tokio::io::duplex(1 << 16);
    let (server_io, server_far) = tokio::io::duplex(1 << 16);
    let (from_client, to_client) = tokio::io::split(client_far);
    let (from_server, to_server) = tokio::io::split(server_far);
    tokio::spawn(trickle(from_client, to_server));
    tokio::spawn(trickle(from_server, to_client));
    let (client, server) = tokio::join!(
        connect(client_config, localhost(), client_io),
        accept(server_config, server_io)
    );
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    let data = pattern(40_000);
    let (_, received) = tokio::join!(
        send_in_pieces(&mut client, &data, SIZES),
        read_to_end(&mut server)
    );
    assert!(received.unwrap() == data);
}
