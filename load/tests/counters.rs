//! The load generator's counters against fake servers with known behaviour: a pub/sub server that drops one
//! message, duplicates one and swaps two (the fanout checker must report exactly those counts, and all zeros when
//! the same server behaves), an echo server that counts what it echoes (and one that swallows a message), and the
//! `--json` output of the real binary.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use ringcast_load::app::execute;
use ringcast_load::cli::Cli;
use ringcast_load::stats::Report;
use ringcast_protocol::ws::{Decoder, DecoderConfig, Message, OpCode, Server, encode_server_frame};

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

const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn text_frame(s: &str) -> Vec<u8> {
    let mut f = Vec::new();
    encode_server_frame(&mut f, true, OpCode::Text, s.as_bytes());
    f
}

/// Reads client frames from `r` and calls `on` with each data message; stops at EOF or close.
fn frames(r: &mut BufReader<TcpStream>, mut on: impl FnMut(&[u8]) -> bool) {
    let mut dec = Decoder::<Server>::new(DecoderConfig::default());
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes the BufReader already holds first.
    let mut pending = r.buffer().to_vec();
    r.consume(pending.len());
    loop {
        let mut pos = 0;
        loop {
            let (n, m) = match dec.decode(&mut pending[pos..]) {
                Ok(v) => v,
                Err(_) => return,
            };
            pos += n;
            match m {
                Some(Message::Binary(p)) => {
                    if !on(p) {
                        return;
                    }
                }
                Some(Message::Text(t)) => {
                    if !on(t.as_bytes()) {
                        return;
                    }
                }
                Some(Message::Close(_)) => return,
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

/// How long the fake pub/sub server takes to acknowledge a WebSocket publish (one at a time, in order).
const WS_ACK_DELAY: Duration = Duration::from_millis(100);

/// A fake pub/sub server: `/ws` subscribers get an ack, a WebSocket `pub` is delivered at once and acknowledged
/// after [`WS_ACK_DELAY`], `POST /publish/{t}` numbers messages 1, 2, … and
/// delivers them; with `faults`, seq 3 is dropped, seq 5 sent twice and seqs 7 and 8 swapped; with `late`, seqs
/// 6 to 10 are held back and delivered 500 ms after seq 10 was acknowledged (a backlog drained after publishing).
fn fake_pubsub(faults: bool, late: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let subs: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let seq = Arc::new(AtomicU64::new(0));
    let held: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let backlog: Arc<Mutex<Vec<u8>>> = Arc::default();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (subs, seq, held) = (subs.clone(), seq.clone(), held.clone());
            let backlog = backlog.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while let Some((line, len)) = read_head(&mut r) {
                    if line.starts_with("GET /ws") {
                        w.write_all(SWITCH).unwrap();
                        let mut sub_w = w.try_clone().unwrap();
                        let subs = subs.clone();
                        let seq = seq.clone();
                        frames(&mut r, move |op| {
                            if op.starts_with(b"{\"op\":\"pub\"") {
                                // A WebSocket publish: delivered now, acknowledged after WS_ACK_DELAY.
                                let v: serde_json::Value = serde_json::from_slice(op).unwrap();
                                let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
                                let msg = text_frame(&format!(
                                    r#"{{"type":"msg","topic":"load.0","seq":{n},"data":{}}}"#,
                                    v["data"]
                                ));
                                for s in subs.lock().unwrap().iter_mut() {
                                    s.write_all(&msg).unwrap();
                                }
                                std::thread::sleep(WS_ACK_DELAY);
                                let ack = format!(r#"{{"type":"ack","id":{},"seq":{n}}}"#, v["id"]);
                                sub_w.write_all(&text_frame(&ack)).unwrap();
                                return true;
                            }
                            assert!(op.starts_with(b"{\"op\":\"sub\""));
                            sub_w
                                .write_all(&text_frame(r#"{"type":"ack","id":1}"#))
                                .unwrap();
                            subs.lock().unwrap().push(sub_w.try_clone().unwrap());
                            true
                        });
                        return;
                    }
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).unwrap();
                    let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
                    let data = String::from_utf8(body).unwrap();
                    let msg = text_frame(&format!(
                        r#"{{"type":"msg","topic":"load.0","seq":{n},"data":{data}}}"#
                    ));
                    let mut out = Vec::new();
                    match (faults, n) {
                        (true, 3) => {}
                        (true, 5) => {
                            out.extend_from_slice(&msg);
                            out.extend_from_slice(&msg);
                        }
                        (true, 7) => *held.lock().unwrap() = Some(msg),
                        (true, 8) => {
                            out.extend_from_slice(&msg);
                            out.extend(held.lock().unwrap().take().unwrap());
                        }
                        _ if late && n > 5 => {
                            backlog.lock().unwrap().extend_from_slice(&msg);
                            if n == 10 {
                                let (subs, backlog) = (subs.clone(), backlog.clone());
                                std::thread::spawn(move || {
                                    std::thread::sleep(Duration::from_millis(500));
                                    let late = std::mem::take(&mut *backlog.lock().unwrap());
                                    for s in subs.lock().unwrap().iter_mut() {
                                        s.write_all(&late).unwrap();
                                    }
                                });
                            }
                        }
                        _ => out = msg,
                    }
                    for s in subs.lock().unwrap().iter_mut() {
                        s.write_all(&out).unwrap();
                    }
                    let resp = format!(r#"{{"topic":"load.0","seq":{n}}}"#);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        resp.len()
                    );
                    w.write_all(head.as_bytes()).unwrap();
                    w.write_all(resp.as_bytes()).unwrap();
                }
            });
        }
    });
    addr
}

fn cli(addr: SocketAddr, rest: &str) -> Cli {
    let mut args = vec![
        "ringcast-load".to_owned(),
        "--target".into(),
        addr.to_string(),
    ];
    args.extend(rest.split_whitespace().map(str::to_owned));
    Cli::parse_from(args)
}

#[test]
fn fanout_checker_reports_exactly_the_injected_faults() {
    let addr = fake_pubsub(true, false);
    let r = execute(&cli(
        addr,
        "fanout -n 3 -k 1 --messages 10 --rate 0 --duration 10 --grace-ms 2000",
    ))
    .unwrap();
    assert_eq!(r.established, 3, "{r}");
    assert_eq!(r.published, 10, "{r}");
    assert_eq!(r.expected, 30, "{r}");
    assert_eq!(r.lost, 3, "one lost per subscriber: {r}");
    assert_eq!(r.duplicated, 3, "one duplicate per subscriber: {r}");
    assert_eq!(r.out_of_order, 3, "one swapped pair per subscriber: {r}");
    // 9 distinct + 1 duplicate per subscriber.
    assert_eq!(r.received, 30, "{r}");
    assert_eq!(r.latency_us.map(|l| l.count), Some(30));
}

#[test]
fn fanout_checker_reports_zero_for_a_correct_server() {
    let addr = fake_pubsub(false, false);
    let r = execute(&cli(
        addr,
        "fanout -n 4 -k 1 --messages 20 --rate 0 --duration 10 --grace-ms 2000",
    ))
    .unwrap();
    assert_eq!((r.published, r.expected, r.received), (20, 80, 80), "{r}");
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0), "{r}");
    assert!(r.errors.is_empty(), "{r}");
}

