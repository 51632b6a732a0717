//! Micro-benchmarks of what a gateway does for every connection before any byte moves:
//! verifying a lease (offline, Ed25519) and parsing the handshake.
//!
//! `cargo bench -p sdm-proto` (criterion; never part of `cargo test`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sdm_proto::handshake::{self, Reply};
use sdm_proto::lease::{Lease, LeaseSigner, LeaseVerifier};
use uuid::Uuid;

fn signed_lease() -> (Vec<u8>, LeaseVerifier, i64) {
    let pkcs8 = LeaseSigner::generate_pkcs8().expect("key");
    let signer = LeaseSigner::from_pkcs8(&pkcs8).expect("key");
    let now = 1_800_000_000;
    let lease = Lease {
        id: Uuid::new_v4(),
        account_id: Uuid::new_v4(),
        resource_id: Uuid::new_v4(),
        session_id: Uuid::new_v4(),
        issued_at: now,
        expires_at: now + 300,
    };
    let verifier = LeaseVerifier::new([signer.public_key()]);
    (signer.sign(&lease), verifier, now)
}

fn lease(c: &mut Criterion) {
    let (bytes, verifier, now) = signed_lease();
    let mut g = c.benchmark_group("lease");
    g.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&bytes), now, 30).expect("valid"))
    });
    let mut forged = bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    g.bench_function("verify_forged", |b| {
        b.iter(|| verifier.verify(black_box(&forged), now, 30).unwrap_err())
    });
    g.bench_function("decode_unverified", |b| {
        b.iter(|| sdm_proto::lease::decode_unverified(black_box(&bytes)).expect("lease"))
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let (lease, _, _) = signed_lease();
    let mut hello = handshake::encode_hello(&lease, false);
    hello.push(handshake::OPEN);
    hello.extend_from_slice(b"\0\0\0\x08\x04\xd2\x16\x2f"); // an SSLRequest right behind
    let mut g = c.benchmark_group("handshake");
    g.bench_function("decode_hello", |b| {
        b.iter(|| {
            handshake::decode_hello(black_box(&hello))
                .expect("ok")
                .expect("whole")
        })
    });
    g.bench_function("decode_hello_partial", |b| {
        let part = &hello[..40];
        b.iter(|| handshake::decode_hello(black_box(part)).expect("ok"))
    });
    let mut replies = handshake::encode_reply(&Reply::Ready);
    replies.extend(handshake::encode_reply(&Reply::Connected));
    g.bench_function("decode_reply_ready_connected", |b| {
        b.iter(|| {
            let (first, n) = handshake::decode_reply(black_box(&replies))
                .expect("ok")
                .expect("one");
            let (second, _) = handshake::decode_reply(&replies[n..])
                .expect("ok")
                .expect("two");
            (first, second)
        })
    });
    g.bench_function("encode_hello", |b| {
        b.iter(|| handshake::encode_hello(black_box(&lease), true))
    });
    g.finish();
}

criterion_group!(benches, lease, handshake);
criterion_main!(benches);
