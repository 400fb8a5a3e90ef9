//! Owns the counters: a mergeable [`Tally`] each reactor thread (and each worker process) fills, and the final
//! [`Report`] computed from it, printed as text or JSON.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (one minute); larger values are clamped.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds that serializes as its non-empty buckets, so worker processes can hand it
/// to their parent.
#[derive(Clone, Debug)]
pub struct Latency(pub Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram, 1 µs to 60 s, 3 significant digits.
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram always accepts (low >= 1, high >= 2 * low, sigfig <= 5).
        Latency(Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds"))
    }

    /// Records one latency in microseconds (clamped to 1 µs ..= 60 s).
    pub fn record_us(&mut self, us: u64) {
        let _ = self.0.record(us.clamp(1, MAX_US));
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// The percentile summary, `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        let h = &self.0;
        (!h.is_empty()).then(|| LatencySummary {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buckets: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        buckets.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(d)?;
        let mut l = Latency::new();
        for (v, n) in buckets {
            let _ = l.0.record_n(v.clamp(1, MAX_US), n);
        }
        Ok(l)
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// Raw counters from one thread or process; [`Tally::merge`] adds them up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections established (handshake done).
    pub established: u64,
    /// Failed connections by reason (see [`crate::net::failure_reason`]).
    pub failures: BTreeMap<String, u64>,
    /// Seconds from the first attempt until the last connection was established.
    pub connect_secs: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received (echoes or deliveries).
    pub received: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Fanout: messages received while the publisher ran (from readiness to the go signal), without the backlog
    /// drained afterwards.
    #[serde(default)]
    pub received_window: u64,
    /// Fanout: messages received from readiness to the end (the publishing and the drain after it).
    #[serde(default)]
    pub received_after_ready: u64,
    /// Fanout: seconds from readiness until every subscriber had its topic's last seq (or the grace period ended).
    #[serde(default)]
    pub drained_secs: f64,
    /// Fanout: seqs missing at the end.
    pub lost: u64,
    /// Fanout: seqs received more than once.
    pub duplicated: u64,
    /// Fanout: seqs received after a higher seq.
    pub out_of_order: u64,
    /// Fanout: deliveries expected (published messages times their topic's subscribers).
    pub expected: u64,
    /// Fanout: messages published.
    pub published: u64,
    /// Churn: complete connect-exchange-close cycles.
    pub handshakes: u64,
    /// Subscribing churn: cycles that got no message published after their subscription within the timeout.
    #[serde(default)]
    pub lost_cycles: u64,
    /// Subscribing churn: cycles still waiting for their message when the run ended (neither complete nor lost).
    #[serde(default)]
    pub unfinished: u64,
    /// Errors after the connection was established (protocol errors, unexpected close, timeouts).
    pub errors: BTreeMap<String, u64>,
    /// Latency histogram (µs): round trip (echo, churn), or publish to receive (fanout, and subscribing churn's
    /// messages published after the subscription).
    pub latency: Latency,
    /// CPU seconds (user + system) this process used.
    pub cpu_secs: f64,
}

impl Tally {
    /// Counts one failed connection under `reason`.
    pub fn fail(&mut self, reason: &str) {
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts one error under `reason`.
    pub fn error(&mut self, reason: &str) {
        *self.errors.entry(reason.to_owned()).or_default() += 1;
    }

    /// Adds `other` into `self` (connect time and CPU: the larger and the sum).
    pub fn merge(&mut self, other: &Tally) {
        self.attempted += other.attempted;
        self.established += other.established;
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.connect_secs = self.connect_secs.max(other.connect_secs);
        self.sent += other.sent;
        self.received += other.received;
        self.received_window += other.received_window;
        self.received_after_ready += other.received_after_ready;
        self.drained_secs = self.drained_secs.max(other.drained_secs);
        self.bytes += other.bytes;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.expected += other.expected;
        self.published += other.published;
        self.handshakes += other.handshakes;
        self.lost_cycles += other.lost_cycles;
        self.unfinished += other.unfinished;
        self.latency.merge(&other.latency);
        self.cpu_secs += other.cpu_secs;
    }

    /// Failed connections over all reasons.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Server memory samples (`connect --server-pid`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMemory {
    /// Server RSS before connecting, bytes.
    pub rss_before: u64,
    /// Server RSS with every connection held, bytes.
    pub rss_after: u64,
    /// Kernel TCP socket memory (`/proc/net/sockstat` `TCP: mem`, pages × page size) before, bytes.
    pub tcp_mem_before: u64,
    /// The same with every connection held, bytes.
    pub tcp_mem_after: u64,
    /// RSS growth per established connection, bytes.
    pub rss_per_conn: f64,
    /// Kernel TCP memory growth per established connection, bytes (both ends of loopback connections count).
    pub tcp_mem_per_conn: f64,
    /// Server processes sampled (their RSS figures are summed).
    #[serde(default)]
    pub processes: usize,
    /// Kernel slab memory (`Slab:` in /proc/meminfo) before, bytes.
    #[serde(default)]
    pub slab_before: u64,
    /// The same with every connection held, bytes.
    #[serde(default)]
    pub slab_after: u64,
    /// Slab growth per established connection, bytes (socket, file and epoll objects of both ends of loopback
    /// connections, and of the load generator's side).
    #[serde(default)]
    pub slab_per_conn: f64,
    /// The server's CPU use over the idle period as a share of one core (fanout --idle), if sampled.
    #[serde(default)]
    pub idle_cpu_cores: Option<f64>,
    /// Seconds the idle period lasted.
    #[serde(default)]
    pub idle_secs: f64,
}

/// The final result of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// `connect`, `echo`, `fanout` or `churn`.
    pub mode: String,
    /// Server address.
    pub target: String,
    /// Reactor threads per process.
    pub threads: usize,
    /// Processes.
    pub procs: usize,
    /// Measured seconds (the run's duration, or the hold for `connect`).
    pub seconds: f64,
    /// Connections attempted.
    pub attempted: u64,
    /// Connections established.
    pub established: u64,
    /// Failed connections by reason.
    pub failures: BTreeMap<String, u64>,
    /// Established connections per second while connecting.
    pub connect_rate: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Messages received per second.
    pub messages_per_sec: f64,
    /// Fanout: messages received per second while the publisher ran; unlike `messages_per_sec` this leaves out
    /// the backlog drained after the last publish.
    #[serde(default)]
    pub messages_per_sec_window: f64,
    /// Fanout: messages received from readiness until the last subscriber had the last seq, per second of that
    /// time: everything published, delivered, over the time it took (the drain included).
    #[serde(default)]
    pub messages_per_sec_drained: f64,
    /// Fanout: seconds from readiness until the last subscriber had the last seq.
    #[serde(default)]
    pub drained_secs: f64,
    /// Payload bytes received per second.
    pub bytes_per_sec: f64,
    /// Latency percentiles (µs).
    pub latency_us: Option<LatencySummary>,
    /// Fanout: messages published.
    pub published: u64,
    /// Fanout: deliveries expected.
    pub expected: u64,
    /// Fanout: lost seqs.
    pub lost: u64,
    /// Fanout: duplicated seqs.
    pub duplicated: u64,
    /// Fanout: out-of-order seqs.
    pub out_of_order: u64,
    /// Churn: cycles completed.
    pub handshakes: u64,
    /// Churn: cycles per second.
    pub handshakes_per_sec: f64,
    /// Subscribing churn: cycles with no message within the timeout.
    #[serde(default)]
    pub lost_cycles: u64,
    /// Subscribing churn: cycles cut off by the end of the run.
    #[serde(default)]
    pub unfinished: u64,
    /// Errors after connecting, by reason.
    pub errors: BTreeMap<String, u64>,
    /// CPU seconds the load generator used (all processes).
    pub cpu_secs: f64,
    /// The load generator's CPU use as a share of one core over the run (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Server memory, when `--server-pid` was given.
    pub server_memory: Option<ServerMemory>,
    /// What limited the run (fds, ports, memory), if anything.
    pub limit: Option<String>,
}

impl Report {
    /// Builds the report from merged counters; `seconds` is the measured interval, `wall` the whole run.
    pub fn from_tally(mode: &str, target: &str, t: &Tally, seconds: f64, wall: f64) -> Report {
        let per = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        Report {
            mode: mode.to_owned(),
            target: target.to_owned(),
            seconds,
            attempted: t.attempted,
            established: t.established,
            failures: t.failures.clone(),
            connect_rate: if t.connect_secs > 0.0 {
                t.established as f64 / t.connect_secs
            } else {
                0.0
            },
            sent: t.sent,
            received: t.received,
            messages_per_sec: per(t.received),
            messages_per_sec_window: per(t.received_window),
            messages_per_sec_drained: if t.drained_secs > 0.0 {
                t.received_after_ready as f64 / t.drained_secs
            } else {
                0.0
            },
            drained_secs: t.drained_secs,
            bytes_per_sec: per(t.bytes),
            latency_us: t.latency.summary(),
            published: t.published,
            expected: t.expected,
            lost: t.lost,
            duplicated: t.duplicated,
            out_of_order: t.out_of_order,
            handshakes: t.handshakes,
            handshakes_per_sec: per(t.handshakes),
            lost_cycles: t.lost_cycles,
            unfinished: t.unfinished,
            errors: t.errors.clone(),
            cpu_secs: t.cpu_secs,
            cpu_cores: if wall > 0.0 { t.cpu_secs / wall } else { 0.0 },
            limit: crate::net::limit_message(&t.failures),
            ..Report::default()
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Parses a report printed by [`Report::to_json`].
    ///
    /// # Errors
    /// When `s` is not such a JSON object.
    pub fn from_json(s: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(s)
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn reasons(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} against {} ({} thread(s) x {} process(es), {:.2} s)",
            self.mode, self.target, self.threads, self.procs, self.seconds
        )?;
        writeln!(
            f,
            "  connections: {} established of {} ({}/s), failures: {}",
            self.established,
            self.attempted,
            si(self.connect_rate),
            reasons(&self.failures)
        )?;
        match self.mode.as_str() {
            "echo" | "fanout" => writeln!(
                f,
                "  messages: {} sent, {} received = {} msg/s, {}B/s payload",
                self.sent,
                self.received,
                si(self.messages_per_sec),
                si(self.bytes_per_sec)
            )?,
            "churn" => writeln!(
                f,
                "  cycles: {} = {} handshakes/s",
                self.handshakes,
                si(self.handshakes_per_sec)
            )?,
            _ => {}
        }
        if self.mode == "churn" && self.published > 0 {
            writeln!(
                f,
                "  published {}, messages received {}; lost {}, duplicated {}, out of order {}; cycles with no \
                 message in time {}, cut off by the end {}",
                self.published,
                self.received,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.lost_cycles,
                self.unfinished
            )?;
        }
        if self.mode == "fanout" {
            writeln!(
                f,
                "  published {}, deliveries {} of {} expected; lost {}, duplicated {}, out of order {}",
                self.published,
                self.received,
                self.expected,
                self.lost,
                self.duplicated,
                self.out_of_order
            )?;
            writeln!(
                f,
                "  while publishing: {} deliveries/s (the backlog drained after the last publish left out); publish to \
                 last receipt: {} deliveries/s over {:.2} s",
                si(self.messages_per_sec_window),
                si(self.messages_per_sec_drained),
                self.drained_secs
            )?;
        }
        if let Some(l) = &self.latency_us {
            writeln!(
                f,
                "  latency us: p50 {} p90 {} p99 {} p99.9 {} max {} (mean {:.1}, n {})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
            )?;
        }
        if let Some(m) = &self.server_memory {
            writeln!(
                f,
                "  server RSS {} -> {} ({:.0} B/conn), kernel TCP mem {} -> {} ({:.0} B/conn)",
                m.rss_before,
                m.rss_after,
                m.rss_per_conn,
                m.tcp_mem_before,
                m.tcp_mem_after,
                m.tcp_mem_per_conn
            )?;
            if m.slab_after > 0 {
                writeln!(
                    f,
                    "  server processes {}, kernel slab {} -> {} ({:.0} B/conn, both ends)",
                    m.processes, m.slab_before, m.slab_after, m.slab_per_conn
                )?;
            }
            if let Some(c) = m.idle_cpu_cores {
                writeln!(
                    f,
                    "  server CPU while idle: {:.3} cores over {:.0} s",
                    c, m.idle_secs
                )?;
            }
        }
        writeln!(f, "  errors: {}", reasons(&self.errors))?;
        write!(
            f,
            "  load generator CPU: {:.2} s ({:.2} cores)",
            self.cpu_secs, self.cpu_cores
        )?;
        if let Some(l) = &self.limit {
            write!(f, "\n  LIMIT: {l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_round_trips_through_json_and_merges() {
        let mut a = Latency::new();
        for v in [5, 10, 10, 2000] {
            a.record_us(v);
        }
        let s = serde_json::to_string(&a).unwrap();
        let b: Latency = serde_json::from_str(&s).unwrap();
        assert_eq!(b.0.len(), 4);
        assert_eq!(b.0.max(), a.0.max());
        let mut t1 = Tally {
            latency: a,
            received: 4,
            ..Tally::default()
        };
        t1.fail("refused");
        let mut t2 = Tally {
            latency: b,
            received: 4,
            ..Tally::default()
        };
        t2.fail("refused");
        t2.fail("fd_limit");
        t1.merge(&t2);
        assert_eq!(t1.latency.0.len(), 8);
        assert_eq!(t1.received, 8);
        assert_eq!(t1.failures.get("refused"), Some(&2));
        assert_eq!(t1.failed(), 3);
    }

    #[test]
    fn report_json_round_trip_and_text() {
        let mut t = Tally {
            received: 1000,
            bytes: 32_000,
            established: 10,
            attempted: 11,
            ..Tally::default()
        };
        t.fail("fd_limit");
        t.latency.record_us(100);
        let mut r = Report::from_tally("echo", "127.0.0.1:1", &t, 2.0, 2.0);
        r.threads = 1;
        r.procs = 1;
        assert_eq!(r.messages_per_sec, 500.0);
        assert_eq!(r.bytes_per_sec, 16_000.0);
        assert!(r.limit.as_deref().unwrap_or("").contains("open-file"));
        let j = r.to_json();
        let back = Report::from_json(&j).unwrap();
        assert_eq!(back.received, 1000);
        assert_eq!(back.latency_us.map(|l| l.count), Some(1));
        assert_eq!(back.failures.get("fd_limit"), Some(&1));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["mode"], "echo");
        assert_eq!(v["latency_us"]["p99"], 100);
        let text = r.to_string();
        assert!(text.contains("500 msg/s"), "{text}");
        assert!(text.contains("LIMIT"), "{text}");
        assert!(Report::from_json("{\"mode\":").is_err());
    }
}