#[test]
fn fanout_rates_while_publishing_and_to_the_last_receipt() {
    let addr = fake_pubsub(false, true);
    let r = execute(&cli(
        addr,
        "fanout -n 3 -k 1 --messages 10 --rate 0 --duration 10 --grace-ms 5000",
    ))
    .unwrap();
    // Everything arrives in the end ...
    assert_eq!((r.published, r.expected, r.received), (10, 30, 30), "{r}");
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0), "{r}");
    // ... but only seqs 1-5 while the publisher ran.
    let window = r.messages_per_sec_window * r.seconds;
    assert!((window - 15.0).abs() < 0.5, "{window} in the window: {r}");
    assert!(r.messages_per_sec_window < r.messages_per_sec, "{r}");
    // Publish to last receipt spans the 500 ms wait, and counts all 30.
    assert!(r.drained_secs >= 0.5, "{r}");
    let drained = r.messages_per_sec_drained * r.drained_secs;
    assert!((drained - 30.0).abs() < 0.5, "{drained} by the end: {r}");
}

/// A fake pub/sub server that publishes by itself: once `subs` subscribers have subscribed, it sends seqs
/// 1..=`messages` of `load.0` to each, in order, skipping `skip` (a message lost for everyone).
fn fake_flood(subs: usize, messages: u64, skip: Option<u64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let joined: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let joined = joined.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let Some((line, _)) = read_head(&mut r) else {
                    return;
                };
                assert!(line.starts_with("GET /ws"), "{line}");
                w.write_all(SWITCH).unwrap();
                frames(&mut r, move |op| {
                    assert!(op.starts_with(b"{\"op\":\"sub\""));
                    w.write_all(&text_frame(r#"{"type":"ack","id":1}"#))
                        .unwrap();
                    let mut all = joined.lock().unwrap();
                    all.push(w.try_clone().unwrap());
                    if all.len() == subs {
                        for n in (1..=messages).filter(|n| Some(*n) != skip) {
                            let msg = text_frame(&format!(
                                r#"{{"type":"msg","topic":"load.0","seq":{n},"data":{{"t":1,"p":"x"}}}}"#
                            ));
                            for s in all.iter_mut() {
                                s.write_all(&msg).unwrap();
                            }
                        }
                    }
                    true
                });
            });
        }
    });
    addr
}

