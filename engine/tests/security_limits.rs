//! Hostile clients against the rate and connection limits: publish floods (WebSocket and HTTP), connection floods
//! and connection hoarding from one IP, one user hoarding connections, and a ping flood. Each is refused with its
//! exact code (close 1008, or 429 with `Retry-After`), and a healthy client from another address (127.0.0.2) or
//! another user keeps working: one opened before the attack keeps its round trip within 2x its no-attack median
//! ([`security_common::latency`]), and a new one still connects. Probes on servers that limit publishing or
//! message rates time echoes (`/echo` is not rate limited), so that the probe itself stays under the limit.
#![allow(clippy::unwrap_used)]

mod security_common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringcast_engine::{Config, CoreSet};
use security_common::*;
use socket2::{Domain, Protocol, Socket, Type};

/// One core, so per-core counters are exact.
fn one_core(c: Config) -> Config {
    Config {
        cores: CoreSet::Count(1),
        ..c
    }
}

/// A WebSocket upgrade from a chosen loopback source address; returns the stream and the response head.
fn upgrade_from(src: [u8; 4], addr: SocketAddr, extra: &[&str]) -> (TcpStream, String) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = String::from(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut s);
    (s, head)
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A healthy client from 127.0.0.2 subscribes and receives a message it publishes itself.
fn healthy_from_other_ip(addr: SocketAddr) {
    let (stream, head) = upgrade_from([127, 0, 0, 2], addr, &[]);
    assert_eq!(status(&head), 101, "{head}");
    let mut c = RawWs { stream };
    c.sub("healthy", None, 1);
    c.send(r#"{"op":"pub","topic":"healthy","data":1,"id":2}"#);
    let mut got_msg = false;
    for _ in 0..2 {
        let m = c.msg();
        got_msg |= m.kind == "msg";
    }
    assert!(got_msg);
}

#[test]
fn websocket_publish_flood_closes_1008() {
    let server = start(Config {
        publish_rate_limit: 5,
        ..config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::echo(addr, &[]);
    let base = probe.baseline();
    let mut watcher = RawWs::connect(addr, None);
    watcher.sub("flood", None, 1);
    let flooders = probe.under("websocket publish flood", base, || {
        let mut c = RawWs::connect(addr, None);
        for i in 0..50 {
            c.send(&format!(r#"{{"op":"pub","topic":"flood","data":{i}}}"#));
        }
        assert_eq!(c.next(), Frame::Close(Some(1008)));
    });
    // At most each flooder's burst went through.
    let mut delivered = 0;
    watcher
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Frame::Text(_) = watcher.next() {
        delivered += 1;
    }
    assert!(
        (flooders..=6 * flooders).contains(&delivered),
        "{delivered} delivered"
    );
    assert_healthy(addr, &[]);
    stop(server);
}

#[test]
fn http_publish_flood_gets_429_with_retry_after() {
    let server = start(Config {
        publish_rate_limit: 3,
        ..config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::echo(addr, &[]);
    let base = probe.baseline();
    probe.under("HTTP publish flood", base, || {
        // A keep-alive connection publishing 20 times at once: 3 pass, the rest get 429.
        let mut h = Http::new(addr);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let r = h.request(
                "POST",
                "/publish/x",
                &["Content-Type: application/json"],
                b"1",
            );
            if r.status == 429 {
                assert_eq!(r.header("retry-after"), Some("1"));
                assert_json_error(&r, 429);
            }
            statuses.push(r.status);
        }
        assert_eq!(&statuses[..3], &[200, 200, 200]);
        assert!(
            statuses[3..].iter().filter(|&&s| s == 429).count() >= 14,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|&s| s == 200 || s == 429),
            "{statuses:?}"
        );
    });
    // Another connection has its own bucket.
    assert_eq!(
        Http::new(addr)
            .request(
                "POST",
                "/publish/x",
                &["Content-Type: application/json"],
                b"1"
            )
            .status,
        200
    );
    stop(server);
}

#[test]
fn connections_per_ip_over_the_limit_get_429() {
    let server = start(one_core(Config {
        max_connections_per_ip: 3,
        ..config()
    }));
    let addr = server.local_addr();
    let mut probe = Probe::open(addr, Some([127, 0, 0, 2]), Kind::PubSub, &[]);
    let base = probe.baseline();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, head) = upgrade_from([127, 0, 0, 1], addr, &[]);
        assert_eq!(status(&head), 101, "{head}");
        held.push(s);
    }
    probe.under("connection hoarding from one IP", base, || {
        let (_s, head) = upgrade_from([127, 0, 0, 1], addr, &[]);
        assert_eq!(status(&head), 429, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
    });
    healthy_from_other_ip(addr);
    // Closing one frees a place.
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || {
        upgrade_from([127, 0, 0, 1], addr, &[])
            .1
            .starts_with("HTTP/1.1 101")
    }));
    drop(held);
    stop(server);
}

#[test]
fn connection_flood_from_one_ip_gets_429() {
    let server = start(one_core(Config {
        ip_connect_rate: 5,
        ..config()
    }));
    let addr = server.local_addr();
    let mut probe = Probe::open(addr, Some([127, 0, 0, 2]), Kind::PubSub, &[]);
    let base = probe.baseline();
    let codes = std::sync::Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    probe.under("connection flood from one IP", base, || {
        for _ in 0..10 {
            let code = status(&upgrade_from([127, 0, 0, 1], addr, &[]).1);
            codes.lock().unwrap().push(code);
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let codes = codes.into_inner().unwrap();
    // The burst of 5, plus 5 per second of flooding.
    let ok = codes.iter().filter(|&&c| c == 101).count();
    assert!(
        ok >= 5 && ok as f64 <= 6.0 + 5.0 * secs,
        "{ok} accepted in {secs:.2} s: {codes:?}"
    );
    assert!(codes.contains(&429), "{codes:?}");
    assert!(codes.iter().all(|&c| c == 101 || c == 429), "{codes:?}");
    healthy_from_other_ip(addr);
    stop(server);
}

#[test]
fn connections_per_user_over_the_limit_get_429() {
    let server = start(one_core(Config {
        max_connections_per_user: 2,
        ..auth_config()
    }));
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[&bearer(&root_token("carol"))]);
    let base = probe.baseline();
    let alice = bearer(&root_token("alice"));
    let a1 = ws(addr, &[&alice]);
    let a2 = ws(addr, &[&alice]);
    probe.under("connection hoarding by one user", base, || {
        let r = refused_upgrade(addr, "/ws", &[&alice]);
        assert_json_error(&r, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        let r = http_once(addr, "GET", "/sse/x", &[&alice], b"");
        assert_json_error(&r, 429);
    });
    // Polls are short-lived and not counted.
    assert_eq!(
        http_once(addr, "GET", "/messages/x", &[&alice], b"").status,
        200
    );
    assert_healthy(addr, &[&bearer(&root_token("bob"))]);
    drop(a1);
    assert!(wait_until(Duration::from_secs(5), || {
        upgrade(addr, "/ws", &[&alice])
            .1
            .starts_with("HTTP/1.1 101")
    }));
    drop(a2);
    stop(server);
}

#[test]
fn ping_flood_on_pubsub_closes_1008() {
    // Control frames count against the pub/sub message rate: a ping flood is cut off, it cannot make the server
    // queue unbounded pongs.
    let server = start(Config {
        ws_rate_limit: 100,
        ..config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::echo(addr, &[]);
    let base = probe.baseline();
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.extend_from_slice(&client_frame(9, b"ping"));
    }
    probe.under("ping flood", base, || {
        let mut c = RawWs::connect(addr, None);
        // The server may stop reading once it has closed: the rest of the flood need not be accepted.
        let _ = c.stream.write_all(&flood);
        assert_eq!(c.next(), Frame::Close(Some(1008)));
    });
    assert_healthy(addr, &[]);
    stop(server);
}
