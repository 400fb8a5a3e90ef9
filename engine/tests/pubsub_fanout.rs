//! Fan-out across cores on every transport: one publisher (HTTP `POST /publish` and a `Publisher` handle on another
//! std thread, concurrently) sends 10,000 messages over 4 topics (two owned by each core); WebSocket, SSE, long-poll
//! and short-poll subscribers, with connections on both cores, all receive the same (seq, data) sequence per topic:
//! seqs 1..=2500, no gap, no duplicate, every published message exactly once.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pubsub_common as pc;
use ringcast_engine::PublishError;
use tokio_tungstenite::tungstenite::Message;

const TOTAL: usize = 10_000;
const TOPICS: usize = 4;
const PER_TOPIC: usize = TOTAL / TOPICS;

type Seqs = Vec<(u64, String)>;

/// Message `k` goes to topic `k % 4`; blocks of 4 alternate between the HTTP and the `Publisher` source.
fn data(k: usize) -> String {
    let src = if (k / TOPICS).is_multiple_of(2) {
        "http"
    } else {
        "pub"
    };
    format!(r#"{{"k":{k},"src":"{src}"}}"#)
}

fn via_http(k: usize) -> bool {
    (k / TOPICS).is_multiple_of(2)
}

fn poll_loop(mut http: pc::Http, topic: String, long: bool) -> JoinHandle<Seqs> {
    std::thread::spawn(move || {
        let mut got: Seqs = Vec::new();
        let mut next = 0u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        while got.len() < PER_TOPIC {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}: poll got {} of {PER_TOPIC}",
                got.len()
            );
            let path = if long {
                format!("/poll/{topic}?since={next}&timeout=5")
            } else {
                format!("/messages/{topic}?since={next}")
            };
            let r = http.get(&path);
            assert_eq!(r.status, 200, "{}{}", r.head, r.text());
            assert_eq!(r.header("cache-control"), Some("no-store"));
            let b = pc::poll_body(r.text());
            assert_eq!(b.topic, topic);
            assert!(!b.reset, "{topic}: unexpected reset");
            if let Some(last) = b.messages.last() {
                assert_eq!(b.next, last.0, "next must be the last seq returned");
            } else {
                assert_eq!(b.next, next, "an empty answer keeps next");
                if !long {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            next = b.next;
            got.extend(b.messages);
        }
        got
    })
}

fn sse_loop(mut sse: pc::Sse) -> JoinHandle<Seqs> {
    std::thread::spawn(move || {
        let mut got: Seqs = Vec::new();
        while got.len() < PER_TOPIC {
            got.push(sse.message());
        }
        got
    })
}

fn publish_all(addr: SocketAddr, publisher: ringcast_engine::Publisher, topics: &[String]) {
    let t_http = topics.to_vec();
    let http = std::thread::spawn(move || {
        let mut h = pc::Http::new(addr);
        for k in (0..TOTAL).filter(|&k| via_http(k)) {
            h.publish(&t_http[k % TOPICS], &data(k));
        }
    });
    let t_pub = topics.to_vec();
    let other = std::thread::spawn(move || {
        for k in (0..TOTAL).filter(|&k| !via_http(k)) {
            loop {
                match publisher.publish_json(&t_pub[k % TOPICS], data(k)) {
                    Ok(()) => break,
                    Err(PublishError::Backpressure) => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("publish failed: {e}"),
                }
            }
        }
    });
    http.join().unwrap();
    other.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_sse_long_and_short_polls_receive_the_same_10k_messages_in_order() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let topics = pc::topics_by_owner("fan", TOPICS / 2);
    assert_eq!(
        topics.iter().map(|t| pc::owner(t)).collect::<Vec<_>>(),
        vec![0, 1, 0, 1]
    );

    // WebSocket subscribers (tokio-tungstenite), at least one on each core, each subscribed to every topic.
    let mut ws_conns = Vec::new();
    for _ in 0..64 {
        let before = pc::accepted(&server);
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let core = pc::core_of_new_conn(&server, &before);
        for (i, t) in topics.iter().enumerate() {
            ws.send(Message::text(format!(
                r#"{{"op":"sub","topic":"{t}","id":{i}}}"#
            )))
            .await
            .unwrap();
        }
        let mut acks: Vec<u64> = Vec::new();
        for _ in 0..TOPICS {
            let m = ws.next().await.unwrap().unwrap();
            let m = pc::ws_msg(m.to_text().unwrap());
            assert_eq!(m.kind, "ack", "{m:?}");
            acks.push(pc::num(m.id.as_deref().unwrap()));
        }
        acks.sort_unstable();
        assert_eq!(acks, vec![0, 1, 2, 3]);
        ws_conns.push((core, ws));
        let cores: Vec<usize> = ws_conns.iter().map(|c| c.0).collect();
        if ws_conns.len() >= 2 && cores.contains(&0) && cores.contains(&1) {
            break;
        }
    }
    let ws_cores: Vec<usize> = ws_conns.iter().map(|c| c.0).collect();
    assert!(
        ws_cores.contains(&0) && ws_cores.contains(&1),
        "{ws_cores:?}"
    );
    let ws_readers: Vec<_> = ws_conns
        .into_iter()
        .map(|(_, mut ws)| {
            tokio::spawn(async move {
                let mut by_topic: HashMap<String, Seqs> = HashMap::new();
                let mut n = 0;
                while n < TOTAL {
                    let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
                        .await
                        .expect("WebSocket subscriber starved")
                        .unwrap()
                        .unwrap();
                    if !m.is_text() {
                        continue;
                    }
                    let m = pc::ws_msg(m.to_text().unwrap());
                    assert_eq!(m.kind, "msg", "{m:?}");
                    by_topic
                        .entry(m.topic.unwrap())
                        .or_default()
                        .push((m.seq.unwrap(), m.data.unwrap()));
                    n += 1;
                }
                by_topic
            })
        })
        .collect();

    // SSE, long-poll and short-poll subscribers per topic, each transport with connections on both cores.
    let setup_server = &server;
    let (sse_threads, lp_threads, sp_threads) = tokio::task::block_in_place(|| {
        let mut sse = Vec::new();
        let mut lp = Vec::new();
        let mut sp = Vec::new();
        for t in &topics {
            let path = format!("/sse/{t}?since=0");
            let conns = pc::on_every_core(setup_server, 2, || pc::Sse::open(addr, &path, &[]));
            sse.push(
                conns
                    .into_iter()
                    .map(|(_, s)| sse_loop(s))
                    .collect::<Vec<_>>(),
            );
            let conns = pc::on_every_core(setup_server, 2, || pc::Http::new(addr));
            lp.push(
                conns
                    .into_iter()
                    .map(|(_, h)| poll_loop(h, t.clone(), true))
                    .collect::<Vec<_>>(),
            );
            let conns = pc::on_every_core(setup_server, 2, || pc::Http::new(addr));
            sp.push(
                conns
                    .into_iter()
                    .map(|(_, h)| poll_loop(h, t.clone(), false))
                    .collect::<Vec<_>>(),
            );
        }
        (sse, lp, sp)
    });

    let publisher = server.publisher();
    let t = topics.clone();
    tokio::task::spawn_blocking(move || publish_all(addr, publisher, &t))
        .await
        .unwrap();

    // Expected per topic: seqs 1..=2500 carrying exactly the messages published to it.
    let mut expected_data: Vec<Vec<String>> = vec![Vec::new(); TOPICS];
    for k in 0..TOTAL {
        expected_data[k % TOPICS].push(data(k));
    }
    for d in &mut expected_data {
        d.sort();
    }
    let mut reference: Vec<Option<Seqs>> = vec![None; TOPICS];
    let mut check = |ti: usize, who: &str, got: Seqs| {
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        let want: Vec<u64> = (1..=PER_TOPIC as u64).collect();
        assert!(
            seqs == want,
            "{who} on {}: seqs are not 1..={PER_TOPIC} (first mismatch at {:?})",
            topics[ti],
            seqs.iter().zip(&want).position(|(a, b)| a != b)
        );
        match &reference[ti] {
            None => {
                let mut d: Vec<String> = got.iter().map(|g| g.1.clone()).collect();
                d.sort();
                assert!(d == expected_data[ti], "{who}: not the published messages");
                reference[ti] = Some(got);
            }
            Some(r) => assert!(
                *r == got,
                "{who} on {} saw another order than the first subscriber",
                topics[ti]
            ),
        }
    };
    for (i, r) in ws_readers.into_iter().enumerate() {
        let mut by_topic = r.await.unwrap();
        for (ti, t) in topics.iter().enumerate() {
            check(
                ti,
                &format!("ws#{i}"),
                by_topic.remove(t).unwrap_or_default(),
            );
        }
        assert!(by_topic.is_empty(), "messages of unknown topics");
    }
    for (ti, ((sse, lp), sp)) in sse_threads
        .into_iter()
        .zip(lp_threads)
        .zip(sp_threads)
        .enumerate()
    {
        for (i, h) in sse.into_iter().enumerate() {
            check(ti, &format!("sse#{i}"), h.join().unwrap());
        }
        for (i, h) in lp.into_iter().enumerate() {
            check(ti, &format!("long-poll#{i}"), h.join().unwrap());
        }
        for (i, h) in sp.into_iter().enumerate() {
            check(ti, &format!("short-poll#{i}"), h.join().unwrap());
        }
    }

    // Both cores numbered messages (two topics each) and both delivered to local subscribers.
    let stats = server.stats();
    for (i, s) in stats.iter().enumerate() {
        assert_eq!(
            s.messages_published(),
            (TOTAL / 2) as u64,
            "core {i} owns two topics"
        );
        assert!(s.deliveries() > 0, "core {i} delivered nothing");
    }
    pc::stop(server);
}
