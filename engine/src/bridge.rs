//! The Redis bridge (multi-node mode): the owner of every topic when `Config::redis` is set.
//!
//! The bridge is one more endpoint of the mesh (index = number of cores), served by a dedicated thread running a
//! small tokio `current_thread` runtime. Cores speak to it exactly as they speak to an owner core — `Publish`,
//! `Subscribe`, `Unsubscribe`, `Fetch` — and it answers with `PublishAck` (or `PublishFailed`), `Replay`,
//! `Fetched` and `Deliver`, so the core side (local subscribers, dedup by seq, gap → reset, encoding once) is the
//! same in both modes. No reactor ever waits on Redis: the bridge's inbox is a bounded crossbeam channel with an
//! eventfd waker (awaited through tokio's `AsyncFd`), and its answers go back through the cores' channels.
//!
//! In Redis, a topic `t` is keys sharing the hash tag `{t}`: `rc:{t}:seq` (the counter), `rc:{t}:h` (a capped
//! stream whose ids are `<seq>-0`), `rc:{t}:base` (the counter's seed) and the pub/sub channel `rc:{t}:live`
//! (`"<seq> <data>"`). Publishing is one Lua script (counter, stream, channel); a missing counter is seeded above
//! the epoch base `rc:epoch`, so seqs never repeat even when Redis loses its data. The bridge subscribes to a topic's
//! channel only while cores of this node subscribe to it (or long polls wait on it), and to a user's channel
//! `rc:u:{u}` (direct messages across nodes) only while the node has connections of that user. See
//! ARCHITECTURE.md, "Multi-node (the Redis bridge)".

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Value};

use crate::bus::{CoreMsg, Mesh, Outbox, Token};
use crate::core::Shared;
use crate::poller::Waker;

/// Multi-node settings: where Redis is and what this node is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/` (optionally with a database number and credentials).
    pub url: String,
    /// This node's name in logs and `/metrics`; unique per node.
    pub node_id: String,
}

impl RedisConfig {
    /// A configuration for `url` with a generated node id (hostname, pid and a random suffix).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            node_id: default_node_id(),
        }
    }
}

/// `hostname-pid-random`, unique enough to tell nodes (and restarts of one node) apart.
pub fn default_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "node".to_owned()
    } else {
        host
    };
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{host}-{}-{:08x}", std::process::id(), h.finish() as u32)
}

/// A random tag for this bridge instance (16 hex digits, no space).
fn instance_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// The bridge's state for `/readyz` and `/metrics`: written by the bridge thread, read by any core.
#[derive(Debug, Default)]
pub(crate) struct BridgeStats {
    connected: AtomicU64,
    publishes: AtomicU64,
    publish_errors: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    range_reads: AtomicU64,
    live_answers: AtomicU64,
    node_id: String,
}

impl BridgeStats {
    pub(crate) fn new(node_id: &str) -> Self {
        BridgeStats {
            node_id: node_id.to_owned(),
            ..BridgeStats::default()
        }
    }

    /// Connected to Redis (pub/sub and commands) and caught up: the node is ready.
    pub(crate) fn ready(&self) -> bool {
        self.connected.load(Relaxed) == 1
    }

    /// Appends the bridge's Prometheus families.
    pub(crate) fn render(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let families = [
            (
                "ringcast_bridge_connected",
                "gauge",
                "1 when the Redis bridge is connected and caught up (the node is ready), else 0.",
                &self.connected,
            ),
            (
                "ringcast_bridge_publishes_total",
                "counter",
                "Publishes numbered and stored by Redis through this node.",
                &self.publishes,
            ),
            (
                "ringcast_bridge_publish_errors_total",
                "counter",
                "Publishes refused (503) because Redis was unreachable or failed.",
                &self.publish_errors,
            ),
            (
                "ringcast_bridge_errors_total",
                "counter",
                "Redis command or connection errors seen by the bridge.",
                &self.errors,
            ),
            (
                "ringcast_bridge_reconnects_total",
                "counter",
                "Successful reconnections to Redis after a loss.",
                &self.reconnects,
            ),
            (
                "ringcast_bridge_range_reads_total",
                "counter",
                "Subscriptions and polls answered from a Redis range read (stream history and the topic's seq).",
                &self.range_reads,
            ),
            (
                "ringcast_bridge_live_answers_total",
                "counter",
                "Subscriptions from now on, to a topic the node already follows live, answered without asking Redis.",
                &self.live_answers,
            ),
        ];
        for (name, kind, help, v) in families {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{}\"}} {}",
                self.node_id,
                v.load(Relaxed)
            );
        }
    }
}

/// The Lua function both the publish and the re-seed scripts use when a topic's counter is missing (a new topic, or
/// Redis came back empty): the counter starts at the highest of the caller's floor, the stream's last id and the
/// epoch base. The epoch base (`rc:epoch`) is created once per Redis data set, by the first script that needs it,
/// from the caller's clock (unix milliseconds × 1000): a Redis that lost its data starts numbering above every seq of
/// the data it lost. The seed is also kept as the topic's base (`rc:{t}:base`): nothing at or below it was published
/// in this epoch, so a resume from 0 starts there. Numbers go through `%d` (Lua passes bare numbers as `%.14g`).
macro_rules! seed_lua {
    () => {
        r"
local function seed(kseq, kstream, kepoch, kbase, floor, candidate)
  local last = redis.call('XREVRANGE', kstream, '+', '-', 'COUNT', 1)
  if last[1] then
    local s = tonumber(string.match(last[1][1], '^(%d+)'))
    if s and s > floor then floor = s end
  end
  local e = redis.call('GET', kepoch)
  if not e then
    redis.call('SET', kepoch, candidate, 'NX')
    e = candidate
  end
  e = tonumber(e)
  if e and e > floor then floor = e end
  local v = string.format('%d', floor)
  redis.call('SET', kseq, v)
  redis.call('SET', kbase, v)
  return floor
end
"
    };
}

