//! Property test of the engine's read path end to end, with no network peer: arbitrary byte streams, cut at
//! arbitrary points, are fed into one connection of a running two-core server through a Unix socketpair whose
//! server end is handed to a core as if it had been accepted (`ServerHandle::adopt`).
//!
//! The streams mix what a hostile client sends: WebSocket upgrades, well-formed and malformed frames (unmasked,
//! reserved bits and opcodes, fragments, lying 64-bit lengths, oversized payloads, bad close payloads), pub/sub ops
//! (valid, near misses, direct messages), pipelined HTTP requests (every route, oversized heads, chunked and huge
//! bodies) and raw garbage. Each chunk is written only once the server has read the previous one (the socket's
//! unread byte count is back to zero), so the server really sees those read boundaries.
//!
//! Invariants, per stream:
//! - the server's output is well formed: HTTP responses, then (after a `101`) unfragmented, unmasked server frames
//!   with no reserved bits, pub/sub text frames that are JSON objects of a known `type`, close frames with a sendable
//!   code and a UTF-8 reason, and nothing after a close frame or a `connection: close` response;
//! - every rejection ends the connection: when the server closes on its own, the last thing it sent is a close
//!   frame or a `connection: close` response (never a silent drop), and after either of those it closes without
//!   waiting for the client; a connection the server keeps is closed by it once the client's side ends;
//! - bounded state: after each stream the per-core open-connection and subscription gauges are back to what the
//!   control connections hold (nothing leaks), and the process RSS stays within a bound after warm-up;
//! - the server keeps serving: after each stream, two control connections (one per core) publish and receive a
//!   message through topic owners on both cores.
//!
//! `PROPTEST_CASES` sets the number of streams (default 128, about two seconds). Long runs:
//! `PROPTEST_CASES=5000 READ_PATH_SECS=600 cargo test --release -p ringcast-engine --lib read_path -- --nocapture`
//! (rounds of 5,000 streams, each with a fresh seed, for at least ten minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};

use crate::config::{Config, CoreSet, Driver};
use crate::server::ServerHandle;

const CORES: usize = 2;
const MAX_FRAME: usize = 8 * 1024;
const MAX_MESSAGE: usize = 16 * 1024;
const MAX_HEAD: usize = 2048;
/// Most chunks one stream is cut into (the rest of the stream goes in the last one).
const MAX_CHUNKS: usize = 256;
const UPGRADE_WS: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const UPGRADE_ECHO: &[u8] =
    b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn config() -> Config {
    Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        cores: CoreSet::Count(CORES),
        pin_threads: false,
        driver: match std::env::var("RINGCAST_TEST_DRIVER").as_deref() {
            Ok("uring") => Driver::Uring,
            Ok("epoll") => Driver::Epoll,
            _ => Driver::Auto,
        },
        max_frame_size: MAX_FRAME,
        max_message_size: MAX_MESSAGE,
        max_head_bytes: MAX_HEAD,
        max_headers: 16,
        close_timeout: Duration::from_millis(500),
        poll_timeout: Duration::from_millis(100),
        poll_timeout_max: Duration::from_millis(200),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------------------------

/// A client frame, encoded as told (including lies).
#[derive(Clone, Debug)]
struct ClientFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    mask: [u8; 4],
    /// Written in the header instead of the payload's length.
    lie: Option<u64>,
    payload: Vec<u8>,
}

impl ClientFrame {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 15));
        let len = self.lie.unwrap_or(self.payload.len() as u64);
        let m = u8::from(self.masked) << 7;
        if len < 126 {
            out.push(m | len as u8);
        } else if len <= u64::from(u16::MAX) {
            out.push(m | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(m | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&self.mask);
            out.extend(
                self.payload
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ self.mask[i % 4]),
            );
        } else {
            out.extend_from_slice(&self.payload);
        }
    }
}

fn topic() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("t"),
        Just("chat"),
        Just("a.b"),
        Just("prices:EURUSD"),
        Just(""),
        Just("bad topic"),
    ]
}

