//! Plain HTTP answers of the real server: routes, methods, upgrade failures with the protocol crate's statuses,
//! head limits (431), keep-alive pipelining and the per-core connection limit (503).
// Helper functions outside #[test] unwrap like the tests themselves: a failed socket call fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use ringcast_engine::Config;
use ringcast_protocol::handshake::HandshakeError;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_with(version: &str, key: &str) -> Vec<u8> {
    format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
    .into_bytes()
}

/// Reads one response, then checks the server closed the connection (error answers carry `Connection: close`).
fn answer_then_close(server: &ringcast_engine::ServerHandle, request: &[u8]) -> common::Response {
    let mut s = common::raw(server);
    s.write_all(request).unwrap();
    let r = common::read_response(&mut s);
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref()
            .map(|c| c.contains("close")),
        Some(true),
        "{}",
        r.head
    );
    assert!(
        common::closed_by_server(&mut s),
        "connection left open after {}",
        r.head
    );
    r
}

#[test]
fn unknown_path_is_404() {
    let server = common::start(common::config());
    let r = common::http(&server, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(r.body, b"not found\n");
    common::stop(server);
}

#[test]
fn wrong_method_is_405_with_allow_get() {
    let server = common::start(common::config());
    for req in [
        &b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..],
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /ws HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let r = common::http(&server, req);
        assert_eq!(r.status, 405, "{}", String::from_utf8_lossy(req));
        assert_eq!(r.header("allow"), Some("GET"), "{}", r.head);
    }
    common::stop(server);
}

#[test]
fn version_12_upgrade_is_426_naming_version_13() {
    let server = common::start(common::config());
    let r = answer_then_close(&server, &upgrade_with("12", KEY));
    assert_eq!(r.status, 426, "{}", r.head);
    assert_eq!(r.status, HandshakeError::UnsupportedVersion.http_status());
    assert_eq!(r.header("sec-websocket-version"), Some("13"), "{}", r.head);
    assert_eq!(
        r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket")
    );
    common::stop(server);
}

#[test]
fn bad_key_is_400() {
    let server = common::start(common::config());
    for key in ["not base64!", "dGhlIHNhbXBsZQ==", "dGhlIHNhbXBsZSBub25jZQ"] {
        let r = answer_then_close(&server, &upgrade_with("13", key));
        assert_eq!(r.status, 400, "key {key:?}: {}", r.head);
    }
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_ws_handshake_failures_total", ""),
        3,
        "{m}"
    );
    // Every answer took at least one reactor turn, and the histogram's last bucket holds them all.
    let turns = common::metric(&m, "ringcast_turn_duration_seconds_count", "");
    assert!(turns >= 3, "{m}");
    assert_eq!(
        common::metric(&m, "ringcast_turn_duration_seconds_bucket", "le=\"+Inf\""),
        turns,
        "{m}"
    );
    assert_eq!(
        common::metric(&m, "ringcast_ws_handshakes_total", ""),
        0,
        "{m}"
    );
    common::stop(server);
}

#[test]
fn plain_get_on_a_websocket_route_gets_the_protocol_crates_status() {
    let server = common::start(common::config());
    for path in ["/echo", "/ws"] {
        let r = answer_then_close(
            &server,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(
            r.status,
            HandshakeError::MissingUpgrade.http_status(),
            "{}",
            r.head
        );
        assert_eq!(r.status, 426);
    }
    common::stop(server);
}

#[test]
fn head_over_max_head_bytes_is_431() {
    let server = common::start(Config {
        max_head_bytes: 1024,
        ..common::config()
    });
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let r = answer_then_close(&server, big.as_bytes());
    assert_eq!(r.status, 431, "{}", r.head);
    // The limit also holds when the head arrives in pieces and never ends.
    let mut s = common::raw(&server);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for _ in 0..20 {
        if s.write_all(format!("X-Filler: {}\r\n", "b".repeat(90)).as_bytes())
            .is_err()
        {
            break;
        }
    }
    let r = common::read_response(&mut s);
    assert_eq!(r.status, 431, "{}", r.head);
    assert!(common::closed_by_server(&mut s));
    drop(s);
    // Just under the limit is fine.
    let ok = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "c".repeat(900)
    );
    assert_eq!(common::http(&server, ok.as_bytes()).status, 200);
    common::stop(server);
}

#[test]
fn more_than_max_headers_is_431() {
    let server = common::start(Config {
        max_headers: 8,
        ..common::config()
    });
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..9 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = answer_then_close(&server, req.as_bytes());
    assert_eq!(r.status, 431, "{}", r.head);
    // Exactly max_headers is accepted.
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..7 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert_eq!(common::http(&server, req.as_bytes()).status, 200);
    common::stop(server);
}

#[test]
fn pipelined_keep_alive_requests_are_all_answered_in_order() {
    let server = common::start(common::config());
    let mut s = common::raw(&server);
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let a = common::read_response(&mut s);
    assert_eq!((a.status, &a.body[..]), (200, &b"ok\n"[..]), "{}", a.head);
    let b = common::read_response(&mut s);
    assert_eq!(b.status, 404, "{}", b.head);
    let c = common::read_response(&mut s);
    assert_eq!(c.status, 200, "{}", c.head);
    assert!(
        String::from_utf8(c.body)
            .unwrap()
            .contains("ringcast_connections_open")
    );
    // The connection is still open for a fourth request, then `Connection: close` ends it.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(common::read_response(&mut s).status, 200);
    assert!(common::closed_by_server(&mut s));
    drop(s);
    common::stop(server);
}

#[test]
fn keep_alive_request_then_upgrade_on_the_same_connection() {
    let server = common::start(common::config());
    let mut s = common::raw(&server);
    let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    bytes.extend_from_slice(common::UPGRADE.as_bytes());
    s.write_all(&bytes).unwrap();
    assert_eq!(common::read_response(&mut s).status, 200);
    let head = common::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    common::assert_raw_echo(&mut s, "upgraded after a keep-alive request");
    drop(s);
    common::stop(server);
}

#[test]
fn over_max_connections_per_core_is_503() {
    let server = common::start(Config {
        max_connections_per_core: 1,
        ..common::config()
    });
    let mut first = common::raw_ws(&server);
    common::wait_open(&server, 1);
    for req in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        common::UPGRADE.as_bytes(),
    ] {
        let r = answer_then_close(&server, req);
        assert_eq!(r.status, 503, "{}", r.head);
        assert!(r.header("retry-after").is_some(), "{}", r.head);
    }
    // The first connection is unaffected.
    common::assert_raw_echo(&mut first, "first");
    drop(first);
    common::wait_open(&server, 0);
    // With room again, new connections are served and the rejections were counted.
    let m = common::metrics(&server);
    assert_eq!(
        common::metric(&m, "ringcast_connections_rejected_total", ""),
        2,
        "{m}"
    );
    common::stop(server);
}
