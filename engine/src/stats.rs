//! Per-core counters and their Prometheus text exposition.
//!
//! Each core owns one [`CoreStats`] and is its only writer; any core may read every core's block to answer
//! `GET /metrics`. Single-writer counters are bumped with a relaxed load and store (no locked read-modify-write), so
//! counting costs the hot path a plain memory write; readers may see a value a few events old, never a torn one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Close codes counted separately in `ringcast_ws_protocol_errors_total`.
pub(crate) const COUNTED_CLOSE_CODES: [u16; 6] = [1002, 1003, 1007, 1008, 1009, 1011];

/// Upper bounds (µs) of the reactor-turn histogram's buckets; a last bucket takes the rest.
pub(crate) const TURN_BOUNDS_US: [u64; 5] = [100, 1_000, 10_000, 100_000, 1_000_000];

/// One core's counters. Written only by the owning core.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreStats {
    pub(crate) connections_open: AtomicU64,
    /// Connections with output the kernel refused, waiting for their socket to take it (in the write set).
    pub(crate) backlogged: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) accept_pauses: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) protocol_errors: [AtomicU64; COUNTED_CLOSE_CODES.len()],
    pub(crate) protocol_errors_other: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) slow_consumer_drops: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) pings_sent: AtomicU64,
    pub(crate) messages_published: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) subscribers: AtomicU64,
    pub(crate) conflated: AtomicU64,
    pub(crate) bus_dropped: AtomicU64,
    pub(crate) bus_gaps: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) auth_expired: AtomicU64,
    pub(crate) forbidden: AtomicU64,
    pub(crate) origin_rejected: AtomicU64,
    pub(crate) limit_rejected: AtomicU64,
    /// Reactor turns by duration (not cumulative; the last slot is over the last bound).
    pub(crate) turns: [AtomicU64; TURN_BOUNDS_US.len() + 1],
    /// Sum of the turns' durations in µs.
    pub(crate) turn_us: AtomicU64,
}

/// Adds `n` to a single-writer counter.
#[inline]
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts `n` from a single-writer gauge.
#[inline]
pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_sub(n), Relaxed);
}

impl CoreStats {
    /// Counts a protocol error by the close code sent for it.
    pub(crate) fn protocol_error(&self, code: u16) {
        match COUNTED_CLOSE_CODES.iter().position(|&c| c == code) {
            Some(i) => add(&self.protocol_errors[i], 1),
            None => add(&self.protocol_errors_other, 1),
        }
    }

    /// Counts one reactor turn (everything the core did for one wake-up: reads, fan-out, writes) that took `us`.
    #[inline]
    pub(crate) fn record_turn(&self, us: u64) {
        let slot = TURN_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(TURN_BOUNDS_US.len());
        add(&self.turns[slot], 1);
        add(&self.turn_us, us);
    }

    /// Reactor turns this core ran that took longer than `us` µs (`us` must be one of 100, 1,000, 10,000, 100,000
    /// or 1,000,000; any other value counts from the next bound up).
    pub fn turns_longer_than(&self, us: u64) -> u64 {
        let first = TURN_BOUNDS_US
            .iter()
            .position(|&b| us < b)
            .unwrap_or(TURN_BOUNDS_US.len());
        self.turns[first..].iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Connections currently open on this core.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// Connections accepted on this core since start.
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.load(Relaxed)
    }

    /// Times this core paused accepting because the process ran out of descriptors or memory.
    pub fn accept_pauses(&self) -> u64 {
        self.accept_pauses.load(Relaxed)
    }

    /// Slow-consumer disconnects on this core since start.
    pub fn slow_consumer_disconnects(&self) -> u64 {
        self.slow_consumer_disconnects.load(Relaxed)
    }

    /// Messages this core numbered as the owner of their topic.
    pub fn messages_published(&self) -> u64 {
        self.messages_published.load(Relaxed)
    }

    /// Messages handed to subscribers on this core (queued for their connections, not necessarily written yet).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Relaxed)
    }

    /// Live subscriptions (connection × topic) on this core.
    pub fn subscribers(&self) -> u64 {
        self.subscribers.load(Relaxed)
    }

    /// Connections whose socket refused output that now waits in ringcast's queue for it (subscribers behind).
    pub fn backlogged_connections(&self) -> u64 {
        self.backlogged.load(Relaxed)
    }

    /// Bytes written to sockets by this core.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Relaxed)
    }

    /// Queued messages replaced by newer ones on conflated topics.
    pub fn conflated(&self) -> u64 {
        self.conflated.load(Relaxed)
    }

    /// Data messages dropped by the drop-oldest slow-consumer policy on this core since start.
    pub fn slow_consumer_drops(&self) -> u64 {
        self.slow_consumer_drops.load(Relaxed)
    }
}

