//! Criterion benchmarks for the HTTP request-head parser and the WebSocket opening handshake: nanoseconds per
//! request for a browser-like upgrade (12 header fields), parse only and the whole
//! parse + validate + accept key + `101` response, writing into one reused `Vec<u8>` as the engine does.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast_protocol::handshake;
use ringcast_protocol::http::{self, EMPTY_HEADER, HeadLimits};
use std::hint::black_box;

/// What Chrome sends for `new WebSocket("ws://example.com:8080/chat?room=lobby", ["chat"])`.
const BROWSER_UPGRADE: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://example.com:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
\r\n";

const SUPPORTED: &[&str] = &["superchat", "chat"];

/// The whole server-side handshake for one request; returns the response length.
fn handshake_once(req_bytes: &[u8], out: &mut Vec<u8>) -> usize {
    let mut headers = [EMPTY_HEADER; 64];
    out.clear();
    match http::parse_request(req_bytes, &mut headers, &HeadLimits::DEFAULT) {
        Ok(Some(req)) => match handshake::validate_upgrade(&req) {
            Ok(up) => {
                let protocol = up.select_protocol(SUPPORTED);
                handshake::write_switching_protocols(out, up.key(), protocol);
            }
            Err(e) => handshake::write_handshake_error(out, e),
        },
        Ok(None) => {}
        Err(e) => handshake::write_http_error(out, e),
    }
    out.len()
}

fn handshake_benches(c: &mut Criterion) {
    let mut out = Vec::with_capacity(1024);
    handshake_once(BROWSER_UPGRADE, &mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let chosen: &[u8] = b"\r\nSec-WebSocket-Protocol: superchat\r\n";
    assert!(
        out.windows(chosen.len()).any(|w| w == chosen),
        "{}",
        String::from_utf8_lossy(&out)
    );

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut headers = [EMPTY_HEADER; 64];
            let req = http::parse_request(
                black_box(BROWSER_UPGRADE),
                &mut headers,
                &HeadLimits::DEFAULT,
            );
            black_box(req.map(|r| r.map(|r| r.head_len())))
        })
    });
    g.bench_function("parse+validate+accept+101", |b| {
        b.iter(|| black_box(handshake_once(black_box(BROWSER_UPGRADE), &mut out)))
    });
    g.bench_function("accept_key_only", |b| {
        b.iter(|| {
            black_box(handshake::accept_key(black_box(
                b"dGhlIHNhbXBsZSBub25jZQ==",
            )))
        })
    });
    // The same request arriving in two reads: the first parse sees half the head and returns Ok(None).
    let half = BROWSER_UPGRADE.len() / 2;
    g.bench_function("parse_split_in_two", |b| {
        b.iter(|| {
            let mut headers = [EMPTY_HEADER; 64];
            let first = http::parse_request(
                black_box(&BROWSER_UPGRADE[..half]),
                &mut headers,
                &HeadLimits::DEFAULT,
            );
            assert!(matches!(first, Ok(None)));
            let mut headers = [EMPTY_HEADER; 64];
            let req = http::parse_request(
                black_box(BROWSER_UPGRADE),
                &mut headers,
                &HeadLimits::DEFAULT,
            );
            black_box(req.map(|r| r.map(|r| r.head_len())))
        })
    });
    g.finish();
}

criterion_group!(benches, handshake_benches);
criterion_main!(benches);