/// Publish: number (never below the floor; a missing counter is seeded first), append to the capped stream, announce
/// on the live channel. KEYS: seq, stream, channel, epoch, base. ARGV: floor, data, maxlen, epoch candidate.
const PUBLISH_LUA: &str = concat!(
    seed_lua!(),
    r"
local floor = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  floor = seed(KEYS[1], KEYS[2], KEYS[4], KEYS[5], floor, ARGV[4])
end
local seq = redis.call('INCR', KEYS[1])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], string.format('%d', seq))
end
local id = string.format('%d-0', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id, 'd', ARGV[2])
redis.call('PUBLISH', KEYS[3], string.format('%d ', seq) .. ARGV[2])
return seq
"
);

/// Range read: the topic's last seq, the stream entries from `ARGV[1]` on (at most `ARGV[2]`) and the topic's base,
/// atomically; from 1 (a resume from 0) means from the base. KEYS: seq, stream, base.
const RANGE_LUA: &str = r"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = tonumber(redis.call('GET', KEYS[3]) or '0')
local from = tonumber(ARGV[1])
if from == 1 and base > 0 then from = base + 1 end
local entries = {}
if from <= last then
  entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', from), '+', 'COUNT', ARGV[2])
end
return {last, entries, base}
";

/// Re-seed after a reconnect (Redis may have come back empty): a missing counter is seeded as by a publish, an
/// existing one raised to at least the floor. KEYS: seq, stream, epoch, base. ARGV: floor, epoch candidate.
const RESEED_LUA: &str = concat!(
    seed_lua!(),
    r"
local floor = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return seed(KEYS[1], KEYS[2], KEYS[3], KEYS[4], floor, ARGV[2])
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < floor then redis.call('SET', KEYS[1], ARGV[1]) end
return cur
"
);

/// The key of the epoch base: one per Redis data set (see `seed_lua!`).
const EPOCH_KEY: &str = "rc:epoch";

/// Seqs stay below this so JavaScript clients read them exactly (2^53 − 1).
const MAX_SAFE_SEQ: u64 = (1 << 53) - 1;

/// This node's epoch base candidate: unix milliseconds × 1000, capped at half of [`MAX_SAFE_SEQ`] (reached in 2112)
/// so an epoch still has 4.5 × 10^15 seqs of room.
fn epoch_candidate() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ms.saturating_mul(1000).min(MAX_SAFE_SEQ / 2)
}

fn seq_key(t: &str) -> String {
    format!("rc:{{{t}}}:seq")
}
fn stream_key(t: &str) -> String {
    format!("rc:{{{t}}}:h")
}
fn base_key(t: &str) -> String {
    format!("rc:{{{t}}}:base")
}
fn channel(t: &str) -> String {
    format!("rc:{{{t}}}:live")
}
/// The topic of a live channel name.
fn topic_of_channel(c: &str) -> Option<&str> {
    c.strip_prefix("rc:{")?.strip_suffix("}:live")
}
/// A user's channel: direct messages for that user's connections on any node, `"<node tag> <json>"`.
fn user_channel(u: &str) -> String {
    format!("rc:u:{{{u}}}")
}
/// The user of a user channel name.
fn user_of_channel(c: &str) -> Option<&str> {
    c.strip_prefix("rc:u:{")?.strip_suffix('}')
}

/// A long poll waiting in the bridge for the next message of a topic.
struct Waiter {
    token: Token,
    since: u64,
    limit: usize,
    until: Instant,
}

/// A topic this node's cores (or long polls) are interested in.
struct Topic {
    /// Cores with subscribers.
    cores: Vec<bool>,
    waiters: Vec<Waiter>,
    /// The live channel is subscribed on the current connection.
    subscribed: bool,
    /// Highest seq sent to the cores (Deliver or Replay): where catch-up after a reconnect starts.
    sent: u64,
    /// A replay was sent: the cores follow this topic live and must be caught up after a reconnect.
    live: bool,
}

impl Topic {
    fn idle(&self) -> bool {
        self.waiters.is_empty() && !self.cores.iter().any(|&c| c)
    }
}

/// A user with connections on this node: which cores have some, and whether the user's channel is subscribed.
struct UserSub {
    cores: Vec<bool>,
    subscribed: bool,
}

/// A live Redis connection: commands (multiplexed) and pub/sub.
struct Conn {
    cmd: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
    publish_sha: String,
    range_sha: String,
    reseed_sha: String,
}

/// A request that needs a range read.
enum RangeReq {
    Subscribe {
        token: Token,
        since: Option<u64>,
    },
    Fetch {
        token: Token,
        since: Option<u64>,
        limit: usize,
        wait_until: Option<Instant>,
    },
}

struct Bridge {
    client: redis::Client,
    node_id: String,
    max_messages: usize,
    mesh: Arc<Mesh>,
    inbox: Receiver<CoreMsg>,
    waker: Arc<Waker>,
    outbox: Outbox,
    shared: Arc<Shared>,
    stats: Arc<BridgeStats>,
    conn: Option<Conn>,
    topics: HashMap<Arc<str>, Topic>,
    /// Highest seq this node has seen per topic: the floor of the publish script. Bounded by [`trim_seen`].
    seen: HashMap<Arc<str>, Seen>,
    /// When `seen` was last trimmed.
    seen_trimmed: Instant,
    /// Requests that arrived while Redis was unreachable, served once it is back.
    pending: Vec<(Arc<str>, RangeReq)>,
    /// Users with connections on this node (direct messages from other nodes).
    users: HashMap<Arc<str>, UserSub>,
    /// This bridge's tag on the direct messages it publishes, to recognise (and skip) its own echo.
    tag: String,
    ever_connected: bool,
}

