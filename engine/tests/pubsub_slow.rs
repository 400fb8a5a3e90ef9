//! Slow pub/sub subscribers, one test per policy: a raw WebSocket subscriber with a tiny receive buffer never reads
//! while ~20 MB of messages are published (write_high_water 256 KiB). `Disconnect` closes it (1008 or EOF, counted);
//! `DropOldest` drops its oldest queued messages (counted) and keeps it open, its stream increasing with gaps and
//! ending with the newest message; a conflated topic (`ticks.*`) keeps only its newest messages (counted) and never
//! disconnects it. Healthy subscribers on both cores get every seq meanwhile. A subscriber with default buffers that
//! never reads is disconnected before more than the mark + its receive buffer is published, with the kernel's
//! send-buffer autotuning (the default) and with a small `send_buffer`: the mark counts the kernel's send queue.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pubsub_common as pc;
use ringcast_engine::{Config, PublishError, ServerHandle, SlowConsumerPolicy};

const MESSAGES: u64 = 2000;
const PAD: usize = 10 * 1024;
/// Messages a healthy subscriber may lag behind the publisher (well under the high-water mark).
const WINDOW: u64 = 6;

fn config(policy: SlowConsumerPolicy, conflate: &[&str]) -> Config {
    Config {
        write_high_water: 256 * 1024,
        slow_consumer: policy,
        conflate: conflate.iter().map(|s| s.to_string()).collect(),
        close_timeout: Duration::from_millis(500),
        ..pc::config()
    }
}

fn payload(n: u64, pad: &str) -> String {
    format!(r#"{{"n":{n},"pad":"{pad}"}}"#)
}

struct Healthy {
    progress: Arc<AtomicU64>,
    reader: JoinHandle<Vec<u64>>,
}

/// Healthy subscribers of `topic` on every core, each read by its own thread.
fn healthy(server: &ServerHandle, topic: &str) -> Vec<Healthy> {
    let addr = server.local_addr();
    pc::on_every_core(server, 2, || {
        let mut ws = pc::RawWs::connect(addr, None);
        ws.sub(topic, None, 1);
        ws
    })
    .into_iter()
    .map(|(_, mut ws)| {
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let reader = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while seqs.last() != Some(&MESSAGES) {
                let m = match ws.next() {
                    pc::Frame::Text(t) => pc::ws_msg(&t),
                    other => panic!(
                        "healthy subscriber got {other:?} after {} messages",
                        seqs.len()
                    ),
                };
                let seq = m.seq.unwrap();
                seqs.push(seq);
                p.store(seq, Ordering::Release);
            }
            seqs
        });
        Healthy { progress, reader }
    })
    .collect()
}

