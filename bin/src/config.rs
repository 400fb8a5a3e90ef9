//! `ringcast serve` settings: command-line flags over an optional TOML file over the engine's defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ringcast_engine::{Config, CoreSet, Driver, SlowConsumerPolicy};
use serde::Deserialize;

/// Reactor driver choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DriverArg {
    /// io_uring when available, else epoll (logged once).
    Auto,
    /// io_uring only.
    Uring,
    /// The legacy epoll driver.
    Epoll,
}

/// Slow-consumer policy on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyArg {
    /// Close the connection with 1008.
    Disconnect,
    /// Drop the oldest queued data messages.
    Drop,
}

/// Every knob of `ringcast serve`. Each is optional here so that a flag overrides the file, which overrides the
/// default shown in the help.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServeArgs {
    /// TOML file with any of these settings (keys are the flag names without the dashes)
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Reactor cores: a count ("4") or a CPU list ("0,2-3"; one CPU: "2-2" or "2,") [default: all online cores]
    #[arg(long, value_name = "N|LIST")]
    pub cores: Option<String>,
    /// Do not pin reactor threads to their cores [default: pinned]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_pin: Option<bool>,
    /// Run beside other processes already listening on the same address (SO_REUSEPORT splits new connections
    /// among them); without it, serve refuses to start when something already listens there [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub share_port: Option<bool>,
    /// io_uring or epoll [default: auto]
    #[arg(long, value_enum)]
    pub driver: Option<DriverArg>,
    /// With io_uring, send a fan-out to its subscribers in batches through the core's own ring (up to 256 sends
    /// per io_uring_enter); false: one write(2) per subscriber [default: true]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub batch_sends: Option<bool>,
    /// Listen backlog per core [default: 4096]
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// Connections per core; more get 503 [default: 500000]
    #[arg(long, value_name = "N")]
    pub max_connections_per_core: Option<usize>,
    /// Time to complete the request head [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// Ping a WebSocket silent this long [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub ping_interval: Option<String>,
    /// Close a WebSocket silent this long (1001) [default: 90s]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Longest wait for the peer after a close frame [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub close_timeout: Option<String>,
    /// Longest graceful-shutdown drain [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Largest WebSocket message, 1009 over it [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_message_size: Option<String>,
    /// Largest WebSocket frame payload, 1009 over it [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_frame_size: Option<String>,
    /// Largest HTTP request head, 431 over it [default: 8KiB]
    #[arg(long, value_name = "SIZE")]
    pub max_head_bytes: Option<String>,
    /// Most HTTP request headers, 431 over it [default: 64]
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Output queued per connection (ours plus the kernel's send buffer) before the slow-consumer policy applies
    /// [default: 4MiB]
    #[arg(long, value_name = "SIZE")]
    pub write_high_water: Option<String>,
    /// SO_SNDBUF of accepted connections; 0 keeps the kernel's autotuning (up to net.ipv4.tcp_wmem's maximum).
    /// A smaller one keeps more of a slow client's backlog where conflation and the drop policy reach it
    /// [default: 0]
    #[arg(long, value_name = "SIZE")]
    pub send_buffer: Option<String>,
    /// Subscribers a core writes a topic's messages to per turn before serving its other sockets again; a bigger
    /// fan-out goes on over the next turns. 0: every subscriber in one turn [default: 1024]
    #[arg(long, value_name = "N")]
    pub fanout_slice: Option<usize>,
    /// Bytes a core writes per turn for fan-out, and again for backlogs, before serving its other sockets again:
    /// keeps requests, publishes and new connections answered in milliseconds during a flood. 0: no bound
    /// [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub turn_write_budget: Option<String>,
    /// What to do with a slow consumer [default: disconnect]
    #[arg(long, value_enum)]
    pub slow_consumer: Option<PolicyArg>,
    /// Per-core read buffer [default: 64KiB]
    #[arg(long, value_name = "SIZE")]
    pub read_buffer_size: Option<String>,
    /// Messages of history kept per topic for resume; 0 disables history [default: 1000]
    #[arg(long, value_name = "N")]
    pub history_messages: Option<usize>,
    /// Payload bytes of history kept per topic; 0 disables history [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub history_bytes: Option<String>,
    /// Oldest history message kept; "0" or "off" keeps messages regardless of age [default: 1h]
    #[arg(long, value_name = "DURATION|off")]
    pub history_age: Option<String>,
    /// Capacity of each channel into a core, in messages [default: 65536]
    #[arg(long, value_name = "N")]
    pub bus_capacity: Option<usize>,
    /// Messages a core holds for another core whose channel is full; past it the oldest is dropped and that
    /// core's subscribers get a reset [default: 1048576]
    #[arg(long, value_name = "N")]
    pub outbox_limit: Option<usize>,
    /// Interval of ": keep-alive" comments on idle SSE streams [default: 15s]
    #[arg(long, value_name = "DURATION")]
    pub sse_keepalive: Option<String>,
    /// The "retry:" reconnect hint sent once at the start of each SSE stream [default: 3s]
    #[arg(long, value_name = "DURATION")]
    pub sse_retry: Option<String>,
    /// Long-poll wait when the request gives no timeout [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub poll_timeout: Option<String>,
    /// Longest long-poll wait a request may ask for; longer asks are capped [default: 2m]
    #[arg(long, value_name = "DURATION")]
    pub poll_timeout_max: Option<String>,
    /// Messages per poll answer when the request gives no limit [default: 1000]
    #[arg(long, value_name = "N")]
    pub poll_limit: Option<usize>,
    /// Largest limit a poll request may ask for; larger asks are capped [default: 10000]
    #[arg(long, value_name = "N")]
    pub poll_limit_max: Option<usize>,
    /// Messages per second a pub/sub WebSocket client may send (burst: one second's worth); over it the connection
    /// is closed with 1008; 0 disables [default: 1000]
    #[arg(long, value_name = "N")]
    pub ws_rate_limit: Option<u32>,
    /// Origin allowed by CORS on the HTTP transports: exact ("https://app.example.com"), "*.example.com" for
    /// subdomains, or "*"; repeat the flag for more (in TOML: an array). Flags replace the file's list
    /// [default: none, no CORS headers]
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Option<Vec<String>>,
    /// Topic pattern whose slow subscribers get only the newest message instead of the backlog: a topic name,
    /// "prefix.*" or "*"; repeat the flag for more (in TOML: an array). Flags replace the file's list
    /// [default: none]
    #[arg(long, value_name = "PATTERN")]
    pub conflate: Option<Vec<String>>,
    /// Require a JWT signed with this HMAC secret (HS256, at least 16 bytes) on every WebSocket, SSE, poll and
    /// publish request; prefer the environment variable to keep it out of process listings [default: no auth]
    #[arg(
        long,
        value_name = "SECRET",
        env = "RINGCAST_AUTH_SECRET",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,
    /// Require a JWT signed with the private half of this public key (PEM file: Ed25519 for EdDSA, or RSA for
    /// RS256) on every WebSocket, SSE, poll and publish request [default: no auth]
    #[arg(long, value_name = "FILE")]
    pub auth_public_key: Option<PathBuf>,
    /// Origin allowed to open WebSockets: exact ("https://app.example.com"), "*.example.com" for subdomains, or
    /// "*"; repeat the flag for more (in TOML: an array); others get 403 [default: every origin]
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Option<Vec<String>>,
    /// Publishes per second per connection (WebSocket pub and direct messages, HTTP publish; burst: one second's
    /// worth); over it a WebSocket is closed with 1008 and HTTP answers 429; 0 disables [default: 0]
    #[arg(long, value_name = "N")]
    pub publish_rate_limit: Option<u32>,
    /// New connections per second per client IP, per core (burst: one second's worth); over it 429; 0 disables
    /// [default: 0]
    #[arg(long, value_name = "N")]
    pub ip_connect_rate: Option<u32>,
    /// Open connections per client IP, per core; over it 429; 0 disables [default: 0]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Open WebSocket and SSE connections per authenticated user, per core; over it 429; 0 disables
    /// [default: 0]
    #[arg(long, value_name = "N")]
    pub max_connections_per_user: Option<u32>,
    /// Multi-node mode: share every topic's sequence, history and fan-out with the other nodes through this Redis
    /// (redis://host:port/) [default: single node, no Redis]
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// This node's name in logs and /metrics (with --redis) [default: hostname-pid-random]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
}

