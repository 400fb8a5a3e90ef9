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

/// Subscribers that join with `since` while a publisher floods the topic: a core batches a turn's live messages
/// per topic and writes them at the end of the turn, so a subscriber whose replay arrives in the middle of a turn
/// must not also get the messages batched before it joined (they are in its replay). Each joiner, WebSocket or
/// SSE, must see exactly since+1, since+2, … up to the last message: no duplicate, no gap, no reset.
#[test]
fn subscribers_joining_during_a_flood_get_each_message_once_in_order() {
    // Fan-outs written over several turns (the common config: 3 subscribers a turn).
    joiners_during_a_flood(pc::config());
}

#[test]
fn subscribers_joining_during_a_flood_get_each_message_once_in_order_with_whole_turn_fanout() {
    joiners_during_a_flood(Config {
        fanout_slice: 0,
        turn_write_budget: 0,
        ..pc::config()
    });
}

#[test]
fn subscribers_joining_during_a_flood_get_each_message_once_in_order_one_write_a_turn() {
    // A budget of one byte: every turn writes one subscriber's share of a fan-out and one backlog, and the core
    // wakes itself (fan-out) or the write set stays ready (backlogs) for the rest.
    joiners_during_a_flood(Config {
        fanout_slice: 0,
        turn_write_budget: 1,
        ..pc::config()
    });
}

