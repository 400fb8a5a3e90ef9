//! The WebSocket pub/sub protocol over real sockets: `unsub` stops delivery of one topic while another keeps
//! flowing (also while a fan-out is half written), and malformed frames, unknown ops and invalid topics get an error
//! reply with its code while the connection stays usable.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::time::Duration;

use pubsub_common as pc;

fn published(server: &ringcast_engine::ServerHandle) -> u64 {
    server.stats().iter().map(|s| s.messages_published()).sum()
}

#[test]
fn unsub_stops_delivery_of_that_topic_only() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let p = server.publisher();
    let topics = pc::topics_by_owner("unsub", 1);
    // Stop each topic in turn (one owned by each core), the other keeps flowing.
    for (stop_i, keep_i) in [(0usize, 1usize), (1, 0)] {
        let (stop, keep) = (&topics[stop_i], &topics[keep_i]);
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(stop, None, 1);
        ws.sub(keep, None, 2);
        // A witness that stays subscribed to the stopped topic proves its messages are still published.
        let mut witness = pc::RawWs::connect(addr, None);
        witness.sub(stop, None, 1);
        let base_stop = pc::poll_body(
            pc::http_once(addr, "GET", &format!("/messages/{stop}?since=0"), &[], b"").text(),
        )
        .next;
        let base_keep = pc::poll_body(
            pc::http_once(addr, "GET", &format!("/messages/{keep}?since=0"), &[], b"").text(),
        )
        .next;
        p.publish_json(stop, "1").unwrap();
        p.publish_json(keep, "1").unwrap();
        let mut first: Vec<(String, u64)> = (0..2)
            .map(|_| {
                let m = ws.msg();
                (m.topic.unwrap(), m.seq.unwrap())
            })
            .collect();
        first.sort();
        let mut want = vec![(stop.clone(), base_stop + 1), (keep.clone(), base_keep + 1)];
        want.sort();
        assert_eq!(first, want);

        ws.send(&format!(r#"{{"op":"unsub","topic":"{stop}","id":9}}"#));
        let ack = ws.msg();
        assert_eq!(
            (ack.kind.as_str(), ack.id.as_deref(), ack.seq),
            ("ack", Some("9"), None),
            "{ack:?}"
        );
        for n in 2..=20 {
            p.publish_json(stop, n.to_string()).unwrap();
            p.publish_json(keep, n.to_string()).unwrap();
        }
        // Everything after the ack is the kept topic, in order, up to its last message.
        for n in 2..=20u64 {
            let m = ws.msg();
            assert_eq!(
                (m.topic.as_deref(), m.seq, m.data.as_deref()),
                (
                    Some(keep.as_str()),
                    Some(base_keep + n),
                    Some(&*n.to_string())
                ),
                "after unsub"
            );
        }
        for n in 1..=20u64 {
            assert_eq!(witness.msg().seq, Some(base_stop + n));
        }
        ws.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(ws.next(), pc::Frame::Timeout, "a message after unsub");
        ws.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        // Subscribing again resumes live delivery.
        ws.sub(stop, None, 10);
        p.publish_json(stop, "21").unwrap();
        assert_eq!(ws.msg().seq, Some(base_stop + 21));
    }
    pc::stop(server);
}

/// Sends `frame` and expects an error reply with `code` and `id`.
fn expect_error(ws: &mut pc::RawWs, frame: &str, code: &str, id: Option<&str>) {
    ws.send(frame);
    let text = match ws.next() {
        pc::Frame::Text(t) => t,
        other => panic!("{frame}: expected an error reply, got {other:?}"),
    };
    let m = pc::ws_msg(&text);
    assert_eq!(
        (m.kind.as_str(), m.code.as_deref(), m.id.as_deref()),
        ("error", Some(code), id),
        "{frame} -> {text}"
    );
    let o = pc::object(&text);
    assert!(!pc::string(pc::field(&o, "message")).is_empty(), "{text}");
}

#[test]
fn malformed_frames_get_error_replies_and_the_connection_stays_usable() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let long = "a".repeat(129);
    let mut ws = pc::RawWs::connect(addr, None);
    let before = published(&server);
    expect_error(&mut ws, "not json", "bad_json", None);
    expect_error(&mut ws, r#"{"op":"sub","topic":"#, "bad_json", None);
    expect_error(&mut ws, r#"[1,2]"#, "not_an_object", None);
    expect_error(&mut ws, r#"{"op":"nope","id":4}"#, "unknown_op", Some("4"));
    expect_error(&mut ws, r#"{"topic":"t","id":8}"#, "missing_op", Some("8"));
    expect_error(
        &mut ws,
        r#"{"op":"sub","topic":"a b","id":5}"#,
        "invalid_topic",
        Some("5"),
    );
    expect_error(
        &mut ws,
        &format!(r#"{{"op":"sub","topic":"{long}","id":6}}"#),
        "invalid_topic",
        Some("6"),
    );
    expect_error(
        &mut ws,
        r#"{"op":"sub","topic":"","id":7}"#,
        "invalid_topic",
        Some("7"),
    );
    expect_error(
        &mut ws,
        r#"{"op":"pub","topic":"a b","data":1,"id":11}"#,
        "invalid_topic",
        Some("11"),
    );
    expect_error(
        &mut ws,
        &format!(r#"{{"op":"pub","topic":"{long}","data":1,"id":12}}"#),
        "invalid_topic",
        Some("12"),
    );
    expect_error(
        &mut ws,
        r#"{"op":"pub","topic":"ok","id":13}"#,
        "missing_data",
        Some("13"),
    );
    expect_error(
        &mut ws,
        r#"{"op":"sub","topic":"ok","since":-1,"id":14}"#,
        "invalid_since",
        Some("14"),
    );
    assert_eq!(published(&server), before, "an invalid op published");

    // Still usable: subscribe and publish over the same connection, for topics owned by each core.
    for (i, topic) in pc::topics_by_owner("errs", 1).iter().enumerate() {
        ws.sub(topic, None, 100 + i as u64);
        ws.send(&format!(
            r#"{{"op":"pub","topic":"{topic}","data":{{"ok":true}},"id":200}}"#
        ));
        let mut got = [ws.msg(), ws.msg()];
        got.sort_by(|a, b| a.kind.cmp(&b.kind));
        assert_eq!(
            (got[0].kind.as_str(), got[0].id.as_deref(), got[0].seq),
            ("ack", Some("200"), Some(1))
        );
        assert_eq!(
            (
                got[1].kind.as_str(),
                got[1].topic.as_deref(),
                got[1].seq,
                got[1].data.as_deref()
            ),
            ("msg", Some(topic.as_str()), Some(1), Some(r#"{"ok":true}"#))
        );
    }
    assert_eq!(published(&server), before + 2);
    drop(ws);
    pc::stop(server);
}

/// With fan-outs written one subscriber per turn, a subscriber that unsubscribes and subscribes again with `since`
/// while a fan-out is still on its way to it gets each message once: the half-written fan-out drops it (else the
/// rest of it, written when the replay arrives, would repeat what the replay brings).
#[test]
fn resubscribing_during_a_sliced_fanout_gets_each_message_once() {
    let server = pc::start(ringcast_engine::Config {
        cores: ringcast_engine::CoreSet::Count(1),
        fanout_slice: 1,
        ..pc::config()
    });
    let addr = server.local_addr();
    let mut http = pc::Http::new(addr);
    let mut exercised = 0;
    for attempt in 0..5 {
        let topic = format!("slice.resub.{attempt}");
        // Written in subscription order: the last one subscribed is reached last, ~1,000 turns after the publish.
        let others: Vec<pc::RawWs> = (0..1000)
            .map(|_| {
                let mut ws = pc::RawWs::connect(addr, None);
                ws.sub(&topic, None, 1);
                ws
            })
            .collect();
        let mut last = pc::RawWs::connect(addr, None);
        last.sub(&topic, None, 1);
        let s1 = http.publish(&topic, "1");
        last.send(&format!(r#"{{"op":"unsub","topic":"{topic}","id":2}}"#));
        let mut seen = 0;
        loop {
            let m = last.msg();
            if m.kind == "ack" {
                break;
            }
            assert_eq!((m.kind.as_str(), m.seq), ("msg", Some(s1)), "{m:?}");
            seen = s1;
        }
        if seen == 0 {
            exercised += 1;
        }
        last.sub(&topic, Some(seen), 3);
        let s2 = http.publish(&topic, "2");
        let mut got = Vec::new();
        while got.last() != Some(&s2) {
            let m = last.msg();
            assert_eq!(m.kind, "msg", "{m:?}");
            got.push(m.seq.unwrap_or(0));
        }
        let want: Vec<u64> = (seen + 1..=s2).collect();
        assert_eq!(got, want, "attempt {attempt}: seen {seen} before the unsub");
        drop(others);
    }
    assert!(
        exercised > 0,
        "the fan-out always reached the last subscriber before its unsub"
    );
    pc::stop(server);
}