/// Writes the Prometheus text exposition of every core's counters into `out`.
pub fn render_prometheus(cores: &[std::sync::Arc<CoreStats>], out: &mut Vec<u8>) {
    use std::io::Write;
    type Getter = fn(&CoreStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Getter); 30] = [
        (
            "ringcast_connections_open",
            "gauge",
            "Connections open.",
            |s| &s.connections_open,
        ),
        (
            "ringcast_backlogged_connections",
            "gauge",
            "Connections whose socket refused output that now waits in ringcast's queue (subscribers behind).",
            |s| &s.backlogged,
        ),
        (
            "ringcast_connections_accepted_total",
            "counter",
            "Connections accepted.",
            |s| &s.connections_accepted,
        ),
        (
            "ringcast_connections_rejected_total",
            "counter",
            "Connections refused with 503 because the core was full.",
            |s| &s.connections_rejected,
        ),
        (
            "ringcast_accept_pauses_total",
            "counter",
            "Times accepting paused because the process ran out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
            |s| &s.accept_pauses,
        ),
        (
            "ringcast_ws_handshakes_total",
            "counter",
            "Completed WebSocket handshakes.",
            |s| &s.handshakes,
        ),
        (
            "ringcast_ws_handshake_failures_total",
            "counter",
            "Upgrade requests answered with a 4xx.",
            |s| &s.handshake_failures,
        ),
        (
            "ringcast_handshake_timeouts_total",
            "counter",
            "Connections closed for not completing a request head in time.",
            |s| &s.handshake_timeouts,
        ),
        (
            "ringcast_http_requests_total",
            "counter",
            "Plain HTTP requests answered.",
            |s| &s.http_requests,
        ),
        (
            "ringcast_ws_frames_in_total",
            "counter",
            "WebSocket frames received.",
            |s| &s.frames_in,
        ),
        (
            "ringcast_ws_frames_out_total",
            "counter",
            "WebSocket frames sent (handed to the kernel, or queued behind a connection's backlog).",
            |s| &s.frames_out,
        ),
        (
            "ringcast_bytes_in_total",
            "counter",
            "Bytes read from sockets.",
            |s| &s.bytes_in,
        ),
        (
            "ringcast_bytes_out_total",
            "counter",
            "Bytes written to sockets.",
            |s| &s.bytes_out,
        ),
        (
            "ringcast_slow_consumer_disconnects_total",
            "counter",
            "Connections closed by the disconnect slow-consumer policy.",
            |s| &s.slow_consumer_disconnects,
        ),
        (
            "ringcast_slow_consumer_dropped_messages_total",
            "counter",
            "Messages dropped by the drop-oldest slow-consumer policy.",
            |s| &s.slow_consumer_drops,
        ),
        (
            "ringcast_ws_idle_timeouts_total",
            "counter",
            "WebSocket connections closed for silence.",
            |s| &s.idle_timeouts,
        ),
        (
            "ringcast_ws_pings_sent_total",
            "counter",
            "Heartbeat pings sent.",
            |s| &s.pings_sent,
        ),
        (
            "ringcast_messages_published_total",
            "counter",
            "Messages numbered by this core (the owner of their topic).",
            |s| &s.messages_published,
        ),
        (
            "ringcast_subscribers",
            "gauge",
            "Live subscriptions (connection x topic).",
            |s| &s.subscribers,
        ),
        (
            "ringcast_deliveries_total",
            "counter",
            "Messages handed to local subscribers.",
            |s| &s.deliveries,
        ),
        (
            "ringcast_conflated_messages_total",
            "counter",
            "Queued messages replaced by a newer one on conflated topics.",
            |s| &s.conflated,
        ),
        (
            "ringcast_bus_dropped_total",
            "counter",
            "Cross-core messages dropped because a core's outbox to another core overflowed.",
            |s| &s.bus_dropped,
        ),
        (
            "ringcast_ws_rate_limited_total",
            "counter",
            "Pub/sub WebSocket connections closed with 1008 for sending over the rate limit.",
            |s| &s.rate_limited,
        ),
        (
            "ringcast_auth_failures_total",
            "counter",
            "Requests answered 401: missing, malformed, forged, expired or not-yet-valid tokens.",
            |s| &s.auth_failures,
        ),
        (
            "ringcast_auth_expired_total",
            "counter",
            "WebSocket and SSE connections closed because their token expired.",
            |s| &s.auth_expired,
        ),
        (
            "ringcast_forbidden_total",
            "counter",
            "Subscribes, publishes and direct messages refused by the token's permissions (403 or error reply).",
            |s| &s.forbidden,
        ),
        (
            "ringcast_origin_rejected_total",
            "counter",
            "WebSocket upgrades answered 403 for an Origin outside the allowlist.",
            |s| &s.origin_rejected,
        ),
        (
            "ringcast_limit_rejected_total",
            "counter",
            "Requests and connections refused by the publish rate, per-IP and per-user limits (429 or close 1008).",
            |s| &s.limit_rejected,
        ),
        (
            "ringcast_bus_gaps_total",
            "counter",
            "Sequence gaps seen by subscriber cores (their subscribers were sent a reset).",
            |s| &s.bus_gaps,
        ),
        (
            "ringcast_ws_protocol_errors_other_total",
            "counter",
            "Protocol errors closed with a code not listed in ringcast_ws_protocol_errors_total.",
            |s| &s.protocol_errors_other,
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (core, s) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(s).load(Relaxed));
        }
    }
    let name = "ringcast_turn_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Reactor turns by duration: the time a core spent on one wake-up (reading, fanning out, \
         writing). A long turn delays every connection on that core.\n# TYPE {name} histogram"
    );
    for (core, s) in cores.iter().enumerate() {
        let mut cumulative = 0;
        for (i, c) in s.turns.iter().enumerate() {
            cumulative += c.load(Relaxed);
            match TURN_BOUNDS_US.get(i) {
                Some(b) => {
                    let le = *b as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{core=\"{core}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = s.turn_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{core=\"{core}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {cumulative}");
    }
    let name = "ringcast_ws_protocol_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} WebSocket connections closed for a protocol error, by close code.\n# TYPE {name} counter"
    );
    for (core, s) in cores.iter().enumerate() {
        for (i, code) in COUNTED_CLOSE_CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{core=\"{core}\",code=\"{code}\"}} {}",
                s.protocol_errors[i].load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn exposition_lists_every_core_and_code() {
        let a = Arc::new(CoreStats::default());
        let b = Arc::new(CoreStats::default());
        add(&a.connections_open, 3);
        b.protocol_error(1009);
        b.protocol_error(4000);
        let mut out = Vec::new();
        render_prometheus(&[a, b], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ringcast_connections_open{core=\"0\"} 3\n"));
        assert!(text.contains("ringcast_connections_open{core=\"1\"} 0\n"));
        assert!(text.contains("ringcast_ws_protocol_errors_total{core=\"1\",code=\"1009\"} 1\n"));
        assert!(text.contains("ringcast_ws_protocol_errors_other_total{core=\"1\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            if name.starts_with("ringcast_turn_duration_seconds_sum") {
                value.parse::<f64>().unwrap();
                continue;
            }
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn turns_land_in_their_buckets_and_render_cumulatively() {
        let s = Arc::new(CoreStats::default());
        for us in [5, 100, 101, 999, 20_000, 2_000_000] {
            s.record_turn(us);
        }
        assert_eq!(s.turns_longer_than(100), 4);
        assert_eq!(s.turns_longer_than(1_000), 2);
        assert_eq!(s.turns_longer_than(100_000), 1);
        assert_eq!(s.turns_longer_than(1_000_000), 1);
        let mut out = Vec::new();
        render_prometheus(&[s], &mut out);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"0.0001\"} 2\n",
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"0.001\"} 4\n",
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"0.01\"} 4\n",
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"0.1\"} 5\n",
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"1\"} 5\n",
            "ringcast_turn_duration_seconds_bucket{core=\"0\",le=\"+Inf\"} 6\n",
            "ringcast_turn_duration_seconds_count{core=\"0\"} 6\n",
            "ringcast_turn_duration_seconds_sum{core=\"0\"} 2.021205\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
