//! The healthy-client latency check of the hostile-client tests: a [`Probe`] is a WebSocket opened before the
//! attack that times round trips (a self-published pub/sub message, or an echo) on its already-open connection.
//! Each attack test takes a baseline (median of [`SAMPLES`] round trips with nothing else running), then the
//! median of [`SAMPLES`] taken while the attack runs ([`Probe::under`] repeats an attack until they are taken;
//! [`Probe::during`] runs a one-shot attack once and completes the samples after it), and asserts
//! `median under attack <= 2 x baseline + ALLOWANCE`. Both numbers are printed (`--no-capture` or nextest's
//! `--success-output immediate` shows them).
//!
//! Self-contained (std and socket2 only) so that both `common` and `security_common` can include it.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Round trips per median.
pub const SAMPLES: usize = 50;

/// Absolute slack on top of 2x the baseline. An idle loopback round trip is 70-200 µs here, so 2x alone would leave
/// 0.1-0.2 ms for noise that has nothing to do with the attack: the test process (probe and attacker threads), the
/// server's reactor threads and whatever else runs on the machine (another build, other test binaries) share two
/// cores, and a wake-up that finds both busy waits for the running thread's time slice (Linux's default base slice
/// is 0.75 ms x (1 + log2 CPUs), 1.5 ms on two CPUs). Such waits move a median only when they hit most samples,
/// i.e. when the machine is busier during the attack than during the baseline; 2 ms covers one such wait per round
/// trip and is still far below what a server stalled by an attack shows (a reactor busy for tens of milliseconds,
/// or no answer at all).
pub const ALLOWANCE: Duration = Duration::from_millis(2);

/// Least time between the starts of two samples: keeps a pub/sub probe at most 500 messages/s, under the default
/// per-connection message rate limit (1000/s), and leaves the attack room to run.
const PACE: Duration = Duration::from_millis(2);

/// What a probe round trip exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/ws`: publish on a topic the probe is subscribed to and wait for the delivery (reader core -> topic owner
    /// core -> back). Counts against per-connection message and publish rate limits.
    PubSub,
    /// `/echo`: one text message echoed (no rate limit applies).
    Echo,
}

/// A healthy client with an open WebSocket.
pub struct Probe {
    stream: TcpStream,
    kind: Kind,
    topic: String,
    n: u64,
}

fn masked(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81u8];
    let mask = [0x6bu8, 0x0d, 0xa2, 0x5e];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

