//! Shared parts of the peer servers: the command line, the runtime choice, the topic hub with its in-server
//! "flood" publisher, and the subset of ringcast's JSON pub/sub protocol the load generator speaks
//! (`{"op":"sub"}` / `{"op":"pub"}` in, `{"type":"ack"}` / `{"type":"msg"}` out; see docs/PROTOCOL.md).
//!
//! Both peers behave the same: binary frames (and text frames that are not ops) are echoed on any path; a `sub`
//! op turns the connection into a subscriber of one topic; a `pub` op publishes. With `--flood-subs N`, once a
//! topic has N subscribers, a task publishes 64-byte payloads into it as fast as the slowest subscriber's queue
//! allows for `--flood-secs` seconds: the broadcast workload "published inside the server".

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Messages a topic's broadcast ring holds; the flood publisher stays below half of it, so nobody lags.
pub const RING: usize = 4096;
/// Messages a subscriber writes per flush at most.
pub const BATCH: usize = 256;

/// Command-line options shared by both peers.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// `current` (one thread) or `multi` (tokio's work-stealing runtime).
    pub multi: bool,
    /// Worker threads of the multi-thread runtime.
    pub workers: usize,
    /// Start the flood once a topic has this many subscribers (0: never).
    pub flood_subs: u64,
    /// Flood duration.
    pub flood_secs: f64,
    /// Stop the flood after this many messages, if sooner (0: no limit).
    pub flood_messages: u64,
}

impl Opts {
    /// Parses `--listen ADDR --rt current|multi --workers N --flood-subs N --flood-secs S --flood-messages M`.
    pub fn parse() -> Opts {
        let mut o = Opts {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            multi: false,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            flood_subs: 0,
            flood_secs: 10.0,
            flood_messages: 0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let v = args.next().unwrap_or_default();
            match flag.as_str() {
                "--listen" => o.listen = v.parse().expect("--listen ADDR"),
                "--rt" => o.multi = v == "multi",
                "--workers" => o.workers = v.parse().expect("--workers N"),
                "--flood-subs" => o.flood_subs = v.parse().expect("--flood-subs N"),
                "--flood-secs" => o.flood_secs = v.parse().expect("--flood-secs S"),
                "--flood-messages" => o.flood_messages = v.parse().expect("--flood-messages M"),
                _ => panic!("unknown flag {flag}"),
            }
        }
        o
    }

    /// Runs `f` on the chosen tokio runtime.
    pub fn run<F: Future<Output = ()>>(&self, f: F) {
        let rt = if self.multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.workers)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        rt.expect("runtime").block_on(f);
    }
}

/// One topic: its seq counter (held while sending, so seqs go out in order) and its broadcast ring.
pub struct Topic {
    name: String,
    seq: Mutex<u64>,
    tx: broadcast::Sender<Bytes>,
    subs: AtomicU64,
}

impl Topic {
    /// Publishes `data` (a JSON value) and returns its seq.
    pub fn publish(&self, data: &[u8]) -> u64 {
        let mut seq = self.seq.lock().expect("seq lock");
        *seq += 1;
        let mut m = Vec::with_capacity(data.len() + self.name.len() + 48);
        m.extend_from_slice(b"{\"type\":\"msg\",\"topic\":\"");
        m.extend_from_slice(self.name.as_bytes());
        m.extend_from_slice(b"\",\"seq\":");
        m.extend_from_slice(seq.to_string().as_bytes());
        m.extend_from_slice(b",\"data\":");
        m.extend_from_slice(data);
        m.push(b'}');
        let _ = self.tx.send(Bytes::from(m));
        *seq
    }

    /// A receiver of everything published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.tx.subscribe()
    }
}

/// All topics of a server.
#[derive(Clone)]
pub struct Hub {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
    opts: Arc<Opts>,
}

impl Hub {
    /// An empty hub.
    pub fn new(opts: Opts) -> Hub {
        Hub {
            topics: Arc::default(),
            opts: Arc::new(opts),
        }
    }

    /// The topic named `name`, created on first use.
    pub fn topic(&self, name: &str) -> Arc<Topic> {
        let mut t = self.topics.lock().expect("hub lock");
        t.entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    name: name.to_owned(),
                    seq: Mutex::new(0),
                    tx: broadcast::channel(RING).0,
                    subs: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Subscribes to `name`; starts the flood when this is the N-th subscriber.
    pub fn subscribe(&self, name: &str) -> broadcast::Receiver<Bytes> {
        let t = self.topic(name);
        let rx = t.subscribe();
        let n = t.subs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.opts.flood_subs > 0 && n == self.opts.flood_subs {
            tokio::spawn(flood(
                t,
                Duration::from_secs_f64(self.opts.flood_secs),
                self.opts.flood_messages,
            ));
        }
        rx
    }
}

/// The flood payload: `{"t":<ns>,"p":"xx…"}` padded to 64 bytes.
pub fn flood_payload() -> Vec<u8> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut v = format!("{{\"t\":{t},\"p\":\"").into_bytes();
    while v.len() < 62 {
        v.push(b'x');
    }
    v.extend_from_slice(b"\"}");
    v
}

/// Publishes into `t` as fast as its slowest subscriber keeps up with for `secs`, or until `max` messages went
/// out (0: no limit).
async fn flood(t: Arc<Topic>, secs: Duration, max: u64) {
    let end = Instant::now() + secs;
    let mut n = 0u64;
    while Instant::now() < end && (max == 0 || n < max) {
        if t.tx.len() >= RING / 2 {
            tokio::task::yield_now().await;
            continue;
        }
        t.publish(&flood_payload());
        n += 1;
        if n.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    // For experiments (the suite discards stderr).
    eprintln!("flood: {n} messages in {secs:?}");
}

/// A client op, as far as the peers need it.
#[derive(serde::Deserialize)]
pub struct Op<'a> {
    /// `sub` or `pub`.
    pub op: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The request id, echoed raw.
    #[serde(borrow)]
    pub id: Option<&'a serde_json::value::RawValue>,
    /// The published JSON value.
    #[serde(borrow)]
    pub data: Option<&'a serde_json::value::RawValue>,
}

/// What a text frame asks for.
pub enum Action {
    /// Not an op: echo it.
    Echo,
    /// Subscribe to the topic; send this ack first.
    Sub(String, Vec<u8>),
    /// Published; send this ack.
    Ack(Vec<u8>),
}

/// Handles a text frame.
pub fn on_text(hub: &Hub, text: &[u8]) -> Action {
    if !text.starts_with(b"{\"op\"") {
        return Action::Echo;
    }
    let Ok(op) = serde_json::from_slice::<Op<'_>>(text) else {
        return Action::Echo;
    };
    let id = op.id.map_or("null", |r| r.get());
    match op.op {
        "sub" => Action::Sub(
            op.topic.to_owned(),
            format!("{{\"type\":\"ack\",\"id\":{id}}}").into_bytes(),
        ),
        "pub" => {
            let seq = hub
                .topic(op.topic)
                .publish(op.data.map_or("null", |r| r.get()).as_bytes());
            Action::Ack(format!("{{\"type\":\"ack\",\"id\":{id},\"seq\":{seq}}}").into_bytes())
        }
        _ => Action::Echo,
    }
}

/// Drains up to [`BATCH`] more ready messages after `first` into `out`; false when the topic is gone.
pub fn drain(rx: &mut broadcast::Receiver<Bytes>, first: Bytes, out: &mut Vec<Bytes>) {
    out.push(first);
    while out.len() < BATCH {
        match rx.try_recv() {
            Ok(m) => out.push(m),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
}
