//! `serve --audit-retention`: a real control plane removes the records of connections that
//! ended longer ago than the retention, and keeps the record of a connection still open however
//! old it gets. Zero is refused at start.
//!
//! docs/OPERATIONS.md ("Backup") names these tests; the store suite checks the batches on both
//! backends (`audit_records_past_the_retention_go_with_their_queries`).

mod common;
mod processes;
mod support;

use std::time::Duration;

use sdm_core::admin::AuditFilter;
use sdm_testkit::EchoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use processes::{control_plane_with, spawn_control_plane_with};
use support::eventually;

async fn echo_once(stream: &mut TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_past_the_retention_go_and_an_open_connections_record_stays() {
    let cp = control_plane_with(&["--audit-retention", "3s"]).await;
    let echo = EchoServer::start().unwrap();
    cp.echo_resource("echo", &echo, None).await;
    let (_, session) = cp.session("etl", &["echo"]).await;
    let tunnel = session.connect("echo").await.unwrap();
    let addr = tunnel.local_addr().tcp().unwrap();

    let mut held = TcpStream::connect(addr).await.unwrap();
    echo_once(&mut held).await;
    let mut brief = TcpStream::connect(addr).await.unwrap();
    echo_once(&mut brief).await;
    drop(brief);

    let records = || async {
        cp.admin
            .audit(&AuditFilter::default().resource("echo"))
            .await
            .unwrap()
            .records
    };
    // Both are recorded, one ended...
    assert!(
        eventually(Duration::from_secs(30), async || {
            let r = records().await;
            r.len() == 2 && r.iter().filter(|c| c.ended_at.is_some()).count() == 1
        })
        .await,
        "{:?}",
        records().await
    );
    // ...then only the ended one goes, once it is older than 3 s.
    assert!(
        eventually(Duration::from_secs(60), async || records().await.len() == 1).await,
        "the ended connection's record was never removed: {:?}",
        records().await
    );
    let left = records().await;
    assert_eq!(
        left[0].ended_at, None,
        "the open connection's record went: {left:?}"
    );
    // Well past the retention, the held connection works and its record is still there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    echo_once(&mut held).await;
    assert_eq!(records().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut proc = spawn_control_plane_with(&data, "127.0.0.1:0", &["--audit-retention", "0"]);
    let (code, stderr) = proc.wait_exit();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at least 1 s"), "{stderr}");
    assert!(!data.exists(), "a refused start created the data dir");
}
