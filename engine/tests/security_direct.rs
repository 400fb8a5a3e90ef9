//! Direct messages (`{"op":"pub","user":..}`): delivered to every pub/sub WebSocket connection of the user on
//! every core, only with the token's `direct` permission, refused without authentication, acknowledged without a
//! `seq` (also for a user with no connection), and never delivered when refused.
//!
//! "Nothing delivered" is checked without timeouts: after a refused (or unaddressed) message the same sender sends
//! an allowed marker, and the marker must be the next frame each receiver sees. Both travel the same FIFO paths
//! (the sender's core broadcasts to every core in order), so a leaked message would arrive first.
#![allow(clippy::unwrap_used)]

mod security_common;

use std::time::Duration;

use security_common::*;

/// The next frame as a parsed JSON object: (type, from, data, id, code).
fn next_json(
    ws: &mut RawWs,
) -> (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    let text = match ws.next() {
        Frame::Text(t) => t,
        other => panic!("expected a text frame, got {other:?}"),
    };
    let o = object(&text);
    let get = |k: &str| o.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    (
        string(field(&o, "type")),
        get("from").map(string),
        get("data").map(str::to_string),
        get("id").map(str::to_string),
        get("code").map(string),
    )
}

fn assert_direct(ws: &mut RawWs, from: &str, data: &str) {
    let (kind, f, d, id, _) = next_json(ws);
    assert_eq!(
        (kind.as_str(), f.as_deref(), d.as_deref(), id),
        ("direct", Some(from), Some(data), None)
    );
}

