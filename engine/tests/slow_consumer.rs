//! Slow-consumer policies against a real client that floods echo requests and does not read: `Disconnect` closes
//! it (1008, counted) while the server stays healthy; `DropOldest` drops queued echoes (counted) and keeps the
//! connection open and usable.
// Helper functions outside #[test] unwrap like the tests themselves: a failed socket call fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::Duration;

use ringcast_engine::{Config, ServerHandle, SlowConsumerPolicy};
use socket2::{Domain, Protocol, Socket, Type};

const MESSAGES: u32 = 2000;
const SIZE: usize = 8 * 1024;

fn config(policy: SlowConsumerPolicy) -> Config {
    Config {
        write_high_water: 64 * 1024,
        slow_consumer: policy,
        close_timeout: Duration::from_millis(300),
        ..common::config()
    }
}

/// An upgraded connection whose receive buffer is tiny, so the server's backlog builds quickly.
fn small_window_ws(server: &ServerHandle) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.local_addr().into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = common::request_head(&mut s, common::UPGRADE.as_bytes());
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Writes `MESSAGES` numbered 8 KiB binary messages, 16 per write, never reading. Returns how many were sent
/// before the first write error (the server closing the connection).
fn flood(s: &TcpStream) -> JoinHandle<u32> {
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(16 * (SIZE + 14));
        let mut sent = 0;
        while sent < MESSAGES {
            batch.clear();
            for seq in sent..(sent + 16).min(MESSAGES) {
                let mut payload = vec![(seq % 251) as u8; SIZE];
                payload[..4].copy_from_slice(&seq.to_be_bytes());
                batch.extend(common::client_frame(true, 2, &payload));
            }
            if w.write_all(&batch).is_err() {
                return sent;
            }
            sent = (sent + 16).min(MESSAGES);
        }
        sent
    })
}

fn drops(server: &ServerHandle) -> u64 {
    server.stats().iter().map(|s| s.slow_consumer_drops()).sum()
}

fn disconnects(server: &ServerHandle) -> u64 {
    server
        .stats()
        .iter()
        .map(|s| s.slow_consumer_disconnects())
        .sum()
}

#[test]
fn disconnect_policy_closes_the_slow_consumer_and_server_stays_healthy() {
    let server = common::start(config(SlowConsumerPolicy::Disconnect));
    let mut slow = small_window_ws(&server);
    let writer = flood(&slow);
    assert!(
        common::wait_until(Duration::from_secs(15), || disconnects(&server) >= 1),
        "slow consumer never disconnected"
    );
    let sent = writer.join().unwrap();
    assert!(sent > 0);
    // Reading now drains whatever the kernel still held, then EOF or reset: the server closed the connection.
    assert!(
        common::closed_by_server(&mut slow),
        "slow consumer still connected"
    );
    assert_eq!(disconnects(&server), 1);
    assert_eq!(drops(&server), 0);
    common::wait_open(&server, 0);
    // The server is healthy: a new client echoes, and the disconnect was counted as a 1008 policy close.
    let mut ok = common::raw_ws(&server);
    common::assert_raw_echo(&mut ok, "healthy");
    drop(ok);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_slow_consumer_disconnects_total", ""),
        1,
        "{m}"
    );
    assert_eq!(
        common::metric(&m, "ringcast_ws_protocol_errors_total", "code=\"1008\""),
        1,
        "{m}"
    );
    drop(slow);
    common::stop(server);
}

#[test]
fn drop_oldest_policy_drops_echoes_but_keeps_the_connection() {
    let server = common::start(config(SlowConsumerPolicy::DropOldest));
    let mut slow = small_window_ws(&server);
    let writer = flood(&slow);
    assert!(
        common::wait_until(Duration::from_secs(15), || drops(&server) > 0),
        "no message was dropped"
    );
    assert_eq!(
        writer.join().unwrap(),
        MESSAGES,
        "the server must keep reading a DropOldest consumer"
    );
    // A marker after the flood: everything echoed before it is what survived the drops.
    slow.write_all(&common::client_frame(true, 1, b"marker"))
        .unwrap();
    let mut received = 0u64;
    let mut last_seq: Option<u32> = None;
    loop {
        let (fin, op, payload) = common::read_frame(&mut slow).expect("connection must stay open");
        assert!(fin);
        match op {
            2 => {
                assert_eq!(payload.len(), SIZE);
                let seq = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                assert!(
                    payload[4..].iter().all(|&b| b == (seq % 251) as u8),
                    "message {seq} corrupted"
                );
                assert!(
                    last_seq.is_none_or(|l| seq > l),
                    "message {seq} after {last_seq:?}: out of order"
                );
                last_seq = Some(seq);
                received += 1;
            }
            1 => {
                assert_eq!(payload, b"marker");
                break;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    let dropped = drops(&server);
    assert!(dropped > 0);
    assert_eq!(
        received + dropped,
        u64::from(MESSAGES),
        "received {received}, dropped {dropped}"
    );
    assert_eq!(disconnects(&server), 0);
    // Still open and still echoing.
    common::assert_raw_echo(&mut slow, "still usable");
    assert_eq!(common::open_connections(&server), 1);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_slow_consumer_dropped_messages_total", ""),
        dropped,
        "{m}"
    );
    drop(slow);
    common::stop(server);
}