fn duration(name: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v)
        .with_context(|| format!("--{name}: {v:?} is not a duration like 10s or 500ms"))
}

fn size(name: &str, v: &str) -> anyhow::Result<usize> {
    let b: bytesize::ByteSize = v
        .parse()
        .map_err(|e| anyhow::anyhow!("--{name}: {v:?} is not a size like 64KiB or 1MiB ({e})"))?;
    usize::try_from(b.as_u64()).with_context(|| format!("--{name}: {v} is too large"))
}

/// A history age: a duration, or "0"/"off" for no age limit.
fn age(v: &str) -> anyhow::Result<Option<Duration>> {
    if v.trim() == "0" || v.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = duration("history-age", v)?;
    Ok((!d.is_zero()).then_some(d))
}

/// A conflation pattern: `*`, a topic name, or a topic-name prefix ending in `.*`.
fn conflate_pattern(p: &str) -> anyhow::Result<()> {
    let name = p.strip_suffix(".*").unwrap_or(p);
    let valid = p == "*"
        || (!name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')));
    if !valid {
        bail!(
            "--conflate: {p:?} is not \"*\", a topic name ([A-Za-z0-9._:-], 1-128 bytes) or \"prefix.*\""
        );
    }
    Ok(())
}

/// A CORS origin pattern: `*`, `*.domain`, or an origin such as `https://app.example.com:8443`.
fn cors_pattern(p: &str) -> anyhow::Result<()> {
    if p.is_empty() || p.bytes().any(|b| !b.is_ascii_graphic()) || p.contains(',') {
        bail!(
            "--cors-origin: {p:?} is not an origin like https://app.example.com, *.example.com or *"
        );
    }
    Ok(())
}

fn cores(v: &str) -> anyhow::Result<CoreSet> {
    if let Ok(n) = v.parse::<usize>() {
        if n == 0 {
            bail!("--cores: must be at least 1");
        }
        return Ok(CoreSet::Count(n));
    }
    let mut list = Vec::new();
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("--cores: bad core id {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    bail!("--cores: range {part} is backwards");
                }
                list.extend(a..=b);
            }
            None => list.push(parse(part)?),
        }
    }
    Ok(CoreSet::List(list))
}