impl Probe {
    /// Opens a probe of `kind` to `addr` from source address `src` (None: the kernel's choice), with extra upgrade
    /// header lines (a token, an Origin); a pub/sub probe subscribes to its own topic.
    pub fn open(addr: SocketAddr, src: Option<[u8; 4]>, kind: Kind, extra: &[&str]) -> Probe {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        if let Some(ip) = src {
            socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        }
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let path = match kind {
            Kind::PubSub => "/ws",
            Kind::Echo => "/echo",
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut b) {
                Ok(0) => panic!("probe: EOF in the upgrade answer"),
                Ok(_) => head.push(b[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("probe: reading the upgrade answer: {e}"),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "probe refused: {head}");
        // A topic of its own (several probes may share a server).
        let topic = format!("probe.{}", stream.local_addr().unwrap().port());
        let mut p = Probe {
            stream,
            kind,
            topic,
            n: 0,
        };
        if kind == Kind::PubSub {
            let sub = format!(r#"{{"op":"sub","topic":"{}","id":1}}"#, p.topic);
            p.stream.write_all(&masked(sub.as_bytes())).unwrap();
            let ack = p.read_text();
            assert!(ack.contains(r#""type":"ack""#), "probe sub: {ack}");
        }
        p
    }

    /// A pub/sub probe from the kernel's source address.
    pub fn pubsub(addr: SocketAddr, extra: &[&str]) -> Probe {
        Probe::open(addr, None, Kind::PubSub, extra)
    }

    /// An echo probe from the kernel's source address.
    pub fn echo(addr: SocketAddr, extra: &[&str]) -> Probe {
        Probe::open(addr, None, Kind::Echo, extra)
    }

    /// The next text frame's payload (pings skipped; the server's frames are never fragmented).
    fn read_text(&mut self) -> String {
        loop {
            let mut h = [0u8; 2];
            self.read_exact(&mut h);
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                self.read_exact(&mut b);
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.read_exact(&mut b);
                len = u64::from_be_bytes(b);
            }
            let mut payload = vec![0u8; len as usize];
            self.read_exact(&mut payload);
            match h[0] & 0x0f {
                1 => return String::from_utf8(payload).unwrap(),
                8 => panic!(
                    "the healthy probe was closed: {:?}",
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
                ),
                _ => continue,
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => panic!("the healthy probe's connection ended"),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("the healthy probe got no answer: {e}"),
            }
        }
    }

    /// One round trip.
    pub fn round_trip(&mut self) -> Duration {
        self.n += 1;
        let (frame, want) = match self.kind {
            Kind::PubSub => (
                format!(
                    r#"{{"op":"pub","topic":"{}","data":{}}}"#,
                    self.topic, self.n
                ),
                format!(r#""data":{}}}"#, self.n),
            ),
            Kind::Echo => {
                let t = format!("probe {}", self.n);
                (t.clone(), t)
            }
        };
        let frame = masked(frame.as_bytes());
        let started = Instant::now();
        self.stream.write_all(&frame).unwrap();
        let got = self.read_text();
        let took = started.elapsed();
        assert!(got.ends_with(&want), "probe expected {want}, got {got}");
        took
    }

    /// Round trips taken at least [`PACE`] apart until `done` says stop and at least `min` were taken; returns
    /// the sorted samples and how many were taken before `done` first said stop.
    fn samples_until(
        &mut self,
        min: usize,
        mut done: impl FnMut() -> bool,
    ) -> (Vec<Duration>, usize) {
        let mut samples = Vec::with_capacity(min);
        let mut before_done = None;
        loop {
            let started = Instant::now();
            samples.push(self.round_trip());
            let spent = started.elapsed();
            if spent < PACE {
                std::thread::sleep(PACE - spent);
            }
            if before_done.is_none() && done() {
                before_done = Some(samples.len());
            }
            if before_done.is_some() && samples.len() >= min {
                break;
            }
        }
        samples.sort();
        (samples, before_done.unwrap_or(min))
    }

    /// The baseline: a few warm-up round trips, then the median of [`SAMPLES`].
    pub fn baseline(&mut self) -> Duration {
        for _ in 0..5 {
            self.round_trip();
        }
        let (samples, _) = self.samples_until(SAMPLES, || true);
        samples[samples.len() / 2]
    }

    /// Runs a one-shot `attack` on another thread while timing round trips, continuing after it until there are
    /// [`SAMPLES`]; asserts the median stays within [`bound`], prints both (and how many samples were taken while
    /// the attack ran), and returns what the attack returned. A panic in the attack fails the test.
    pub fn during<T: Send>(
        &mut self,
        name: &str,
        baseline: Duration,
        attack: impl FnOnce() -> T + Send,
    ) -> T {
        let (out, (samples, while_running)) = std::thread::scope(|s| {
            let h = s.spawn(attack);
            let m = self.samples_until(SAMPLES, || h.is_finished());
            match h.join() {
                Ok(out) => (out, m),
                Err(e) => std::panic::resume_unwind(e),
            }
        });
        check(name, self.kind, baseline, &samples, while_running);
        out
    }

    /// Repeats `attack` on another thread, round after round, for as long as it takes to time [`SAMPLES`] round
    /// trips (so every sample is taken while an attack runs); asserts and prints as [`Probe::during`] does and
    /// returns the number of rounds. A panic in the attack fails the test.
    pub fn under(&mut self, name: &str, baseline: Duration, attack: impl Fn() + Sync) -> usize {
        let stop = AtomicBool::new(false);
        let (rounds, samples) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut rounds = 0;
                while rounds == 0 || !stop.load(Ordering::Acquire) {
                    attack();
                    rounds += 1;
                }
                rounds
            });
            let (samples, _) = self.samples_until(SAMPLES, || true);
            stop.store(true, Ordering::Release);
            match h.join() {
                Ok(rounds) => (rounds, samples),
                Err(e) => std::panic::resume_unwind(e),
            }
        });
        check(name, self.kind, baseline, &samples, samples.len());
        rounds
    }
}

/// The bound an attack's median must stay within.
pub fn bound(baseline: Duration) -> Duration {
    2 * baseline + ALLOWANCE
}

fn check(name: &str, kind: Kind, baseline: Duration, sorted: &[Duration], while_running: usize) {
    let median = sorted[sorted.len() / 2];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    eprintln!(
        "healthy {kind:?} round trip, {name}: baseline median {:.0} µs, under attack median {:.0} µs ({} samples, {} \
         while the attack ran; max {:.0} µs), bound {:.0} µs",
        us(baseline),
        us(median),
        sorted.len(),
        while_running,
        us(sorted[sorted.len() - 1]),
        us(bound(baseline)),
    );
    assert!(
        median <= bound(baseline),
        "{name}: the healthy client's median round trip went from {baseline:?} to {median:?} (bound 2x + {ALLOWANCE:?})"
    );
}