/// Pub/sub op texts: valid ops, direct messages and near misses.
fn op_text() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![
        Just(String::new()),
        (0u32..100).prop_map(|n| format!(",\"id\":{n}")),
        Just(",\"id\":\"x\"".to_string()),
    ];
    prop_oneof![
        (topic(), id.clone(), proptest::option::of(0u64..50)).prop_map(|(t, id, since)| {
            let since = since.map_or(String::new(), |s| format!(",\"since\":{s}"));
            format!(r#"{{"op":"sub","topic":"{t}"{since}{id}}}"#).into_bytes()
        }),
        (topic(), id.clone())
            .prop_map(|(t, id)| format!(r#"{{"op":"unsub","topic":"{t}"{id}}}"#).into_bytes()),
        (topic(), id.clone(), "[a-z0-9]{0,40}").prop_map(|(t, id, d)| {
            format!(r#"{{"op":"pub","topic":"{t}","data":"{d}"{id}}}"#).into_bytes()
        }),
        (id.clone(), "[a-z]{0,8}").prop_map(|(id, u)| {
            format!(r#"{{"op":"pub","user":"{u}","data":1{id}}}"#).into_bytes()
        }),
        (id, topic()).prop_map(|(id, t)| {
            format!(r#"{{"op":"pub","topic":"{t}","user":"u","data":1{id}}}"#).into_bytes()
        }),
        Just(br#"{"op":"sub","topic":"t","topic":"u"}"#.to_vec()),
        Just(b"[1,2]".to_vec()),
        Just(b"{\"op\":".to_vec()),
        any::<String>().prop_map(String::into_bytes),
    ]
}

fn close_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(vec![3]),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(c, r)| {
            let mut v = c.to_be_bytes().to_vec();
            v.extend(r);
            v
        }),
        prop_oneof![
            Just(1000u16),
            Just(1001),
            Just(1005),
            Just(3000),
            Just(4999)
        ]
        .prop_map(|c| c.to_be_bytes().to_vec()),
    ]
}

fn frame() -> impl Strategy<Value = ClientFrame> {
    let opcode = prop_oneof![
        6 => Just(1u8),
        1 => Just(2u8),
        2 => Just(0u8),
        1 => Just(8u8),
        2 => Just(9u8),
        1 => Just(10u8),
        1 => 3u8..8,
        1 => 11u8..16,
    ];
    let payload = prop_oneof![
        6 => op_text(),
        2 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (MAX_FRAME - 2..MAX_FRAME + 2, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        1 => close_payload(),
    ];
    let lie = prop_oneof![
        20 => Just(None),
        1 => Just(Some(1u64 << 63)),
        1 => Just(Some(u64::MAX)),
        1 => Just(Some(1u64 << 32)),
        1 => (0u64..70_000).prop_map(Some),
    ];
    (
        prop_oneof![8 => Just(true), 1 => Just(false)],
        prop_oneof![15 => Just(0u8), 1 => 1u8..8],
        opcode,
        prop_oneof![20 => Just(true), 1 => Just(false)],
        any::<[u8; 4]>(),
        lie,
        payload,
    )
        .prop_map(
            |(fin, rsv, opcode, masked, mask, lie, payload)| ClientFrame {
                fin,
                rsv,
                opcode,
                masked,
                mask,
                lie,
                payload,
            },
        )
}

/// An HTTP request, well formed or not.
fn http_request() -> impl Strategy<Value = Vec<u8>> {
    let simple = prop_oneof![
        Just("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /sse/t HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /sse/bad%ZZ HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /poll/t?since=0&timeout=1 HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /messages/t?since=0 HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_string()),
        Just("GET /healthz HTTP/1.0\r\n\r\n".to_string()),
        Just("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string()),
        Just("OPTIONS /publish/t HTTP/1.1\r\nOrigin: http://a\r\n\r\n".to_string()),
        Just("DELETE /publish/t HTTP/1.1\r\n\r\n".to_string()),
        Just(
            "POST /publish/t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_string()
        ),
        Just("POST /publish/t HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n".to_string()),
        Just("POST /publish/t HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_string()),
        Just(format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(20))),
        Just(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD))),
        Just("GARBAGE\r\n\r\n".to_string()),
        Just("\r\n\r\n".to_string()),
    ];
    prop_oneof![
        6 => simple.prop_map(String::into_bytes),
        2 => Just(UPGRADE_WS.to_vec()),
        1 => Just(UPGRADE_ECHO.to_vec()),
        2 => (op_text(), any::<bool>()).prop_map(|(body, json)| {
            let ct = if json { "Content-Type: application/json\r\n" } else { "" };
            let mut r = format!(
                "POST /publish/t HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend(body);
            r
        }),
        1 => "[ -~]{0,40}\r\n(([ -~]{0,30}\r\n){0,3})\r\n".prop_map(String::into_bytes),
    ]
}

/// One piece of a well-behaved stream: well-formed frames carrying mostly valid ops, pings, pongs and fragmented
/// messages, so that streams also get deep into the pub/sub state (subscriptions, publishes, replies).
fn clean_item() -> impl Strategy<Value = Vec<u8>> {
    let mask = any::<[u8; 4]>();
    let whole = |opcode: u8, payload: Vec<u8>, mask: [u8; 4]| {
        let mut v = Vec::new();
        ClientFrame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            mask,
            lie: None,
            payload,
        }
        .encode(&mut v);
        v
    };
    prop_oneof![
        8 => (op_text(), mask).prop_map(move |(p, m)| whole(1, p, m)),
        1 => (proptest::collection::vec(any::<u8>(), 0..125), mask)
            .prop_map(move |(p, m)| whole(9, p, m)),
        1 => (proptest::collection::vec(any::<u8>(), 0..125), mask)
            .prop_map(move |(p, m)| whole(10, p, m)),
        2 => (op_text(), 1usize..4, mask).prop_map(move |(p, parts, m)| {
            // One message in `parts` fragments (cut anywhere, UTF-8 included), a ping in between.
            let mut v = Vec::new();
            let step = p.len().div_ceil(parts).max(1);
            let pieces: Vec<&[u8]> = if p.is_empty() { vec![&p[..]] } else { p.chunks(step).collect() };
            for (i, piece) in pieces.iter().enumerate() {
                ClientFrame {
                    fin: i + 1 == pieces.len(),
                    rsv: 0,
                    opcode: if i == 0 { 1 } else { 0 },
                    masked: true,
                    mask: m,
                    lie: None,
                    payload: piece.to_vec(),
                }
                .encode(&mut v);
                if i == 0 {
                    v.extend(whole(9, b"mid".to_vec(), m));
                }
            }
            v
        }),
    ]
}

/// One piece of a hostile stream.
fn item() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => frame().prop_map(|f| {
            let mut v = Vec::new();
            f.encode(&mut v);
            v
        }),
        2 => http_request(),
        2 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    stream: Vec<u8>,
    /// Chunk sizes, used in turn.
    cuts: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let prefix = prop_oneof![
        6 => Just(UPGRADE_WS.to_vec()),
        2 => Just(UPGRADE_ECHO.to_vec()),
        3 => Just(Vec::new()),
    ];
    let cuts = prop_oneof![
        proptest::collection::vec(1usize..8, 1..16),
        proptest::collection::vec(1usize..2000, 1..16),
        Just(vec![usize::MAX]),
    ];
    // Half the streams are well-behaved up to at most a couple of hostile pieces at the end; the others are
    // hostile throughout.
    let items = prop_oneof![
        (
            proptest::collection::vec(clean_item(), 0..24),
            proptest::collection::vec(item(), 0..3)
        )
            .prop_map(|(mut a, b)| {
                a.extend(b);
                a
            }),
        proptest::collection::vec(item(), 0..24),
    ];
    (prefix, items, cuts).prop_map(|(prefix, items, cuts)| {
        let mut stream = prefix;
        for i in items {
            stream.extend(i);
        }
        Case { stream, cuts }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------------------------

/// What the server sent, as far as it could be parsed.
#[derive(Debug, Default)]
struct Output {
    /// A `101` was received: the rest is WebSocket frames.
    upgraded: bool,
    /// An SSE stream started: the rest is its events (not checked here).
    sse: bool,
    /// The last complete item ends the connection (a close frame, or a `connection: close` response).
    terminal: bool,
    /// Something complete arrived after a terminal item.
    after_terminal: bool,
    /// HTTP statuses in order.
    statuses: Vec<u16>,
    /// Close codes the server sent.
    closes: Vec<Option<u16>>,
    /// Pub/sub replies by type (and error code).
    replies: Vec<String>,
}

fn header<'a>(h: &'a [httparse::Header<'_>], name: &str) -> Option<&'a [u8]> {
    h.iter()
        .find(|x| x.name.eq_ignore_ascii_case(name))
        .map(|x| x.value)
}

/// Parses the server's bytes; an `Err` is a broken invariant. `pubsub`: the first request upgraded to `/ws`.
fn parse_output(mut b: &[u8], pubsub: bool) -> Result<Output, String> {
    let mut out = Output::default();
    while !b.is_empty() && !out.sse {
        if out.terminal {
            out.after_terminal = true;
            return Ok(out);
        }
        if out.upgraded {
            if b.len() < 2 {
                break;
            }
            let (h0, h1) = (b[0], b[1]);
            if h1 & 0x80 != 0 {
                return Err("a server frame is masked".into());
            }
            if h0 & 0x70 != 0 {
                return Err("a server frame has reserved bits".into());
            }
            if h0 & 0x80 == 0 {
                return Err("the server fragmented a message".into());
            }
            let (len, at) = match h1 & 0x7f {
                126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
                126 | 127 => break,
                n => (u64::from(n), 2),
            };
            if len > (MAX_MESSAGE as u64) * 2 + 1024 {
                return Err(format!("a server frame of {len} bytes"));
            }
            let end = at + len as usize;
            if b.len() < end {
                break;
            }
            let payload = &b[at..end];
            match h0 & 0x0f {
                1 => {
                    let text = std::str::from_utf8(payload)
                        .map_err(|_| "a server text frame is not UTF-8".to_string())?;
                    if pubsub {
                        let v: serde_json::Value = serde_json::from_str(text)
                            .map_err(|e| format!("a pub/sub reply is not JSON ({e}): {text}"))?;
                        let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
                        if !matches!(kind, "msg" | "reset" | "ack" | "error" | "direct") {
                            return Err(format!("a pub/sub reply of unknown type: {text}"));
                        }
                        let code = v.get("code").and_then(|t| t.as_str()).unwrap_or("");
                        out.replies.push(format!(
                            "{kind}{}{code}",
                            if code.is_empty() { "" } else { ":" }
                        ));
                    }
                }
                2 if pubsub => return Err("a binary frame on the pub/sub route".into()),
                2 | 9 | 10 => {}
                8 => {
                    let code = match payload.len() {
                        0 => None,
                        1 => return Err("a one-byte close payload".into()),
                        _ => {
                            let c = u16::from_be_bytes([payload[0], payload[1]]);
                            if !ringcast_protocol::ws::CloseCode(c).is_sendable() {
                                return Err(format!("close code {c} may not be sent"));
                            }
                            if std::str::from_utf8(&payload[2..]).is_err() {
                                return Err("a close reason is not UTF-8".into());
                            }
                            Some(c)
                        }
                    };
                    out.closes.push(code);
                    out.terminal = true;
                }
                op => return Err(format!("server opcode {op}")),
            }
            b = &b[end..];
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(b) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => break,
            Err(e) => return Err(format!("a malformed response ({e})")),
        };
        let status = resp.code.unwrap_or(0);
        out.statuses.push(status);
        if status == 101 {
            out.upgraded = true;
            b = &b[head..];
            continue;
        }
        if header(resp.headers, "content-type").is_some_and(|v| v.starts_with(b"text/event-stream"))
        {
            out.sse = true;
            break;
        }
        let len: usize = header(resp.headers, "content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
            .ok_or_else(|| format!("a {status} response without content-length"))?;
        if b.len() < head + len {
            break;
        }
        let closing = header(resp.headers, "connection").is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
        if closing {
            out.terminal = true;
        }
        b = &b[head + len..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Driving one connection
// ---------------------------------------------------------------------------------------------------------------

/// Bytes written to the socket and not yet read by the server (its send queue; zero once all was read).
fn unread(s: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one c_int through a valid pointer.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 { 0 } else { n as usize }
}

struct Conn {
    s: UnixStream,
    out: Vec<u8>,
    eof: bool,
}

impl Conn {
    /// Reads what is there without waiting.
    fn drain(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        while !self.eof {
            match self.s.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A reset (the server closed with unread input): everything sent before it was read already.
                Err(_) => self.eof = true,
            }
        }
    }

    /// Reads until `done` or `limit` passes.
    fn drain_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.drain();
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Writes the whole chunk unless the server stops reading (false) or closed (false, `eof` may follow).
    fn write_chunk(&mut self, mut chunk: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_millis(20);
        while !chunk.is_empty() {
            match self.s.write(chunk) {
                Ok(n) => chunk = &chunk[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.drain();
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// How the streams ended, for the report: (server closed on its own, closed after its rejection, closed after the
/// client's EOF), the close codes and the HTTP statuses seen.
#[derive(Debug, Default)]
struct Tally {
    ends: [u64; 3],
    closes: std::collections::BTreeMap<Option<u16>, u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    replies: std::collections::BTreeMap<String, u64>,
}

/// Feeds one stream into a fresh connection on `core` and checks every invariant about that connection.
fn run_case(
    server: &ServerHandle,
    core: usize,
    case: &Case,
    tally: &mut Tally,
) -> Result<(), TestCaseError> {
    let (client, server_end) = UnixStream::pair().unwrap();
    client.set_nonblocking(true).unwrap();
    assert!(server.adopt(core, server_end.into()), "core channel full");
    let mut c = Conn {
        s: client,
        out: Vec::new(),
        eof: false,
    };
    let pubsub = case.stream.starts_with(UPGRADE_WS);
    let mut rest = &case.stream[..];
    let mut reading = true;
    for (i, &cut) in case.cuts.iter().cycle().enumerate() {
        if rest.is_empty() || c.eof {
            break;
        }
        let n = if i + 1 >= MAX_CHUNKS {
            rest.len()
        } else {
            cut.min(rest.len())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if !c.write_chunk(chunk) {
            break;
        }
        // Let the server read this chunk on its own before the next one arrives.
        if reading && !c.drain_until(Duration::from_millis(20), |c| c.eof || unread(&c.s) == 0) {
            reading = false;
        }
    }
    // Settle: what the server answers to the last bytes (cross-core replies included) arrives.
    let mut last = c.out.len();
    c.drain_until(Duration::from_millis(200), |c| {
        let quiet = c.out.len() == last;
        last = c.out.len();
        c.eof || quiet
    });
    std::thread::sleep(Duration::from_millis(2));
    c.drain();
    let early = parse_output(&c.out, pubsub).map_err(TestCaseError::fail)?;
    let end = if c.eof {
        0
    } else if early.terminal {
        1
    } else {
        2
    };
    if c.eof {
        prop_assert!(
            early.terminal,
            "the server closed without a close frame or a closing response: {:?}, output {:?}",
            early,
            String::from_utf8_lossy(&c.out)
        );
    } else if early.terminal {
        // A rejection was sent: the server ends the connection without waiting for the client.
        prop_assert!(
            c.drain_until(Duration::from_secs(3), |c| c.eof),
            "still open 3 s after the server's close: {early:?}"
        );
    } else {
        // Still open: once the client's side ends, the server closes too (after answering a held poll).
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        prop_assert!(
            c.drain_until(Duration::from_secs(3), |c| c.eof),
            "still open 3 s after the client's EOF: {:?}",
            parse_output(&c.out, pubsub)
        );
    }
    let all = parse_output(&c.out, pubsub).map_err(TestCaseError::fail)?;
    prop_assert!(!all.after_terminal, "output after a close: {all:?}");
    tally.ends[end] += 1;
    for code in all.closes {
        *tally.closes.entry(code).or_default() += 1;
    }
    for s in all.statuses {
        *tally.statuses.entry(s).or_default() += 1;
    }
    for r in all.replies {
        *tally.replies.entry(r).or_default() += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Control connections and state checks
// ---------------------------------------------------------------------------------------------------------------

fn client_text(text: &str) -> Vec<u8> {
    let mut v = Vec::new();
    ClientFrame {
        fin: true,
        rsv: 0,
        opcode: 1,
        masked: true,
        mask: [1, 2, 3, 4],
        lie: None,
        payload: text.as_bytes().to_vec(),
    }
    .encode(&mut v);
    v
}

/// A pub/sub WebSocket on `core`, subscribed to `topic`; blocking reads with a timeout.
fn control(server: &ServerHandle, core: usize, topic: &str) -> UnixStream {
    let (mut client, server_end) = UnixStream::pair().unwrap();
    assert!(server.adopt(core, server_end.into()));
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(UPGRADE_WS).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    client
        .write_all(&client_text(&format!(
            r#"{{"op":"sub","topic":"{topic}","id":1}}"#
        )))
        .unwrap();
    assert_eq!(next_text(&mut client), r#"{"type":"ack","id":1}"#);
    client
}

/// The next text frame (pings answered are not needed: the control connections talk every case).
fn next_text(s: &mut UnixStream) -> String {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).expect("control connection alive");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            127 => panic!("huge control frame"),
            n => usize::from(n),
        };
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        match h[0] & 0x0f {
            1 => return String::from_utf8(p).unwrap(),
            9 | 10 => {}
            op => panic!("control connection got opcode {op}"),
        }
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf takes no pointers.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn gauges(server: &ServerHandle) -> Vec<(u64, u64)> {
    server
        .stats()
        .iter()
        .map(|s| (s.connections_open(), s.subscribers()))
        .collect()
}

/// What the property closure carries from one stream to the next.
struct Carried {
    n: usize,
    rss_warm: u64,
    rss_max: u64,
    last_report: Instant,
    controls: Vec<UnixStream>,
    tally: Tally,
    leak_reported: bool,
}

#[test]
fn read_path_survives_arbitrary_streams() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    let server = crate::server::start(config()).expect("server starts");
    // A topic owned by each core, so the control round trip crosses both owners.
    let topics: Vec<String> = (0..CORES)
        .map(|core| {
            (0..)
                .map(|n| format!("ctl.{n}"))
                .find(|t| server.publisher().mesh().owner_of(t) == core)
                .unwrap()
        })
        .collect();
    let controls: Vec<UnixStream> = (0..CORES)
        .map(|core| {
            let mut s = control(&server, core, &topics[0]);
            s.write_all(&client_text(&format!(
                r#"{{"op":"sub","topic":"{}","id":2}}"#,
                topics[1]
            )))
            .unwrap();
            assert_eq!(next_text(&mut s), r#"{"type":"ack","id":2}"#);
            s
        })
        .collect();
    let baseline = gauges(&server);
    let started = Instant::now();
    // The runner takes a `Fn`: the state carried across streams lives in a RefCell.
    let state = std::cell::RefCell::new(Carried {
        n: 0,
        rss_warm: 0,
        rss_max: 0,
        last_report: Instant::now(),
        controls,
        tally: Tally::default(),
        leak_reported: false,
    });
    // Long runs: `READ_PATH_SECS` repeats rounds of `cases` streams (each round with a fresh random seed) until
    // that many seconds have passed.
    let min_secs: u64 = std::env::var("READ_PATH_SECS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut rounds = 0u32;
    let result = loop {
        rounds += 1;
        let mut runner = TestRunner::new(PtConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 512,
            max_shrink_time: 60_000,
            ..PtConfig::default()
        });
        let result = runner.run(&case(), |case| {
            let mut st = state.borrow_mut();
            let st = &mut *st;
            let core = st.n % CORES;
            st.n += 1;
            let n = st.n;
            run_case(&server, core, &case, &mut st.tally)?;
            // Nothing leaks: connections and subscriptions go back to what the control connections hold.
            let back = (0..400).any(|_| {
                if gauges(&server) == baseline {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
                false
            });
            if !back && !st.leak_reported {
                // A leak outlives its stream and fails every later one, so shrinking cannot isolate it: print
                // the stream that left it behind.
                st.leak_reported = true;
                eprintln!(
                    "read_path: state left behind by this stream (cuts {:?}): {:?}",
                    case.cuts,
                    String::from_utf8_lossy(&case.stream)
                );
            }
            prop_assert!(
                back,
                "gauges {:?}, baseline {:?}",
                gauges(&server),
                baseline
            );
            // The server still serves: a publish on each core's topic reaches both control connections.
            let sender = n % CORES;
            for topic in &topics {
                st.controls[sender]
                    .write_all(&client_text(&format!(
                        r#"{{"op":"pub","topic":"{topic}","data":{n}}}"#
                    )))
                    .unwrap();
                for s in st.controls.iter_mut() {
                    let m = next_text(s);
                    prop_assert!(
                        m.contains(&format!(r#""topic":"{topic}""#))
                            && m.ends_with(&format!(r#""data":{n}}}"#)),
                        "control got {m}"
                    );
                }
            }
            let rss = rss_bytes();
            st.rss_max = st.rss_max.max(rss);
            if n == 200.min(cases as usize / 2).max(1) {
                st.rss_warm = rss;
            }
            if st.last_report.elapsed() >= Duration::from_secs(30) {
                st.last_report = Instant::now();
                eprintln!(
                    "read_path: {n} streams in {:.0?}, RSS {} KiB (max {} KiB)",
                    started.elapsed(),
                    rss / 1024,
                    st.rss_max / 1024
                );
            }
            Ok(())
        });
        if result.is_err() || started.elapsed() >= Duration::from_secs(min_secs) {
            break result;
        }
    };
    let Carried {
        n,
        rss_warm,
        rss_max,
        controls,
        tally,
        ..
    } = state.into_inner();
    let rss_end = rss_bytes();
    eprintln!(
        "read_path: {n} streams (incl. shrinking) in {rounds} round(s), {:.1?}; RSS after warm-up {} KiB, end {} KiB, max {} KiB",
        started.elapsed(),
        rss_warm / 1024,
        rss_end / 1024,
        rss_max / 1024
    );
    eprintln!(
        "read_path: ends (server closed first, closed after its rejection, closed after client EOF) {:?}; \
         close codes {:?}; HTTP statuses {:?}; pub/sub replies {:?}",
        tally.ends, tally.closes, tally.statuses, tally.replies
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // Bounded memory: no growth with the number of streams once warm (allocator slack allowed).
    assert!(
        rss_end <= rss_warm + (64 << 20),
        "RSS grew from {rss_warm} to {rss_end} bytes"
    );
    drop(controls);
    server.shutdown();
    server.join().expect("no reactor panicked");
}

/// Found by the property test: `sub`, `unsub`, `sub` of one topic before the owner answered the first `sub` sent
/// two subscribe requests, and both answers added the connection to the topic's subscribers, so each message was
/// delivered twice and one entry outlived the connection (a leaked subscription).
#[test]
fn resubscribing_before_the_owner_answers_subscribes_once() {
    let server = crate::server::start(config()).expect("server starts");
    for core in 0..CORES {
        let topic = format!("resub.{core}");
        let mut c = control(&server, core, &format!("other.{core}"));
        let mut batch = Vec::new();
        for (op, id) in [("sub", 2), ("unsub", 3), ("sub", 4)] {
            batch.extend(client_text(&format!(
                r#"{{"op":"{op}","topic":"{topic}","id":{id}}}"#
            )));
        }
        c.write_all(&batch).unwrap();
        let mut acks: Vec<String> = (0..3).map(|_| next_text(&mut c)).collect();
        acks.sort();
        assert_eq!(
            acks,
            [2, 3, 4].map(|id| format!(r#"{{"type":"ack","id":{id}}}"#))
        );
        let publisher = server.publisher();
        publisher.publish_json(&topic, "1").unwrap();
        publisher.publish_json(&topic, "2").unwrap();
        for seq in [1, 2] {
            assert_eq!(
                next_text(&mut c),
                format!(r#"{{"type":"msg","topic":"{topic}","seq":{seq},"data":{seq}}}"#)
            );
        }
        drop(c);
        let deadline = Instant::now() + Duration::from_secs(2);
        while gauges(&server).iter().any(|g| *g != (0, 0)) {
            assert!(
                Instant::now() < deadline,
                "left behind: {:?}",
                gauges(&server)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    server.shutdown();
    server.join().expect("no reactor panicked");
}