impl ServeArgs {
    /// Fills every unset field from `file`.
    fn or(self, file: ServeArgs) -> ServeArgs {
        macro_rules! merge {
            ($($f:ident),*) => { ServeArgs { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        merge!(
            listen,
            cores,
            no_pin,
            share_port,
            driver,
            batch_sends,
            backlog,
            max_connections_per_core,
            handshake_timeout,
            ping_interval,
            idle_timeout,
            close_timeout,
            drain_timeout,
            max_message_size,
            max_frame_size,
            max_head_bytes,
            max_headers,
            write_high_water,
            send_buffer,
            fanout_slice,
            turn_write_budget,
            slow_consumer,
            read_buffer_size,
            history_messages,
            history_bytes,
            history_age,
            bus_capacity,
            outbox_limit,
            sse_keepalive,
            sse_retry,
            poll_timeout,
            poll_timeout_max,
            poll_limit,
            poll_limit_max,
            ws_rate_limit,
            cors_origin,
            conflate,
            auth_secret,
            auth_public_key,
            allowed_origin,
            publish_rate_limit,
            ip_connect_rate,
            max_connections_per_ip,
            max_connections_per_user,
            redis,
            node_id
        )
    }

    /// Builds the engine configuration: flags, then the file, then defaults.
    pub(crate) fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<ServeArgs>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let a = self.or(file);
        let mut c = Config::default();
        if let Some(v) = a.listen {
            c.listen = v;
        }
        if let Some(v) = &a.cores {
            c.cores = cores(v)?;
        }
        if let Some(v) = a.no_pin {
            c.pin_threads = !v;
        }
        if let Some(v) = a.share_port {
            c.share_port = v;
        }
        if let Some(v) = a.batch_sends {
            c.batch_sends = v;
        }
        if let Some(v) = a.driver {
            c.driver = match v {
                DriverArg::Auto => Driver::Auto,
                DriverArg::Uring => Driver::Uring,
                DriverArg::Epoll => Driver::Epoll,
            };
        }
        if let Some(v) = a.backlog {
            c.backlog = v;
        }
        if let Some(v) = a.max_connections_per_core {
            c.max_connections_per_core = v;
        }
        for (name, field, target) in [
            (
                "handshake-timeout",
                &a.handshake_timeout,
                &mut c.handshake_timeout,
            ),
            ("ping-interval", &a.ping_interval, &mut c.ping_interval),
            ("idle-timeout", &a.idle_timeout, &mut c.idle_timeout),
            ("close-timeout", &a.close_timeout, &mut c.close_timeout),
            ("drain-timeout", &a.drain_timeout, &mut c.drain_timeout),
            ("sse-keepalive", &a.sse_keepalive, &mut c.sse_keepalive),
            ("sse-retry", &a.sse_retry, &mut c.sse_retry),
            ("poll-timeout", &a.poll_timeout, &mut c.poll_timeout),
            (
                "poll-timeout-max",
                &a.poll_timeout_max,
                &mut c.poll_timeout_max,
            ),
        ] {
            if let Some(v) = field {
                *target = duration(name, v)?;
            }
        }
        for (name, field, target) in [
            (
                "max-message-size",
                &a.max_message_size,
                &mut c.max_message_size,
            ),
            ("max-frame-size", &a.max_frame_size, &mut c.max_frame_size),
            ("max-head-bytes", &a.max_head_bytes, &mut c.max_head_bytes),
            (
                "write-high-water",
                &a.write_high_water,
                &mut c.write_high_water,
            ),
            ("send-buffer", &a.send_buffer, &mut c.send_buffer),
            (
                "turn-write-budget",
                &a.turn_write_budget,
                &mut c.turn_write_budget,
            ),
            (
                "read-buffer-size",
                &a.read_buffer_size,
                &mut c.read_buffer_size,
            ),
            ("history-bytes", &a.history_bytes, &mut c.history.max_bytes),
        ] {
            if let Some(v) = field {
                *target = size(name, v)?;
            }
        }
        for (field, target) in [
            (a.max_headers, &mut c.max_headers),
            (a.fanout_slice, &mut c.fanout_slice),
            (a.history_messages, &mut c.history.max_messages),
            (a.bus_capacity, &mut c.bus_capacity),
            (a.outbox_limit, &mut c.outbox_limit),
            (a.poll_limit, &mut c.poll_limit),
            (a.poll_limit_max, &mut c.poll_limit_max),
        ] {
            if let Some(v) = field {
                *target = v;
            }
        }
        if let Some(v) = a.ws_rate_limit {
            c.ws_rate_limit = v;
        }
        if let Some(v) = &a.history_age {
            c.history.max_age = age(v)?;
        }
        if let Some(v) = a.cors_origin {
            for p in &v {
                cors_pattern(p)?;
            }
            c.cors_origins = v;
        }
        c.auth = match (a.auth_secret, a.auth_public_key) {
            (Some(_), Some(_)) => {
                bail!("--auth-secret and --auth-public-key are exclusive: choose one")
            }
            (Some(s), None) => Some(ringcast_engine::AuthKey::Secret(s.into_bytes())),
            (None, Some(path)) => Some(ringcast_engine::AuthKey::PublicKeyPem(
                std::fs::read(&path)
                    .with_context(|| format!("reading --auth-public-key {}", path.display()))?,
            )),
            (None, None) => None,
        };
        if let Some(v) = a.allowed_origin {
            for p in &v {
                cors_pattern(p).context("--allowed-origin")?;
            }
            c.allowed_origins = v;
        }
        for (field, target) in [
            (a.publish_rate_limit, &mut c.publish_rate_limit),
            (a.ip_connect_rate, &mut c.ip_connect_rate),
            (a.max_connections_per_ip, &mut c.max_connections_per_ip),
            (a.max_connections_per_user, &mut c.max_connections_per_user),
        ] {
            if let Some(v) = field {
                *target = v;
            }
        }
        c.redis = match (a.redis, a.node_id) {
            (Some(url), node_id) => {
                if !url.starts_with("redis://") && !url.starts_with("unix://") {
                    bail!("--redis: {url:?} is not a redis:// URL");
                }
                let mut r = ringcast_engine::RedisConfig::new(url);
                if let Some(id) = node_id {
                    r.node_id = id;
                }
                Some(r)
            }
            (None, Some(_)) => bail!("--node-id needs --redis"),
            (None, None) => None,
        };
        if let Some(v) = a.conflate {
            for p in &v {
                conflate_pattern(p)?;
            }
            c.conflate = v;
        }
        if let Some(v) = a.slow_consumer {
            c.slow_consumer = match v {
                PolicyArg::Disconnect => SlowConsumerPolicy::Disconnect,
                PolicyArg::Drop => SlowConsumerPolicy::DropOldest,
            };
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_and_counts() {
        assert_eq!(cores("3").unwrap(), CoreSet::Count(3));
        assert_eq!(cores("0,2-4").unwrap(), CoreSet::List(vec![0, 2, 3, 4]));
        assert_eq!(cores("1-1").unwrap(), CoreSet::List(vec![1]));
        assert_eq!(cores("1,").unwrap(), CoreSet::List(vec![1]));
        assert!(cores("0").is_err());
        assert!(cores("3-1").is_err());
        assert!(cores("x").is_err());
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(
            &path,
            "idle-timeout = \"2m\"\nping-interval = \"20s\"\nmax-message-size = \"2MiB\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ping_interval: Some("5s".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.ping_interval, Duration::from_secs(5), "flag wins");
        assert_eq!(
            c.idle_timeout,
            Duration::from_secs(120),
            "file wins over default"
        );
        assert_eq!(c.max_message_size, 2 << 20);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10), "default");
    }

    /// `ServeArgs` as clap sees it on a command line.
    #[derive(clap::Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        use clap::Parser;
        Cmd::try_parse_from(std::iter::once("ringcast").chain(args.iter().copied()))
            .unwrap()
            .serve
    }

    #[test]
    fn send_buffer_defaults_to_autotuning_and_takes_a_size() {
        assert_eq!(parse(&[]).resolve().unwrap().send_buffer, 0);
        let c = parse(&["--send-buffer", "64KiB"]).resolve().unwrap();
        assert_eq!(c.send_buffer, 64 << 10);
        let c = parse(&["--send-buffer", "0"]).resolve().unwrap();
        assert_eq!(c.send_buffer, 0);
        assert!(parse(&["--send-buffer", "lots"]).resolve().is_err());
    }

    #[test]
    fn fanout_slice_defaults_to_1024_and_takes_a_count() {
        assert_eq!(parse(&[]).resolve().unwrap().fanout_slice, 1024);
        let c = parse(&["--fanout-slice", "0"]).resolve().unwrap();
        assert_eq!(c.fanout_slice, 0);
    }

    #[test]
    fn turn_write_budget_defaults_to_1mib_and_takes_a_size() {
        assert_eq!(parse(&[]).resolve().unwrap().turn_write_budget, 1 << 20);
        let c = parse(&["--turn-write-budget", "64KiB"]).resolve().unwrap();
        assert_eq!(c.turn_write_budget, 64 << 10);
        let c = parse(&["--turn-write-budget", "0"]).resolve().unwrap();
        assert_eq!(c.turn_write_budget, 0);
        assert!(parse(&["--turn-write-budget", "lots"]).resolve().is_err());
    }

    #[test]
    fn pubsub_knobs_from_flags() {
        let c = parse(&[
            "--history-messages",
            "50",
            "--history-bytes",
            "64KiB",
            "--history-age",
            "10m",
            "--bus-capacity",
            "1024",
            "--outbox-limit",
            "4096",
            "--sse-keepalive",
            "20s",
            "--sse-retry",
            "1500ms",
            "--poll-timeout",
            "10s",
            "--poll-timeout-max",
            "1m",
            "--poll-limit",
            "100",
            "--poll-limit-max",
            "500",
            "--cors-origin",
            "https://app.example.com",
            "--cors-origin",
            "*.example.org",
            "--conflate",
            "prices.*",
            "--conflate",
            "quotes",
        ])
        .resolve()
        .unwrap();
        assert_eq!(c.history.max_messages, 50);
        assert_eq!(c.history.max_bytes, 64 * 1024);
        assert_eq!(c.history.max_age, Some(Duration::from_secs(600)));
        assert_eq!(c.bus_capacity, 1024);
        assert_eq!(c.outbox_limit, 4096);
        assert_eq!(c.sse_keepalive, Duration::from_secs(20));
        assert_eq!(c.sse_retry, Duration::from_millis(1500));
        assert_eq!(c.poll_timeout, Duration::from_secs(10));
        assert_eq!(c.poll_timeout_max, Duration::from_secs(60));
        assert_eq!(c.poll_limit, 100);
        assert_eq!(c.poll_limit_max, 500);
        assert_eq!(c.cors_origins, ["https://app.example.com", "*.example.org"]);
        assert_eq!(c.conflate, ["prices.*", "quotes"]);
    }

    #[test]
    fn pubsub_knobs_default_to_the_engine_defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        let d = Config::default();
        assert_eq!(c.history, d.history);
        assert_eq!(c.history.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(
            (
                c.bus_capacity,
                c.outbox_limit,
                c.poll_limit,
                c.poll_limit_max
            ),
            (
                d.bus_capacity,
                d.outbox_limit,
                d.poll_limit,
                d.poll_limit_max
            )
        );
        assert_eq!(
            (
                c.sse_keepalive,
                c.sse_retry,
                c.poll_timeout,
                c.poll_timeout_max
            ),
            (
                d.sse_keepalive,
                d.sse_retry,
                d.poll_timeout,
                d.poll_timeout_max
            )
        );
        assert!(c.cors_origins.is_empty() && c.conflate.is_empty());
    }

    #[test]
    fn pubsub_knobs_from_the_file_and_lists_replaced_by_flags() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-pubsub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(
            &path,
            concat!(
                "history-messages = 0\n",
                "history-age = \"off\"\n",
                "poll-limit = 20\n",
                "sse-keepalive = \"5s\"\n",
                "cors-origin = [\"https://a.example\", \"*.b.example\"]\n",
                "conflate = [\"*\"]\n",
            ),
        )
        .unwrap();
        let file_only = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(file_only.history.max_messages, 0, "0 disables history");
        assert_eq!(file_only.history.max_age, None);
        assert_eq!(file_only.poll_limit, 20);
        assert_eq!(file_only.sse_keepalive, Duration::from_secs(5));
        assert_eq!(file_only.cors_origins, ["https://a.example", "*.b.example"]);
        assert_eq!(file_only.conflate, ["*"]);

        let mut args = parse(&["--cors-origin", "https://c.example", "--poll-limit", "30"]);
        args.config = Some(path);
        let c = args.resolve().unwrap();
        assert_eq!(
            c.cors_origins,
            ["https://c.example"],
            "a flag list replaces the file's list"
        );
        assert_eq!(c.poll_limit, 30, "flag wins");
        assert_eq!(c.conflate, ["*"], "file list kept when no flag is given");
    }

    #[test]
    fn redis_from_flags_and_file() {
        let c = parse(&[]).resolve().unwrap();
        assert!(c.redis.is_none(), "single node by default");
        let c = parse(&["--redis", "redis://127.0.0.1:6379/", "--node-id", "a"])
            .resolve()
            .unwrap();
        let r = c.redis.unwrap();
        assert_eq!(
            (r.url.as_str(), r.node_id.as_str()),
            ("redis://127.0.0.1:6379/", "a")
        );
        let c = parse(&["--redis", "redis://h/"]).resolve().unwrap();
        assert!(
            !c.redis.unwrap().node_id.is_empty(),
            "a node id is generated"
        );
        assert!(parse(&["--node-id", "a"]).resolve().is_err());
        assert!(parse(&["--redis", "http://h/"]).resolve().is_err());
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(&path, "redis = \"redis://r:6380/\"\nnode-id = \"n1\"\n").unwrap();
        let c = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.redis.map(|r| r.node_id), Some("n1".to_owned()));
    }