/// The eventfd of the bridge's waker, for `AsyncFd`.
struct WakerFd(Arc<Waker>);

impl AsRawFd for WakerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
}

/// Timeout of one Redis command or connection attempt; a publish is answered well within 10 s.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Most inbox messages handled per round.
const MAX_BATCH: usize = 4096;

/// Starts the bridge thread.
pub(crate) fn spawn(
    cfg: &RedisConfig,
    mesh: Arc<Mesh>,
    inbox: Receiver<CoreMsg>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    stats: Arc<BridgeStats>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let client = redis::Client::open(cfg.url.as_str()).map_err(|e| format!("redis url: {e}"))?;
    let bridge = Bridge {
        client,
        node_id: cfg.node_id.clone(),
        max_messages: shared.config.history.max_messages.max(1),
        outbox: Outbox::new(mesh.cores(), shared.config.outbox_limit),
        mesh,
        inbox,
        waker,
        shared,
        stats,
        conn: None,
        topics: HashMap::new(),
        seen: HashMap::new(),
        seen_trimmed: Instant::now(),
        pending: Vec::new(),
        users: HashMap::new(),
        tag: instance_tag(),
        ever_connected: false,
    };
    std::thread::Builder::new()
        .name("ringcast-bridge".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "bridge runtime");
                    return;
                }
            };
            rt.block_on(bridge.run());
        })
        .map_err(|e| format!("bridge thread: {e}"))
}

