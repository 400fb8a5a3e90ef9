//! Criterion benchmarks for the pub/sub wire protocol: parsing a typical `pub` op from a client frame and writing
//! the `msg` object every subscriber receives, into one reused `Vec<u8>` as the engine does.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast_protocol::pubsub::{self, ClientOp};
use std::hint::black_box;

/// 100 bytes of single-line JSON, a typical payload.
const PAYLOAD_100: &str = r#"{"user":"alice","room":"general","text":"hello everyone, how is it going today?","ts":1700000000123}"#;

fn pubsub_benches(c: &mut Criterion) {
    assert_eq!(PAYLOAD_100.len(), 100);
    let frame = format!(r#"{{"op":"pub","topic":"chat:general","data":{PAYLOAD_100},"id":12345}}"#);
    assert!(matches!(
        pubsub::parse_client_op(&frame),
        Ok(ClientOp::Pub { data, .. }) if data == PAYLOAD_100
    ));

    let mut g = c.benchmark_group("pubsub");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_client_op/pub+100B", |b| {
        b.iter(|| black_box(pubsub::parse_client_op(black_box(&frame))).is_ok())
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    g.bench_function("write_msg/100B", |b| {
        b.iter(|| {
            buf.clear();
            pubsub::write_msg(
                &mut buf,
                black_box("chat:general"),
                black_box(1_234_567),
                black_box(PAYLOAD_100.as_bytes()),
            );
            black_box(buf.len())
        })
    });
    g.bench_function("write_sse_msg/100B", |b| {
        b.iter(|| {
            buf.clear();
            let r = pubsub::write_sse_msg(
                &mut buf,
                black_box(1_234_567),
                black_box(PAYLOAD_100.as_bytes()),
            );
            black_box((r.is_ok(), buf.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, pubsub_benches);
criterion_main!(benches);
