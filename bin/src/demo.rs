//! The built-in demo: the flags that turn it on or off (`--demo`, the default, and `--no-demo`), the static assets
//! it serves (the demo page at `/`, the browser client at `/ringcast.js` and `/ringcast-core.js`), and the simulated
//! market-data feed, a std thread publishing a few symbols' prices through the engine's [`Publisher`]. Also the
//! `--disable-transport` testing aid, which makes the server refuse a subscriber transport the way a blocking
//! proxy would.

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ringcast_engine::{Asset, Config, PublishError, Publisher};

/// The topic the feed publishes every symbol's price on (one topic keeps a browser's connection count low on the
/// HTTP transports, where each topic is one request).
pub(crate) const TICKER_TOPIC: &str = "demo.ticker";

/// The demo page (`/`).
const INDEX_HTML: &[u8] = include_bytes!("../../web/index.html");
/// The browser client (`/ringcast.js`).
const CLIENT_JS: &[u8] = include_bytes!("../../web/ringcast.js");
/// The client's pure logic, imported by `ringcast.js` (`/ringcast-core.js`).
const CLIENT_CORE_JS: &[u8] = include_bytes!("../../web/ringcast-core.js");

/// A subscriber transport `--disable-transport` can refuse.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum TransportArg {
    /// WebSocket (`/ws`).
    Ws,
    /// Server-Sent Events (`/sse/{topic}`).
    Sse,
    /// Long and short polling (`/poll/{topic}`, `/messages/{topic}`).
    Poll,
}

impl TransportArg {
    /// The engine's name for the transport ([`Config::disabled_transports`]).
    fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Poll => "poll",
        }
    }
}

/// The demo's flags, flattened into `ringcast serve`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct DemoArgs {
    /// Serve the demo page at / (and the client at /ringcast.js) and run the simulated market feed on topic
    /// "demo.ticker" [default: on]
    #[arg(long, overrides_with = "no_demo")]
    demo: bool,
    /// Turn the demo off: no page, no client script, no feed
    #[arg(long, overrides_with = "demo")]
    no_demo: bool,
    /// Demo feed rate: price updates per second for each symbol; 0 stops the feed but keeps the page [default: 5]
    #[arg(long, value_name = "RATE")]
    demo_feed: Option<f64>,
    /// Testing aid: refuse a subscriber transport with 403, as a proxy that blocks it would (ws, sse or poll;
    /// repeat the flag for more). HTTP publish stays open
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    disable_transport: Vec<TransportArg>,
}

impl DemoArgs {
    /// Is the demo on (the default unless `--no-demo` came last)?
    pub(crate) fn enabled(&self) -> bool {
        !self.no_demo
    }

    /// The feed rate, checked: updates per second per symbol.
    fn rate(&self) -> anyhow::Result<f64> {
        let rate = self.demo_feed.unwrap_or(5.0);
        if !rate.is_finite() || !(0.0..=10_000.0).contains(&rate) {
            anyhow::bail!("--demo-feed: {rate} is not a rate between 0 and 10000 messages/s");
        }
        Ok(rate)
    }

    /// Adds the demo's assets and the disabled transports to the engine configuration; checks the flags.
    pub(crate) fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        self.rate()?;
        for t in &self.disable_transport {
            let name = t.name().to_owned();
            if !config.disabled_transports.contains(&name) {
                config.disabled_transports.push(name);
            }
        }
        if self.enabled() {
            config.assets.extend(assets());
        }
        Ok(())
    }

    /// Starts the feed thread when the demo is on and the rate is not zero.
    pub(crate) fn start_feed(
        &self,
        publisher: Publisher,
    ) -> anyhow::Result<Option<JoinHandle<()>>> {
        let rate = self.rate()?;
        if !self.enabled() || rate == 0.0 {
            return Ok(None);
        }
        let handle = std::thread::Builder::new()
            .name("ringcast-demo-feed".into())
            .spawn(move || run_feed(&publisher, rate))?;
        tracing::info!(
            topic = TICKER_TOPIC,
            symbols = SYMBOLS.len(),
            rate,
            "demo feed running (--no-demo turns it off); open the demo page at /"
        );
        Ok(Some(handle))
    }
}

/// The demo's static files.
pub(crate) fn assets() -> Vec<Asset> {
    let html = "text/html; charset=utf-8";
    let js = "text/javascript; charset=utf-8";
    [
        ("/", html, INDEX_HTML),
        ("/index.html", html, INDEX_HTML),
        ("/ringcast.js", js, CLIENT_JS),
        ("/ringcast-core.js", js, CLIENT_CORE_JS),
    ]
    .into_iter()
    .map(|(path, content_type, body)| Asset {
        path: path.to_owned(),
        content_type,
        body: body.into(),
    })
    .collect()
}

/// A simulated instrument: its name, starting price and decimals shown.
struct Symbol {
    name: &'static str,
    start: f64,
    decimals: usize,
}

/// The instruments the feed quotes.
const SYMBOLS: [Symbol; 4] = [
    Symbol {
        name: "BTC-USD",
        start: 64_000.0,
        decimals: 2,
    },
    Symbol {
        name: "ETH-USD",
        start: 3_100.0,
        decimals: 2,
    },
    Symbol {
        name: "EUR-USD",
        start: 1.0850,
        decimals: 5,
    },
    Symbol {
        name: "ACME",
        start: 187.40,
        decimals: 2,
    },
];