/// Next live message of the current connection (pending forever when disconnected); `None`: the connection closed.
async fn next_live(conn: &mut Option<Conn>) -> Option<redis::Msg> {
    match conn {
        Some(c) => c.stream.next().await,
        None => std::future::pending().await,
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]` as `(seq, data)`.
fn parse_entries(v: &Value) -> Vec<(u64, Bytes)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (pair.first(), pair.get(1))
        else {
            continue;
        };
        let seq = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u64>().ok());
        let data = fields.get(1).and_then(|d| match d {
            Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
            _ => None,
        });
        if let (Some(seq), Some(data)) = (seq, data) {
            out.push((seq, data));
        }
    }
    out
}

/// The answer of the range script.
struct Range {
    /// The topic's last seq in Redis (0: no counter).
    last: u64,
    /// Stream entries from the asked seq on.
    entries: Vec<(u64, Bytes)>,
    /// The topic's base in this epoch (0: none): a resume from 0 means from here.
    base: u64,
}

/// Parses the answer of the range script.
fn parse_range(v: &Value) -> Option<Range> {
    let Value::Array(parts) = v else { return None };
    Some(Range {
        last: value_u64(parts.first()?)?,
        entries: parse_entries(parts.get(1)?),
        base: parts.get(2).and_then(value_u64).unwrap_or(0),
    })
}

/// What a read of "everything after `since`" means for a client, given the topic's `last` seq: (reset, entries).
/// `reset = Some(m)`: messages up to `m` are no longer retained (or the client is ahead of the topic).
fn resume_answer(
    since: u64,
    last: u64,
    entries: Vec<(u64, Bytes)>,
) -> (Option<u64>, Vec<(u64, Bytes)>) {
    if since > last {
        return (Some(last), Vec::new());
    }
    if since == last {
        return (None, Vec::new());
    }
    match entries.first() {
        None => (Some(last), Vec::new()),
        Some(&(first, _)) if first > since + 1 => (Some(first - 1), entries),
        Some(_) => (None, entries),
    }
}

impl Bridge {
    async fn run(mut self) {
        // SAFETY: the descriptor is the eventfd owned by the `Waker` that `WakerFd` keeps alive (an `Arc`) for as long
        // as the `AsyncFd` lives, and `WakerFd::as_raw_fd` always returns that same descriptor. Exercised by every
        // engine/tests/bridge_*.rs test (each message from a core to the bridge wakes it through this registration).
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                WakerFd(self.waker.clone()),
                tokio::io::Interest::READABLE,
            )
        };
        let afd = match registered {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "bridge waker registration");
                return;
            }
        };
        tracing::info!(node = %self.node_id, "redis bridge starting");
        let mut backoff = Duration::from_millis(100);
        let mut next_attempt = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.shared.shutdown.load(Relaxed) {
            if self.conn.is_none() && Instant::now() >= next_attempt {
                match tokio::time::timeout(REDIS_TIMEOUT * 2, self.connect()).await {
                    Ok(Ok(())) => backoff = Duration::from_millis(100),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "redis unreachable");
                        self.conn = None;
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(_) => {
                        self.conn = None;
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            tokio::select! {
                guard = afd.readable() => {
                    if let Ok(mut g) = guard {
                        g.clear_ready();
                    }
                    self.waker.clear();
                }
                msg = next_live(&mut self.conn) => match msg {
                    Some(m) => {
                        self.on_live(&m);
                        // Take whatever else already arrived before looking at the inbox again.
                        for _ in 0..MAX_BATCH {
                            let Some(c) = self.conn.as_mut() else { break };
                            match futures_util::FutureExt::now_or_never(c.stream.next()) {
                                Some(Some(m)) => self.on_live(&m),
                                Some(None) => { self.lost("pub/sub connection closed"); break; }
                                None => break,
                            }
                        }
                    }
                    None => self.lost("pub/sub connection closed"),
                },
                _ = tick.tick() => {}
            }
            self.drain_inbox().await;
            self.sweep(Instant::now()).await;
            if self.outbox.flush(&self.mesh) {
                // A core's channel is full: retry soon.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tracing::info!(node = %self.node_id, "redis bridge stopped");
    }

    /// Marks Redis as lost: not ready, every channel to resubscribe, publishes refused until it is back.
    fn lost(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(node = %self.node_id, reason = why, "redis connection lost");
        }
        self.stats.connected.store(0, Relaxed);
        self.stats.errors.fetch_add(1, Relaxed);
        for t in self.topics.values_mut() {
            t.subscribed = false;
        }
        for u in self.users.values_mut() {
            u.subscribed = false;
        }
    }

    /// Connects, loads the scripts, re-seeds counters, resubscribes, catches subscribers up, serves what waited.
    async fn connect(&mut self) -> redis::RedisResult<()> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut cmd = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let (sink, stream) = self.client.get_async_pubsub().await?.split();
        let load = |src: &str| {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(src);
            c
        };
        let publish_sha: String = load(PUBLISH_LUA).query_async(&mut cmd).await?;
        let range_sha: String = load(RANGE_LUA).query_async(&mut cmd).await?;
        let reseed_sha: String = load(RESEED_LUA).query_async(&mut cmd).await?;
        let mut conn = Conn {
            cmd,
            sink,
            stream,
            publish_sha,
            range_sha,
            reseed_sha,
        };
        // Redis may have come back empty: no counter may restart below what this node has seen.
        if !self.seen.is_empty() {
            let mut pipe = redis::pipe();
            let epoch = epoch_candidate();
            for (t, &Seen { seq: s, .. }) in &self.seen {
                pipe.cmd("EVALSHA")
                    .arg(&conn.reseed_sha)
                    .arg(4)
                    .arg(seq_key(t))
                    .arg(stream_key(t))
                    .arg(EPOCH_KEY)
                    .arg(base_key(t))
                    .arg(s)
                    .arg(epoch)
                    .ignore();
            }
            let () = pipe.query_async(&mut conn.cmd).await?;
        }
        let channels: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| !t.idle())
            .map(|(name, _)| channel(name))
            .chain(self.users.keys().map(|u| user_channel(u)))
            .collect();
        if !channels.is_empty() {
            conn.sink.subscribe(&channels).await?;
        }
        for t in self.topics.values_mut() {
            t.subscribed = !t.idle();
        }
        for u in self.users.values_mut() {
            u.subscribed = true;
        }
        // Catch up every subscribed topic from what its cores were last sent.
        let names: Vec<(Arc<str>, u64)> = self
            .topics
            .iter()
            .filter(|(_, t)| t.live && t.cores.iter().any(|&c| c))
            .map(|(n, t)| (n.clone(), t.sent))
            .collect();
        if !names.is_empty() {
            let mut pipe = redis::pipe();
            for (name, sent) in &names {
                range_cmd(
                    &mut pipe,
                    &conn.range_sha,
                    name,
                    sent + 1,
                    self.max_messages,
                );
            }
            let answers: Vec<Value> = pipe.query_async(&mut conn.cmd).await?;
            for ((name, _), v) in names.iter().zip(&answers) {
                let Some(Range { last, entries, .. }) = parse_range(v) else {
                    continue;
                };
                self.note_seen(name, last);
                for (seq, data) in entries {
                    self.deliver(name, seq, &data);
                }
            }
        }
        self.conn = Some(conn);
        if self.ever_connected {
            self.stats.reconnects.fetch_add(1, Relaxed);
        }
        self.ever_connected = true;
        tracing::info!(node = %self.node_id, "redis connected");
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            self.serve_ranges(pending).await;
        }
        if self.conn.is_some() {
            self.stats.connected.store(1, Relaxed);
        }
        Ok(())
    }

    fn note_seen(&mut self, topic: &Arc<str>, seq: u64) {
        if seq == 0 {
            return;
        }
        let at = Instant::now();
        match self.seen.get_mut(topic) {
            Some(s) => {
                s.seq = s.seq.max(seq);
                s.at = at;
            }
            None => {
                self.seen.insert(topic.clone(), Seen { seq, at });
            }
        }
    }

    fn topic(&mut self, name: &Arc<str>) -> &mut Topic {
        let cores = self.mesh.cores();
        self.topics.entry(name.clone()).or_insert_with(|| Topic {
            cores: vec![false; cores],
            waiters: Vec::new(),
            subscribed: false,
            sent: 0,
            live: false,
        })
    }

    /// One numbered message to every core subscribed here (cores drop what they already have).
    fn deliver(&mut self, name: &Arc<str>, seq: u64, data: &Bytes) {
        let Some(t) = self.topics.get_mut(name) else {
            return;
        };
        t.sent = t.sent.max(seq);
        for (core, _) in t.cores.iter().enumerate().filter(|(_, on)| **on) {
            self.outbox.push(
                core,
                CoreMsg::Deliver {
                    topic: name.clone(),
                    seq,
                    data: data.clone(),
                },
            );
        }
        // Long polls waiting for a message after their cursor.
        let mut i = 0;
        while i < t.waiters.len() {
            if seq > t.waiters[i].since {
                let w = t.waiters.swap_remove(i);
                let entries = if w.limit > 0 {
                    vec![(seq, data.clone())]
                } else {
                    Vec::new()
                };
                self.outbox.push(
                    w.token.core as usize,
                    CoreMsg::Fetched {
                        topic: name.clone(),
                        token: w.token,
                        reset: false,
                        entries,
                        next: seq,
                    },
                );
            } else {
                i += 1;
            }
        }
    }

    /// A message on a live channel: `"<seq> <data>"`.
    fn on_live(&mut self, m: &redis::Msg) {
        let name = m.get_channel_name();
        if let Some(user) = user_of_channel(name) {
            self.on_direct(user, m.get_payload_bytes());
            return;
        }
        let Some(topic) = topic_of_channel(name) else {
            return;
        };
        let payload = m.get_payload_bytes();
        let Some(space) = payload.iter().position(|&b| b == b' ') else {
            return;
        };
        let Some(seq) = std::str::from_utf8(&payload[..space])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let Some((name, _)) = self.topics.get_key_value(topic) else {
            return;
        };
        let name = name.clone();
        self.note_seen(&name, seq);
        let data = Bytes::copy_from_slice(&payload[space + 1..]);
        self.deliver(&name, seq, &data);
    }

    /// A direct message from a user's channel, `"<tag> <json>"`: to this node's cores with connections of `user`,
    /// unless this node sent it (its cores delivered it already).
    fn on_direct(&mut self, user: &str, payload: &[u8]) {
        let Some(space) = payload.iter().position(|&b| b == b' ') else {
            return;
        };
        if &payload[..space] == self.tag.as_bytes() {
            return;
        }
        let Some((name, u)) = self.users.get_key_value(user) else {
            return;
        };
        let frame = crate::core::ws_text(&payload[space + 1..]);
        for (core, _) in u.cores.iter().enumerate().filter(|(_, on)| **on) {
            self.outbox.push(
                core,
                CoreMsg::Direct {
                    user: name.clone(),
                    frame: frame.clone(),
                },
            );
        }
    }

    /// Applies the cores' user changes: subscribes the channels of users new to this node, unsubscribes those of
    /// users it no longer has, and publishes this node's direct messages for the other nodes (at most once: while
    /// Redis is unreachable they reach this node's connections only).
    async fn serve_users(
        &mut self,
        changes: Vec<(Arc<str>, u16, bool)>,
        directs: Vec<(Arc<str>, Bytes)>,
    ) {
        let cores = self.mesh.cores();
        let mut touched = Vec::new();
        for (user, core, joined) in changes {
            let u = self.users.entry(user.clone()).or_insert_with(|| UserSub {
                cores: vec![false; cores],
                subscribed: false,
            });
            if let Some(c) = u.cores.get_mut(core as usize) {
                *c = joined;
            }
            touched.push(user);
        }
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for user in touched {
            let Some(u) = self.users.get_mut(&user) else {
                continue; // already handled
            };
            if u.cores.iter().any(|&c| c) {
                if !u.subscribed && self.conn.is_some() {
                    u.subscribed = true;
                    subscribe.push(user_channel(&user));
                }
            } else {
                if u.subscribed {
                    unsubscribe.push(user_channel(&user));
                }
                self.users.remove(&user);
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        if !subscribe.is_empty()
            && let Err(e) = c.sink.subscribe(&subscribe).await
        {
            tracing::warn!(error = %e, "redis subscribe failed");
            self.lost("subscribe failed");
            return;
        }
        if !unsubscribe.is_empty()
            && let Err(e) = c.sink.unsubscribe(&unsubscribe).await
        {
            tracing::warn!(error = %e, "redis unsubscribe failed");
            self.lost("unsubscribe failed");
            return;
        }
        if directs.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (user, json) in &directs {
            let mut payload = Vec::with_capacity(self.tag.len() + 1 + json.len());
            payload.extend_from_slice(self.tag.as_bytes());
            payload.push(b' ');
            payload.extend_from_slice(json);
            pipe.cmd("PUBLISH")
                .arg(user_channel(user))
                .arg(payload)
                .ignore();
        }
        let r: redis::RedisResult<()> = pipe.query_async(&mut c.cmd).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "redis direct publish failed");
            self.lost("direct publish failed");
        }
    }

    /// Handles what the cores sent: publishes go out as one pipeline, range reads as another.
    async fn drain_inbox(&mut self) {
        let mut publishes: Vec<(Arc<str>, Bytes, Option<Token>)> = Vec::new();
        let mut ranges: Vec<(Arc<str>, RangeReq)> = Vec::new();
        let mut unsubs: Vec<(Arc<str>, u16)> = Vec::new();
        let mut users: Vec<(Arc<str>, u16, bool)> = Vec::new();
        let mut directs: Vec<(Arc<str>, Bytes)> = Vec::new();
        for _ in 0..MAX_BATCH {
            let Ok(msg) = self.inbox.try_recv() else {
                break;
            };
            match msg {
                CoreMsg::Publish { topic, data, ack } => publishes.push((topic, data, ack)),
                CoreMsg::Subscribe {
                    topic,
                    token,
                    since,
                } => ranges.push((topic, RangeReq::Subscribe { token, since })),
                CoreMsg::Fetch {
                    topic,
                    token,
                    since,
                    limit,
                    wait_until,
                } => ranges.push((
                    topic,
                    RangeReq::Fetch {
                        token,
                        since,
                        limit,
                        wait_until,
                    },
                )),
                CoreMsg::Unsubscribe { topic, core } => unsubs.push((topic, core)),
                CoreMsg::User { user, core, joined } => users.push((user, core, joined)),
                CoreMsg::DirectOut { user, json } => directs.push((user, json)),
                // Answers only ever go to cores.
                _ => {}
            }
        }
        if !ranges.is_empty() {
            self.serve_ranges(ranges).await;
        }
        if !publishes.is_empty() {
            self.publish(publishes).await;
        }
        if !users.is_empty() || !directs.is_empty() {
            self.serve_users(users, directs).await;
        }
        for (topic, core) in unsubs {
            if let Some(t) = self.topics.get_mut(&topic)
                && let Some(c) = t.cores.get_mut(core as usize)
            {
                *c = false;
            }
        }
    }

    /// Runs a batch of publishes as one pipeline of script calls and answers each.
    async fn publish(&mut self, batch: Vec<(Arc<str>, Bytes, Option<Token>)>) {
        let results: Option<Vec<redis::RedisResult<u64>>> = match self.conn.as_mut() {
            None => None,
            Some(c) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                let epoch = epoch_candidate();
                for (topic, data, _) in &batch {
                    let floor = self.seen.get(topic).map_or(0, |s| s.seq);
                    pipe.cmd("EVALSHA")
                        .arg(&c.publish_sha)
                        .arg(5)
                        .arg(seq_key(topic))
                        .arg(stream_key(topic))
                        .arg(channel(topic))
                        .arg(EPOCH_KEY)
                        .arg(base_key(topic))
                        .arg(floor)
                        .arg(&data[..])
                        .arg(self.max_messages)
                        .arg(epoch);
                }
                match pipe.query_async(&mut c.cmd).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis publish failed");
                        None
                    }
                }
            }
        };
        let connected = self.conn.is_some();
        if results.is_none() && connected {
            self.lost("publish failed");
        }
        let mut results = results.map(|r| r.into_iter());
        for (topic, _, ack) in batch {
            let r = results.as_mut().and_then(|r| r.next());
            match r {
                Some(Ok(seq)) => {
                    self.stats.publishes.fetch_add(1, Relaxed);
                    self.note_seen(&topic, seq);
                    if let Some(token) = ack {
                        let core = token.core as usize;
                        self.outbox
                            .push(core, CoreMsg::PublishAck { token, topic, seq });
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(error = %e, "redis publish script failed");
                        self.stats.errors.fetch_add(1, Relaxed);
                    }
                    self.stats.publish_errors.fetch_add(1, Relaxed);
                    if let Some(token) = ack {
                        let core = token.core as usize;
                        self.outbox
                            .push(core, CoreMsg::PublishFailed { token, topic });
                    }
                }
            }
        }
    }

    /// Subscribes and fetches: live channels first (confirmed), then one pipeline of range reads.
    async fn serve_ranges(&mut self, reqs: Vec<(Arc<str>, RangeReq)>) {
        if self.conn.is_none() {
            self.park(reqs);
            return;
        }
        let reqs = self.answer_from_live(reqs);
        if reqs.is_empty() {
            return;
        }
        // Register interest first so a message published from now on reaches this node live.
        let mut new_channels = Vec::new();
        for (topic, req) in &reqs {
            let t = self.topic(topic);
            match req {
                RangeReq::Subscribe { token, .. } => {
                    if let Some(c) = t.cores.get_mut(token.core as usize) {
                        *c = true;
                    }
                }
                RangeReq::Fetch { wait_until, .. } if wait_until.is_some() => {}
                RangeReq::Fetch { .. } => continue,
            }
            if !t.subscribed {
                t.subscribed = true;
                new_channels.push(channel(topic));
            }
        }
        let Some(c) = self.conn.as_mut() else {
            self.park(reqs);
            return;
        };
        if !new_channels.is_empty()
            && let Err(e) = c.sink.subscribe(&new_channels).await
        {
            tracing::warn!(error = %e, "redis subscribe failed");
            self.lost("subscribe failed");
            self.park(reqs);
            return;
        }
        let mut pipe = redis::pipe();
        for (topic, req) in &reqs {
            let since = match req {
                RangeReq::Subscribe { since, .. } | RangeReq::Fetch { since, .. } => *since,
            };
            let mut from = since.map_or(u64::MAX, |s| s.saturating_add(1));
            let limit = match req {
                RangeReq::Subscribe { .. } => {
                    // A topic the cores already follow live: read from what they were last sent too, so they get
                    // every message up to this read's snapshot before the replay (see `serve_ranges` below).
                    if let Some(t) = self.topics.get(topic)
                        && t.live
                    {
                        from = from.min(t.sent.saturating_add(1));
                    }
                    // Everything retained (`MAXLEN ~` keeps a little more than `max_messages`).
                    self.max_messages.saturating_mul(2).saturating_add(1024)
                }
                RangeReq::Fetch { limit, .. } => (*limit).max(1),
            };
            range_cmd(&mut pipe, &c.range_sha, topic, from, limit);
        }
        self.stats.range_reads.fetch_add(reqs.len() as u64, Relaxed);
        let answers: Vec<Value> = match pipe.query_async(&mut c.cmd).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "redis range read failed");
                self.lost("range read failed");
                self.park(reqs);
                return;
            }
        };
        for ((topic, req), v) in reqs.into_iter().zip(&answers) {
            let Range {
                last: redis_last,
                entries,
                base,
            } = parse_range(v).unwrap_or(Range {
                last: 0,
                entries: Vec::new(),
                base: 0,
            });
            self.note_seen(&topic, redis_last);
            let last = self.seen.get(&topic).map_or(0, |s| s.seq);
            // A resume from 0 ("everything retained") starts at the topic's base: seqs at or below it were not
            // published in this epoch, so they are not a gap to announce.
            let since = |s: Option<u64>| match s {
                Some(0) => Some(base.min(last)),
                other => other,
            };
            match req {
                RangeReq::Subscribe { token, since: s } => {
                    // The replay tells the core "everything up to `last` is here". Messages the live cores were not
                    // sent yet (published since their last delivery, still on their way on the live channel) go to
                    // them first, or the core would drop them as already replayed when they arrive.
                    let mut entries = entries;
                    if let Some(t) = self.topics.get(&topic)
                        && t.live
                    {
                        let sent = t.sent;
                        let missed: Vec<(u64, Bytes)> =
                            entries.iter().filter(|e| e.0 > sent).cloned().collect();
                        for (seq, data) in &missed {
                            self.deliver(&topic, *seq, data);
                        }
                    }
                    let since = since(s);
                    entries.retain(|e| since.is_some_and(|s| e.0 > s));
                    let (reset, entries) = match since {
                        None => (None, Vec::new()),
                        Some(s) => resume_answer(s, last, entries),
                    };
                    let t = self.topic(&topic);
                    t.sent = t.sent.max(last);
                    t.live = true;
                    let core = token.core as usize;
                    self.outbox.push(
                        core,
                        CoreMsg::Replay {
                            topic,
                            token,
                            reset,
                            entries,
                            last_seq: last,
                        },
                    );
                }
                RangeReq::Fetch {
                    token,
                    since: s,
                    limit,
                    wait_until,
                } => {
                    let core = token.core as usize;
                    let since = since(s);
                    match since {
                        Some(s) if s != last => {
                            let (reset, entries) = resume_answer(s, last, entries);
                            let next = entries.last().map_or(reset.unwrap_or(s), |e| e.0);
                            self.outbox.push(
                                core,
                                CoreMsg::Fetched {
                                    topic,
                                    token,
                                    reset: reset.is_some(),
                                    entries,
                                    next,
                                },
                            );
                        }
                        _ => match wait_until {
                            Some(until) => self.topic(&topic).waiters.push(Waiter {
                                token,
                                since: since.unwrap_or(last),
                                limit,
                                until,
                            }),
                            None => self.outbox.push(
                                core,
                                CoreMsg::Fetched {
                                    topic,
                                    token,
                                    reset: false,
                                    entries: Vec::new(),
                                    next: since.unwrap_or(last),
                                },
                            ),
                        },
                    }
                }
            }
        }
    }

    /// Answers, without asking Redis, every "from now on" subscription (no `since`) to a topic this node already
    /// follows live on the current connection, and returns the other requests. The node forwards every message of
    /// such a topic in seq order, so "now" is the highest seq it sent to the cores: a message still on its way
    /// from Redis has a higher seq and reaches the new subscriber live. Without this, every subscriber cost a
    /// Redis round trip (a million subscribers: a million scripts on one Redis, which timed out under that load);
    /// with it, a node reads Redis once per topic, for its first subscriber.
    fn answer_from_live(&mut self, reqs: Vec<(Arc<str>, RangeReq)>) -> Vec<(Arc<str>, RangeReq)> {
        let mut rest = Vec::with_capacity(reqs.len());
        for (topic, req) in reqs {
            let token = match &req {
                RangeReq::Subscribe { token, since: None } => token.clone(),
                _ => {
                    rest.push((topic, req));
                    continue;
                }
            };
            let Some(t) = self.topics.get_mut(&topic) else {
                rest.push((topic, req));
                continue;
            };
            if !(t.live && t.subscribed) {
                rest.push((topic, req));
                continue;
            }
            let core = token.core as usize;
            if let Some(c) = t.cores.get_mut(core) {
                *c = true;
            }
            let last_seq = t.sent;
            self.stats.live_answers.fetch_add(1, Relaxed);
            self.outbox.push(
                core,
                CoreMsg::Replay {
                    topic,
                    token,
                    reset: None,
                    entries: Vec::new(),
                    last_seq,
                },
            );
        }
        rest
    }

    /// Keeps requests for when Redis is back; long polls wait there too (answered at their deadline).
    fn park(&mut self, reqs: Vec<(Arc<str>, RangeReq)>) {
        for (topic, req) in reqs {
            match req {
                RangeReq::Fetch {
                    token,
                    since,
                    wait_until: None,
                    ..
                } => {
                    // A short poll is answered at once: nothing new is known while Redis is away.
                    let next = since.unwrap_or_else(|| self.seen.get(&topic).map_or(0, |s| s.seq));
                    let core = token.core as usize;
                    self.outbox.push(
                        core,
                        CoreMsg::Fetched {
                            topic,
                            token,
                            reset: false,
                            entries: Vec::new(),
                            next,
                        },
                    );
                }
                RangeReq::Fetch {
                    token,
                    since,
                    limit,
                    wait_until: Some(until),
                } => {
                    let since = since.unwrap_or_else(|| self.seen.get(&topic).map_or(0, |s| s.seq));
                    self.topic(&topic).waiters.push(Waiter {
                        token,
                        since,
                        limit,
                        until,
                    });
                }
                RangeReq::Subscribe { token, since } => {
                    if let Some(c) = self.topic(&topic).cores.get_mut(token.core as usize) {
                        *c = true;
                    }
                    self.pending
                        .push((topic, RangeReq::Subscribe { token, since }));
                }
            }
        }
    }

    /// Answers long polls whose wait is over and drops the live subscriptions nobody needs any more.
    async fn sweep(&mut self, now: Instant) {
        if self.seen.len() > SEEN_MAX || now.duration_since(self.seen_trimmed) >= SEEN_TRIM_EVERY {
            self.seen_trimmed = now;
            let topics = &self.topics;
            trim_seen(
                &mut self.seen,
                |t| topics.contains_key(t),
                now,
                SEEN_IDLE,
                SEEN_MAX,
            );
        }
        let mut idle = Vec::new();
        for (name, t) in self.topics.iter_mut() {
            let mut i = 0;
            while i < t.waiters.len() {
                if t.waiters[i].until <= now {
                    let w = t.waiters.swap_remove(i);
                    self.outbox.push(
                        w.token.core as usize,
                        CoreMsg::Fetched {
                            topic: name.clone(),
                            token: w.token,
                            reset: false,
                            entries: Vec::new(),
                            next: w.since,
                        },
                    );
                } else {
                    i += 1;
                }
            }
            if t.idle() && !self.pending.iter().any(|(p, _)| p == name) {
                idle.push((name.clone(), t.subscribed));
            }
        }
        let mut channels = Vec::new();
        for (name, subscribed) in idle {
            self.topics.remove(&name);
            if subscribed {
                channels.push(channel(&name));
            }
        }
        if !channels.is_empty()
            && let Some(c) = self.conn.as_mut()
            && let Err(e) = c.sink.unsubscribe(&channels).await
        {
            tracing::warn!(error = %e, "redis unsubscribe failed");
            self.lost("unsubscribe failed");
        }
    }
}

/// What this node knows of a topic's seq.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The highest seq seen.
    seq: u64,
    /// When it was last seen (or raised).
    at: Instant,
}

/// A topic's entry in `seen` is dropped after this long without activity when this node has no interest in it.
const SEEN_IDLE: Duration = Duration::from_secs(300);
/// Most entries kept in `seen`; beyond, the oldest entries of topics without local interest go first.
const SEEN_MAX: usize = 65_536;
/// How often `seen` is trimmed (also whenever it is over [`SEEN_MAX`]).
const SEEN_TRIM_EVERY: Duration = Duration::from_secs(10);

/// Bounds the per-topic floors: drops the entries of topics this node has no interest in (`wanted` is false) that
/// were idle for `idle`, then, while over `max`, the oldest such entries down to three quarters of `max`. Topics
/// with local subscribers or waiting polls are always kept. Losing a floor is safe: a missing counter is seeded from
/// the epoch base, which is above every earlier seq (the floor only adds cover for clock skew).
fn trim_seen(
    seen: &mut HashMap<Arc<str>, Seen>,
    wanted: impl Fn(&str) -> bool,
    now: Instant,
    idle: Duration,
    max: usize,
) {
    seen.retain(|t, s| wanted(t) || now.saturating_duration_since(s.at) < idle);
    if seen.len() <= max {
        return;
    }
    let mut old: Vec<(Instant, Arc<str>)> = seen
        .iter()
        .filter(|(t, _)| !wanted(t))
        .map(|(t, s)| (s.at, t.clone()))
        .collect();
    old.sort_unstable();
    let excess = seen.len() - max * 3 / 4;
    for (_, t) in old.into_iter().take(excess) {
        seen.remove(&t);
    }
}

fn range_cmd(pipe: &mut redis::Pipeline, sha: &str, topic: &str, from: u64, limit: usize) {
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(3)
        .arg(seq_key(topic))
        .arg(stream_key(topic))
        .arg(base_key(topic))
        .arg(from)
        .arg(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seqs: &[u64]) -> Vec<(u64, Bytes)> {
        seqs.iter().map(|&s| (s, Bytes::new())).collect()
    }

    fn seqs(v: &[(u64, Bytes)]) -> Vec<u64> {
        v.iter().map(|x| x.0).collect()
    }

    #[test]
    fn resume_answer_table() {
        // (since, last, entries in Redis from since+1) -> (reset, seqs)
        type Case<'a> = (u64, u64, &'a [u64], Option<u64>, &'a [u64]);
        let cases: [Case<'_>; 5] = [
            (3, 5, &[4, 5], None, &[4, 5]),
            (5, 5, &[], None, &[]),
            (9, 5, &[], Some(5), &[]),
            (1, 5, &[4, 5], Some(3), &[4, 5]),
            (1, 5, &[], Some(5), &[]),
        ];
        for (since, last, have, reset, want) in cases {
            let (r, got) = resume_answer(since, last, e(have));
            assert_eq!(r, reset, "since {since} last {last}");
            assert_eq!(seqs(&got), want, "since {since} last {last}");
        }
    }

    #[test]
    fn keys_share_the_topic_hash_tag() {
        assert_eq!(seq_key("a.b"), "rc:{a.b}:seq");
        assert_eq!(stream_key("a.b"), "rc:{a.b}:h");
        assert_eq!(channel("a.b"), "rc:{a.b}:live");
        assert_eq!(topic_of_channel("rc:{a.b}:live"), Some("a.b"));
        assert_eq!(topic_of_channel("other"), None);
        assert_eq!(user_channel("jo sé}"), "rc:u:{jo sé}}");
        assert_eq!(user_of_channel("rc:u:{jo sé}}"), Some("jo sé}"));
        assert_eq!(user_of_channel("rc:{a.b}:live"), None);
        assert_eq!(topic_of_channel(&user_channel("a")), None);
    }

    #[test]
    fn stream_entries_parse_and_skip_garbage() {
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"7-0".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"d".to_vec()),
                    Value::BulkString(b"{\"x\":1}".to_vec()),
                ]),
            ]),
            Value::Int(3),
        ]);
        let got = parse_entries(&v);
        assert_eq!(got, vec![(7, Bytes::from_static(b"{\"x\":1}"))]);
        assert_eq!(
            parse_range(&Value::Array(vec![Value::Int(9), v])).map(|r| (r.last, r.base)),
            Some((9, 0))
        );
        assert!(parse_range(&Value::Nil).is_none());
    }

    #[test]
    fn seen_is_bounded_and_keeps_wanted_topics() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut seen: HashMap<Arc<str>, Seen> = HashMap::new();
        for i in 0..20u64 {
            seen.insert(
                Arc::from(format!("t{i}")),
                Seen {
                    seq: i + 1,
                    at: at(i),
                },
            );
        }
        let wanted = |t: &str| t == "t0" || t == "t1";
        // Idle for 100 s at t = 109: t0..t9 are idle, but t0 and t1 have local interest.
        trim_seen(&mut seen, wanted, at(109), Duration::from_secs(100), 100);
        let mut left: Vec<&str> = seen.keys().map(|k| &**k).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "t0", "t1", "t10", "t11", "t12", "t13", "t14", "t15", "t16", "t17", "t18", "t19"
            ]
        );
        // Over capacity (8): the oldest unwanted entries go, down to 6; wanted ones stay whatever their age.
        trim_seen(&mut seen, wanted, at(110), Duration::from_secs(1000), 8);
        let mut left: Vec<&str> = seen.keys().map(|k| &**k).collect();
        left.sort_unstable();
        assert_eq!(left, ["t0", "t1", "t16", "t17", "t18", "t19"]);
        assert_eq!(seen.get("t19").map(|s| s.seq), Some(20));
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(default_node_id(), default_node_id());
    }
}
