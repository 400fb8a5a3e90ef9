//! Engine configuration: every limit and timer the reactors enforce, with safe defaults.
//!
//! The binary builds a [`Config`] from flags and an optional TOML file; tests build one directly. Nothing here is
//! read after the reactors start except through the shared, immutable `Arc<Config>` each core holds.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::history::HistoryLimits;

/// Which io_uring/epoll driver each core's monoio runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll, with one log line saying so.
    #[default]
    Auto,
    /// io_uring only; start fails when it cannot be set up.
    Uring,
    /// monoio's legacy epoll driver.
    Epoll,
}

/// What a core does when a connection's queued output passes the high-water mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Discard the queued data, send close 1008 and close the connection (counted).
    #[default]
    Disconnect,
    /// Drop the oldest queued data messages (never control frames, never a frame already partly written) until
    /// the queue is under the mark again (counted per dropped message).
    DropOldest,
}

/// Which cores run a reactor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CoreSet {
    /// One reactor per online core.
    #[default]
    All,
    /// The first N online cores.
    Count(usize),
    /// Exactly these core ids.
    List(Vec<usize>),
}

/// The whole engine configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every core's listener binds (SO_REUSEPORT). Port 0 picks a free port, shared by all cores.
    pub listen: SocketAddr,
    /// Which cores run a reactor.
    pub cores: CoreSet,
    /// Pin each reactor thread to its core.
    pub pin_threads: bool,
    /// Start even when another socket already listens on `listen` (several processes sharing one port on purpose,
    /// SO_REUSEPORT spreading new connections over them). When false (the default) and the port is not 0, the
    /// engine refuses to start with [`EngineError::PortInUse`](crate::EngineError::PortInUse) instead of silently
    /// taking a share of another server's clients.
    pub share_port: bool,
    /// io_uring or epoll.
    pub driver: Driver,
    /// With the io_uring driver, a fan-out's sends to its subscribers go through the core's own io_uring, up to
    /// 256 per `io_uring_enter`, instead of one `write(2)` each (the epoll driver always writes). On the benchmark
    /// VM a small send costs the kernel 7.3 µs that way against 8.6 µs as a syscall. False: one `write(2)` per
    /// subscriber with either driver.
    pub batch_sends: bool,
    /// Listen backlog per core.
    pub backlog: i32,
    /// Connections one core holds at most; a connection over it gets 503 before any upgrade.
    pub max_connections_per_core: usize,
    /// A client must complete its request head within this time (slowloris defence).
    pub handshake_timeout: Duration,
    /// A WebSocket silent this long gets a ping.
    pub ping_interval: Duration,
    /// A WebSocket silent this long is closed (1001).
    pub idle_timeout: Duration,
    /// After a close frame is sent, the socket is closed at the latest after this time.
    pub close_timeout: Duration,
    /// On shutdown, connections get this long to finish their close handshake.
    pub drain_timeout: Duration,
    /// Largest WebSocket message (sum of fragments); larger closes with 1009.
    pub max_message_size: usize,
    /// Largest single WebSocket frame payload; larger closes with 1009.
    pub max_frame_size: usize,
    /// Largest HTTP request head (431 over it).
    pub max_head_bytes: usize,
    /// Most HTTP request headers (431 over it).
    pub max_headers: usize,
    /// Output bytes queued for one connection above which the slow-consumer policy applies: ringcast's own queue
    /// plus what waits in the kernel's send buffer (`SIOCOUTQ`: unsent and unacknowledged), so a backlog parked in
    /// the kernel counts too.
    pub write_high_water: usize,
    /// `SO_SNDBUF` of every accepted connection, in bytes (the kernel doubles it for its bookkeeping and caps it
    /// at `net.core.wmem_max`); 0, the default, sets nothing and leaves the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). The high-water mark counts the kernel's send queue either
    /// way, so a slow client's backlog stays near the mark (or this buffer, if larger) with or without it; it
    /// moves where that backlog waits: a smaller kernel buffer keeps more of it in ringcast's queue, where
    /// conflation and `DropOldest` can still thin it (what the kernel holds is delivered as is). 64 KiB still
    /// fills a 5 MB/s connection at 25 ms round-trip time; too small a value limits every connection's throughput
    /// on long paths. Sets a limit only: an idle connection's memory is the same.
    pub send_buffer: usize,
    /// Subscribers a core writes a topic's messages to per turn before it serves its other sockets again; a larger
    /// fan-out continues in the next turns, a slice at a time, and messages published meanwhile join the same
    /// writes. 0 writes every subscriber in one turn. A slice bounds how many `writev` calls one fan-out makes
    /// before a new request, a publish or another topic is served (one call costs about 9 µs of kernel time on the
    /// benchmark VM, so 1,024, the default, is about 10 ms).
    pub fanout_slice: usize,
    /// Bytes a core hands to the kernel per turn for fan-out, and again for connections draining a backlog,
    /// before it serves its other sockets (the rest goes on in the next turns). Loopback and large socket buffers
    /// let one turn push a backlog of a gigabyte into ten thousand sockets; without this bound a flood held a
    /// health check for 7 s, with 1 MiB (the default) for at most 5 ms, at the same throughput
    /// (benches/RESULTS.md, "Turn write budget"). 0: no bound.
    pub turn_write_budget: usize,
    /// The slow-consumer policy.
    pub slow_consumer: SlowConsumerPolicy,
    /// Size of each core's shared read buffer.
    pub read_buffer_size: usize,
    /// Readiness events taken per wake-up.
    pub events_per_wake: usize,
    /// Retained history per topic, for resume.
    pub history: HistoryLimits,
    /// Capacity of each channel into a core (messages).
    pub bus_capacity: usize,
    /// Messages a core holds for one other core while that core's channel is full; past it the oldest is dropped
    /// (counted) and the target's subscribers are reset.
    pub outbox_limit: usize,
    /// Interval of `: keep-alive` comments on idle SSE streams.
    pub sse_keepalive: Duration,
    /// The `retry:` hint sent once at the start of each SSE stream.
    pub sse_retry: Duration,
    /// Long-poll wait when the request gives no `timeout`.
    pub poll_timeout: Duration,
    /// Longest long-poll wait a request may ask for.
    pub poll_timeout_max: Duration,
    /// Messages per poll answer when the request gives no `limit`.
    pub poll_limit: usize,
    /// Largest `limit` a poll request may ask for.
    pub poll_limit_max: usize,
    /// Origins allowed by CORS on the HTTP transports: exact origins, `*.example.com` for subdomains, or `*`.
    /// Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Topic patterns (exact name, or a prefix ending in `.*`, or `*`) whose slow subscribers get only the newest
    /// message instead of the backlog.
    pub conflate: Vec<String>,
    /// Messages per second a pub/sub WebSocket client may send, with a burst of one second's worth; over it the
    /// connection is closed with 1008. 0 disables the limit. (The `/echo` route is not limited.)
    pub ws_rate_limit: u32,
    /// Static files served on `GET` (the demo page, the JavaScript client), matched by exact path.
    pub assets: Vec<Asset>,
    /// Subscriber transports refused with `403` before any upgrade or stream starts: `"ws"` (`/ws`), `"sse"`
    /// (`/sse/{topic}`), `"poll"` (`/poll/{topic}` and `/messages/{topic}`). A testing aid that plays a proxy
    /// blocking a transport, so that clients' fallback can be exercised; HTTP publish stays open.
    pub disabled_transports: Vec<String>,
    /// When set, every WebSocket upgrade (`/ws` and `/echo`), SSE stream, poll and publish must carry a JWT
    /// verified with this key (`Authorization: Bearer` or `?token=`); see [`crate::auth`].
    pub auth: Option<crate::auth::AuthKey>,
    /// Origins allowed to open WebSockets (exact, `*.domain` for subdomains, or `*`); a request with another
    /// `Origin` gets 403 before the upgrade. Empty: every origin (and no `Origin`) is allowed.
    pub allowed_origins: Vec<String>,
    /// Publishes per second one connection may make (WebSocket `pub` and direct messages, HTTP publish), with a
    /// burst of one second's worth; over it a WebSocket is closed with 1008 and HTTP answers 429. 0: unlimited.
    pub publish_rate_limit: u32,
    /// New connections per second one client IP may open on one core (burst of one second's worth); over it the
    /// connection's first request is answered 429 (`Retry-After`). 0: unlimited.
    pub ip_connect_rate: u32,
    /// Connections one client IP may hold open on one core; over it 429. 0: unlimited.
    pub max_connections_per_ip: u32,
    /// Open WebSocket and SSE connections one authenticated user (`sub`) may hold on one core; over it 429. 0:
    /// unlimited.
    pub max_connections_per_user: u32,
    /// Multi-node mode: every topic's sequence, history and fan-out go through this Redis (see
    /// [`crate::RedisConfig`]). `None` (the default): one node, no Redis.
    pub redis: Option<crate::bridge::RedisConfig>,
}

