//! The embedding API over a real server: a `Publisher` on plain std threads publishes 1,000 messages per topic
//! (one topic owned by each core) that subscribers on both cores receive in order; `publish_text` sends a JSON
//! string; invalid topics, invalid JSON and oversized data are refused with their error and publish nothing.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::time::Duration;

use pubsub_common as pc;
use ringcast_engine::{Config, PublishError, ServerHandle};
use ringcast_protocol::topic::TopicError;

fn published(server: &ServerHandle) -> u64 {
    server.stats().iter().map(|s| s.messages_published()).sum()
}

#[test]
fn a_publisher_on_std_threads_reaches_subscribers_on_every_core() {
    let server = pc::start(Config {
        max_message_size: 4096,
        ..pc::config()
    });
    let addr = server.local_addr();
    let topics = pc::topics_by_owner("embed", 1);
    let mut subs = pc::on_every_core(&server, 2, || {
        let mut ws = pc::RawWs::connect(addr, None);
        for (i, t) in topics.iter().enumerate() {
            ws.sub(t, None, i as u64);
        }
        ws
    });
    // One plain thread per topic, sharing clones of one handle.
    let p = server.publisher();
    let threads: Vec<_> = topics
        .iter()
        .cloned()
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for n in 1..=1000u64 {
                    loop {
                        match p.publish_json(&t, format!(r#"{{"n":{n}}}"#)) {
                            Ok(()) => break,
                            Err(PublishError::Backpressure) => {
                                std::thread::sleep(Duration::from_millis(1))
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (core, ws) in &mut subs {
        let mut next = [1u64; 2];
        for _ in 0..2000 {
            let m = ws.msg();
            let ti = topics
                .iter()
                .position(|t| Some(t) == m.topic.as_ref())
                .unwrap();
            assert_eq!(
                m.seq,
                Some(next[ti]),
                "subscriber on core {core}, {}",
                topics[ti]
            );
            assert_eq!(m.data, Some(format!(r#"{{"n":{}}}"#, next[ti])));
            next[ti] += 1;
        }
    }
    for (i, s) in server.stats().iter().enumerate() {
        assert_eq!(s.messages_published(), 1000, "core {i} owns one topic");
        assert!(s.deliveries() > 0, "core {i} delivered nothing");
    }

    // publish_text: the data is that text as a JSON string.
    let text = "say \"hi\"\n\t\\ \u{e9}\u{1}";
    p.publish_text(&topics[0], text).unwrap();
    for (_, ws) in &mut subs {
        let m = ws.msg();
        assert_eq!(m.seq, Some(1001));
        assert_eq!(pc::string(m.data.as_deref().unwrap()), text);
    }
    // publish_json trims surrounding whitespace and keeps the value.
    p.publish_json(&topics[1], " [1, 2] \n").unwrap();
    for (_, ws) in &mut subs {
        let m = ws.msg();
        assert_eq!((m.seq, m.data.as_deref()), (Some(1001), Some("[1, 2]")));
    }

    // Refusals publish nothing.
    let before = published(&server);
    let long = "a".repeat(129);
    assert_eq!(
        p.publish_json("a b", "1"),
        Err(PublishError::InvalidTopic(TopicError::InvalidChar))
    );
    assert_eq!(
        p.publish_text(&long, "x"),
        Err(PublishError::InvalidTopic(TopicError::TooLong))
    );
    assert_eq!(
        p.publish_json("", "1"),
        Err(PublishError::InvalidTopic(TopicError::Empty))
    );
    assert_eq!(
        p.publish_json(&topics[0], "{"),
        Err(PublishError::InvalidJson)
    );
    assert_eq!(
        p.publish_json(&topics[0], "1 2"),
        Err(PublishError::InvalidJson)
    );
    let big = format!("\"{}\"", "x".repeat(4096));
    assert_eq!(p.publish_json(&topics[0], big), Err(PublishError::TooLarge));
    assert_eq!(
        p.publish_text(&topics[0], &"y".repeat(4097)),
        Err(PublishError::TooLarge),
        "the text is over the limit (the limit applies to the text, as to an HTTP publish body)"
    );
    // Exactly the limit passes.
    p.publish_json(&topics[0], format!("\"{}\"", "z".repeat(4094)))
        .unwrap();
    for (_, ws) in &mut subs {
        assert_eq!(ws.msg().seq, Some(1002));
    }
    assert_eq!(published(&server), before + 1);
    drop(subs);
    pc::stop(server);
    // After the server stopped, publishing fails instead of blocking or panicking.
    assert_eq!(p.publish_json(&topics[0], "1"), Err(PublishError::Stopped));
}