/// xorshift64*: a small deterministic generator; the feed needs plausible noise, not statistics.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal (Irwin–Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.next_f64()).sum();
        (s - 2.0) * 3f64.sqrt()
    }
}

/// Milliseconds since the Unix epoch with microsecond precision: the publish timestamp the page measures
/// publish-to-render latency against.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_micros() as f64 / 1000.0)
}

/// One update's JSON: `{"symbol":"BTC-USD","price":64012.5,"ts":1700000000000.123}`.
fn quote_json(symbol: &Symbol, price: f64, ts_ms: f64) -> String {
    format!(
        r#"{{"symbol":"{}","price":{:.*},"ts":{:.3}}}"#,
        symbol.name, symbol.decimals, price, ts_ms
    )
}

/// The feed loop: every `1/rate` seconds, one random-walk step and one publish per symbol. Exits when the server
/// has stopped; skips an update when the topic's core is saturated.
fn run_feed(publisher: &Publisher, rate: f64) {
    let mut rng = Rng::seeded();
    let mut prices: Vec<f64> = SYMBOLS.iter().map(|s| s.start).collect();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    loop {
        for (symbol, price) in SYMBOLS.iter().zip(prices.iter_mut()) {
            // About 2 basis points of volatility per step, with a slight pull back to the start.
            let drift = (symbol.start - *price) / symbol.start * 0.01;
            *price *= 1.0 + 0.0002 * rng.normal() + drift;
            match publisher.publish_json(TICKER_TOPIC, quote_json(symbol, *price, now_ms())) {
                Ok(()) | Err(PublishError::Backpressure) => {}
                Err(PublishError::Stopped) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "demo feed: publish refused; stopping the feed");
                    return;
                }
            }
        }
        next += interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Far behind (the machine was suspended or saturated): don't burst to catch up.
            None if now.duration_since(next) > Duration::from_secs(1) => next = now,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    fn parse(args: &[&str]) -> Result<DemoArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringcast").chain(args.iter().copied())).map(|c| c.demo)
    }

    #[test]
    fn the_demo_is_on_by_default_and_no_demo_turns_it_off() {
        let table: [(&[&str], bool); 5] = [
            (&[], true),
            (&["--demo"], true),
            (&["--no-demo"], false),
            (&["--demo", "--no-demo"], false),
            (&["--no-demo", "--demo"], true),
        ];
        for (args, on) in table {
            let d = parse(args).unwrap();
            assert_eq!(d.enabled(), on, "{args:?}");
            let mut c = Config::default();
            d.apply(&mut c).unwrap();
            let paths: Vec<&str> = c.assets.iter().map(|a| a.path.as_str()).collect();
            if on {
                assert_eq!(
                    paths,
                    ["/", "/index.html", "/ringcast.js", "/ringcast-core.js"]
                );
            } else {
                assert!(paths.is_empty(), "{args:?}: {paths:?}");
            }
        }
    }

    #[test]
    fn assets_are_the_repo_files_with_their_types() {
        let a = assets();
        assert!(a[0].body.starts_with(b"<!doctype html>"));
        assert!(a[0].content_type.starts_with("text/html"));
        assert!(
            std::str::from_utf8(&a[2].body)
                .unwrap()
                .contains("export function connect(")
        );
        assert!(a[2].content_type.starts_with("text/javascript"));
        assert!(
            std::str::from_utf8(&a[3].body)
                .unwrap()
                .contains("export function backoffDelay(")
        );
    }

    #[test]
    fn feed_rate_is_checked() {
        assert_eq!(parse(&[]).unwrap().rate().unwrap(), 5.0);
        assert_eq!(parse(&["--demo-feed", "0"]).unwrap().rate().unwrap(), 0.0);
        assert_eq!(parse(&["--demo-feed", "0.5"]).unwrap().rate().unwrap(), 0.5);
        for bad in ["-1", "NaN", "inf", "20000"] {
            let d = parse(&["--demo-feed", bad]);
            assert!(d.is_err() || d.unwrap().rate().is_err(), "{bad}");
        }
        assert!(parse(&["--demo-feed", "x"]).is_err());
    }

    #[test]
    fn disable_transport_is_repeatable_and_fills_the_engine_list() {
        let d = parse(&["--disable-transport", "ws", "--disable-transport", "sse"]).unwrap();
        let mut c = Config::default();
        d.apply(&mut c).unwrap();
        assert_eq!(c.disabled_transports, ["ws", "sse"]);
        assert!(parse(&["--disable-transport", "echo"]).is_err());
        let mut c = Config::default();
        parse(&[]).unwrap().apply(&mut c).unwrap();
        assert!(c.disabled_transports.is_empty());
    }

    #[test]
    fn quotes_are_json_with_fixed_decimals() {
        let q = quote_json(&SYMBOLS[2], 1.085_012_34, 1_700_000_000_123.456);
        assert_eq!(
            q,
            r#"{"symbol":"EUR-USD","price":1.08501,"ts":1700000000123.456}"#
        );
    }

    #[test]
    fn the_random_walk_noise_stays_in_range() {
        let mut rng = Rng(42);
        for _ in 0..10_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            let n = rng.normal();
            assert!(n.abs() <= 2.0 * 3f64.sqrt() + 1e-9);
        }
    }
}