/// A static file the server answers `GET path` with.
#[derive(Clone, Debug)]
pub struct Asset {
    /// The request path, e.g. `/ringcast.js`.
    pub path: String,
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// The body, shared by every response.
    pub body: bytes::Bytes,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cores: CoreSet::All,
            pin_threads: true,
            share_port: false,
            driver: Driver::Auto,
            backlog: 4096,
            max_connections_per_core: 500_000,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            close_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_head_bytes: 8 * 1024,
            max_headers: 64,
            write_high_water: 4 << 20,
            send_buffer: 0,
            fanout_slice: 1024,
            batch_sends: true,
            turn_write_budget: 1 << 20,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            read_buffer_size: 64 * 1024,
            events_per_wake: 1024,
            history: HistoryLimits::default(),
            bus_capacity: 65_536,
            outbox_limit: 1 << 20,
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(3),
            poll_timeout: Duration::from_secs(30),
            poll_timeout_max: Duration::from_secs(120),
            poll_limit: 1000,
            poll_limit_max: 10_000,
            cors_origins: Vec::new(),
            conflate: Vec::new(),
            assets: Vec::new(),
            ws_rate_limit: 1000,
            disabled_transports: Vec::new(),
            auth: None,
            allowed_origins: Vec::new(),
            publish_rate_limit: 0,
            ip_connect_rate: 0,
            max_connections_per_ip: 0,
            max_connections_per_user: 0,
            redis: None,
        }
    }
}

