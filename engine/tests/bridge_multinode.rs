//! Multi-node mode against a real `redis-server`: three in-process nodes share one order per topic (subscribers on
//! every node, WebSocket and SSE, publishers on every node), resume works on any node, and a client of a stopped
//! node that reconnects to another with `since` gets exactly what it missed.
#![allow(clippy::unwrap_used)]

mod bridge_common;
mod pubsub_common;

use std::time::Duration;

use bridge_common as bc;
use pubsub_common as pc;

fn collect_ws(ws: &mut pc::RawWs, topic: &str, n: usize) -> Vec<(u64, String)> {
    (0..n)
        .map(|_| {
            let m = ws.msg();
            assert_eq!(m.kind, "msg", "{m:?}");
            assert_eq!(m.topic.as_deref(), Some(topic));
            (m.seq.unwrap(), m.data.unwrap())
        })
        .collect()
}

fn collect_sse(sse: &mut pc::Sse, n: usize) -> Vec<(u64, String)> {
    (0..n).map(|_| sse.message()).collect()
}

#[test]
fn three_nodes_one_order_per_topic_on_websocket_and_sse() {
    if !bc::redis_available() {
        return;
    }
    let redis = bc::Redis::start();
    let nodes = bc::start_nodes(&redis, 3);
    bc::wait_ready(&nodes);
    let topics = ["mn.alpha", "mn.beta"];
    let per_node = 20;
    let mut ws = Vec::new();
    let mut sse = Vec::new();
    for node in &nodes {
        for topic in topics {
            let mut w = pc::RawWs::connect(node.local_addr(), None);
            w.sub(topic, None, 1);
            ws.push((topic, w));
            sse.push((
                topic,
                pc::Sse::open(node.local_addr(), &format!("/sse/{topic}"), &[]),
            ));
        }
    }
    // SSE has no subscription ack: give the bridges time to register the channels.
    std::thread::sleep(Duration::from_millis(300));
    // Publishers on every node at once, on both topics.
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let addr = n.local_addr();
            std::thread::spawn(move || {
                let mut h = pc::Http::new(addr);
                let mut seqs = Vec::new();
                for k in 0..per_node {
                    for topic in topics {
                        seqs.push(h.publish(topic, &format!(r#"{{"node":{i},"k":{k}}}"#)));
                    }
                }
                seqs
            })
        })
        .collect();
    let mut acked = Vec::new();
    for p in publishers {
        acked.extend(p.join().unwrap());
    }
    assert_eq!(acked.len(), 3 * per_node * topics.len());
    let total = 3 * per_node;
    for topic in topics {
        let mut seen: Vec<Vec<(u64, String)>> = Vec::new();
        for (t, w) in ws.iter_mut().filter(|(t, _)| *t == topic) {
            seen.push(collect_ws(w, t, total));
        }
        for (_, s) in sse.iter_mut().filter(|(t, _)| *t == topic) {
            seen.push(collect_sse(s, total));
        }
        assert_eq!(seen.len(), 6, "three nodes, two transports");
        let first = &seen[0];
        let seqs: Vec<u64> = first.iter().map(|m| m.0).collect();
        // A new topic starts above the epoch base (unix ms × 1000 when Redis was found empty), below 2^53.
        let start = seqs[0];
        assert!(
            (1_000_000_000_000_000..1 << 53).contains(&start),
            "{topic}: first seq {start}"
        );
        assert_eq!(
            seqs,
            (start..start + total as u64).collect::<Vec<_>>(),
            "{topic}: one gapless order"
        );
        for other in &seen[1..] {
            assert_eq!(
                other, first,
                "{topic}: every subscriber sees the same order"
            );
        }
        // Every node's every message is there exactly once.
        for node in 0..3 {
            for k in 0..per_node {
                let d = format!(r#"{{"node":{node},"k":{k}}}"#);
                assert_eq!(first.iter().filter(|m| m.1 == d).count(), 1, "{d}");
            }
        }
    }
    // /metrics shows the bridge.
    let m = pc::http_once(nodes[0].local_addr(), "GET", "/metrics", &[], b"");
    assert!(
        m.text()
            .contains("ringcast_bridge_connected{node=\"node-0\"} 1"),
        "{}",
        m.text()
    );
    assert!(m.text().contains("ringcast_bridge_publishes_total"));
    for n in nodes {
        pc::stop(n);
    }
}

#[test]
fn resume_on_another_node_with_since_last_event_id_and_poll() {
    if !bc::redis_available() {
        return;
    }
    let redis = bc::Redis::start();
    let nodes = bc::start_nodes(&redis, 3);
    bc::wait_ready(&nodes);
    let (a, b, c) = (
        nodes[0].local_addr(),
        nodes[1].local_addr(),
        nodes[2].local_addr(),
    );
    let topic = "mn.resume";
    let mut w = pc::RawWs::connect(a, None);
    w.sub(topic, None, 1);
    let mut hb = pc::Http::new(b);
    // Seqs start above the epoch base: `b0 + k` is the k-th message.
    let b0 = hb.publish(topic, "1") - 1;
    for k in 2..=10 {
        assert_eq!(hb.publish(topic, &format!("{k}")), b0 + k);
    }
    let got = collect_ws(&mut w, topic, 10);
    assert_eq!(got.last().map(|m| m.0), Some(b0 + 10));
    drop(w);
    for k in 11..=20 {
        assert_eq!(hb.publish(topic, &format!("{k}")), b0 + k);
    }
    let msgs =
        |r: std::ops::RangeInclusive<u64>| r.map(|k| (b0 + k, k.to_string())).collect::<Vec<_>>();
    // WebSocket on C with the cursor it had on A.
    let mut w = pc::RawWs::connect(c, None);
    w.sub(topic, Some(b0 + 10), 2);
    assert_eq!(collect_ws(&mut w, topic, 10), msgs(11..=20));
    // SSE on C with Last-Event-ID from A.
    let lei = format!("Last-Event-ID: {}", b0 + 15);
    let mut s = pc::Sse::open(c, &format!("/sse/{topic}"), &[&lei]);
    assert_eq!(collect_sse(&mut s, 5), msgs(16..=20));
    // Then live, from A, with no duplicate of the replay.
    let mut ha = pc::Http::new(a);
    assert_eq!(ha.publish(topic, "21"), b0 + 21);
    assert_eq!(collect_ws(&mut w, topic, 1), msgs(21..=21));
    assert_eq!(collect_sse(&mut s, 1), msgs(21..=21));
    // A poll on B.
    let r = pc::Http::new(b).get(&format!("/messages/{topic}?since={}", b0 + 18));
    let body = pc::poll_body(r.text());
    assert_eq!(body.messages, msgs(19..=21));
    assert_eq!(body.next, b0 + 21);
    // "Everything retained" (since=0) starts at the topic's base: no reset for the seqs below it.
    let r = pc::Http::new(b).get(&format!("/messages/{topic}?since=0"));
    let body = pc::poll_body(r.text());
    assert_eq!(body.messages, msgs(1..=21), "{}", r.text());
    assert!(!body.reset, "{}", r.text());
    let mut z = pc::RawWs::connect(b, None);
    z.sub(topic, Some(0), 3);
    assert_eq!(collect_ws(&mut z, topic, 21), msgs(1..=21));
    // A long poll on C answered by a publish on A.
    let since = b0 + 21;
    let waiter = std::thread::spawn(move || {
        pc::Http::new(c).get(&format!("/poll/{topic}?since={since}&timeout=10"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ha.publish(topic, "22"), b0 + 22);
    let r = waiter.join().unwrap();
    let body = pc::poll_body(r.text());
    assert_eq!(body.messages, msgs(22..=22), "{}", r.text());
    for n in nodes {
        pc::stop(n);
    }
}

#[test]
fn client_of_a_stopped_node_reconnects_elsewhere_and_gets_exactly_what_it_missed() {
    if !bc::redis_available() {
        return;
    }
    let redis = bc::Redis::start();
    let mut nodes = bc::start_nodes(&redis, 2);
    bc::wait_ready(&nodes);
    let topic = "mn.move";
    let b = nodes[1].local_addr();
    let mut w = pc::RawWs::connect(nodes[0].local_addr(), None);
    w.sub(topic, None, 1);
    let mut hb = pc::Http::new(b);
    for k in 1..=5 {
        hb.publish(topic, &format!("{k}"));
    }
    let got = collect_ws(&mut w, topic, 5);
    let last = got.last().unwrap().0;
    let b0 = last - 5;
    assert_eq!(got[0], (b0 + 1, "1".to_owned()));
    // Node A goes away; its client is closed (1001) or cut.
    pc::stop(nodes.remove(0));
    match w.next() {
        pc::Frame::Close(_) | pc::Frame::Eof => {}
        pc::Frame::Timeout => panic!("the stopped node's client was not closed"),
        pc::Frame::Text(t) => panic!("unexpected {t}"),
    }
    for k in 6..=12 {
        hb.publish(topic, &format!("{k}"));
    }
    let mut w = pc::RawWs::connect(b, None);
    w.sub(topic, Some(last), 2);
    assert_eq!(
        collect_ws(&mut w, topic, 7),
        (6..=12)
            .map(|k| (b0 + k, k.to_string()))
            .collect::<Vec<_>>()
    );
    hb.publish(topic, "13");
    assert_eq!(
        collect_ws(&mut w, topic, 1),
        vec![(b0 + 13, "13".to_owned())]
    );
    w.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(w.next(), pc::Frame::Timeout, "nothing more");
    for n in nodes {
        pc::stop(n);
    }
}

/// Subscribers joining a node while another node publishes: each new subscription's replay reaches a core whose
/// live subscribers may not have been sent the newest messages yet (still on their way on the Redis channel). The
/// live subscribers must still get every message once, in order, with no reset; the newcomers from their point on.
/// The node already follows the topic, so it answers the newcomers from its own state, with no Redis read each.
#[test]
fn subscribers_joining_during_a_publish_burst_cost_the_live_ones_nothing() {
    if !bc::redis_available() {
        return;
    }
    let redis = bc::Redis::start();
    let nodes = bc::start_nodes(&redis, 2);
    bc::wait_ready(&nodes);
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let topic = "mn.burst";
    // Live subscribers on both cores of A.
    let mut live: Vec<pc::RawWs> = pc::on_every_core(&nodes[0], 2, || {
        let mut w = pc::RawWs::connect(a, None);
        w.sub(topic, None, 1);
        w
    })
    .into_iter()
    .map(|(_, w)| w)
    .collect();
    // From here on A follows the topic: its newcomers are answered without a Redis read.
    let reads = pc::metric_sum(a, "ringcast_bridge_range_reads_total");
    let live_answers = pc::metric_sum(a, "ringcast_bridge_live_answers_total");
    assert!(reads >= 1, "the first subscriber is answered from Redis");
    let n = 400u64;
    let publisher = std::thread::spawn(move || {
        let mut h = pc::Http::new(b);
        (0..n)
            .map(|k| h.publish(topic, &k.to_string()))
            .collect::<Vec<u64>>()
    });
    // Newcomers on A during the burst.
    let mut late = Vec::new();
    for i in 0..30u32 {
        let mut w = pc::RawWs::connect(a, None);
        w.sub(topic, None, u64::from(i) + 2);
        late.push(w);
    }
    let mut seqs = publisher.join().unwrap();
    assert_eq!(
        pc::metric_sum(a, "ringcast_bridge_range_reads_total"),
        reads,
        "no Redis read for a subscriber to a followed topic (a million subscribers once meant a million scripts)"
    );
    assert_eq!(
        pc::metric_sum(a, "ringcast_bridge_live_answers_total"),
        live_answers + 30
    );
    // One more after every newcomer's subscription is complete: each newcomer gets at least this one.
    seqs.push(pc::Http::new(b).publish(topic, &n.to_string()));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for (i, w) in live.iter_mut().enumerate() {
        let got = collect_ws(w, topic, seqs.len());
        let want: Vec<(u64, String)> = seqs
            .iter()
            .enumerate()
            .map(|(k, &s)| (s, k.to_string()))
            .collect();
        assert_eq!(got, want, "live subscriber {i}");
    }
    // Each newcomer: a gapless tail ending at the last message.
    for (i, w) in late.iter_mut().enumerate() {
        let mut last = None;
        loop {
            let m = w.msg();
            assert_eq!(m.kind, "msg", "newcomer {i}: {m:?}");
            let s = m.seq.unwrap();
            if let Some(l) = last {
                assert_eq!(s, l + 1, "newcomer {i}");
            }
            last = Some(s);
            if s == *seqs.last().unwrap() {
                break;
            }
        }
    }
    for n in nodes {
        pc::stop(n);
    }
}
