//! Micro-benchmarks of the splice loop (`relay`) and of framing (`Framed`) between TCP
//! connections on 127.0.0.1, one thread, no TLS: what the pump adds to the kernel's work.
//! (In-memory pipes would measure their own copies instead: the pump copies nothing itself.)
//!
//! - `small_message/{plain,framed}`: 64 bytes through the pump (what a query costs the relay);
//! - `bulk_1mib/{plain,framed}`: 1 MiB through it (buffer growth, copies, frame headers).
//!
//! "framed" reads frames on the near side and writes plain bytes on the far side, as the
//! gateway does for a framed stream. Here a frame's header and its bytes are two reads from the
//! socket; under TLS both come from the TLS library's buffer.
//!
//! `cargo bench -p sdm-relay` (criterion; never part of `cargo test`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sdm_relay::{Framed, MAX_FRAME, relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// `near → pump → far`: what the benchmark writes into `near` comes out of `far`.
struct Path {
    near: TcpStream,
    far: TcpStream,
}

/// Both ends of a TCP connection on 127.0.0.1, with Nagle off as in sdm.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (a, b) = (dialed.expect("connect"), accepted.expect("accept").0);
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

fn start(rt: &Runtime, framed: bool) -> Path {
    let (near, pump_near) = rt.block_on(pair());
    let (pump_far, far) = rt.block_on(pair());
    rt.spawn(async move {
        let mut pump_far = pump_far;
        if framed {
            let mut from = Framed::new(pump_near);
            from.start();
            let _ = relay(&mut from, &mut pump_far).await;
        } else {
            let mut from = pump_near;
            let _ = relay(&mut from, &mut pump_far).await;
        }
    });
    Path { near, far }
}

/// `bytes` as the pump's near side receives them: frames of at most `MAX_FRAME` when framed
/// (encoded once, outside the measurement, as sdm writes a header with its data in one write).
fn wire(bytes: &[u8], framed: bool) -> Vec<u8> {
    if !framed {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 4 * bytes.len().div_ceil(MAX_FRAME));
    for chunk in bytes.chunks(MAX_FRAME) {
        out.extend_from_slice(&u32::try_from(chunk.len()).expect("frame").to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Each benchmark runs over a plain and a framed pump.
const VARIANTS: [(&str, bool); 2] = [("plain", false), ("framed", true)];

fn pump(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("small_message");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    let msg = [7u8; 64];
    let mut out = [0u8; 64];
    for (name, framed) in VARIANTS {
        let mut path = start(&rt, framed);
        let sent = wire(&msg, framed);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    path.near.write_all(black_box(&sent)).await.expect("write");
                    path.far.read_exact(&mut out).await.expect("read");
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("bulk_1mib");
    g.measurement_time(Duration::from_secs(3));
    let bulk = vec![42u8; 1 << 20];
    let mut sink = vec![0u8; 1 << 20];
    g.throughput(Throughput::Bytes(bulk.len() as u64));
    for (name, framed) in VARIANTS {
        let mut path = start(&rt, framed);
        let sent = wire(&bulk, framed);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let Path { near, far } = &mut path;
                    let write = async { near.write_all(&sent).await.expect("write") };
                    let read = async { far.read_exact(&mut sink).await.expect("read") };
                    tokio::join!(write, read);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pump);
criterion_main!(benches);
