//! Nothing leaks: many open/close cycles through a tunnel leave file descriptors and memory
//! where they were; logging out releases everything the session held.
//!
//! Its own test binary: descriptors and RSS are counted for the whole process, so no other
//! test may run beside these (and these two run one after the other).

use std::time::Duration;

use sdm_testkit::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Fixture, eventually};
use tokio::sync::Mutex;

// The end-to-end fixture, shared with tests/e2e; not every helper is used here.
#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;

/// Held by each test for its whole run.
static ALONE: Mutex<()> = Mutex::const_new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn cycle(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cycles_leave_no_trace() {
    let _alone = ALONE.lock().await;
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let session = fx.session_with("etl", &["echo"]).await;
    let before_tunnel = open_fds();
    let tunnel = session.connect("echo").await.unwrap();
    let addr = tunnel.local_addr().tcp().unwrap();
    // Warm up: the pool fills, buffers and caches reach their working size.
    for _ in 0..300 {
        cycle(addr).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds, rss) = (open_fds(), rss_kib());
    for _ in 0..10_000 {
        cycle(addr).await;
    }
    // Connections close asynchronously on both sides of the gateway: wait for them. Those that
    // came back to the warm pool are kept, up to 4 × its target of 2, each a descriptor on both
    // sides of this in-process gateway, and more of them when the machine is busy: a bounded
    // number, where a leak would grow with the 10,000 cycles.
    const POOL_MAY_KEEP: usize = 2 * 4 * 2;
    let settled = eventually(Duration::from_secs(30), async || {
        open_fds() <= fds + 4 + POOL_MAY_KEEP
    })
    .await;
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    println!("fds {fds} -> {fds_after}, RSS {rss} KiB -> {rss_after} KiB");
    assert!(settled, "file descriptors grew from {fds} to {fds_after}");
    assert!(
        rss_after < rss + 32 * 1024,
        "memory grew from {rss} KiB to {rss_after} KiB"
    );

    // Logging out closes the listener and the warm connections; the descriptors go back.
    session.logout().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let released = eventually(Duration::from_secs(20), async || {
        open_fds() <= before_tunnel + 2
    })
    .await;
    assert!(
        released,
        "after logout: {} descriptors, {before_tunnel} before the tunnel",
        open_fds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handles_releases_everything() {
    let _alone = ALONE.lock().await;
    let fx = Fixture::start().await;
    let echo = EchoServer::start().unwrap();
    fx.tcp_resource("echo", echo.port(), None).await;
    let baseline = open_fds();
    let session = fx.session_with("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let addr = tunnel.local_addr().tcp().unwrap();
    let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.unwrap();
    drop(tunnel);
    drop(session);
    // The carried connection is cut, the listener is gone, the descriptors are released.
    let mut buf = [0u8; 8];
    let cut = tokio::time::timeout(Duration::from_secs(20), held.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "the carried connection survived"
    );
    drop(held);
    // The listener closes in its own task once told to: wait for it (the carried connection's
    // task may see the same signal first).
    let closed = eventually(Duration::from_secs(20), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(closed, "the tunnel's listener still accepts connections");
    let released = eventually(Duration::from_secs(20), async || open_fds() <= baseline + 2).await;
    assert!(released, "{} descriptors, {baseline} before", open_fds());
}
