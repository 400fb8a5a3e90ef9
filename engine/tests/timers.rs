//! Timers against the real server: server heartbeats, the idle timeout (close 1001), and the handshake timeout
//! (slowloris defence) with its counter in `/metrics`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ringcast_engine::Config;
use tokio_tungstenite::tungstenite::Message;

fn heartbeat_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(1),
        close_timeout: Duration::from_millis(300),
        ..common::config()
    }
}

#[test]
fn silent_client_gets_ping_then_close_1001_then_eof() {
    let server = common::start(heartbeat_config());
    let mut s = common::raw_ws(&server);
    let opened = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // The client never sends anything, so it never answers the ping.
    let (fin, op, payload) = common::read_frame(&mut s).expect("a heartbeat ping");
    let ping_at = opened.elapsed();
    assert_eq!((fin, op), (true, 9), "first frame must be a ping");
    assert!(payload.len() <= 125);
    assert!(
        ping_at >= Duration::from_millis(100),
        "ping after {ping_at:?}, before the interval"
    );
    assert!(
        ping_at < Duration::from_millis(900),
        "ping after {ping_at:?}"
    );
    // Then (possibly after more pings) the idle close.
    let code = common::read_close_code(&mut s);
    let closed_at = opened.elapsed();
    assert_eq!(code, Some(1001));
    assert!(
        closed_at >= Duration::from_millis(800),
        "idle close after {closed_at:?}, before the idle timeout"
    );
    assert!(
        common::closed_by_server(&mut s),
        "no EOF after the idle close"
    );
    let eof_at = opened.elapsed();
    assert!(
        eof_at < Duration::from_millis(2500),
        "EOF only after {eof_at:?}"
    );
    common::wait_open(&server, 0);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_idle_timeouts_total", ""),
        1,
        "{m}"
    );
    assert!(
        common::metric(&m, "ringcast_ws_pings_sent_total", "") >= 1,
        "{m}"
    );
    drop(s);
    common::stop(server);
}

#[test]
fn raw_client_answering_pings_stays_open() {
    let server = common::start(heartbeat_config());
    let mut s = common::raw_ws(&server);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let opened = Instant::now();
    let mut pings = 0;
    while opened.elapsed() < Duration::from_millis(2200) {
        let (_, op, payload) = common::read_frame(&mut s).expect("connection stays open");
        assert_eq!(op, 9, "only pings while the client answers them");
        pings += 1;
        s.write_all(&common::client_frame(true, 10, &payload))
            .unwrap();
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 2.2 s with a 200 ms interval"
    );
    common::assert_raw_echo(&mut s, "alive past the idle timeout");
    drop(s);
    common::stop(server);
}

#[tokio::test]
async fn tungstenite_client_that_keeps_reading_stays_connected() {
    let server = common::start(heartbeat_config());
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    let opened = Instant::now();
    let mut pings = 0;
    // Keep reading (tungstenite answers each ping with a pong) well past the 1 s idle timeout.
    while opened.elapsed() < Duration::from_millis(2500) {
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?} while idle"),
        }
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 2.5 s with a 200 ms interval"
    );
    ws.send(Message::text("still connected")).await.unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Ping(_) => continue,
            m => {
                assert_eq!(m, Message::text("still connected"));
                break;
            }
        }
    }
    assert_eq!(common::open_connections(&server), 1);
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_idle_timeouts_total", ""),
        0,
        "{m}"
    );
    drop(ws);
    common::stop(server);
}

#[test]
fn handshake_timeout_closes_silent_and_half_head_clients() {
    let server = common::start(Config {
        handshake_timeout: Duration::from_millis(300),
        ..common::config()
    });
    let before = common::metrics(&server);
    assert_eq!(
        common::metric(&before, "ringcast_handshake_timeouts_total", ""),
        0
    );
    let started = Instant::now();
    // One client sends nothing, one sends half a head, one trickles a head slower than the deadline allows.
    let mut silent = common::raw(&server);
    let mut half = common::raw(&server);
    half.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .unwrap();
    let mut trickle = common::raw(&server);
    for s in [&mut silent, &mut half, &mut trickle] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    let writer = std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
            if trickle.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        trickle
    });
    assert!(
        common::closed_by_server(&mut silent),
        "silent client not closed"
    );
    assert!(
        common::closed_by_server(&mut half),
        "half-head client not closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "closed only after {elapsed:?}"
    );
    let mut trickle = writer.join().unwrap();
    assert!(
        common::closed_by_server(&mut trickle),
        "trickling client not closed"
    );
    common::wait_open(&server, 0);
    let after = common::metrics(&server);
    assert_eq!(
        common::metric(&after, "ringcast_handshake_timeouts_total", ""),
        3,
        "{after}"
    );
    // A prompt client is unaffected.
    let r = common::http(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    common::stop(server);
}
