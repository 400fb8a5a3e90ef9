//! Direct messages across nodes (multi-node mode, a real `redis-server`): a user connected on two nodes gets a
//! direct message sent on either node on both connections, exactly once each; a node listens to a user's channel
//! only while it has connections of that user; a sender without the permission is refused and nothing is delivered.
//!
//! "Exactly once" is checked without timeouts: markers sent afterwards, alternately from each node, must be the
//! next frames each receiver sees. A duplicate (the sending node's own echo through Redis, or a second delivery)
//! travels ahead of the later markers on the same FIFO paths (one Redis connection per node, the node's bridge, its
//! cores), so it would show up before them.
#![allow(clippy::unwrap_used)]

mod bridge_common;
mod security_common;

use std::process::Command;
use std::time::Duration;

use bridge_common as bc;
use ringcast_engine::{AuthKey, Config};
use security_common::*;

/// `crate::pubsub_common` for `bridge_common`.
use security_common::pubsub_common;

/// A two-core node of the cluster requiring the tests' HS256 tokens.
fn auth_node(redis: &bc::Redis, id: &str) -> ringcast_engine::ServerHandle {
    start(Config {
        auth: Some(AuthKey::Secret(SECRET.to_vec())),
        ..bc::node_config(&redis.url(), id)
    })
}

/// A pub/sub WebSocket authenticated as `user` with these `direct` patterns.
fn user_ws(addr: std::net::SocketAddr, user: &str, direct: &[&str]) -> RawWs {
    ws(addr, &[&bearer(&token(user, 3600, &["*"], &["*"], direct))])
}

/// How many connections (nodes) listen to `user`'s channel, asked with `redis-cli`.
fn listeners(redis: &bc::Redis, user: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "PUBSUB",
            "NUMSUB",
            &format!("rc:u:{{{user}}}"),
        ])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {text:?}"))
}

fn wait_listeners(redis: &bc::Redis, user: &str, n: u64) {
    let ok = wait_until(Duration::from_secs(10), || listeners(redis, user) == n);
    assert!(
        ok,
        "{n} node(s) should listen to {user}, {} do",
        listeners(redis, user)
    );
}

fn text(ws: &mut RawWs) -> String {
    match ws.next() {
        Frame::Text(t) => t,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn direct(from: &str, data: &str) -> String {
    format!(r#"{{"type":"direct","from":"{from}","data":{data}}}"#)
}

fn send(ws: &mut RawWs, user: &str, data: &str, id: u32) {
    ws.send(&format!(
        r#"{{"op":"pub","user":"{user}","data":{data},"id":{id}}}"#
    ));
    assert_eq!(text(ws), format!(r#"{{"type":"ack","id":{id}}}"#));
}

#[test]
fn a_direct_message_reaches_the_users_connections_on_every_node_exactly_once() {
    if !bc::redis_available() {
        return;
    }
    let redis = bc::Redis::start();
    let nodes = [auth_node(&redis, "node-a"), auth_node(&redis, "node-b")];
    bc::wait_ready(&nodes);
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let mut bob_a = user_ws(a, "bob", &[]);
    let mut bob_b = user_ws(b, "bob", &[]);
    let mut alice = user_ws(a, "alice", &["bob"]);
    let mut dave = user_ws(b, "dave", &["bob"]);
    let mut mallory = user_ws(b, "mallory", &[]);
    // Both nodes have a connection of bob: both listen to his channel.
    wait_listeners(&redis, "bob", 2);

    // From A: bob's connection on A gets it from A's cores, the one on B through Redis.
    send(&mut alice, "bob", r#"{"n":1}"#, 1);
    assert_eq!(text(&mut bob_b), direct("alice", r#"{"n":1}"#));
    assert_eq!(text(&mut bob_a), direct("alice", r#"{"n":1}"#));
    // From B, then from A again: each is the very next frame on both connections (no echo, no duplicate).
    send(&mut dave, "bob", r#"{"n":2}"#, 2);
    assert_eq!(text(&mut bob_a), direct("dave", r#"{"n":2}"#));
    assert_eq!(text(&mut bob_b), direct("dave", r#"{"n":2}"#));
    send(&mut alice, "bob", r#"{"n":3}"#, 3);
    assert_eq!(text(&mut bob_b), direct("alice", r#"{"n":3}"#));
    assert_eq!(text(&mut bob_a), direct("alice", r#"{"n":3}"#));

    // A sender without the permission is refused as on one node; nothing reaches bob anywhere.
    mallory.send(r#"{"op":"pub","user":"bob","data":"no","id":4}"#);
    let refused = text(&mut mallory);
    assert!(
        refused.contains(r#""code":"forbidden""#) && refused.contains(r#""id":4"#),
        "{refused}"
    );
    send(&mut dave, "bob", r#"{"n":5}"#, 5);
    send(&mut alice, "bob", r#"{"n":6}"#, 6);
    for bob in [&mut bob_a, &mut bob_b] {
        let got = [text(bob), text(bob)];
        // The two markers come from different nodes: their order may differ between the connections.
        let mut want = [direct("dave", r#"{"n":5}"#), direct("alice", r#"{"n":6}"#)];
        if got[0] != want[0] {
            want.swap(0, 1);
        }
        assert_eq!(got, want);
    }

    // Bob leaves B: B stops listening to his channel, A still does.
    drop(bob_b);
    wait_listeners(&redis, "bob", 1);
    send(&mut dave, "bob", r#"{"n":7}"#, 7);
    assert_eq!(text(&mut bob_a), direct("dave", r#"{"n":7}"#));
    for n in nodes {
        stop(n);
    }
}
