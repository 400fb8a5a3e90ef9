//! Criterion benchmarks for the RFC 6455 frame codec: decode of masked client frames (server role), encode of
//! server frames into a reused buffer, and `apply_mask` throughput.
//!
//! Decoding unmasks in place. For binary frames the benchmark decodes the *same* buffer every iteration: the
//! header is never modified, and the payload simply toggles between masked and unmasked, so every iteration
//! does exactly the work of decoding a fresh frame (header parse + full unmask) with no copy in the timing.
//! For text frames, whose payload must be valid UTF-8 after unmasking, each iteration first copies the frame
//! from a template into a reused buffer; that memcpy is included in the `text+copy` numbers.
//!
//! `decode_server_text` is the subscriber's side (a browser's, the load generator's): unmasked server text frames
//! of a pub/sub delivery, decoded where they lie, UTF-8 validation included.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast_protocol::ws::{
    Client, Decoder, DecoderConfig, Message, OpCode, Server, apply_mask, encode_client_frame,
    encode_server_frame,
};

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

fn masked_frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut key = || [0x12, 0x34, 0x56, 0x78];
    encode_client_frame(&mut wire, true, op, payload, &mut key);
    wire
}

fn decode_one(dec: &mut Decoder<Server>, buf: &mut [u8]) -> usize {
    match dec.decode(buf) {
        Ok((n, Some(Message::Binary(b)))) => {
            black_box(b);
            n
        }
        Ok((n, Some(Message::Text(s)))) => {
            black_box(s);
            n
        }
        other => panic!("unexpected decode result {other:?}"),
    }
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_masked");
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let payload = vec![0xabu8; size];
        let mut wire = masked_frame(OpCode::Binary, &payload);
        let mut dec = Decoder::<Server>::new(DecoderConfig::default());
        g.bench_function(BenchmarkId::new("binary_in_place", name), |b| {
            b.iter(|| decode_one(&mut dec, black_box(&mut wire)))
        });

        let text = "a".repeat(size);
        let template = masked_frame(OpCode::Text, text.as_bytes());
        let mut buf = template.clone();
        g.bench_function(BenchmarkId::new("text+copy", name), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&template));
                decode_one(&mut dec, &mut buf)
            })
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_server");
    for (size, name) in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let payload = vec![0x5au8; size];
        let mut out = Vec::with_capacity(size + 14);
        g.bench_function(BenchmarkId::new("binary", name), |b| {
            b.iter(|| {
                out.clear();
                encode_server_frame(&mut out, true, OpCode::Binary, black_box(&payload));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn bench_mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_mask");
    let mut buf = vec![0x11u8; 64 * 1024];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("64KiB_aligned", |b| {
        b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
    });
    g.bench_function("64KiB_offset3_phase1", |b| {
        b.iter(|| apply_mask(black_box(&mut buf[3..]), [1, 2, 3, 4], 1))
    });
    g.finish();
}

fn bench_decode_server_text(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_server_text");
    let msg = br#"{"type":"msg","topic":"load.0","seq":123456,"data":{"t":1733500000123456789,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
    let accented = "{\"type\":\"msg\",\"topic\":\"fx\",\"seq\":7,\"data\":{\"text\":\"prix en baisse à 1,07 €, ça continue\"}}";
    for (name, payload) in [
        ("pubsub_msg_ascii", &msg[..]),
        ("pubsub_msg_utf8", accented.as_bytes()),
    ] {
        let mut wire = Vec::new();
        encode_server_frame(&mut wire, true, OpCode::Text, payload);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        let mut dec = Decoder::<Client>::new(DecoderConfig::default());
        g.bench_function(name, |b| {
            b.iter(|| match dec.decode(black_box(&mut wire)) {
                Ok((n, Some(Message::Text(s)))) => {
                    black_box(s);
                    n
                }
                other => panic!("unexpected decode result {other:?}"),
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_decode_server_text,
    bench_encode,
    bench_mask
);
criterion_main!(benches);