    #[test]
    fn security_knobs_from_flags_and_file() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("ed25519.pem");
        std::fs::write(
            &key,
            include_str!("../../engine/tests/keys/ed25519_public.pem"),
        )
        .unwrap();
        let c = parse(&[
            "--auth-public-key",
            key.to_str().unwrap(),
            "--allowed-origin",
            "https://app.example.com",
            "--allowed-origin",
            "*.example.org",
            "--publish-rate-limit",
            "5",
            "--ip-connect-rate",
            "20",
            "--max-connections-per-ip",
            "100",
            "--max-connections-per-user",
            "3",
        ])
        .resolve()
        .unwrap();
        assert!(matches!(
            c.auth,
            Some(ringcast_engine::AuthKey::PublicKeyPem(_))
        ));
        assert_eq!(
            c.allowed_origins,
            ["https://app.example.com", "*.example.org"]
        );
        assert_eq!(
            (
                c.publish_rate_limit,
                c.ip_connect_rate,
                c.max_connections_per_ip,
                c.max_connections_per_user
            ),
            (5, 20, 100, 3)
        );

        let path = dir.join("ringcast.toml");
        std::fs::write(
            &path,
            "auth-secret = \"0123456789abcdef0123\"\nallowed-origin = [\"*\"]\nmax-connections-per-ip = 7\n",
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(
            matches!(c.auth, Some(ringcast_engine::AuthKey::Secret(ref s)) if s == b"0123456789abcdef0123")
        );
        assert_eq!(c.allowed_origins, ["*"]);
        assert_eq!(c.max_connections_per_ip, 7);

        let defaults = ServeArgs::default().resolve().unwrap();
        assert!(defaults.auth.is_none() && defaults.allowed_origins.is_empty());

        // Errors name the flag.
        let err = |args: &[&str]| format!("{:#}", parse(args).resolve().unwrap_err());
        assert!(err(&["--auth-secret", "short"]).contains("16 bytes"));
        assert!(err(&["--auth-public-key", "/nonexistent/key.pem"]).contains("--auth-public-key"));
        assert!(err(&["--allowed-origin", "a, b"]).contains("--allowed-origin"));
        let both = [
            "--auth-secret",
            "0123456789abcdef0123",
            "--auth-public-key",
            key.to_str().unwrap(),
        ];
        assert!(err(&both).contains("exclusive"));
    }