#[test]
fn a_flood_published_by_the_server_is_checked_against_its_expected_seqs() {
    let addr = fake_flood(3, 50, None);
    let r = execute(&cli(
        addr,
        "fanout -n 3 -k 1 --publish-via ws --expect-seq 50 --grace-ms 3000",
    ))
    .unwrap();
    assert_eq!((r.published, r.expected, r.received), (50, 150, 150), "{r}");
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0), "{r}");
    // Nothing was published by the load generator, and the run ended once everything had arrived.
    assert!(r.drained_secs > 0.0 && r.drained_secs < 2.0, "{r}");
    // A message the server never sent is lost for every subscriber, even the last one of the range.
    for skip in [7, 50] {
        let addr = fake_flood(3, 50, Some(skip));
        let r = execute(&cli(
            addr,
            "fanout -n 3 -k 1 --publish-via ws --expect-seq 50 --grace-ms 1000",
        ))
        .unwrap();
        assert_eq!((r.expected, r.received), (150, 147), "skip {skip}: {r}");
        assert_eq!(
            (r.lost, r.duplicated, r.out_of_order),
            (3, 0, 0),
            "skip {skip}: {r}"
        );
    }
}

#[test]
fn a_fixed_rate_over_websocket_does_not_wait_for_acknowledgements() {
    // 20 publishes a second for 1 s against a server that needs 100 ms per acknowledgement: waiting for each
    // would publish about 10 (and hide the server's delay from the latency); open loop publishes all 20 on time
    // and still matches every acknowledgement to its seq.
    let addr = fake_pubsub(false, false);
    let r = execute(&cli(
        addr,
        "fanout -n 2 -k 1 --rate 20 --duration 1 --publish-via ws --grace-ms 5000",
    ))
    .unwrap();
    assert_eq!((r.published, r.expected, r.received), (20, 40, 40), "{r}");
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0), "{r}");
    assert!(r.errors.is_empty(), "{r}");
    // The publish window is the schedule's (about 1 s), not the last acknowledgement's (about 2 s).
    assert!(r.seconds < 1.5, "{r}");
}

