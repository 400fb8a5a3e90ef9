//! Resume and reset on every transport, for a topic owned by each core: a client that drops and comes back with
//! WebSocket `since`, SSE `Last-Event-ID` (or `?since`), or a poll's `since` gets exactly the messages it missed
//! and then the live ones; when `since` is older than the retained history, it gets a `reset` to the oldest
//! retained seq − 1 followed by the retained messages.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::time::Duration;

use pubsub_common as pc;
use ringcast_engine::{Config, HistoryLimits, Publisher, ServerHandle};

fn data(topic: &str, seq: u64) -> String {
    format!(r#"{{"t":"{topic}","n":{seq}}}"#)
}

/// Publishes messages `from..=to` (the n-th message published to a topic gets seq n) and waits until the owner
/// numbered the last one.
fn publish_range(server: &ServerHandle, p: &Publisher, topic: &str, from: u64, to: u64) {
    for n in from..=to {
        p.publish_json(topic, data(topic, n)).unwrap();
    }
    let addr = server.local_addr();
    let mut h = pc::Http::new(addr);
    let ok = pc::wait_until(Duration::from_secs(10), || {
        let r = h.get(&format!("/messages/{topic}?since={}", to.saturating_sub(1)));
        pc::poll_body(r.text()).next == to
    });
    assert!(ok, "{topic}: message {to} was not numbered");
}

fn expect_ws_range(ws: &mut pc::RawWs, topic: &str, from: u64, to: u64) {
    for n in from..=to {
        let m = ws.msg();
        assert_eq!(m.kind, "msg", "{m:?}");
        assert_eq!(m.topic.as_deref(), Some(topic));
        assert_eq!(m.seq, Some(n), "{m:?}");
        assert_eq!(m.data.as_deref(), Some(&*data(topic, n)));
    }
}

fn expect_sse_range(sse: &mut pc::Sse, topic: &str, from: u64, to: u64) {
    for n in from..=to {
        assert_eq!(sse.message(), (n, data(topic, n)));
    }
}

/// Nothing more arrives on `ws` within a short window.
fn expect_ws_quiet(ws: &mut pc::RawWs) {
    ws.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(ws.next(), pc::Frame::Timeout, "unexpected extra message");
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
}

#[test]
fn websocket_resume_with_since_returns_exactly_the_missed_messages() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let p = server.publisher();
    for topic in pc::topics_by_owner("resume.ws", 1) {
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, None, 1);
        publish_range(&server, &p, &topic, 1, 10);
        expect_ws_range(&mut ws, &topic, 1, 10);
        drop(ws);
        publish_range(&server, &p, &topic, 11, 25);
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, Some(10), 2);
        expect_ws_range(&mut ws, &topic, 11, 25);
        // Then live, with no duplicate of the replay.
        publish_range(&server, &p, &topic, 26, 27);
        expect_ws_range(&mut ws, &topic, 26, 27);
        expect_ws_quiet(&mut ws);
        // since = the last seq: nothing replayed, live only.
        let mut ws2 = pc::RawWs::connect(addr, None);
        ws2.sub(&topic, Some(27), 3);
        publish_range(&server, &p, &topic, 28, 28);
        expect_ws_range(&mut ws2, &topic, 28, 28);
        expect_ws_range(&mut ws, &topic, 28, 28);
    }
    pc::stop(server);
}

#[test]
fn sse_resume_with_last_event_id_returns_exactly_the_missed_messages() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let p = server.publisher();
    for topic in pc::topics_by_owner("resume.sse", 1) {
        publish_range(&server, &p, &topic, 1, 10);
        let mut sse = pc::Sse::open(addr, &format!("/sse/{topic}?since=0"), &[]);
        expect_sse_range(&mut sse, &topic, 1, 10);
        assert_eq!(sse.retry(), Some(3000), "retry: sent at connect");
        // What a browser would send back: the stream's last event id.
        let last_id = sse.last_event_id();
        assert_eq!(last_id, "10");
        drop(sse);
        publish_range(&server, &p, &topic, 11, 25);
        let header = format!("Last-Event-ID: {last_id}");
        let mut sse = pc::Sse::open(addr, &format!("/sse/{topic}"), &[&header]);
        expect_sse_range(&mut sse, &topic, 11, 25);
        publish_range(&server, &p, &topic, 26, 27);
        expect_sse_range(&mut sse, &topic, 26, 27);
        // `?since=` works the same, and the header wins over the query.
        let mut q = pc::Sse::open(addr, &format!("/sse/{topic}?since=20"), &[]);
        expect_sse_range(&mut q, &topic, 21, 27);
        let mut both = pc::Sse::open(
            addr,
            &format!("/sse/{topic}?since=3"),
            &["Last-Event-ID: 25"],
        );
        expect_sse_range(&mut both, &topic, 26, 27);
    }
    pc::stop(server);
}

