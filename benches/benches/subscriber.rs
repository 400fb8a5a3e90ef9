//! Criterion benchmark of the load generator's subscriber: the user-space work per delivery of a broadcast flood
//! (frame decode, UTF-8 check, classification, seq check, send-stamp lookup, latency record), over one read of
//! 900 deliveries in the layout ringcast and the peers write (`{"type":"msg","topic":…,"seq":N,"data":…}` with the
//! flood's 64-byte payload). In a flood at 10,000 subscribers this loop decides how many deliveries a second one
//! client core can count; the kernel's copy and receive path come on top.
//!
//! The stamp cache starts warm, as in a flood (each message reaches every subscriber of a thread, so all but the
//! first lookup of a seq hit); each iteration checks a fresh subscriber, so every seq is new to it.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringcast_load::fanout::{StampCache, Sub, ws_input};
use ringcast_load::net::ws_decoder;
use ringcast_load::stats::Tally;
use ringcast_protocol::ws::{OpCode, encode_server_frame};

const DELIVERIES: u64 = 900;

fn flood_read() -> Vec<u8> {
    let mut wire = Vec::new();
    let t0 = 1_733_500_000_123_456_789u64;
    for seq in 1..=DELIVERIES {
        let mut payload = format!("{{\"t\":{},\"p\":\"", t0 + seq * 350);
        while payload.len() < 62 {
            payload.push('x');
        }
        payload.push_str("\"}");
        let text = format!(r#"{{"type":"msg","topic":"load.0","seq":{seq},"data":{payload}}}"#);
        encode_server_frame(&mut wire, true, OpCode::Text, text.as_bytes());
    }
    wire
}

fn bench_subscriber(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscriber");
    let wire = flood_read();
    g.throughput(Throughput::Elements(DELIVERIES));
    let mut dec = ws_decoder();
    let mut stamps = StampCache::new();
    let mut tally = Tally::default();
    let mut pongs = Vec::new();
    let now = 1_733_500_001_000_000_000u64;
    // Warm the cache and check the input once.
    let mut sub = Sub::new(0, "load.0");
    let mut first = wire.clone();
    let r = ws_input(
        &mut first,
        &mut dec,
        &mut sub,
        &mut tally,
        &mut stamps,
        now,
        &mut pongs,
    );
    assert!(matches!(r, Ok(ref r) if r.delivered == DELIVERIES && r.consumed == wire.len()));
    g.bench_function("ws_read_of_900_flood_deliveries", |b| {
        b.iter_batched_ref(
            || (wire.clone(), Sub::new(0, "load.0")),
            |(input, sub)| {
                let r = ws_input(
                    input,
                    &mut dec,
                    sub,
                    &mut tally,
                    &mut stamps,
                    now,
                    &mut pongs,
                );
                black_box(r.map(|r| r.delivered).unwrap_or(0))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_subscriber);
criterion_main!(benches);
