//! Micro-benchmarks of the data path, in one process: `Session::dial` → TLS 1.3 → the gateway's
//! splice loop → an echo server, all on 127.0.0.1 (an in-process `sdm-server`).
//!
//! - `round_trip_64b`: one small message there and back on an open connection (what a query
//!   costs the tunnel);
//! - `bulk_1mib`: 1 MiB written and read back (TLS records, buffer sizes, copies);
//! - `new_connection`: `dial` (a fresh gateway connection: TLS resumption, lease, upstream
//!   connect) to the first echoed byte.
//!
//! `cargo bench -p sdm-core` (criterion; never part of `cargo test`).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sdm_core::admin::{AdminClient, NewResource};
use sdm_core::{ResourceKind, Session};
use sdm_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    _server: sdm_server::RunningServer,
    _echo: sdm_testkit::EchoServer,
    _dir: tempfile::TempDir,
    session: Session,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::builder()
        .data_dir(dir.path().join("data"))
        .listen("127.0.0.1:0".parse().expect("addr"))
        .gateway_listen("127.0.0.1:0".parse().expect("addr"))
        .start()
        .await
        .expect("server");
    let echo = sdm_testkit::EchoServer::start().expect("echo");
    let admin = AdminClient::new(server.admin_token().expect("token")).expect("admin");
    admin
        .create_resource(&NewResource {
            name: "echo".into(),
            kind: ResourceKind::Tcp,
            hostname: "127.0.0.1".into(),
            port: Some(echo.port()),
            port_override: None,
            tags: BTreeMap::new(),
            credentials: None,
            upstream_tls: None,
            databases: Vec::new(),
            replication: false,
            ssh: None,
        })
        .await
        .expect("resource");
    let token = admin
        .create_service_account("bench")
        .await
        .expect("account")
        .token;
    admin.grant("bench", "echo").await.expect("grant");
    let session = Session::login(&token).await.expect("login");
    Setup {
        _server: server,
        _echo: echo,
        _dir: dir,
        session,
    }
}

fn data_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let setup = rt.block_on(setup());
    let mut g = c.benchmark_group("data_path");
    g.measurement_time(Duration::from_secs(5));

    let mut stream = rt.block_on(setup.session.dial("echo")).expect("dial");
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip_64b", |b| {
        b.iter(|| {
            rt.block_on(async {
                stream.write_all(black_box(&msg)).await.expect("write");
                stream.read_exact(&mut back).await.expect("read");
            })
        })
    });

    let bulk = vec![42u8; 1 << 20];
    let mut sink = vec![0u8; 1 << 20];
    g.throughput(Throughput::Bytes(bulk.len() as u64));
    g.bench_function("bulk_1mib", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut r, mut w) = tokio::io::split(&mut stream);
                let write = async { w.write_all(&bulk).await.expect("write") };
                let read = async { r.read_exact(&mut sink).await.expect("read") };
                tokio::join!(write, read);
            })
        })
    });
    drop(stream);

    g.throughput(Throughput::Elements(1));
    g.bench_function("new_connection", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut s = setup.session.dial("echo").await.expect("dial");
                s.write_all(b"!").await.expect("write");
                let mut one = [0u8; 1];
                s.read_exact(&mut one).await.expect("read");
            })
        })
    });
    g.finish();
    drop(setup);
}

criterion_group!(benches, data_path);
criterion_main!(benches);