/// Publishes `MESSAGES` ~10 KiB messages, never more than `WINDOW` ahead of the healthy subscribers.
fn flood(server: &ServerHandle, topic: &str, healthy: &[Healthy]) {
    let p = server.publisher();
    let pad = "x".repeat(PAD);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 1..=MESSAGES {
        while healthy
            .iter()
            .any(|h| h.progress.load(Ordering::Acquire) + WINDOW < n)
        {
            assert!(
                Instant::now() < deadline,
                "healthy subscribers stalled before {n}"
            );
            std::thread::yield_now();
        }
        loop {
            match p.publish_json(topic, payload(n, &pad)) {
                Ok(()) => break,
                Err(PublishError::Backpressure) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn check_healthy(server: &ServerHandle, healthy: Vec<Healthy>) {
    let all: Vec<u64> = (1..=MESSAGES).collect();
    for (i, h) in healthy.into_iter().enumerate() {
        let seqs = h.reader.join().unwrap();
        assert!(
            seqs == all,
            "healthy subscriber {i} missed or reordered messages"
        );
    }
    for (i, s) in server.stats().iter().enumerate() {
        assert!(s.deliveries() > 0, "core {i} delivered nothing");
    }
}

fn sum(server: &ServerHandle, f: fn(&ringcast_engine::stats::CoreStats) -> u64) -> u64 {
    server.stats().iter().map(|s| f(s)).sum()
}

/// A subscriber whose receive window is a few KiB and which does not read.
fn slow(server: &ServerHandle, topic: &str) -> pc::RawWs {
    let mut ws = pc::RawWs::connect(server.local_addr(), Some(4096));
    ws.sub(topic, None, 1);
    ws
}

/// Reads the slow subscriber's stream until `MESSAGES` arrives; returns the seqs (checked strictly increasing).
fn drain(ws: &mut pc::RawWs) -> Vec<u64> {
    let mut seqs: Vec<u64> = Vec::new();
    while seqs.last() != Some(&MESSAGES) {
        match ws.next() {
            pc::Frame::Text(t) => {
                let m = pc::ws_msg(&t);
                assert_eq!(m.kind, "msg");
                let seq = m.seq.unwrap();
                assert!(
                    seqs.last().is_none_or(|&l| seq > l),
                    "{seq} after {:?}",
                    seqs.last()
                );
                let pad = "x".repeat(PAD);
                assert_eq!(
                    m.data.unwrap(),
                    payload(seq, &pad),
                    "message {seq} corrupted"
                );
                seqs.push(seq);
            }
            other => panic!("slow subscriber got {other:?} after {:?}", seqs.last()),
        }
    }
    seqs
}

#[test]
fn disconnect_policy_closes_the_slow_subscriber_only() {
    let server = pc::start(config(SlowConsumerPolicy::Disconnect, &[]));
    let topic = pc::topic_owned_by("slow.d", 1);
    let mut slow = slow(&server, &topic);
    let healthy = healthy(&server, &topic);
    flood(&server, &topic, &healthy);
    check_healthy(&server, healthy);
    assert!(
        pc::wait_until(Duration::from_secs(5), || sum(&server, |s| s
            .slow_consumer_disconnects())
            > 0),
        "the slow subscriber was not disconnected"
    );
    assert_eq!(sum(&server, |s| s.slow_consumer_disconnects()), 1);
    assert_eq!(sum(&server, |s| s.slow_consumer_drops()), 0);
    // What the kernel already held, then a 1008 close or the end of the stream.
    let mut last = 0;
    let end = loop {
        match slow.next() {
            pc::Frame::Text(t) => {
                let seq = pc::ws_msg(&t).seq.unwrap();
                assert!(seq > last);
                last = seq;
            }
            other => break other,
        }
    };
    assert!(
        matches!(end, pc::Frame::Close(Some(1008)) | pc::Frame::Eof),
        "slow subscriber ended with {end:?}"
    );
    assert!(last < MESSAGES, "the slow subscriber got everything");
    drop(slow);
    pc::stop(server);
}

#[test]
fn drop_oldest_policy_keeps_the_slow_subscriber_with_gaps_and_the_newest_message() {
    let server = pc::start(config(SlowConsumerPolicy::DropOldest, &[]));
    let topic = pc::topic_owned_by("slow.o", 0);
    let mut slow = slow(&server, &topic);
    let healthy = healthy(&server, &topic);
    flood(&server, &topic, &healthy);
    check_healthy(&server, healthy);
    assert!(
        sum(&server, |s| s.slow_consumer_drops()) > 0,
        "nothing dropped"
    );
    assert_eq!(sum(&server, |s| s.slow_consumer_disconnects()), 0);
    let seqs = drain(&mut slow);
    assert!(
        (seqs.len() as u64) < MESSAGES,
        "no gap in {} messages",
        seqs.len()
    );
    assert_eq!(seqs.last(), Some(&MESSAGES));
    // Still subscribed and open.
    server
        .publisher()
        .publish_json(&topic, "\"after\"")
        .unwrap();
    let m = slow.msg();
    assert_eq!(
        (m.seq, m.data.as_deref()),
        (Some(MESSAGES + 1), Some("\"after\""))
    );
    drop(slow);
    pc::stop(server);
}

#[test]
fn conflated_topic_keeps_the_newest_and_never_disconnects() {
    // The policy is Disconnect: a conflated topic must never trigger it.
    let server = pc::start(config(SlowConsumerPolicy::Disconnect, &["ticks.*"]));
    let topic = "ticks.x";
    let mut slow = slow(&server, topic);
    let healthy = healthy(&server, topic);
    flood(&server, topic, &healthy);
    check_healthy(&server, healthy);
    assert!(sum(&server, |s| s.conflated()) > 0, "nothing conflated");
    assert_eq!(sum(&server, |s| s.slow_consumer_disconnects()), 0);
    assert_eq!(sum(&server, |s| s.slow_consumer_drops()), 0);
    let seqs = drain(&mut slow);
    assert!((seqs.len() as u64) < MESSAGES, "nothing conflated away");
    assert_eq!(seqs.last(), Some(&MESSAGES));
    server.publisher().publish_json(topic, "1").unwrap();
    assert_eq!(slow.msg().seq, Some(MESSAGES + 1));
    drop(slow);
    pc::stop(server);
}

/// A subscriber with the kernel's default buffers that never reads, on the default configuration (no `SO_SNDBUF`:
/// the kernel autotunes the send buffer, on loopback up to `net.ipv4.tcp_wmem`'s maximum). With the mark set to
/// that maximum, a mark counting only ringcast's own queue would let the kernel park a full send buffer *and* the
/// queue fill to the mark (about twice the mark); counting the kernel's send queue keeps the backlog published
/// before the disconnect under the mark + the subscriber's receive buffer.
#[test]
fn never_reading_subscriber_with_the_default_send_buffer_is_held_to_the_mark() {
    let cfg = Config::default();
    assert_eq!(cfg.send_buffer, 0, "the default leaves autotuning");
    never_reading_subscriber_is_disconnected_within(cfg.send_buffer, tcp_wmem_max());
}

/// The same with `send_buffer` set to 64 KiB and a 256 KiB mark: the kernel may hold at most 128 KiB (it doubles
/// the value), so the disconnect comes at the mark + the receive buffer; without the `SO_SNDBUF` the kernel's
/// autotuned buffer alone (megabytes on loopback) would be far past it.
#[test]
fn never_reading_subscriber_with_a_small_send_buffer_is_held_to_the_mark() {
    never_reading_subscriber_is_disconnected_within(64 * 1024, 256 * 1024);
}

/// The kernel's ceiling for an autotuned send buffer (third field of `net.ipv4.tcp_wmem`; 4 MiB if unreadable).
fn tcp_wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20)
}

/// Publishes 4 KiB messages one at a time to a subscriber that never reads (each handed to its socket before the
/// next) until the disconnect policy applies, and asserts that what was published by then is within the mark +
/// the subscriber's receive buffer (+ a few messages in flight).
fn never_reading_subscriber_is_disconnected_within(send_buffer: usize, high: usize) {
    const MSG: usize = 4096;
    let cfg = Config {
        send_buffer,
        write_high_water: high,
        ..config(SlowConsumerPolicy::Disconnect, &[])
    };
    let server = pc::start(cfg);
    let topic = pc::topic_owned_by("slow.k", 0);
    let slow = pc::RawWs::connect(server.local_addr(), None);
    let rcvbuf = socket2::SockRef::from(&slow.stream)
        .recv_buffer_size()
        .unwrap();
    let mut slow = slow;
    slow.sub(&topic, None, 1);
    let bound = high + rcvbuf + 4 * MSG;
    let p = server.publisher();
    let pad = "x".repeat(MSG);
    let mut published = 0usize;
    let mut n = 0u64;
    // Publish one message at a time, each handed to the subscriber's socket before the next, until the policy
    // applies (or far past the bound).
    while sum(&server, |s| s.slow_consumer_disconnects()) == 0 && published <= 4 * bound {
        n += 1;
        let body = payload(n, &pad);
        loop {
            match p.publish_json(&topic, body.clone()) {
                Ok(()) => break,
                Err(PublishError::Backpressure) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
        published += body.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sum(&server, |s| s.deliveries()) < n
            && sum(&server, |s| s.slow_consumer_disconnects()) == 0
        {
            assert!(Instant::now() < deadline, "message {n} was not delivered");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    eprintln!(
        "send_buffer {send_buffer}, mark {high}, receive buffer {rcvbuf}: disconnected after {published} bytes"
    );
    assert_eq!(
        sum(&server, |s| s.slow_consumer_disconnects()),
        1,
        "not disconnected after {published} bytes"
    );
    assert!(
        published <= bound,
        "disconnected only after {published} bytes were published (bound {bound}: mark {high}, receive buffer \
         {rcvbuf}, send_buffer {send_buffer})"
    );
    // What the kernel held, then the end of the stream.
    let end = loop {
        match slow.next() {
            pc::Frame::Text(_) => {}
            other => break other,
        }
    };
    assert!(
        matches!(end, pc::Frame::Close(Some(1008)) | pc::Frame::Eof),
        "slow subscriber ended with {end:?}"
    );
    pc::stop(server);
}

/// Bursts of messages go to subscribers as joined passes, and a subscriber that is behind queues a pass as one
/// entry. Under `DropOldest`, dropping such an entry must count every message in it: for a subscriber that does
/// not read during the bursts, what it finally reads plus what was counted as dropped is exactly what was
/// published, its stream stays whole (every frame intact, seqs increasing) and ends on the newest message.
#[test]
fn drop_oldest_counts_every_message_of_a_dropped_joined_pass() {
    const TOTAL: u64 = 3000;
    let server = pc::start(Config {
        cores: ringcast_engine::CoreSet::Count(1),
        write_high_water: 64 * 1024,
        send_buffer: 4096,
        fanout_slice: 0,
        turn_write_budget: 0,
        ..config(SlowConsumerPolicy::DropOldest, &[])
    });
    let topic = "slow.joined";
    let mut slow = pc::RawWs::connect(server.local_addr(), Some(4096));
    slow.sub(topic, None, 1);
    let p = server.publisher();
    let pad = "y".repeat(200);
    for n in 1..=TOTAL {
        while let Err(e) = p.publish_json(topic, payload(n, &pad)) {
            assert_eq!(e, PublishError::Backpressure);
            std::thread::yield_now();
        }
    }
    // `publish_json` returns once the message is in the core's channel; the core may still be fanning out. Reading
    // before it has handed over every message lets a fast reader keep up and nothing is dropped (seen on a loaded CI
    // machine), so wait until every message went to the subscriber's queue while it is not reading.
    assert!(
        pc::wait_until(Duration::from_secs(20), || sum(&server, |s| s.deliveries())
            >= TOTAL),
        "only {} of {TOTAL} messages handed over in 20 s",
        sum(&server, |s| s.deliveries())
    );
    // Everything (≈ 690 KB) was handed over while the subscriber did not read: its queue must be held to the 64 KiB
    // mark already, however the core batched the messages.
    let dropped_unread = sum(&server, |s| s.slow_consumer_drops());
    assert!(dropped_unread > 0, "nothing dropped before reading");
    let mut seqs: Vec<u64> = Vec::new();
    while seqs.last() != Some(&TOTAL) {
        let m = slow.msg();
        let seq = m.seq.unwrap();
        assert!(
            seqs.last().is_none_or(|&l| seq > l),
            "{seq} after {:?}",
            seqs.last()
        );
        assert_eq!(
            m.data.unwrap(),
            payload(seq, &pad),
            "message {seq} corrupted"
        );
        seqs.push(seq);
    }
    let dropped = sum(&server, |s| s.slow_consumer_drops());
    assert!(dropped > 0, "nothing dropped");
    assert_eq!(
        seqs.len() as u64 + dropped,
        TOTAL,
        "read {} and counted {dropped} dropped of {TOTAL}",
        seqs.len()
    );
    assert_eq!(sum(&server, |s| s.slow_consumer_disconnects()), 0);
    drop(slow);
    pc::stop(server);
}
