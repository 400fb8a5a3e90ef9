//! Hostile clients against the size and time limits, one test per attack: a 64-bit frame length of 2^63,
//! request heads trickled a byte at a time (slowloris), endless continuation frames, 10,000 tiny fragments, and a
//! client that floods without ever reading. Each asserts the exact reaction (close code, or a silent close for a
//! head that never completes) and that a healthy client opened before the attack, on the same single reactor,
//! keeps its round trip within 2x its no-attack median ([`common::latency`]): the attack is repeated, round after
//! round, until the probe has timed all its round trips.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::latency::Probe;
use ringcast_engine::{Config, ServerHandle, SlowConsumerPolicy};
use socket2::{Domain, Protocol, Socket, Type};

/// Slowloris connections trickling at once.
const TRICKLERS: usize = 40;

/// An upgraded `/echo` connection with a write timeout (an attacker must not hang the test).
fn attacker(server: &ServerHandle) -> TcpStream {
    let s = common::raw_ws(server);
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until EOF or reset; true if the server ended the connection within the read timeout.
fn ends(s: &mut TcpStream) -> bool {
    common::closed_by_server(s)
}

#[test]
fn frame_length_2_pow_63_closes_1002() {
    let server = common::start(common::config());
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[]);
    let base = probe.baseline();
    let rounds = probe.under("2^63 frame length", base, || {
        let mut s = attacker(&server);
        // The header alone: no payload could ever follow.
        s.write_all(&common::frame_with(0x82, true, Some(1 << 63), b""))
            .unwrap();
        assert_eq!(common::read_close_code(&mut s), Some(1002));
        assert!(ends(&mut s));
    });
    common::wait_open(&server, 1);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_protocol_errors_total", "code=\"1002\""),
        rounds as u64,
        "{m}"
    );
    drop(probe);
    common::stop(server);
}

#[test]
fn slowloris_heads_are_closed_silently_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(600);
    let server = common::start(Config {
        handshake_timeout: timeout,
        ..common::config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[]);
    let base = probe.baseline();
    let rounds = probe.under("slowloris heads", base, || {
        // Every trickler sends one byte of a valid head per 100 ms, in parallel, and would need 5 s to finish.
        let head = common::UPGRADE.as_bytes();
        let mut trick: Vec<TcpStream> = (0..TRICKLERS)
            .map(|_| {
                let s = common::raw(&server);
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        let mut open = trick.len();
        let mut i = 0;
        while open > 0 && i < head.len() {
            open = 0;
            for s in &mut trick {
                if s.write_all(&head[i..=i]).is_ok() {
                    open += 1;
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Each was closed without a byte of answer (no status for a head that never completed).
        for s in &mut trick {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("slowloris client got {other:?} instead of a silent close"),
            }
        }
        let took = started.elapsed();
        assert!(i < head.len(), "a trickler was allowed to finish its head");
        assert!(
            took < timeout + Duration::from_secs(2),
            "closed only after {took:?}"
        );
    });
    common::wait_open(&server, 1);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_handshake_timeouts_total", ""),
        (rounds * TRICKLERS) as u64,
        "{m}"
    );
    drop(probe);
    common::stop(server);
}

#[test]
fn endless_continuation_frames_close_1009_at_the_message_limit() {
    let server = common::start(Config {
        max_message_size: 64 * 1024,
        ..common::config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[]);
    let base = probe.baseline();
    probe.under("endless continuation frames", base, || {
        {
            let mut s = attacker(&server);
            // A message that starts and never ends: 1 KiB continuation frames (at most 4 MiB, 64x the limit)
            // until the connection fails; the server closes at the limit and discards the rest until EOF.
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let _ = w.write_all(&common::client_frame(false, 1, &[b'a'; 1024]));
                let chunk = common::client_frame(false, 0, &[b'a'; 1024]);
                for _ in 0..4096 {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            assert_eq!(common::read_close_code(&mut s), Some(1009));
            let _ = s.shutdown(Shutdown::Write);
            assert!(ends(&mut s));
            writer.join().unwrap();
        }
        // Continuation frames with no message to continue: refused at the first one.
        {
            let mut s = attacker(&server);
            let flood: Vec<u8> = (0..10_000)
                .flat_map(|_| common::client_frame(false, 0, b"c"))
                .collect();
            let _ = s.write_all(&flood);
            assert_eq!(common::read_close_code(&mut s), Some(1002));
            assert!(ends(&mut s));
        }
    });
    common::wait_open(&server, 1);
    drop(probe);
    common::stop(server);
}

#[test]
fn ten_thousand_tiny_fragments_are_reassembled_or_refused_at_the_limit() {
    let server = common::start(Config {
        max_message_size: 8 * 1024,
        ..common::config()
    });
    let addr = server.local_addr();
    let fragments = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| common::client_frame(i == n - 1, if i == 0 { 1 } else { 0 }, b"f"))
            .collect()
    };
    let mut probe = Probe::pubsub(addr, &[]);
    let base = probe.baseline();
    probe.under("10,000 tiny fragments", base, || {
        // Under the limit: 8,000 one-byte fragments are one legal 8,000-byte message.
        let mut s = attacker(&server);
        s.write_all(&fragments(8_000)).unwrap();
        let (fin, op, payload) = common::read_data_frame(&mut s).expect("the reassembled echo");
        assert_eq!((fin, op, payload.len()), (true, 1, 8_000));
        // Over it: 10,000 fragments close 1009 once the 8 KiB limit is passed.
        let mut s = attacker(&server);
        let _ = s.write_all(&fragments(10_000));
        assert_eq!(common::read_close_code(&mut s), Some(1009));
        assert!(ends(&mut s));
    });
    common::wait_open(&server, 1);
    drop(probe);
    common::stop(server);
}

/// An upgraded `/echo` connection whose receive buffer is tiny, so the server's backlog builds at once.
fn never_reader(server: &ServerHandle) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = common::request_head(&mut s, common::UPGRADE.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

#[test]
fn a_client_that_never_reads_is_disconnected_1008() {
    let server = common::start(Config {
        write_high_water: 64 * 1024,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        close_timeout: Duration::from_millis(300),
        ..common::config()
    });
    let addr = server.local_addr();
    let disconnects = || -> u64 {
        server
            .stats()
            .iter()
            .map(|s| s.slow_consumer_disconnects())
            .sum()
    };
    let mut probe = Probe::pubsub(addr, &[]);
    let base = probe.baseline();
    let rounds = probe.under("clients that never read", base, || {
        let k = disconnects();
        let mut s = never_reader(&server);
        // 8 KiB echo requests, 16 per write, never reading the echoes; at most 16 MiB.
        let batch: Vec<u8> = (0..16)
            .flat_map(|_| common::client_frame(true, 2, &[7u8; 8 * 1024]))
            .collect();
        let mut sent = 0;
        while sent < 2048 && s.write_all(&batch).is_ok() {
            sent += 16;
            if disconnects() > k {
                break;
            }
        }
        assert!(
            common::wait_until(Duration::from_secs(10), || disconnects() > k),
            "a never-reading client was not disconnected after {sent} messages"
        );
        assert!(ends(&mut s), "a never-reading client is still connected");
    });
    assert_eq!(disconnects(), rounds as u64);
    common::wait_open(&server, 1);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_protocol_errors_total", "code=\"1008\""),
        rounds as u64,
        "{m}"
    );
    drop(probe);
    common::stop(server);
}
