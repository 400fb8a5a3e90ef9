//! Engine configuration: every limit and timer the reactors enforce, with safe defaults.
//!
//! The binary builds a [`Config`] from flags and an optional TOML file; tests build one directly. Nothing here is
//! read after the reactors start except through the shared, immutable `Arc<Config>` each core holds.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// io_uring or epoll.
    pub driver: Driver,
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
    /// Queued output bytes per connection above which the slow-consumer policy applies.
    pub write_high_water: usize,
    /// The slow-consumer policy.
    pub slow_consumer: SlowConsumerPolicy,
    /// Size of each core's shared read buffer.
    pub read_buffer_size: usize,
    /// Readiness events taken per wake-up.
    pub events_per_wake: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cores: CoreSet::All,
            pin_threads: true,
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
            slow_consumer: SlowConsumerPolicy::Disconnect,
            read_buffer_size: 64 * 1024,
            events_per_wake: 1024,
        }
    }
}

impl Config {
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
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("{name} must be at least 100ms"));
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return Err("idle_timeout must be longer than ping_interval".into());
        }
        if let CoreSet::Count(0) = self.cores {
            return Err("cores must be at least 1".into());
        }
        if let CoreSet::List(l) = &self.cores {
            if l.is_empty() {
                return Err("the core list is empty".into());
            }
        }
        Ok(())
    }
}
