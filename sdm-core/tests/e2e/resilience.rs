//! Unattended jobs: access taken away is obeyed, leases renew without a blip, a control plane
//! outage is ridden out, gateways fail over.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sdm_core::admin::AuditFilter;
use sdm_core::{ErrorKind, Session};
use sdm_testkit::{EchoServer, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Fixture, eventually};
use crate::tunnel::echo_once;

/// Generous bound for "soon": the design bound is the gateway's 1 s revocation poll plus one
/// re-check, but the machine is shared, so the tests allow more and print what they saw.
const SOON: Duration = Duration::from_secs(15);

async fn held_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hold").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    s
}

/// Waits until the gateway cuts `s` (EOF or error), for at most [`SOON`].
async fn cut_within_soon(s: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 16];
    match tokio::time::timeout(SOON, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_open_connections_and_tunnels() {
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    for (account, revoke, expected) in [
        ("suspended", "suspend", ErrorKind::Unauthenticated),
        ("ungranted", "revoke", ErrorKind::Forbidden),
        ("deleted", "delete", ErrorKind::Unauthenticated),
        ("rotated", "rotate", ErrorKind::Unauthenticated),
    ] {
        let session = fx.session_with(account, &["echo"]).await;
        let tunnel = session.connect("echo").await.unwrap();
        let mut open = held_connection(tunnel.local_addr().tcp().unwrap()).await;
        match revoke {
            "suspend" => drop(fx.admin.suspend_account(account).await.unwrap()),
            "revoke" => fx.admin.revoke(account, "echo").await.unwrap(),
            "delete" => fx.admin.delete_account(account).await.unwrap(),
            _ => drop(fx.admin.rotate_token(account).await.unwrap()),
        }
        let took = cut_within_soon(&mut open).await;
        assert!(
            took.is_some(),
            "{account}: the open connection was not closed"
        );
        println!(
            "{account}: open connection closed {:?} after the {revoke}",
            took.unwrap()
        );

        // The tunnel learns why and closes with that reason.
        assert!(
            eventually(SOON, async || !tunnel.is_open()).await,
            "{account}: the tunnel stayed open"
        );
        let reason = tunnel.close_reason().expect("a reason");
        assert_eq!(reason.kind(), expected, "{account}: {reason}");
        // New connections are refused at once.
        let err = session.dial("echo").await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::ResourceNotFound
            ),
            "{account}: {err}"
        );
    }
    // The audit trail says why each connection ended.
    let records = fx
        .admin
        .audit(&AuditFilter::default().resource("echo"))
        .await
        .unwrap()
        .records;
    let revoked = records
        .iter()
        .filter(|r| matches!(r.outcome.as_str(), "unauthenticated" | "forbidden"))
        .count();
    assert!(revoked >= 4, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_renew_without_a_blip() {
    let fx = Fixture::start_with(|b| b.lease_ttl(Duration::from_secs(2))).await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let mut stream = held_connection(tunnel.local_addr().tcp().unwrap()).await;
    // Eight seconds: four lease lifetimes. The long connection keeps streaming and new ones
    // keep opening, through the tunnel and by dial.
    let until = Instant::now() + Duration::from_secs(8);
    let mut rounds = 0u32;
    while Instant::now() < until {
        let payload = rounds.to_be_bytes();
        stream.write_all(&payload).await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(SOON, stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, payload);
        assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
        let mut dialed = session.dial("echo").await.unwrap();
        dialed.write_all(b"d").await.unwrap();
        let mut one = [0u8; 1];
        dialed.read_exact(&mut one).await.unwrap();
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rounds >= 10, "only {rounds} rounds");
    assert!(tunnel.is_open());
    assert!(tunnel.last_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_outage_is_ridden_out() {
    let fx = Fixture::start_with(|b| b.lease_ttl(Duration::from_secs(6))).await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let token = fx.service_account("etl").await;
    fx.admin.grant("etl", "echo").await.unwrap();
    let mut relay = Relay::start(fx.server.api_addr()).unwrap();
    let session = Session::builder()
        .token(&token)
        .api_url(format!("https://127.0.0.1:{}", relay.port()))
        .login()
        .await
        .unwrap();
    let tunnel = session.connect("echo").await.unwrap();
    let mut stream = held_connection(tunnel.local_addr().tcp().unwrap()).await;

    relay.cut();
    let cut_at = Instant::now();
    // Until the lease runs out, new and existing connections keep working.
    while cut_at.elapsed() < Duration::from_secs(3) {
        assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stream.write_all(b"more").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    // Renewal is failing, and the tunnel says so, but stays open.
    assert!(eventually(SOON, async || tunnel.last_error().is_some()).await);
    assert_eq!(
        tunnel.last_error().unwrap().kind(),
        ErrorKind::ApiUnreachable
    );
    assert!(tunnel.is_open());
    // Once the lease has expired, new connections cannot be made and dial says why.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(cut_at.elapsed())).await;
    let err = session.dial("echo").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ApiUnreachable, "{err}");
    // The control plane comes back: renewal recovers and everything works again.
    relay.restore().unwrap();
    assert!(
        eventually(Duration::from_secs(45), async || tunnel
            .last_error()
            .is_none())
        .await,
        "renewal did not recover"
    );
    assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
    session.dial("echo").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_fail_over_and_come_back() {
    let fx = Fixture::start_with(|b| b.lease_ttl(Duration::from_secs(2))).await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let second = fx
        .server
        .start_gateway("second", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let second_addr = second.local_addr();
    let session = fx.session_with("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let through = async |gateway: &str| -> usize {
        let records = fx
            .admin
            .audit(&AuditFilter::default().resource("echo").limit(1000))
            .await
            .unwrap()
            .records;
        records
            .iter()
            .filter(|r| r.gateway == gateway && r.outcome == "ok")
            .count()
    };

    // Kill the second gateway (as a crash would); every new connection still succeeds.
    second.kill().await;
    let killed_at = sdm_proto::unix_now();
    for _ in 0..30 {
        assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
        let mut d = session.dial("echo").await.unwrap();
        d.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        d.read_exact(&mut one).await.unwrap();
    }
    // Bring it back on the same address: it is used again (leases start at either gateway).
    let back = fx
        .server
        .start_gateway("second", second_addr)
        .await
        .unwrap();
    let used_again = eventually(Duration::from_secs(40), async || {
        assert_eq!(echo_once(tunnel.local_addr().tcp().unwrap()).await, b"ping");
        let records = fx
            .admin
            .audit(
                &AuditFilter::default()
                    .resource("echo")
                    .since(killed_at)
                    .limit(1000),
            )
            .await
            .unwrap()
            .records;
        records
            .iter()
            .any(|r| r.gateway == "second" && r.outcome == "ok")
    })
    .await;
    assert!(used_again, "the gateway that came back was not used again");
    assert!(through("embedded").await > 0);
    back.stop().await;
}
