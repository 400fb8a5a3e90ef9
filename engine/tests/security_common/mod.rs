//! Helpers shared by the hostile-client security tests (`security_*.rs`): servers with authentication, token
//! minting, WebSocket upgrades with chosen headers, a check that a new healthy client still round-trips, and the
//! latency probe that holds an already-open healthy client to 2x its no-attack round trip ([`latency`]).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringcast_engine::{AuthKey, Config, ServerHandle};

#[path = "../pubsub_common/mod.rs"]
pub mod pubsub_common;
pub use pubsub_common::*;

#[path = "../latency_common/mod.rs"]
pub mod latency;
#[allow(unused_imports)]
pub use latency::{Kind, Probe};

pub const SECRET: &[u8] = b"security-tests-secret-0123456789";

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A two-core server requiring HS256 tokens signed with [`SECRET`].
pub fn auth_config() -> Config {
    Config {
        auth: Some(AuthKey::Secret(SECRET.to_vec())),
        ..config()
    }
}

/// An HS256 token with these claims.
pub fn token_from(claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// A valid token for `user` for `ttl` seconds with these permissions.
pub fn token(
    user: &str,
    ttl: u64,
    subscribe: &[&str],
    publish: &[&str],
    direct: &[&str],
) -> String {
    token_from(
        &serde_json::json!({
            "sub": user,
            "exp": unix_now() + ttl,
            "ringcast": {"subscribe": subscribe, "publish": publish, "direct": direct},
        }),
        SECRET,
    )
}

/// A token allowed everything, valid for an hour.
pub fn root_token(user: &str) -> String {
    token(user, 3600, &["*"], &["*"], &["*"])
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// Sends a WebSocket upgrade for `path` with extra header lines; returns the stream and the response head.
pub fn upgrade(addr: SocketAddr, path: &str, extra: &[&str]) -> (std::net::TcpStream, String) {
    let mut s = connect(addr);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
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

/// A refused upgrade: the full response (status, headers, JSON body).
pub fn refused_upgrade(addr: SocketAddr, path: &str, extra: &[&str]) -> Response {
    let mut s = connect(addr);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut s)
}

/// An open pub/sub WebSocket with these extra upgrade headers.
pub fn ws(addr: SocketAddr, extra: &[&str]) -> RawWs {
    let (stream, head) = upgrade(addr, "/ws", extra);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    RawWs { stream }
}

/// A healthy, authorized client still subscribes, publishes and receives within a second.
pub fn assert_healthy(addr: SocketAddr, extra: &[&str]) {
    let mut sub = ws(addr, extra);
    let topic = format!("healthy.{}", unix_now() % 100_000);
    sub.sub(&topic, None, 1);
    let mut publisher = ws(addr, extra);
    let started = std::time::Instant::now();
    publisher.send(&format!(
        r#"{{"op":"pub","topic":"{topic}","data":{{"ok":true}},"id":2}}"#
    ));
    let m = sub.msg();
    assert_eq!(
        (m.kind.as_str(), m.data.as_deref()),
        ("msg", Some(r#"{"ok":true}"#)),
        "{m:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "healthy round trip took {:?}",
        started.elapsed()
    );
}

/// Asserts a `{"error":..,"message":..}` body.
pub fn assert_json_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}{}", r.head, r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.head
    );
    let o = object(r.text());
    assert!(!string(field(&o, "message")).is_empty());
}

pub fn running(handle: &ServerHandle) -> SocketAddr {
    handle.local_addr()
}