fn joiners_during_a_flood(config: Config) {
    // Two cores, so the joiners on the core that does not own the topic get their replay in the same channel as
    // the deliveries, in the middle of a turn's batch.
    let server = pc::start(config);
    let addr = server.local_addr();
    let topic = "batch.flood".to_string();
    // Something subscribed from the start, so the flood is live fan-out.
    let mut early = vec![(0usize, {
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(&topic, None, 1);
        ws
    })];
    let total = 10_000u64;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p = server.publisher();
    let (t, s) = (topic.clone(), sent.clone());
    let publisher = std::thread::spawn(move || {
        for n in 1..=total {
            loop {
                match p.publish_json(&t, format!(r#"{{"n":{n}}}"#)) {
                    Ok(()) => break,
                    Err(PublishError::Backpressure) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            s.store(n, std::sync::atomic::Ordering::Relaxed);
            // Bursts of 100: each fills a core's turn with live messages while joiners' replays come in.
            if n % 100 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    });
    let mut ws_joiners = Vec::new();
    let mut sse_joiners = Vec::new();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < total * 9 / 10 {
        // What the owner has numbered, not what was handed to it: a `since` ahead of the topic is answered
        // with a `reset`, as it should be.
        let numbered = published(&server);
        if numbered <= 20 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let since = numbered - 20;
        if ws_joiners.len() <= sse_joiners.len() {
            let mut ws = pc::RawWs::connect(addr, None);
            ws.sub(&topic, Some(since), 2);
            ws_joiners.push((since, ws));
        } else {
            let sse = pc::Sse::open(
                addr,
                &format!("/sse/{topic}"),
                &[&format!("Last-Event-ID: {since}")],
            );
            sse_joiners.push((since, sse));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    publisher.join().unwrap();
    assert!(
        ws_joiners.len() >= 3 && sse_joiners.len() >= 3,
        "joined during the flood"
    );
    for (i, (since, ws)) in ws_joiners.iter_mut().enumerate() {
        for want in *since + 1..=total {
            let m = ws.msg();
            assert_eq!(
                (m.kind.as_str(), m.seq),
                ("msg", Some(want)),
                "WebSocket joiner {i} (since {since})"
            );
        }
    }
    for (i, (since, sse)) in sse_joiners.iter_mut().enumerate() {
        for want in *since + 1..=total {
            assert_eq!(sse.message().0, want, "SSE joiner {i} (since {since})");
        }
    }
    for (_, ws) in &mut early {
        for want in 1..=total {
            assert_eq!(ws.msg().seq, Some(want));
        }
    }
    // The clients leave first, so the server's shutdown has no close handshakes to wait for.
    drop((early, ws_joiners, sse_joiners));
    pc::stop(server);
}

/// A fan-out pass of several messages goes to each subscriber as one `write` of the frames joined back to back;
/// what a full socket refuses is queued as one shared slice from the frame the cut falls in (partly written), and
/// later passes go behind it as one entry each. A subscriber
/// that does not read (small buffers on both ends) must still get every message whole, once and in order, next to
/// one that reads. The backlogged-connections gauge counts it while it is behind, and not after it caught up or
/// went away.
#[test]
fn joined_fanout_writes_cut_by_a_full_socket_lose_and_split_nothing() {
    let server = pc::start(Config {
        cores: ringcast_engine::CoreSet::Count(1),
        send_buffer: 4096,
        fanout_slice: 0,
        turn_write_budget: 0,
        ..pc::config()
    });
    let addr = server.local_addr();
    let topic = "joined.cut";
    let mut reader = pc::RawWs::connect(addr, None);
    reader.sub(topic, None, 1);
    let mut paused = pc::RawWs::connect(addr, Some(4096));
    paused.sub(topic, None, 1);
    let p = server.publisher();
    let total = 3_000u64;
    // Bursts, so that turns carry many messages (joined writes); 3,000 × ≈ 150 B stays under the 4 MiB
    // high-water mark, so the slow-consumer policy never applies.
    let pad = "x".repeat(97);
    for n in 1..=total {
        while let Err(e) = p.publish_json(topic, format!(r#"{{"n":{n},"p":"{pad}"}}"#)) {
            assert_eq!(e, PublishError::Backpressure);
            std::thread::yield_now();
        }
        if n % 250 == 0 {
            // The reader keeps up; the paused one does not read at all yet.
            for _ in 0..250 {
                reader.msg();
            }
        }
    }
    let backlogged = |s: &ServerHandle| {
        s.stats()
            .iter()
            .map(|c| c.backlogged_connections())
            .sum::<u64>()
    };
    // The paused subscriber is behind (its socket refused output); the reader is not.
    assert!(
        pc::wait_until(Duration::from_secs(5), || backlogged(&server) == 1),
        "one backlogged connection, got {}",
        backlogged(&server)
    );
    for (who, ws) in [("reader", &mut reader), ("paused", &mut paused)] {
        let from = if who == "reader" { total + 1 } else { 1 };
        for n in from..=total {
            let m = ws.msg();
            assert_eq!((m.kind.as_str(), m.seq), ("msg", Some(n)), "{who}");
            assert_eq!(
                m.data.as_deref(),
                Some(format!(r#"{{"n":{n},"p":"{pad}"}}"#).as_str()),
                "{who}"
            );
        }
    }
    let dropped = pc::metric_sum(addr, "ringcast_slow_consumer_dropped_messages_total");
    assert_eq!(dropped, 0, "nothing dropped");
    // Every delivery counts as a frame sent, the queued ones too (plus the two acknowledgements).
    let frames = pc::metric_sum(addr, "ringcast_ws_frames_out_total");
    assert_eq!(frames, 2 * total + 2, "frames out");
    assert!(
        pc::wait_until(Duration::from_secs(5), || backlogged(&server) == 0),
        "caught up: {}",
        backlogged(&server)
    );
    // A backlogged subscriber that goes away leaves the gauge too.
    drop(reader);
    drop(paused);
    let mut gone = pc::RawWs::connect(addr, Some(4096));
    gone.sub(topic, None, 1);
    for n in 1..=total {
        while let Err(e) = p.publish_json(topic, format!(r#"{{"n":{n},"p":"{pad}"}}"#)) {
            assert_eq!(e, PublishError::Backpressure);
            std::thread::yield_now();
        }
    }
    assert!(
        pc::wait_until(Duration::from_secs(5), || backlogged(&server) >= 1),
        "backlogged again"
    );
    drop(gone);
    assert!(
        pc::wait_until(Duration::from_secs(5), || backlogged(&server) == 0),
        "closed: {}",
        backlogged(&server)
    );
    assert_eq!(pc::metric_sum(addr, "ringcast_backlogged_connections"), 0);
    pc::stop(server);
}

/// A batch that arrives while the topic's pass is part-way (a slice of one subscriber per turn, forty
/// subscribers) splits it: the subscribers not yet written get the old and the new messages in one write, the
/// ones already written get the new ones in a pass of their own, and passes still waiting take the new messages
/// too. Whatever the interleaving, every subscriber must get every message exactly once and in order (leaving
/// out the written part's pass, or the waiting passes' share, loses messages).
#[test]
fn batches_arriving_during_a_sliced_pass_reach_every_subscriber_once_in_order() {
    let server = pc::start(Config {
        cores: ringcast_engine::CoreSet::Count(1),
        fanout_slice: 1,
        turn_write_budget: 0,
        ..pc::config()
    });
    let addr = server.local_addr();
    let topic = "split.pass";
    let mut subs: Vec<pc::RawWs> = (0..40)
        .map(|i| {
            let mut ws = pc::RawWs::connect(addr, None);
            ws.sub(topic, None, i);
            ws
        })
        .collect();
    let p = server.publisher();
    let total = 400u64;
    for n in 1..=total {
        while let Err(e) = p.publish_json(topic, format!(r#"{{"n":{n}}}"#)) {
            assert_eq!(e, PublishError::Backpressure);
            std::thread::yield_now();
        }
        // Messages alone and in bursts of ten, so that batches land on passes at every stage.
        if n % 10 < 5 {
            std::thread::sleep(Duration::from_micros(20 * (n % 5)));
        }
    }
    for (i, ws) in subs.iter_mut().enumerate() {
        for n in 1..=total {
            let m = ws.msg();
            assert_eq!((m.kind.as_str(), m.seq), ("msg", Some(n)), "subscriber {i}");
            assert_eq!(m.data.as_deref(), Some(format!(r#"{{"n":{n}}}"#).as_str()));
        }
    }
    drop(subs);
    pc::stop(server);
}
