//! ringcast for the broadcast workload: the engine with its default configuration except a 16 MiB write high-water
//! mark (see `main`), plus an in-process [`Publisher`](ringcast_engine::Publisher) thread that, once N subscriptions
//! are live (not merely N connections open), publishes the same 64-byte payload as the peers' flood into `load.0`
//! as fast as the engine accepts it, never more than `RING/2` messages ahead of what the sockets actually took
//! (bytes written divided by the size of one message's frames to all subscribers) and, like the peers' rings,
//! waiting for the slowest subscriber (no publish while any connection is backlogged), for the flood duration or
//! until `--flood-messages M` went out. It prints how many messages it published on stderr. Usage: `ringcast-flood
//! --listen ADDR --cpu 1 --driver uring|epoll --flood-subs N --flood-secs S [--flood-messages M] [--send-buffer BYTES] [--fanout-slice N] [--turn-write-budget BYTES]
//! [--write-high-water BYTES] [--pace slowest|average] [--batch-sends true|false]` (the last six for experiments:
//! the suite uses the settings above; `--pace average` drops the slowest-subscriber wait).

use std::time::{Duration, Instant};

use ringcast_engine::{Config, CoreSet, Driver, PublishError};

fn main() {
    let mut cfg = Config {
        // The flood outruns its one client core, and the slow-consumer policy (default 4 MiB per connection, the
        // kernel's send queue included) then disconnects the benchmark's own subscribers, which the peers, with no
        // such policy, never do. 16 MiB lets the flood run to the end; everything else is the engine's default.
        write_high_water: 16 << 20,
        ..Config::default()
    };
    let (mut subs, mut secs, mut cpu) = (1000u64, 10.0f64, 1usize);
    let mut pace_slowest = true;
    let mut max = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_default();
        match flag.as_str() {
            "--listen" => cfg.listen = v.parse().expect("--listen ADDR"),
            "--cpu" => cpu = v.parse().expect("--cpu N"),
            "--driver" => {
                cfg.driver = if v == "epoll" {
                    Driver::Epoll
                } else {
                    Driver::Uring
                }
            }
            "--flood-subs" => subs = v.parse().expect("--flood-subs N"),
            "--flood-secs" => secs = v.parse().expect("--flood-secs S"),
            "--flood-messages" => max = v.parse().expect("--flood-messages M"),
            // Experiments only (the suite keeps the engine's default).
            "--send-buffer" => cfg.send_buffer = v.parse().expect("--send-buffer BYTES"),
            "--fanout-slice" => cfg.fanout_slice = v.parse().expect("--fanout-slice N"),
            "--write-high-water" => {
                cfg.write_high_water = v.parse().expect("--write-high-water BYTES")
            }
            "--pace" => pace_slowest = v == "slowest",
            "--batch-sends" => cfg.batch_sends = v == "true",
            "--turn-write-budget" => {
                cfg.turn_write_budget = v.parse().expect("--turn-write-budget BYTES")
            }
            _ => panic!("unknown flag {flag}"),
        }
    }
    cfg.cores = CoreSet::List(vec![cpu]);
    let handle = ringcast_engine::start(cfg).expect("engine start");
    let publisher = handle.publisher();
    let subscribed = || handle.stats().iter().map(|s| s.subscribers()).sum::<u64>();
    while subscribed() < subs {
        std::thread::sleep(Duration::from_millis(1));
    }
    let written = || handle.stats().iter().map(|s| s.bytes_out()).sum::<u64>();
    let backlogged = || {
        handle
            .stats()
            .iter()
            .map(|s| s.backlogged_connections())
            .sum::<u64>()
    };
    let base = written();
    // One message to every subscriber: the WebSocket frame of {"type":"msg","topic":"load.0","seq":N,"data":...}.
    let frame = (ringcast_peers::flood_payload().len() + 48 + 2) as u64;
    let per_message = frame * subs.max(1);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end && (max == 0 || sent < max) {
        // The same bound as the peers' flood (at most RING/2 messages ahead of the average subscriber), counted by
        // bytes the kernel took, not by messages queued for connections.
        let taken = written().saturating_sub(base) / per_message;
        if sent.saturating_sub(taken) >= (ringcast_peers::RING / 2) as u64
            || (pace_slowest && backlogged() > 0)
        {
            std::thread::yield_now();
            continue;
        }
        match publisher.publish_json("load.0", ringcast_peers::flood_payload()) {
            Ok(()) => sent += 1,
            Err(PublishError::Backpressure) => std::thread::yield_now(),
            Err(e) => panic!("publish: {e}"),
        }
    }
    // What the engine took, for experiments (the suite discards stderr).
    eprintln!("flood: {sent} messages to {subs} subscribers in {secs} s");
    // Stay up until the harness stops the process.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
