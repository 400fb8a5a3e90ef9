//! Criterion benchmarks for the SSE writer and the polling envelope: nanoseconds per event / body, always writing
//! into one reused `Vec<u8>` (cleared between iterations), which is how the engine uses them.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast_protocol::poll::{self, Data, PollMessage};
use ringcast_protocol::sse::{self, Event};
use std::hint::black_box;

/// 100 bytes of single-line JSON, a typical payload.
const PAYLOAD_100: &str = r#"{"user":"alice","room":"general","text":"hello everyone, how is it going today?","ts":1700000000123}"#;

/// A multi-line payload: 6 lines, about 200 bytes, mixed line endings.
const MULTILINE: &str = "first line of the message body\nsecond line, a bit longer than the first one\r\n\
third\n\nfifth line after an empty one, with some more text in it\rsixth and last line of this event";

fn sse_benches(c: &mut Criterion) {
    assert_eq!(PAYLOAD_100.len(), 100);
    let typical = Event {
        id: Some("1234567"),
        data: PAYLOAD_100,
        ..Event::default()
    };
    let multi = Event {
        id: Some("1234568"),
        event: Some("update"),
        retry: None,
        data: MULTILINE,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    for ev in [&typical, &multi] {
        buf.clear();
        assert!(sse::write_event(&mut buf, ev).is_ok());
        assert_eq!(sse::encoded_len(ev).ok(), Some(buf.len()));
    }

    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_event/id+100B", |b| {
        b.iter(|| {
            buf.clear();
            let r = sse::write_event(&mut buf, black_box(&typical));
            (r, buf.len())
        });
    });
    g.bench_function("write_event/id+event+6 lines", |b| {
        b.iter(|| {
            buf.clear();
            let r = sse::write_event(&mut buf, black_box(&multi));
            (r, buf.len())
        });
    });
    g.bench_function("encoded_len/id+100B", |b| {
        b.iter(|| black_box(sse::encoded_len(black_box(&typical))))
    });
    g.bench_function("write_comment/keepalive", |b| {
        b.iter(|| {
            buf.clear();
            sse::write_comment(&mut buf, black_box("ping"));
            black_box(buf.len());
        });
    });
    g.bench_function("parse_last_event_id", |b| {
        b.iter(|| black_box(sse::parse_last_event_id(black_box(b" 18446744073709551"))));
    });
    g.finish();
}

fn poll_benches(c: &mut Criterion) {
    let topics = ["chat", "news", "prices"];
    let messages: Vec<PollMessage<'_>> = (0u64..10)
        .map(|i| PollMessage {
            topic: topics.get((i % 3) as usize).copied().unwrap_or("chat"),
            seq: 1_000_000 + i,
            data: if i % 2 == 0 {
                Data::Json(PAYLOAD_100.as_bytes())
            } else {
                Data::Text("plain text message with a \"quote\" and a newline\n in it")
            },
        })
        .collect();
    let cursor = [
        ("chat", 1_000_009u64),
        ("news", 1_000_007),
        ("prices", 1_000_008),
    ];
    let mut buf: Vec<u8> = Vec::with_capacity(8192);

    let mut g = c.benchmark_group("poll");
    g.throughput(Throughput::Elements(1));
    g.bench_function("write_poll_body/10 messages", |b| {
        b.iter(|| {
            buf.clear();
            poll::write_poll_body(&mut buf, black_box(&messages), black_box(&cursor));
            black_box(buf.len());
        });
    });
    g.finish();

    let clean = PAYLOAD_100.replace('"', "'");
    let dirty = PAYLOAD_100;
    let mut g = c.benchmark_group("json_string");
    g.throughput(Throughput::Bytes(100));
    g.bench_function("write_json_string/100B clean", |b| {
        b.iter(|| {
            buf.clear();
            poll::write_json_string(&mut buf, black_box(&clean));
            black_box(buf.len());
        });
    });
    g.bench_function("write_json_string/100B 14 quotes", |b| {
        b.iter(|| {
            buf.clear();
            poll::write_json_string(&mut buf, black_box(dirty));
            black_box(buf.len());
        });
    });
    g.finish();
}

criterion_group!(benches, sse_benches, poll_benches);
criterion_main!(benches);