#[test]
fn poll_resume_with_since_returns_exactly_the_missed_messages() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let p = server.publisher();
    let mut h = pc::Http::new(addr);
    for topic in pc::topics_by_owner("resume.poll", 1) {
        publish_range(&server, &p, &topic, 1, 10);
        let b = pc::poll_body(h.get(&format!("/messages/{topic}?since=0")).text());
        let want: Vec<(u64, String)> = (1..=10).map(|n| (n, data(&topic, n))).collect();
        assert_eq!((b.messages, b.next, b.reset), (want, 10, false));
        publish_range(&server, &p, &topic, 11, 25);
        let missed: Vec<(u64, String)> = (11..=25).map(|n| (n, data(&topic, n))).collect();
        for path in [
            format!("/messages/{topic}?since=10"),
            format!("/poll/{topic}?since=10&timeout=5"),
        ] {
            let b = pc::poll_body(h.get(&path).text());
            assert_eq!(
                (&b.messages, b.next, b.reset),
                (&missed, 25, false),
                "{path}"
            );
        }
        // limit caps the batch; next continues from the last returned seq.
        let b = pc::poll_body(h.get(&format!("/messages/{topic}?since=10&limit=4")).text());
        assert_eq!((b.messages, b.next), (missed[..4].to_vec(), 14));
    }
    pc::stop(server);
}

fn small_history() -> Config {
    Config {
        history: HistoryLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
            max_age: None,
        },
        ..pc::config()
    }
}

#[test]
fn a_gap_beyond_history_resets_on_every_transport() {
    let server = pc::start(small_history());
    let addr = server.local_addr();
    let p = server.publisher();
    let mut h = pc::Http::new(addr);
    for topic in pc::topics_by_owner("gap", 1) {
        publish_range(&server, &p, &topic, 1, 50);

        // WebSocket: ack, reset to 40, then 41..=50 and nothing else.
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, Some(5), 1);
        let m = ws.msg();
        assert_eq!(
            (m.kind.as_str(), m.topic.as_deref(), m.seq),
            ("reset", Some(&*topic), Some(40)),
            "{m:?}"
        );
        expect_ws_range(&mut ws, &topic, 41, 50);
        expect_ws_quiet(&mut ws);
        // Just inside the history: no reset.
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, Some(40), 2);
        expect_ws_range(&mut ws, &topic, 41, 50);
        // One short of it: reset.
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, Some(39), 3);
        assert_eq!(ws.msg().kind, "reset");
        expect_ws_range(&mut ws, &topic, 41, 50);

        // SSE: `event: reset` with {"seq":40}, then ids 41..=50.
        for (path, header) in [
            (format!("/sse/{topic}"), "Last-Event-ID: 5"),
            (format!("/sse/{topic}?since=5"), "X-None: 1"),
        ] {
            let mut sse = pc::Sse::open(addr, &path, &[header]);
            let e = sse.event().unwrap();
            assert_eq!(e.event_type, "reset", "{e:?}");
            assert_eq!(e.data, r#"{"seq":40}"#);
            expect_sse_range(&mut sse, &topic, 41, 50);
        }

        // Polls: reset true, 41..=50, next 50.
        let retained: Vec<(u64, String)> = (41..=50).map(|n| (n, data(&topic, n))).collect();
        for path in [
            format!("/messages/{topic}?since=5"),
            format!("/poll/{topic}?since=5&timeout=5"),
        ] {
            let b = pc::poll_body(h.get(&path).text());
            assert_eq!(
                (&b.messages, b.next, b.reset),
                (&retained, 50, true),
                "{path}"
            );
        }
        let b = pc::poll_body(h.get(&format!("/messages/{topic}?since=40")).text());
        assert_eq!((&b.messages, b.reset), (&retained, false));
    }
    pc::stop(server);
}