    #[test]
    fn history_age_off_and_zero() {
        assert_eq!(age("off").unwrap(), None);
        assert_eq!(age("OFF").unwrap(), None);
        assert_eq!(age("0").unwrap(), None);
        assert_eq!(age("0s").unwrap(), None);
        assert_eq!(age("90s").unwrap(), Some(Duration::from_secs(90)));
        assert!(
            age("never")
                .unwrap_err()
                .to_string()
                .contains("history-age")
        );
    }

    #[test]
    fn bad_pubsub_values_are_refused() {
        for (args, needle) in [
            (&["--conflate", "prices*"][..], "--conflate"),
            (&["--conflate", "a b"][..], "--conflate"),
            (&["--conflate", ".*"][..], "--conflate"),
            (&["--cors-origin", ""][..], "--cors-origin"),
            (
                &["--cors-origin", "https://a.example, https://b.example"][..],
                "--cors-origin",
            ),
            (
                &["--poll-timeout", "3m"][..],
                "poll_timeout must not exceed poll_timeout_max",
            ),
            (
                &["--poll-limit", "20000"][..],
                "poll_limit must not exceed poll_limit_max",
            ),
            (&["--bus-capacity", "0"][..], "bus_capacity"),
            (&["--sse-keepalive", "10ms"][..], "sse_keepalive"),
            (&["--sse-retry", "soon"][..], "sse-retry"),
            (&["--history-bytes", "lots"][..], "history-bytes"),
        ] {
            let err = parse(args).resolve().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert!(
            toml::from_str::<ServeArgs>("cors-origin = \"https://a.example\"").is_err(),
            "an array"
        );
    }

    #[test]
    fn help_lists_every_knob_with_its_default() {
        use clap::CommandFactory;
        let help = Cmd::command().render_long_help().to_string();
        for flag in [
            "--history-messages",
            "--history-bytes",
            "--history-age",
            "--bus-capacity",
            "--outbox-limit",
            "--sse-keepalive",
            "--sse-retry",
            "--poll-timeout ",
            "--poll-timeout-max",
            "--poll-limit ",
            "--poll-limit-max",
            "--cors-origin",
            "--conflate",
        ] {
            let at = help
                .find(flag)
                .unwrap_or_else(|| panic!("{flag} missing from the help"));
            let rest = &help[at..];
            let next = rest.find("\n\n").unwrap_or(rest.len());
            assert!(
                rest[..next].contains("[default: "),
                "{flag} has no default in the help:\n{}",
                &rest[..next]
            );
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ServeArgs>("no-such-knob = 1").is_err());
        let bad = ServeArgs {
            idle_timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            bad.resolve()
                .unwrap_err()
                .to_string()
                .contains("idle-timeout")
        );
        let bad = ServeArgs {
            max_frame_size: Some("lots".into()),
            ..Default::default()
        };
        assert!(
            bad.resolve()
                .unwrap_err()
                .to_string()
                .contains("max-frame-size")
        );
    }
}