/// Does `topic` match a conflation or permission pattern: an exact name, `prefix.*` (the prefix, a dot, then
/// anything), or `*`.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => {
            topic.len() > prefix.len() && topic.starts_with(prefix)
        }
        _ => pattern == topic,
    }
}

/// Is `origin` allowed by `patterns` (exact, `*.domain` for subdomains of domain with any scheme, or `*`)?
pub fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    patterns.iter().any(|p| {
        if p == "*" || p.eq_ignore_ascii_case(origin) {
            return true;
        }
        let Some(domain) = p.strip_prefix("*.") else {
            return false;
        };
        let host = origin.split_once("://").map_or(origin, |(_, h)| h);
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        host.len() > domain.len() + 1
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
    })
}

impl Config {
    /// Is the subscriber transport `name` (`"ws"`, `"sse"` or `"poll"`) in [`Config::disabled_transports`]?
    pub fn transport_disabled(&self, name: &str) -> bool {
        self.disabled_transports.iter().any(|t| t == name)
    }

    /// Checks the values that would make the engine misbehave; returns a message naming the knob.
    pub fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("max_connections_per_core", self.max_connections_per_core),
            ("max_message_size", self.max_message_size),
            ("max_frame_size", self.max_frame_size),
            ("max_head_bytes", self.max_head_bytes),
            ("max_headers", self.max_headers),
            ("write_high_water", self.write_high_water),
            ("read_buffer_size", self.read_buffer_size),
            ("events_per_wake", self.events_per_wake),
            ("bus_capacity", self.bus_capacity),
            ("outbox_limit", self.outbox_limit),
            ("poll_limit", self.poll_limit),
            ("poll_limit_max", self.poll_limit_max),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.max_headers > ringcast_protocol::http::MAX_HEADERS_HARD {
            return Err(format!(
                "max_headers must be at most {}",
                ringcast_protocol::http::MAX_HEADERS_HARD
            ));
        }
        if self.max_message_size > u32::MAX as usize || self.max_frame_size > u32::MAX as usize {
            return Err("max_message_size and max_frame_size must be below 4 GiB".into());
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("ping_interval", self.ping_interval),
            ("idle_timeout", self.idle_timeout),
            ("close_timeout", self.close_timeout),
            ("sse_keepalive", self.sse_keepalive),
            ("poll_timeout", self.poll_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("{name} must be at least 100ms"));
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err("idle_timeout must be longer than ping_interval".into());
        }
        if self.poll_limit > self.poll_limit_max {
            return Err("poll_limit must not exceed poll_limit_max".into());
        }
        if self.poll_timeout > self.poll_timeout_max {
            return Err("poll_timeout must not exceed poll_timeout_max".into());
        }
        if let Some(key) = &self.auth {
            crate::auth::Verifier::new(key)?;
        }
        if let CoreSet::Count(0) = self.cores {
            return Err("cores must be at least 1".into());
        }
        if let CoreSet::List(l) = &self.cores
            && l.is_empty()
        {
            return Err("the core list is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("*", "a"));
        assert!(topic_matches("prices.*", "prices.eur"));
        assert!(!topic_matches("prices.*", "prices."));
        assert!(!topic_matches("prices.*", "pricesX"));
        assert!(topic_matches("news", "news"));
        assert!(!topic_matches("news", "news2"));
    }

    #[test]
    fn origin_patterns() {
        let p = vec![
            "https://app.example.com".to_string(),
            "*.trusted.io".to_string(),
        ];
        assert!(origin_allowed(&p, "https://app.example.com"));
        assert!(origin_allowed(&p, "https://a.trusted.io"));
        assert!(origin_allowed(&p, "http://a.b.trusted.io:8443"));
        assert!(!origin_allowed(&p, "https://trusted.io"));
        assert!(!origin_allowed(&p, "https://eviltrusted.io"));
        assert!(!origin_allowed(&p, "https://example.com"));
        assert!(origin_allowed(&["*".to_string()], "null"));
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }
}