/// A fake echo server counting the messages it echoes; with `swallow`, the 50th message on the first connection
/// is not echoed.
fn fake_echo(swallow: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let echoed = Arc::new(AtomicU64::new(0));
    let count = echoed.clone();
    let conns = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (echoed, conn_no) = (echoed.clone(), conns.fetch_add(1, Ordering::SeqCst));
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                if read_head(&mut r).is_none() {
                    return;
                }
                w.write_all(SWITCH).unwrap();
                let mut n = 0u64;
                frames(&mut r, |p| {
                    n += 1;
                    if swallow && conn_no == 0 && n == 50 {
                        return true;
                    }
                    let mut f = Vec::new();
                    encode_server_frame(&mut f, true, OpCode::Binary, p);
                    echoed.fetch_add(1, Ordering::SeqCst);
                    w.write_all(&f).is_ok()
                });
            });
        }
    });
    (addr, count)
}

#[test]
fn echo_counts_match_the_server() {
    let (addr, echoed) = fake_echo(false);
    let r = execute(&cli(addr, "echo -n 4 --size 100 --window 8 --duration 1")).unwrap();
    let server = echoed.load(Ordering::SeqCst);
    assert!(server > 100, "{r}");
    assert_eq!(r.received, server, "{r}");
    assert_eq!(r.sent, server, "every sent message was echoed: {r}");
    assert_eq!(r.messages_per_sec, server as f64, "{r}");
    assert_eq!(r.bytes_per_sec, server as f64 * 100.0, "{r}");
    assert_eq!(r.latency_us.map(|l| l.count), Some(server));
    assert!(r.errors.is_empty(), "{r}");
    assert_eq!(r.established, 4);
}

#[test]
fn echo_notices_a_swallowed_message() {
    let (addr, echoed) = fake_echo(true);
    let r = execute(&cli(addr, "echo -n 2 --size 16 --window 4 --duration 1")).unwrap();
    let server = echoed.load(Ordering::SeqCst);
    assert_eq!(r.received, server, "{r}");
    assert_eq!(r.sent, server + 1, "one message never came back: {r}");
    assert_eq!(r.errors.get("drain_timeout"), Some(&1), "{r}");
}

#[test]
fn json_output_parses_and_source_addresses_work() {
    let (addr, echoed) = fake_echo(false);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args([
            "--target",
            &addr.to_string(),
            "--json",
            "--source-addrs",
            "3",
        ])
        .args([
            "echo",
            "-n",
            "3",
            "--size",
            "32",
            "--window",
            "2",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let r = Report::from_json(stdout.trim()).unwrap();
    assert_eq!(r.mode, "echo");
    assert_eq!(r.received, echoed.load(Ordering::SeqCst));
    assert_eq!(r.established, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for k in [
        "messages_per_sec",
        "bytes_per_sec",
        "latency_us",
        "failures",
        "errors",
        "cpu_secs",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {stdout}");
    }
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_us"][k].is_u64(), "latency {k}: {stdout}");
    }
}

#[test]
fn worker_processes_aggregate_over_the_pipe() {
    let (addr, echoed) = fake_echo(false);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(["--target", &addr.to_string(), "--json", "--procs", "2"])
        .args([
            "echo",
            "-n",
            "4",
            "--size",
            "8",
            "--window",
            "2",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = Report::from_json(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!((r.procs, r.established), (2, 4));
    assert_eq!(r.received, echoed.load(Ordering::SeqCst));
}

#[test]
fn refused_connections_are_counted_by_reason() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let r = execute(&cli(addr, "connect -n 5 --hold 0")).unwrap();
    assert_eq!((r.attempted, r.established), (5, 0), "{r}");
    assert_eq!(r.failures.get("refused"), Some(&5), "{r}");
    assert_eq!(r.limit, None);
}
