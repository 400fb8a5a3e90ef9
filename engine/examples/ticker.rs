//! Embedding ringcast: a market-data ticker publishing into an in-process engine.
//!
//! The program starts the engine with [`ringcast_engine::start`], then runs a plain `std::thread` "feed handler"
//! (standing in for a market-data feed) that publishes each symbol's price as JSON on topic `prices.<SYMBOL>`
//! through a [`Publisher`], at a fixed rate, for a fixed time. Then it shuts the engine down and joins it.
//!
//! ```sh
//! cargo run --release -p ringcast-engine --example ticker -- --listen 127.0.0.1:8080 --rate 10 --seconds 30
//! # in another shell, while it runs:
//! curl -N http://127.0.0.1:8080/sse/prices.EURUSD
//! curl 'http://127.0.0.1:8080/poll/prices.BTCUSD?since=0&limit=5'
//! ```
//!
//! Flags (all optional): `--listen ADDR` (default 127.0.0.1:8080; port 0 picks a free one), `--rate N` ticks per
//! second per symbol (default 5), `--seconds N` run time (default 10), `--symbols A,B,C` (default
//! EURUSD,USDJPY,BTCUSD), `--cores N` reactors (default 2).
//!
//! The `prices.*` topics are configured to conflate: a subscriber that falls behind gets the latest price per
//! symbol instead of a backlog of stale ones.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringcast_engine::{Config, CoreSet, PublishError, Publisher};

/// What the command line asked for.
struct Options {
    listen: SocketAddr,
    rate: u32,
    seconds: u64,
    symbols: Vec<String>,
    cores: usize,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate: 5,
            seconds: 10,
            symbols: ["EURUSD", "USDJPY", "BTCUSD"].map(String::from).to_vec(),
            cores: 2,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--listen" => o.listen = value.parse().map_err(|e| bad(&e))?,
                "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
                "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
                "--cores" => o.cores = value.parse().map_err(|e| bad(&e))?,
                "--symbols" => {
                    o.symbols = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                _ => {
                    return Err(format!(
                        "unknown flag {flag}; use --listen, --rate, --seconds, --symbols, --cores"
                    ));
                }
            }
        }
        if o.rate == 0 || o.cores == 0 || o.symbols.is_empty() {
            return Err("--rate, --cores and --symbols must not be zero or empty".into());
        }
        Ok(o)
    }
}

/// A deterministic random walk per symbol (xorshift64), so the example needs no RNG crate.
struct Walk {
    state: u64,
    price: f64,
}

impl Walk {
    fn new(seed: u64, price: f64) -> Walk {
        Walk {
            state: seed | 1,
            price,
        }
    }

    /// The next price: a move of at most ±0.05 %.
    fn step(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        self.price *= 1.0 + (unit - 0.5) * 0.001;
        self.price
    }
}

/// What the feed handler did.
#[derive(Debug, Default)]
struct FeedReport {
    published: u64,
    shed: u64,
}

/// The feed handler: one tick per symbol every `1/rate` seconds until `until`. Runs on a plain thread; all it
/// knows of the engine is the `Publisher`.
fn feed(publisher: Publisher, symbols: Vec<String>, rate: u32, until: Instant) -> FeedReport {
    let mut walks: Vec<(String, String, Walk)> = symbols
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let start = match s.as_str() {
                "EURUSD" => 1.08,
                "USDJPY" => 151.2,
                "BTCUSD" => 64_000.0,
                _ => 100.0,
            };
            let walk = Walk::new(0x9e37_79b9_7f4a_7c15 ^ i as u64, start);
            (format!("prices.{s}"), s, walk)
        })
        .collect();
    let period = Duration::from_secs(1) / rate;
    let mut report = FeedReport::default();
    let mut next = Instant::now();
    'ticks: while next < until {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        for (topic, symbol, walk) in &mut walks {
            let mid = walk.step();
            let json = format!(
                r#"{{"symbol":"{symbol}","bid":{:.5},"ask":{:.5},"ts":{ts}}}"#,
                mid * 0.9999,
                mid * 1.0001
            );
            // The String becomes the message's `Bytes` without a copy; every subscriber shares it.
            match publisher.publish_json(topic, json) {
                Ok(()) => report.published += 1,
                // A saturated core: market data is perishable, so shed this tick rather than block the feed.
                Err(PublishError::Backpressure) => report.shed += 1,
                Err(PublishError::Stopped) => break 'ticks,
                Err(e) => {
                    eprintln!("ticker: {topic}: {e}");
                    break 'ticks;
                }
            }
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    report
}

fn main() {
    let opts = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ticker: {e}");
            std::process::exit(2);
        }
    };
    let config = Config {
        listen: opts.listen,
        cores: CoreSet::Count(opts.cores),
        // A guest in someone else's process: leave thread placement to the host program.
        pin_threads: false,
        conflate: vec!["prices.*".into()],
        // Let a page served from anywhere use EventSource / fetch on these topics.
        cors_origins: vec!["*".into()],
        ..Config::default()
    };
    let handle = match ringcast_engine::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ticker: starting the engine on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    let addr = handle.local_addr();
    println!(
        "ringcast engine: {} cores ({:?}) on {addr}; publishing {} symbol(s) at {}/s each for {}s",
        handle.cores(),
        handle.driver(),
        opts.symbols.len(),
        opts.rate,
        opts.seconds
    );
    for s in &opts.symbols {
        println!("  topic prices.{s}:");
        println!("    SSE:        curl -N http://{addr}/sse/prices.{s}");
        println!("    long poll:  curl 'http://{addr}/poll/prices.{s}?since=0'");
        println!("    short poll: curl 'http://{addr}/messages/prices.{s}?since=0'");
    }
    println!(
        "  WebSocket:  ws://{addr}/ws then send {{\"op\":\"sub\",\"topic\":\"prices.{}\"}}",
        opts.symbols[0]
    );

    let until = Instant::now() + Duration::from_secs(opts.seconds);
    let publisher = handle.publisher();
    let (symbols, rate) = (opts.symbols.clone(), opts.rate);
    let feed_thread = thread::Builder::new()
        .name("feed-handler".into())
        .spawn(move || feed(publisher, symbols, rate, until));
    let report = match feed_thread.map(|t| t.join()) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            eprintln!("ticker: the feed handler panicked");
            FeedReport::default()
        }
        Err(e) => {
            eprintln!("ticker: could not start the feed handler: {e}");
            FeedReport::default()
        }
    };

    let delivered: u64 = handle.stats().iter().map(|s| s.deliveries()).sum();
    let conflated: u64 = handle.stats().iter().map(|s| s.conflated()).sum();
    println!(
        "done: {} published, {} shed under backpressure, {delivered} delivered to streaming subscribers, \
         {conflated} conflated away; shutting down",
        report.published, report.shed
    );
    handle.shutdown();
    if let Err(e) = handle.join() {
        eprintln!("ticker: a reactor failed: {e}");
        std::process::exit(1);
    }
}
