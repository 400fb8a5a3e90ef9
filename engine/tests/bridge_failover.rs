//! Multi-node failure behaviour against a real `redis-server`: Redis down at start (the node serves, `/readyz`
//! 503, then ready once Redis is up), and Redis killed and restarted empty mid-stream (publishes during the outage
//! get 503 within 10 s, `/readyz` 503 then 200, `/healthz` stays 200, subscribers stay connected and go on with seqs
//! that never repeat or go backwards, any jump announced with `reset`).
#![allow(clippy::unwrap_used)]

mod bridge_common;
mod pubsub_common;

use std::time::{Duration, Instant};

use bridge_common as bc;
use pubsub_common as pc;

#[test]
fn redis_down_at_start_node_serves_not_ready_then_ready() {
    if !bc::redis_available() {
        return;
    }
    let mut redis = bc::Redis::start();
    redis.kill();
    let node = pc::start(bc::node_config(&redis.url(), "early"));
    let addr = node.local_addr();
    assert_eq!(bc::readyz(addr), 503);
    assert_eq!(pc::http_once(addr, "GET", "/healthz", &[], b"").status, 200);
    // A subscriber is accepted meanwhile; its subscription completes once Redis is there.
    let mut w = pc::RawWs::connect(addr, None);
    w.send(r#"{"op":"sub","topic":"fo.early","id":1}"#);
    let t0 = Instant::now();
    let r = pc::http_once(addr, "POST", "/publish/fo.early", &[], b"1");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let m = pc::http_once(addr, "GET", "/metrics", &[], b"");
    assert!(
        m.text()
            .contains("ringcast_bridge_connected{node=\"early\"} 0")
    );
    // An outside-thread publisher learns it too.
    let p = node.publisher();
    assert_eq!(
        p.publish_text("fo.early", "x"),
        Err(ringcast_engine::PublishError::Unavailable)
    );
    redis.restart();
    bc::wait_ready(std::slice::from_ref(&node));
    assert_eq!(p.publish_text("fo.other", "y"), Ok(()));
    let ack = w.msg();
    assert_eq!((ack.kind.as_str(), ack.id.as_deref()), ("ack", Some("1")));
    let seq = pc::Http::new(addr).publish("fo.early", "2");
    assert!(seq > 1_000_000_000_000_000, "above the epoch base: {seq}");
    let m = w.msg();
    assert_eq!((m.seq, m.data.as_deref()), (Some(seq), Some("2")));
    pc::stop(node);
}

/// What a subscriber saw: (seq, data) for messages, (reset to m) as `(m, "reset")`.
fn ws_item(w: &mut pc::RawWs) -> (u64, String) {
    let m = w.msg();
    match m.kind.as_str() {
        "msg" => (m.seq.unwrap(), m.data.unwrap()),
        "reset" => (m.seq.unwrap(), "reset".to_owned()),
        k => panic!("unexpected {k}: {m:?}"),
    }
}

#[test]
fn redis_killed_and_restarted_empty_mid_stream() {
    if !bc::redis_available() {
        return;
    }
    let mut redis = bc::Redis::start();
    let nodes = bc::start_nodes(&redis, 3);
    bc::wait_ready(&nodes);
    let topic = "fo.stream";
    let mut ws: Vec<pc::RawWs> = nodes
        .iter()
        .map(|n| {
            let mut w = pc::RawWs::connect(n.local_addr(), None);
            w.sub(topic, None, 1);
            w
        })
        .collect();
    let mut sse: Vec<pc::Sse> = nodes
        .iter()
        .map(|n| pc::Sse::open(n.local_addr(), &format!("/sse/{topic}"), &[]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut h: Vec<pc::Http> = nodes
        .iter()
        .map(|n| pc::Http::new(n.local_addr()))
        .collect();
    let b0 = h[1].publish(topic, "1") - 1;
    for k in 2..=6u64 {
        assert_eq!(h[(k % 3) as usize].publish(topic, &k.to_string()), b0 + k);
    }
    for w in &mut ws {
        for k in 1..=6u64 {
            assert_eq!(ws_item(w), (b0 + k, k.to_string()));
        }
    }
    for s in &mut sse {
        for k in 1..=6u64 {
            assert_eq!(s.message(), (b0 + k, k.to_string()));
        }
    }

    redis.kill();
    for n in &nodes {
        let ok = pc::wait_until(Duration::from_secs(10), || {
            bc::readyz(n.local_addr()) == 503
        });
        assert!(ok, "/readyz stays 200 with Redis gone");
        assert_eq!(
            pc::http_once(n.local_addr(), "GET", "/healthz", &[], b"").status,
            200
        );
    }
    // Publishes during the outage: 503 within 10 s, on a connection that stays usable.
    for hh in &mut h {
        let t0 = Instant::now();
        let r = hh.request(
            "POST",
            &format!("/publish/{topic}"),
            &["Content-Type: application/json"],
            b"\"lost\"",
        );
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    // A WebSocket publish with an id gets an `unavailable` error.
    ws[0].send(&format!(
        r#"{{"op":"pub","topic":"{topic}","data":"lost","id":9}}"#
    ));
    let e = ws[0].msg();
    assert_eq!(
        (e.kind.as_str(), e.code.as_deref()),
        ("error", Some("unavailable"))
    );
    // New connections are still accepted.
    let mut late = pc::RawWs::connect(nodes[1].local_addr(), None);
    late.send(&format!(
        r#"{{"op":"sub","topic":"{topic}","since":{},"id":5}}"#,
        b0 + 4
    ));

    redis.restart(); // empty: no seq key, no stream
    bc::wait_ready(&nodes);
    // Every node saw seq 6: the counter restarts above it (at the new epoch's base), not at 1.
    let mut next = Vec::new();
    for k in 0..3u64 {
        next.push(h[k as usize].publish(topic, &format!("\"after{k}\"")));
    }
    assert!(
        next.iter().all(|&s| s > b0 + 6),
        "seq went backwards: {next:?}"
    );
    assert!(next.windows(2).all(|w| w[0] < w[1]), "{next:?}");
    // The subscriber that came during the outage: acked once Redis is back, then gets the new messages (the missed
    // range 5..6 is gone with Redis: announced as a reset).
    let ack = late.msg();
    assert_eq!((ack.kind.as_str(), ack.id.as_deref()), ("ack", Some("5")));
    // Every subscriber stayed connected: seqs only go up, nothing is repeated, a jump comes after a reset, and the
    // published messages all arrive, never the refused ones.
    let check = |items: Vec<(u64, String)>, who: &str| {
        let mut last = b0 + 6;
        let mut expect_jump_ok = false;
        for (seq, d) in &items {
            if d == "reset" {
                expect_jump_ok = true;
                last = *seq;
                continue;
            }
            assert!(*seq > last, "{who}: seq {seq} after {last}: {items:?}");
            assert!(
                *seq == last + 1 || expect_jump_ok,
                "{who}: jump {last} -> {seq} without reset: {items:?}"
            );
            assert_ne!(d, "\"lost\"", "{who}: a refused publish was delivered");
            expect_jump_ok = false;
            last = *seq;
        }
        let datas: Vec<&str> = items
            .iter()
            .filter(|i| i.1 != "reset")
            .map(|i| i.1.as_str())
            .collect();
        assert_eq!(datas, ["\"after0\"", "\"after1\"", "\"after2\""], "{who}");
    };
    for (i, w) in ws.iter_mut().enumerate() {
        let mut items = Vec::new();
        while items
            .iter()
            .filter(|i: &&(u64, String)| i.1 != "reset")
            .count()
            < 3
        {
            items.push(ws_item(w));
        }
        check(items, &format!("ws{i}"));
    }
    for (i, s) in sse.iter_mut().enumerate() {
        let mut items: Vec<(u64, String)> = Vec::new();
        while items.iter().filter(|i| i.1 != "reset").count() < 3 {
            let e = s.event().expect("an SSE event");
            if e.event_type_or_message() == "message" {
                items.push((pc::num(e.id.as_deref().unwrap()), e.data.clone()));
            } else {
                assert_eq!(e.event_type_or_message(), "reset", "{e:?}");
                let o = pc::object(&e.data);
                items.push((pc::num(pc::field(&o, "seq")), "reset".to_owned()));
            }
        }
        check(items, &format!("sse{i}"));
    }
    let late_items: Vec<(u64, String)> = (0..4).map(|_| ws_item(&mut late)).collect();
    // The range 5..6 is gone with Redis; the reset points just below the new epoch's first message.
    assert_eq!(
        late_items[0],
        (next[0] - 1, "reset".to_owned()),
        "{late_items:?}"
    );
    assert_eq!(
        late_items[1..]
            .iter()
            .map(|i| i.1.as_str())
            .collect::<Vec<_>>(),
        ["\"after0\"", "\"after1\"", "\"after2\""]
    );
    let m = pc::http_once(nodes[0].local_addr(), "GET", "/metrics", &[], b"");
    assert!(
        m.text()
            .contains("ringcast_bridge_reconnects_total{node=\"node-0\"} 1"),
        "{}",
        m.text()
    );
    for n in nodes {
        pc::stop(n);
    }
}

/// Reads one WebSocket message of `topic` (a `msg` or a `reset`).
fn ws_topic_item(w: &mut pc::RawWs, topic: &str) -> (u64, String) {
    let m = w.msg();
    assert_eq!(m.topic.as_deref(), Some(topic), "{m:?}");
    match m.kind.as_str() {
        "msg" => (m.seq.unwrap(), m.data.unwrap()),
        "reset" => (m.seq.unwrap(), "reset".to_owned()),
        k => panic!("unexpected {k}: {m:?}"),
    }
}

/// The hole the epoch base closes: Redis comes back empty and the first node to publish topic T never saw T's
/// seqs (it had no subscriber of T and never published it), while the node that did is still away. The seq it gets
/// must be above every earlier seq of T, so the other node's subscriber sees a reset and the message (not a drop
/// as "already seen"), and that node then goes on above it.
#[test]
fn redis_back_empty_a_node_that_never_saw_the_topic_publishes_first() {
    if !bc::redis_available() {
        return;
    }
    let mut redis = bc::Redis::start();
    // A reaches Redis through a proxy the test can close, so B is surely first after the restart.
    let proxy = bc::Proxy::start(redis.port);
    let a = pc::start(bc::node_config(&proxy.url(), "node-a"));
    let b = pc::start(bc::node_config(&redis.url(), "node-b"));
    let nodes = [a, b];
    bc::wait_ready(&nodes);
    let (a_addr, b_addr) = (nodes[0].local_addr(), nodes[1].local_addr());
    let topic = "fo.epoch";
    let mut sub_a = pc::RawWs::connect(a_addr, None);
    sub_a.sub(topic, None, 1);
    // B's clients want another topic only.
    let mut sub_b = pc::RawWs::connect(b_addr, None);
    sub_b.sub("fo.other", None, 1);
    let mut ha = pc::Http::new(a_addr);
    let mut before = Vec::new();
    for k in 1..=5 {
        before.push(ha.publish(topic, &k.to_string()));
    }
    for (k, &seq) in before.iter().enumerate() {
        assert_eq!(ws_topic_item(&mut sub_a, topic), (seq, (k + 1).to_string()));
    }
    let highest = *before.iter().max().unwrap();

    proxy.set_open(false);
    redis.kill();
    let ok = pc::wait_until(Duration::from_secs(10), || bc::readyz(a_addr) == 503);
    assert!(ok, "A still ready with Redis gone");
    redis.restart(); // empty
    bc::wait_ready(&nodes[1..]);
    assert_eq!(bc::readyz(a_addr), 503, "A must still be away");
    let seq_b = pc::Http::new(b_addr).publish(topic, "\"from-b\"");
    assert!(
        seq_b > highest,
        "seq {seq_b} from B repeats or goes below {highest}"
    );

    proxy.set_open(true);
    bc::wait_ready(&nodes);
    // A's subscriber: a reset to just below B's message, then the message itself.
    assert_eq!(
        ws_topic_item(&mut sub_a, topic),
        (seq_b - 1, "reset".to_owned())
    );
    assert_eq!(
        ws_topic_item(&mut sub_a, topic),
        (seq_b, "\"from-b\"".to_owned())
    );
    // A goes on above it.
    let seq_a = ha.publish(topic, "\"from-a\"");
    assert_eq!(seq_a, seq_b + 1);
    assert_eq!(
        ws_topic_item(&mut sub_a, topic),
        (seq_a, "\"from-a\"".to_owned())
    );
    for n in nodes {
        pc::stop(n);
    }
}