fn assert_ack(ws: &mut RawWs, id: &str) {
    let text = match ws.next() {
        Frame::Text(t) => t,
        other => panic!("expected an ack, got {other:?}"),
    };
    // Exactly `{"type":"ack","id":N}`: direct messages are not numbered.
    assert_eq!(text, format!(r#"{{"type":"ack","id":{id}}}"#));
}

fn assert_error(ws: &mut RawWs, id: Option<&str>, code: &str) {
    let (kind, _, _, got_id, got_code) = next_json(ws);
    assert_eq!(
        (kind.as_str(), got_id.as_deref(), got_code.as_deref()),
        ("error", id, Some(code))
    );
}

/// A pub/sub WebSocket authenticated as `user` with these `direct` patterns.
fn user_ws(addr: std::net::SocketAddr, user: &str, direct: &[&str]) -> RawWs {
    ws(addr, &[&bearer(&token(user, 3600, &["*"], &["*"], direct))])
}

#[test]
fn a_direct_message_reaches_every_connection_of_the_user_on_every_core() {
    let server = start(auth_config());
    let addr = server.local_addr();
    // Bob has connections on both cores; so do the sender alice and the bystander carol.
    let mut bob = on_every_core(&server, 3, || user_ws(addr, "bob", &[]));
    let mut alice = on_every_core(&server, 2, || user_ws(addr, "alice", &["bob"]));
    let mut carol = on_every_core(&server, 2, || user_ws(addr, "carol", &[]));
    // Bob is also subscribed to a topic: direct messages and topic messages share the connection.
    bob[0].1.sub("news", None, 1);
    for (n, (core, a)) in alice.iter_mut().enumerate() {
        let data = format!(r#"{{"n":{n},"from_core":{core}}}"#);
        a.send(&format!(
            r#"{{"op":"pub","user":"bob","data":{data},"id":{n}}}"#
        ));
        assert_ack(a, &n.to_string());
        for (_, b) in bob.iter_mut() {
            assert_direct(b, "alice", &data);
        }
    }
    // Without an id: no ack, still delivered.
    alice[0]
        .1
        .send(r#"{"op":"pub","user":"bob","data":"quiet"}"#);
    for (_, b) in bob.iter_mut() {
        assert_direct(b, "alice", r#""quiet""#);
    }
    // Carol received none of it: her next frame is her own marker.
    for (_, c) in carol.iter_mut() {
        c.send(r#"{"op":"pub","topic":"x","data":1,"id":99}"#);
        let (kind, _, _, id, _) = next_json(c);
        assert_eq!((kind.as_str(), id.as_deref()), ("ack", Some("99")));
    }
    // A closed connection of bob's is forgotten; the others still get messages.
    let (_, closed) = bob.pop().unwrap();
    drop(closed);
    std::thread::sleep(Duration::from_millis(50));
    alice[1]
        .1
        .send(r#"{"op":"pub","user":"bob","data":[1,2],"id":5}"#);
    assert_ack(&mut alice[1].1, "5");
    for (_, b) in bob.iter_mut() {
        assert_direct(b, "alice", "[1,2]");
    }
    assert_healthy(addr, &[&bearer(&root_token("dave"))]);
    drop((bob, alice, carol));
    stop(server);
}

#[test]
fn a_direct_message_outside_the_token_is_forbidden_and_not_delivered() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[&bearer(&root_token("dave"))]);
    let base = probe.baseline();
    let mut bob = on_every_core(&server, 2, || user_ws(addr, "bob", &[]));
    // Alice may write to `team.*` and to bob, mallory to nobody.
    let mut alice = user_ws(addr, "alice", &["team.*"]);
    let mut mallory = user_ws(addr, "mallory", &[]);
    let mut teammate = user_ws(addr, "team.bob", &[]);
    // 500 refusals: under the message rate limit's burst (1000), so mallory stays connected.
    probe.during("forbidden direct messages", base, || {
        for i in 0..500 {
            mallory.send(&format!(
                r#"{{"op":"pub","user":"bob","data":"spam","id":{i}}}"#
            ));
            assert_error(&mut mallory, Some(&i.to_string()), "forbidden");
        }
    });
    alice.send(r#"{"op":"pub","user":"bob","data":"spam","id":2}"#);
    assert_error(&mut alice, Some("2"), "forbidden");
    // `team.*` matches `team.bob`, not `team`.
    alice.send(r#"{"op":"pub","user":"team","data":"x","id":3}"#);
    assert_error(&mut alice, Some("3"), "forbidden");
    alice.send(r#"{"op":"pub","user":"team.bob","data":"hello","id":4}"#);
    assert_ack(&mut alice, "4");
    assert_direct(&mut teammate, "alice", r#""hello""#);
    // Both refused senders stay connected; a sender with permission now reaches bob, and that is the first
    // thing bob sees.
    let mut root = ws(addr, &[&bearer(&root_token("root"))]);
    root.send(r#"{"op":"pub","user":"bob","data":"marker","id":5}"#);
    assert_ack(&mut root, "5");
    for (_, b) in bob.iter_mut() {
        assert_direct(b, "root", r#""marker""#);
    }
    mallory.send(r#"{"op":"sub","topic":"t","id":6}"#);
    assert_ack(&mut mallory, "6");
    let mut out = Vec::new();
    ringcast_engine::stats::render_prometheus(server.stats(), &mut out);
    let forbidden: u64 = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ringcast_forbidden_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(forbidden, 502, "every refusal is counted");
    drop((bob, alice, mallory, teammate, root));
    stop(server);
}

#[test]
fn a_direct_message_to_a_user_with_no_connection_is_acked_and_goes_nowhere() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let mut bob = on_every_core(&server, 2, || user_ws(addr, "bob", &[]));
    let mut alice = user_ws(addr, "alice", &["*"]);
    alice.send(r#"{"op":"pub","user":"nobody","data":1,"id":1}"#);
    assert_ack(&mut alice, "1");
    alice.send(r#"{"op":"pub","user":"bob","data":"marker","id":2}"#);
    assert_ack(&mut alice, "2");
    for (_, b) in bob.iter_mut() {
        assert_direct(b, "alice", r#""marker""#);
    }
    drop((bob, alice));
    stop(server);
}

#[test]
fn user_ids_with_escapes_are_decoded() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let mut jose = user_ws(addr, "jos\u{e9} \"j\"", &[]);
    let mut alice = user_ws(addr, "alice", &["*"]);
    alice.send(r#"{"op":"pub","user":"jos\u00e9 \"j\"","data":{},"id":1}"#);
    assert_ack(&mut alice, "1");
    assert_direct(&mut jose, "alice", "{}");
    // And the sender's name is escaped in `from`.
    jose.send(r#"{"op":"pub","user":"alice","data":0,"id":2}"#);
    assert_error(&mut jose, Some("2"), "forbidden");
    let mut jose2 = user_ws(addr, "jos\u{e9} \"j\"", &["alice"]);
    jose2.send(r#"{"op":"pub","user":"alice","data":0}"#);
    let text = match alice.next() {
        Frame::Text(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(text, r#"{"type":"direct","from":"josé \"j\"","data":0}"#);
    drop((jose, alice, jose2));
    stop(server);
}

#[test]
fn malformed_direct_messages_get_error_replies() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let mut alice = user_ws(addr, "alice", &["*"]);
    for (frame, id, code) in [
        (
            r#"{"op":"pub","topic":"t","user":"bob","data":1,"id":1}"#,
            Some("1"),
            "topic_and_user",
        ),
        (
            r#"{"op":"pub","user":"","data":1,"id":2}"#,
            Some("2"),
            "invalid_user",
        ),
        (
            r#"{"op":"pub","user":7,"data":1,"id":3}"#,
            Some("3"),
            "invalid_user",
        ),
        (
            r#"{"op":"pub","user":"bob","id":4}"#,
            Some("4"),
            "missing_data",
        ),
        (
            r#"{"op":"pub","user":"bob","user":"eve","data":1,"id":5}"#,
            Some("5"),
            "duplicate_field",
        ),
    ] {
        alice.send(frame);
        assert_error(&mut alice, id, code);
    }
    assert_healthy(addr, &[&bearer(&root_token("dave"))]);
    drop((alice,));
    stop(server);
}

#[test]
fn without_authentication_direct_messages_are_forbidden() {
    // An open server has no identities: nobody can be addressed and no sender can be named.
    let server = start(config());
    let addr = server.local_addr();
    let mut a = RawWs::connect(addr, None);
    a.send(r#"{"op":"pub","user":"bob","data":1,"id":1}"#);
    assert_error(&mut a, Some("1"), "forbidden");
    // Topic publishing is unaffected.
    a.send(r#"{"op":"pub","topic":"t","data":1,"id":2}"#);
    let (kind, _, _, id, _) = next_json(&mut a);
    assert_eq!((kind.as_str(), id.as_deref()), ("ack", Some("2")));
    drop((a,));
    stop(server);
}

#[test]
fn direct_messages_count_against_the_publish_rate_limit() {
    let server = start(ringcast_engine::Config {
        publish_rate_limit: 2,
        ..auth_config()
    });
    let addr = server.local_addr();
    let mut alice = user_ws(addr, "alice", &["*"]);
    for i in 0..10 {
        alice.send(&format!(r#"{{"op":"pub","user":"bob","data":{i}}}"#));
    }
    assert_eq!(alice.next(), Frame::Close(Some(1008)));
    drop((alice,));
    stop(server);
}
