//! `churn --subscribe` against a fake pub/sub server with a known fault: the cycle's checks must report exactly the
//! injected fault (a skipped seq is lost, a seq at or below `since` a duplicate, no message at all a lost cycle),
//! and nothing for a server that behaves.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use ringcast_load::app::execute;
use ringcast_load::cli::Cli;
use ringcast_load::net::now_ns;
use ringcast_load::stats::Report;
use ringcast_protocol::ws::{Decoder, DecoderConfig, Message, OpCode, Server, encode_server_frame};

/// What the fake server does after acknowledging a `sub` with `since: N`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Sends N+1, published after the ack.
    None,
    /// Sends N+2: N+1 is lost.
    Gap,
    /// Sends N (which the client said it had), then N+1.
    Stale,
    /// Sends nothing.
    Silent,
}

/// Reads a request head; returns its first line and Content-Length.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<(String, usize)> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut len = 0;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        if l == "\r\n" || l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    Some((first, len))
}

fn respond(w: &mut TcpStream, body: &str) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).unwrap();
    w.write_all(body.as_bytes()).unwrap();
}

fn text_frame(s: &str) -> Vec<u8> {
    let mut f = Vec::new();
    encode_server_frame(&mut f, true, OpCode::Text, s.as_bytes());
    f
}

/// A message stamped as published at `t` (ns since the epoch).
fn msg(seq: u64, t: u64) -> Vec<u8> {
    text_frame(&format!(
        r#"{{"type":"msg","topic":"churn.0","seq":{seq},"data":{{"t":{t},"i":0,"p":""}}}}"#
    ))
}

/// The `since` of a sub op.
fn since(op: &[u8]) -> u64 {
    let s = std::str::from_utf8(op).unwrap();
    let rest = &s[s.find("\"since\":").unwrap() + 8..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap()
}

/// Serves one upgraded connection: answers the sub, then the fault's messages; returns at the client's close.
fn serve_ws(mut r: BufReader<TcpStream>, mut w: TcpStream, fault: Fault) {
    w.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .unwrap();
    let mut dec = Decoder::<Server>::new(DecoderConfig::default());
    let mut pending = r.buffer().to_vec();
    r.consume(pending.len());
    let mut buf = vec![0u8; 4096];
    loop {
        let mut pos = 0;
        loop {
            let Ok((n, m)) = dec.decode(&mut pending[pos..]) else {
                return;
            };
            pos += n;
            match m {
                Some(Message::Text(op)) => {
                    let n = since(op.as_bytes());
                    w.write_all(&text_frame(r#"{"type":"ack","id":1}"#))
                        .unwrap();
                    if fault == Fault::Stale {
                        // Published long before the subscription.
                        w.write_all(&msg(n, 1)).unwrap();
                    }
                    // Later than the ack's arrival, so the cycle takes it as published after its subscription.
                    std::thread::sleep(Duration::from_millis(20));
                    match fault {
                        Fault::None | Fault::Stale => w.write_all(&msg(n + 1, now_ns())).unwrap(),
                        Fault::Gap => w.write_all(&msg(n + 2, now_ns())).unwrap(),
                        Fault::Silent => {}
                    }
                }
                Some(Message::Close(_)) => {
                    let _ = w.write_all(&[0x88, 0x02, 0x03, 0xe8]);
                    return;
                }
                Some(_) => {}
                None => break,
            }
        }
        let n = match r.get_mut().read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.clear();
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A fake server: `GET /messages/{t}` answers `next` = the last seq, `POST /publish/{t}` numbers a message (and
/// delivers nothing), `GET /ws` subscribes with [`serve_ws`]. Returns its address and the publishes it took.
fn fake(fault: Fault) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let last = Arc::new(AtomicU64::new(10));
    let published = Arc::new(AtomicU64::new(0));
    let count = published.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (last, published) = (last.clone(), published.clone());
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while let Some((line, len)) = read_head(&mut r) {
                    if line.starts_with("GET /ws") {
                        return serve_ws(r, w, fault);
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    if line.starts_with("GET /messages/") {
                        let n = last.load(Ordering::SeqCst);
                        respond(
                            &mut w,
                            &format!(
                                r#"{{"topic":"churn.0","messages":[],"next":{n},"reset":false}}"#
                            ),
                        );
                    } else {
                        let n = last.fetch_add(1, Ordering::SeqCst) + 1;
                        published.fetch_add(1, Ordering::SeqCst);
                        respond(&mut w, &format!(r#"{{"topic":"churn.0","seq":{n}}}"#));
                    }
                }
            });
        }
    });
    (addr, count)
}

fn run(fault: Fault) -> (Report, u64) {
    let (addr, published) = fake(fault);
    let cli = Cli::parse_from(
        format!(
            "ringcast-load --target {addr} churn --subscribe -k 2 --publish-rate 20 --concurrency 3 \
             --duration 1 --receive-timeout-ms 300"
        )
        .split_whitespace(),
    );
    let r = execute(&cli).unwrap();
    (r, published.load(Ordering::SeqCst))
}

#[test]
fn a_correct_server_gives_clean_cycles() {
    let (r, published) = run(Fault::None);
    assert!(r.handshakes >= 10, "{r}");
    assert_eq!(r.published, published, "{r}");
    assert!(published >= 15, "{r}");
    assert_eq!(
        (r.lost, r.duplicated, r.out_of_order, r.lost_cycles),
        (0, 0, 0, 0),
        "{r}"
    );
    // One message per cycle, and every cycle got it before the end.
    assert_eq!((r.received, r.unfinished), (r.handshakes, 0), "{r}");
    assert!(r.errors.is_empty() && r.failures.is_empty(), "{r}");
}

#[test]
fn a_skipped_seq_is_lost_once_per_cycle() {
    let (r, _) = run(Fault::Gap);
    assert!(r.handshakes >= 10, "{r}");
    // Every cycle received one message, one seq after the one it was owed.
    assert_eq!(r.lost, r.received, "{r}");
    assert_eq!(r.received, r.handshakes, "{r}");
    assert_eq!(
        (r.duplicated, r.out_of_order, r.lost_cycles),
        (0, 0, 0),
        "{r}"
    );
}

#[test]
fn a_seq_at_or_below_since_is_a_duplicate() {
    let (r, _) = run(Fault::Stale);
    assert!(r.handshakes >= 10, "{r}");
    assert_eq!(r.duplicated, r.handshakes, "{r}");
    assert_eq!(r.received, 2 * r.handshakes, "{r}");
    assert_eq!((r.lost, r.out_of_order, r.lost_cycles), (0, 0, 0), "{r}");
}

#[test]
fn a_cycle_without_a_message_is_a_lost_cycle() {
    let (r, _) = run(Fault::Silent);
    assert_eq!((r.handshakes, r.received), (0, 0), "{r}");
    // Three workers, each losing a cycle every 300 ms for one second.
    assert!(r.lost_cycles >= 6, "{r}");
    assert!(r.errors.is_empty(), "{r}");
}
