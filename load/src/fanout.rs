//! Owns the `fanout` workload: subscribers over WebSocket, SSE or long polling that time and sequence-check every
//! delivery, and the publisher (HTTP or WebSocket) whose payloads carry their send time.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memchr::memmem;
use ringcast_protocol::pubsub::{ClientOp, RequestId, write_client_op};
use ringcast_protocol::sse::{EventParser, SseItem};
use ringcast_protocol::ws::{Client, Decoder, Message, OpCode};

use crate::cli::{FanoutArgs, PubVia, Transport};
use crate::net::{
    Conn, MaskRng, Sources, connect, connect_with, failure_reason, now_ns, ws_decoder,
};
use crate::run::{Ranges, ThreadCtx};
use crate::seq::SeqChecker;
use crate::stats::Tally;

/// The topic name of topic index `k`.
pub fn topic_name(prefix: &str, k: usize) -> String {
    format!("{prefix}.{k}")
}

/// The unsigned integer after `key` (e.g. `"seq":`) in `hay`, skipping spaces.
pub fn json_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    let pos = memmem::find(hay, key)? + key.len();
    leading_u64(hay.get(pos..)?).map(|(v, _)| v)
}

/// The unsigned integer at the start of `b` after any spaces, and the bytes it took (spaces included); `None` when
/// there are no digits or the value does not fit a `u64`.
fn leading_u64(b: &[u8]) -> Option<(u64, usize)> {
    let spaces = b.iter().take_while(|c| **c == b' ').count();
    let digits = b.get(spaces..)?;
    // Eight digits at a time while there are eight (a nanosecond stamp has 19: this runs for every delivery), then
    // one at a time. Sixteen digits always fit, and so do nineteen, so only longer numbers need checked arithmetic.
    let mut v = 0u64;
    let mut n = 0;
    while let Some(chunk) = digits
        .get(n..n + 8)
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
    {
        let Some(eight) = eight_digits(u64::from_le_bytes(chunk)) else {
            break;
        };
        v = if n < 16 {
            v * 100_000_000 + eight
        } else {
            v.checked_mul(100_000_000)?.checked_add(eight)?
        };
        n += 8;
    }
    while let Some(d) = digits
        .get(n)
        .map(|c| c.wrapping_sub(b'0'))
        .filter(|d| *d <= 9)
    {
        v = if n < 19 {
            v * 10 + u64::from(d)
        } else {
            v.checked_mul(10)?.checked_add(u64::from(d))?
        };
        n += 1;
    }
    (n > 0).then_some((v, spaces + n))
}

/// The value of eight ASCII digits loaded little-endian (the first digit in the lowest byte), or `None` when any of
/// the eight bytes is not a digit.
fn eight_digits(x: u64) -> Option<u64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Every byte is 0x30..=0x3F, and adding 6 (no carry then) keeps it below 0x40 only for 0x30..=0x39.
    if x & HIGH != ZEROS || (x + 0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    // Pairs, then quads, then all eight: each step multiplies the earlier (lower) lane by the place value of the
    // later one and adds them.
    let x = (x & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let x = (x & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some((x & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32)
}

/// What a subscriber makes of one text message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerText<'a> {
    /// A delivery: its seq (0 when missing) and its `data` value onwards.
    Msg {
        /// The message's seq.
        seq: u64,
        /// The bytes from the `data` value to the end of the message.
        data: &'a [u8],
    },
    /// A subscription's acknowledgement.
    Ack,
    /// The server says the subscriber missed messages.
    Reset,
    /// Anything else (an error reply).
    Other,
}

/// The layout ringcast and the peers write deliveries in: the type first, the seq after the topic, then the data.
const MSG_PREFIX: &[u8] = br#"{"type":"msg","#;

/// Searchers built once: `memmem::find` would build one per call, which at millions of deliveries a second was
/// the largest cost of a subscriber.
struct Finders {
    seq: memmem::Finder<'static>,
    data: memmem::Finder<'static>,
    msg: memmem::Finder<'static>,
    ack: memmem::Finder<'static>,
    reset: memmem::Finder<'static>,
}

static FINDERS: std::sync::LazyLock<Finders> = std::sync::LazyLock::new(|| Finders {
    seq: memmem::Finder::new(b"\"seq\":"),
    data: memmem::Finder::new(b"\"data\":"),
    msg: memmem::Finder::new(b"\"type\":\"msg\""),
    ack: memmem::Finder::new(b"\"type\":\"ack\""),
    reset: memmem::Finder::new(b"\"type\":\"reset\""),
});

/// Classifies a server text message. Deliveries in the usual layout (`{"type":"msg","topic":…,"seq":N,"data":…}`)
/// take one byte search (the end of the topic name); any other key order still parses, by searching for each key.
pub fn server_text(b: &[u8]) -> ServerText<'_> {
    let f = &*FINDERS;
    let is_msg = b.starts_with(MSG_PREFIX) || f.msg.find(b).is_some();
    if !is_msg {
        return if f.ack.find(b).is_some() {
            ServerText::Ack
        } else if f.reset.find(b).is_some() {
            ServerText::Reset
        } else {
            ServerText::Other
        };
    }
    // The usual layout has the topic name right after the type, and the seq after it: one byte search for the
    // name's closing quote instead of a substring search (a name with an escaped quote falls back to the search).
    let seq_at = b
        .strip_prefix(MSG_PREFIX)
        .and_then(|r| r.strip_prefix(b"\"topic\":\""))
        .and_then(|r| {
            let q = memchr::memchr(b'"', r)?;
            r.get(q + 1..)?.strip_prefix(b",\"seq\":")
        })
        .map(|r| b.len() - r.len())
        .or_else(|| f.seq.find(b).map(|p| p + b"\"seq\":".len()));
    let after_seq = seq_at.and_then(|at| leading_u64(b.get(at..)?).map(|(seq, n)| (seq, at + n)));
    let seq = after_seq.map_or(0, |(s, _)| s);
    let tail = after_seq.and_then(|(_, end)| b.get(end..)).unwrap_or(b);
    let data = match tail.strip_prefix(b",\"data\":") {
        Some(d) => d,
        None => f
            .data
            .find(b)
            .and_then(|p| b.get(p + b"\"data\":".len()..))
            .unwrap_or(b),
    };
    ServerText::Msg { seq, data }
}

/// The bytes every delivery to a WebSocket subscriber of `topic` starts with in the usual layout, up to its seq:
/// `{"type":"msg","topic":"<topic>","seq":`.
pub fn delivery_prefix(topic: &str) -> Vec<u8> {
    let name = serde_json::to_string(topic).unwrap_or_default();
    format!(r#"{{"type":"msg","topic":{name},"seq":"#).into_bytes()
}

/// [`server_text`] for a subscriber whose deliveries start with `prefix` (see [`delivery_prefix`]): one comparison
/// and the seq's digits for a delivery in the usual layout, the general classification for anything else (another
/// layout, another topic, an acknowledgement), so the result is always [`server_text`]'s.
pub fn subscriber_text<'a>(b: &'a [u8], prefix: &[u8]) -> ServerText<'a> {
    if let Some(rest) = b.strip_prefix(prefix)
        && let Some((seq, n)) = leading_u64(rest)
        && let Some(data) = rest.get(n..).and_then(|r| r.strip_prefix(b",\"data\":"))
    {
        return ServerText::Msg { seq, data };
    }
    server_text(b)
}

/// The send stamp of a delivery's data: `"t":` first (as every publisher here writes it) or anywhere.
fn stamp(data: &[u8]) -> Option<u64> {
    match data.strip_prefix(b"{\"t\":") {
        Some(rest) => leading_u64(rest).map(|(v, _)| v),
        None => json_u64(data, b"\"t\":"),
    }
}

/// Bytes after `{"t":` a cached stamp is keyed on: a 19-digit nanosecond stamp and what follows it.
const STAMP_KEY: usize = 24;
/// Slots of the stamp cache (a power of two), indexed by seq: 320 KiB. Subscribers of one thread can be thousands
/// of seqs apart in a flood, and seqs that far apart share a slot; with 2,048 slots a 3,000-message flood to
/// 10,000 subscribers re-parsed so many stamps that the parser took 11 % of the load generator's samples (6 % with
/// 8,192).
const STAMP_SLOTS: usize = 8192;

/// Send stamps already parsed, keyed on their raw bytes: one message reaches thousands of subscribers whose reads
/// a thread serves one after another, and parsing its 19-digit stamp again for each was the largest user-space cost
/// per delivery in a 10,000-subscriber flood. A hit needs the same `STAMP_KEY` bytes, which decide the parse (only
/// stamps shorter than that are stored), so a cached value is always the parsed one. Each slot keeps its key and
/// value side by side, so a lookup touches one cache line.
pub struct StampCache {
    slots: Vec<StampSlot>,
}

/// One slot of a [`StampCache`].
#[derive(Clone, Copy)]
struct StampSlot {
    key: [u8; STAMP_KEY],
    value: Option<u64>,
}

impl StampCache {
    /// An empty cache of `STAMP_SLOTS` slots.
    pub fn new() -> Self {
        StampCache {
            // An all-zero key parses to no stamp, which is what the empty slots hold.
            slots: vec![
                StampSlot {
                    key: [0; STAMP_KEY],
                    value: None,
                };
                STAMP_SLOTS
            ],
        }
    }

    /// [`stamp`] of a delivery with seq `seq`, through the cache.
    fn get(&mut self, seq: u64, data: &[u8]) -> Option<u64> {
        let Some(rest) = data.strip_prefix(b"{\"t\":") else {
            return stamp(data);
        };
        let Some(key) = rest
            .get(..STAMP_KEY)
            .and_then(|k| <[u8; STAMP_KEY]>::try_from(k).ok())
        else {
            return stamp(data);
        };
        let slot = &mut self.slots[seq as usize & (STAMP_SLOTS - 1)];
        if slot.key == key {
            return slot.value;
        }
        let parsed = leading_u64(rest);
        if let Some((v, n)) = parsed
            && n < STAMP_KEY
        {
            *slot = StampSlot {
                key,
                value: Some(v),
            };
        }
        parsed.map(|(v, _)| v)
    }
}

impl Default for StampCache {
    fn default() -> Self {
        StampCache::new()
    }
}

thread_local! {
    /// This reactor thread's stamp cache, shared by its subscribers (borrowed once per read).
    static STAMPS: RefCell<StampCache> = RefCell::new(StampCache::new());
}

/// One subscriber's live state.
#[derive(Default)]
pub struct Sub {
    topic: usize,
    check: SeqChecker,
    /// [`delivery_prefix`] of its topic.
    prefix: Vec<u8>,
}

impl Sub {
    /// A subscriber of topic index `topic`, named `name`, that has received nothing.
    pub fn new(topic: usize, name: &str) -> Self {
        Sub {
            topic,
            check: SeqChecker::new(),
            prefix: delivery_prefix(name),
        }
    }
}

/// Records one delivery: its seq, and its latency from the `"t":` stamp in `data` to `now` (nanoseconds since the
/// epoch, read once per batch of input: every delivery in it had arrived by then). The caller adds the batch to the
/// shared progress counter.
fn deliver(sub: &mut Sub, t: &mut Tally, stamps: &mut StampCache, now: u64, seq: u64, data: &[u8]) {
    sub.check.record(seq);
    t.received += 1;
    t.bytes += data.len() as u64;
    if let Some(sent) = stamps.get(seq, data) {
        t.latency.record_us(now.saturating_sub(sent) / 1000);
    }
}

/// [`deliver`] through this thread's stamp cache, for the SSE and long-poll subscribers (one delivery per call).
fn deliver_one(sub: &RefCell<Sub>, tally: &RefCell<Tally>, now: u64, seq: u64, data: &[u8]) {
    STAMPS.with(|c| {
        deliver(
            &mut sub.borrow_mut(),
            &mut tally.borrow_mut(),
            &mut c.borrow_mut(),
            now,
            seq,
            data,
        );
    });
}

/// What one read of a WebSocket subscriber held besides its deliveries (which [`ws_input`] records).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WsInput {
    /// Bytes of whole frames taken (the rest is an incomplete frame's start).
    pub consumed: usize,
    /// Deliveries recorded.
    pub delivered: u64,
    /// The subscription's acknowledgement arrived.
    pub acked: bool,
    /// The server sent a close frame.
    pub closed: bool,
}

/// Decodes every whole frame of one read of a WebSocket subscriber: records each delivery into `sub` and `t`
/// (latency against `now`), counts resets, error replies and binary messages as errors in `t`, and collects ping
/// payloads into `pongs` for the caller to answer.
///
/// # Errors
/// A protocol violation by the server (`InvalidData`, with the decoder's reason).
pub fn ws_input(
    input: &mut [u8],
    dec: &mut Decoder<Client>,
    sub: &mut Sub,
    t: &mut Tally,
    stamps: &mut StampCache,
    now: u64,
    pongs: &mut Vec<Vec<u8>>,
) -> io::Result<WsInput> {
    let mut out = WsInput::default();
    loop {
        let rest = input.get_mut(out.consumed..).unwrap_or_default();
        let (n, msg) = dec
            .decode(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.as_str()))?;
        out.consumed += n;
        match msg {
            Some(Message::Text(s)) => match subscriber_text(s.as_bytes(), &sub.prefix) {
                ServerText::Msg { seq, data } => {
                    deliver(sub, t, stamps, now, seq, data);
                    out.delivered += 1;
                }
                ServerText::Ack => out.acked = true,
                ServerText::Reset => t.error("reset"),
                ServerText::Other => t.error("error_reply"),
            },
            Some(Message::Binary(_)) => t.error("unexpected_binary"),
            Some(Message::Ping(p)) => pongs.push(p.to_vec()),
            Some(Message::Pong(_)) => {}
            Some(Message::Close(_)) => out.closed = true,
            None => return Ok(out),
        }
    }
}

/// A counting semaphore for one reactor thread: `acquire` waits (without polling) until a slot is free.
struct Slots {
    free: Cell<usize>,
    waiter: Cell<Option<std::task::Waker>>,
}

impl Slots {
    fn new(n: usize) -> Self {
        Slots {
            free: Cell::new(n),
            waiter: Cell::new(None),
        }
    }

    async fn acquire(&self) {
        std::future::poll_fn(|cx| {
            let n = self.free.get();
            if n > 0 {
                self.free.set(n - 1);
                std::task::Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await;
    }

    fn release(&self) {
        self.free.set(self.free.get().saturating_add(1));
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }
}

/// Runs once when a subscriber's subscription is confirmed (releases its connect slot).
struct Settle(Option<Box<dyn FnOnce()>>);

fn subscribed(ctx: &ThreadCtx, ok: &RefCell<bool>, settle: &mut Settle) {
    if *ok.borrow() {
        return;
    }
    *ok.borrow_mut() = true;
    ctx.control.subscribed.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = settle.0.take() {
        f();
    }
}

/// The transport of subscriber `i`: SSE for the `--sse-percent` share, else `--transport`.
fn subscriber_transport(args: &FanoutArgs, i: usize) -> Transport {
    if i % 100 < usize::from(args.sse_percent) {
        Transport::Sse
    } else {
        args.transport.nth(i)
    }
}

async fn ws_sub(
    mut c: Conn,
    topic: String,
    sub: Rc<RefCell<Sub>>,
    tally: Rc<RefCell<Tally>>,
    ctx: Rc<ThreadCtx>,
    ok: Rc<RefCell<bool>>,
    mut settle: Settle,
) -> io::Result<()> {
    let mut rng = MaskRng::new(ctx.global as u64 * 1_000_003 + sub.borrow().topic as u64);
    c.ws_upgrade("/ws").await?;
    let mut op = Vec::new();
    write_client_op(
        &mut op,
        &ClientOp::Sub {
            topic: &topic,
            since: None,
            id: Some(RequestId("1")),
        },
    );
    c.push_frame(OpCode::Text, &op, &mut rng);
    c.flush().await?;
    let mut dec = ws_decoder();
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    loop {
        c.fill().await?;
        let input = c.input();
        let r = STAMPS.with(|stamps| {
            ws_input(
                input,
                &mut dec,
                &mut sub.borrow_mut(),
                &mut tally.borrow_mut(),
                &mut stamps.borrow_mut(),
                now_ns(),
                &mut pongs,
            )
        })?;
        c.consume(r.consumed);
        ctx.control
            .received
            .fetch_add(r.delivered, Ordering::Relaxed);
        if r.acked {
            subscribed(&ctx, &ok, &mut settle);
        }
        let closed = r.closed;
        if closed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "closed_by_server",
            ));
        }
        if !pongs.is_empty() {
            for p in pongs.drain(..) {
                c.push_frame(OpCode::Pong, &p, &mut rng);
            }
            c.flush().await?;
        }
    }
}

async fn sse_sub(
    mut c: Conn,
    topic: String,
    sub: Rc<RefCell<Sub>>,
    tally: Rc<RefCell<Tally>>,
    ctx: Rc<ThreadCtx>,
    ok: Rc<RefCell<bool>>,
    mut settle: Settle,
) -> io::Result<()> {
    let req =
        format!("GET /sse/{topic} HTTP/1.1\r\nHost: load\r\nAccept: text/event-stream\r\n\r\n");
    c.send(req.as_bytes()).await?;
    let h = c.read_head().await?;
    if h.status != 200 {
        return Err(crate::net::status_error(h.status));
    }
    subscribed(&ctx, &ok, &mut settle);
    let mut parser = EventParser::new();
    let mut items = Vec::new();
    loop {
        let input = c.input();
        let len = input.len();
        parser.feed(input, &mut items);
        c.consume(len);
        let now = now_ns();
        let mut delivered = 0u64;
        for it in items.drain(..) {
            if let SseItem::Event(ev) = it {
                if ev.event_type_or_message() != "message" {
                    tally.borrow_mut().error("reset");
                    continue;
                }
                let seq = ev.id.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                deliver_one(&sub, &tally, now, seq, ev.data.as_bytes());
                delivered += 1;
            }
        }
        ctx.control.received.fetch_add(delivered, Ordering::Relaxed);
        c.fill().await?;
    }
}

/// The poll body fields the subscriber reads.
#[derive(serde::Deserialize)]
struct PollBody {
    #[serde(default)]
    messages: Vec<PollMsg>,
    /// ringcast's single-topic body: the cursor to send back.
    #[serde(default)]
    next: Option<u64>,
    /// The multi-topic body's cursor object.
    #[serde(default)]
    cursor: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    reset: serde_json::Value,
}

impl PollBody {
    fn next(&self, topic: &str) -> Option<u64> {
        self.next.or_else(|| self.cursor.get(topic).copied())
    }

    fn is_reset(&self) -> bool {
        match &self.reset {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Object(m) => !m.is_empty(),
            _ => false,
        }
    }
}

#[derive(serde::Deserialize)]
struct PollMsg {
    seq: u64,
    data: Box<serde_json::value::RawValue>,
}

async fn poll_sub(
    mut c: Conn,
    topic: String,
    sub: Rc<RefCell<Sub>>,
    tally: Rc<RefCell<Tally>>,
    ctx: Rc<ThreadCtx>,
    ok: Rc<RefCell<bool>>,
    mut settle: Settle,
) -> io::Result<()> {
    let bad = |_| io::Error::new(io::ErrorKind::InvalidData, "bad_poll_body");
    let req = format!("GET /messages/{topic} HTTP/1.1\r\nHost: load\r\n\r\n");
    c.send(req.as_bytes()).await?;
    let (status, body) = c.read_response().await?;
    if status != 200 {
        return Err(crate::net::status_error(status));
    }
    let b: PollBody = serde_json::from_slice(&body).map_err(bad)?;
    let mut since = b.next(&topic).unwrap_or(0);
    subscribed(&ctx, &ok, &mut settle);
    loop {
        let req =
            format!("GET /poll/{topic}?since={since}&timeout=20 HTTP/1.1\r\nHost: load\r\n\r\n");
        c.send(req.as_bytes()).await?;
        let (status, body) = c.read_response().await?;
        if status != 200 {
            return Err(crate::net::status_error(status));
        }
        let b: PollBody = serde_json::from_slice(&body).map_err(bad)?;
        if b.is_reset() {
            tally.borrow_mut().error("reset");
        }
        let now = now_ns();
        for m in &b.messages {
            deliver_one(&sub, &tally, now, m.seq, m.data.get().as_bytes());
        }
        ctx.control
            .received
            .fetch_add(b.messages.len() as u64, Ordering::Relaxed);
        since = b.next(&topic).unwrap_or(since);
    }
}

/// One reactor thread of `fanout`: subscribe its share, report ready, and after the go signal (which carries the
/// published ranges) keep reading for the grace period, then check every subscriber's seqs.
pub async fn fanout_thread(ctx: ThreadCtx, args: FanoutArgs) -> Tally {
    let ctx = Rc::new(ctx);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let src = Sources {
        base: ctx.common.source_base,
        count: ctx.common.source_addrs,
    };
    let topics = args.topics.max(1);
    let mut subs = Vec::new();
    // Slots for subscribers still connecting or subscribing; settled = subscribed or failed before subscribing.
    let in_flight = Rc::new(Slots::new(if args.connect_concurrency == 0 {
        usize::MAX
    } else {
        args.connect_concurrency
    }));
    let settled = Rc::new(Cell::new(0usize));
    let t0 = Instant::now();
    for i in ctx.share(args.subscribers) {
        in_flight.acquire().await;
        let topic = topic_name(&args.topic_prefix, i % topics);
        let sub = Rc::new(RefCell::new(Sub::new(i % topics, &topic)));
        let ok = Rc::new(RefCell::new(false));
        let failed = Rc::new(RefCell::new(false));
        subs.push((sub.clone(), ok.clone(), failed.clone()));
        let (cx, t) = (ctx.clone(), tally.clone());
        let transport = subscriber_transport(&args, i);
        let read_buffer = args.read_buffer.max(256);
        let recv_buffer = args.recv_buffer;
        let prefault = args.prefault;
        let (fl, st) = (in_flight.clone(), settled.clone());
        monoio::spawn(async move {
            t.borrow_mut().attempted += 1;
            // Marks the subscriber settled once it subscribed; a failure before that settles it below.
            let o2 = ok.clone();
            let (fl2, st2) = (fl.clone(), st.clone());
            let on_subscribed = move || {
                fl2.release();
                st2.set(st2.get() + 1);
            };
            let r = match connect_with(cx.common.target, src.for_index(i as u64), recv_buffer).await
            {
                Ok(s) => {
                    t.borrow_mut().established += 1;
                    cx.control.established.fetch_add(1, Ordering::Relaxed);
                    let mut c = Conn::new(s, read_buffer);
                    if prefault {
                        c.prefault();
                    }
                    let (s2, t2, c2) = (sub, t.clone(), cx.clone());
                    let on = Settle(Some(Box::new(on_subscribed)));
                    match transport {
                        Transport::Sse => sse_sub(c, topic, s2, t2, c2, o2, on).await,
                        Transport::Poll => poll_sub(c, topic, s2, t2, c2, o2, on).await,
                        _ => ws_sub(c, topic, s2, t2, c2, o2, on).await,
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                *failed.borrow_mut() = true;
                let reason = failure_reason(&e);
                if *ok.borrow() {
                    t.borrow_mut().error(&reason);
                } else {
                    fl.release();
                    st.set(st.get() + 1);
                    t.borrow_mut().fail(&reason);
                    cx.control.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if subs.len() % 256 == 0 {
            // Let the first connections proceed while the rest are spawned.
            monoio::time::sleep(Duration::from_micros(1)).await;
        }
    }
    // Ready when every subscriber has subscribed or failed (at most --ready-timeout). Checked every 10 ms: with
    // many worker processes, finer polling costs more CPU than the connections themselves.
    let limit = Instant::now() + Duration::from_secs(args.ready_timeout.max(1));
    while settled.get() < subs.len() && Instant::now() <= limit {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    tally.borrow_mut().connect_secs = t0.elapsed().as_secs_f64();
    let received_at_ready = tally.borrow().received;
    let ready_at = Instant::now();
    ctx.control.set_ready();
    ctx.control.wait_go().await;
    {
        let mut t = tally.borrow_mut();
        t.received_window = t.received - received_at_ready;
    }
    let ranges = ctx.control.ranges();
    // Keep reading until every subscriber reached its topic's last seq, or the grace period ends.
    let grace = Instant::now() + Duration::from_millis(args.grace_ms);
    loop {
        let behind = subs.iter().any(|(s, ok, f)| {
            let s = s.borrow();
            let last = ranges.get(s.topic).copied().flatten().map_or(0, |r| r.1);
            *ok.borrow() && !*f.borrow() && s.check.highest() < last
        });
        if !behind || Instant::now() > grace {
            break;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    {
        let mut t = tally.borrow_mut();
        t.drained_secs = ready_at.elapsed().as_secs_f64();
        t.received_after_ready = t.received - received_at_ready;
    }
    let mut t = tally.borrow().clone();
    for (s, ok, _) in &subs {
        if !*ok.borrow() {
            continue;
        }
        let s = s.borrow();
        let r = s.check.finish(ranges.get(s.topic).copied().flatten());
        t.expected += r.delivered + r.lost;
        t.lost += r.lost;
        t.duplicated += r.duplicated;
        t.out_of_order += r.out_of_order;
    }
    t
}

/// What the publisher did.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Messages published (acknowledged with a seq).
    pub count: u64,
    /// Per topic, the first and last seq published.
    pub ranges: Ranges,
    /// Seconds from the first publish to the last.
    pub secs: f64,
    /// Errors, if the publisher stopped early.
    pub error: Option<String>,
}

/// The publish body: the send time first, then a counter and padding.
pub fn publish_body(n: u64, pad: &str) -> String {
    format!("{{\"t\":{},\"i\":{n},\"p\":\"{pad}\"}}", now_ns())
}

/// Publishes on `args.topics` topics round-robin at `args.rate` for `args.duration` seconds or `args.messages`
/// messages. At rate 0 (as fast as acknowledgements come back) and over HTTP, one request at a time; at a fixed rate
/// over WebSocket, open loop (publishes leave on schedule; acknowledgements are matched as they come). Runs on
/// its own runtime.
pub fn publish(target: std::net::SocketAddr, args: &FanoutArgs) -> Published {
    let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build();
    match rt {
        Ok(mut rt) => rt.block_on(publish_async(target, args)),
        Err(e) => Published {
            error: Some(format!("runtime: {e}")),
            ..Published::default()
        },
    }
}

async fn publish_async(target: std::net::SocketAddr, args: &FanoutArgs) -> Published {
    let topics = args.topics.max(1);
    let mut out = Published {
        ranges: vec![None; topics],
        ..Published::default()
    };
    let names: Vec<String> = (0..topics)
        .map(|k| topic_name(&args.topic_prefix, k))
        .collect();
    let pad = "x".repeat(args.pad);
    let mut c = match connect(target, None).await {
        Ok(s) => Conn::new(s, 16 * 1024),
        Err(e) => {
            out.error = Some(failure_reason(&e));
            return out;
        }
    };
    let mut rng = MaskRng::new(42);
    let mut dec = ws_decoder();
    if args.publish_via == PubVia::Ws
        && let Err(e) = c.ws_upgrade("/ws").await
    {
        out.error = Some(failure_reason(&e));
        return out;
    }
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    if let (PubVia::Ws, Some(iv)) = (args.publish_via, interval) {
        let plan = OpenLoop {
            names: &names,
            pad: &pad,
            interval: iv,
            end,
            messages: args.messages,
            ack_wait: Duration::from_millis(args.grace_ms.max(1000)),
        };
        publish_ws_open(c, rng, plan, &mut out).await;
        return out;
    }
    let mut next = start;
    let mut n = 0u64;
    while Instant::now() < end && (args.messages == 0 || n < args.messages) {
        let k = (n as usize) % topics;
        let topic = names.get(k).map_or("", String::as_str);
        let body = publish_body(n, &pad);
        let r = match args.publish_via {
            PubVia::Http => publish_http(&mut c, topic, &body).await,
            PubVia::Ws => publish_ws(&mut c, &mut dec, &mut rng, topic, &body, n).await,
        };
        match r {
            Ok(seq) => {
                if let Some(slot) = out.ranges.get_mut(k) {
                    *slot = Some(slot.map_or((seq, seq), |(a, _)| (a, seq)));
                }
                out.count += 1;
            }
            Err(e) => {
                out.error = Some(failure_reason(&e));
                break;
            }
        }
        n += 1;
        if let Some(iv) = interval {
            next += iv;
            let now = Instant::now();
            if next > now {
                monoio::time::sleep(next - now).await;
            }
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    out
}

/// What an open-loop publisher publishes.
struct OpenLoop<'a> {
    /// Topic names, published round-robin.
    names: &'a [String],
    /// Body padding.
    pad: &'a str,
    /// Time between publishes.
    interval: Duration,
    /// When to stop publishing.
    end: Instant,
    /// Stop after this many (0: no limit).
    messages: u64,
    /// How long to wait for the last acknowledgements after the last publish.
    ack_wait: Duration,
}

/// The acknowledgements an open-loop publisher's reader matched so far (in order: a connection's replies come in
/// the order of its requests), and how the reader ended.
#[derive(Default)]
struct Acks {
    seqs: Vec<u64>,
    error: Option<String>,
    waiter: Option<std::task::Waker>,
}

/// Fixed-rate publishing over WebSocket, open loop: each publish goes out on schedule whether or not the earlier
/// ones were acknowledged, and a reader task on the other half of the connection matches the acknowledgements. A
/// server slow to acknowledge (a busy reactor's turn) cannot lower the offered rate: its queueing shows in the
/// subscribers' latency instead of hiding as fewer messages, and the publish window is the schedule's, not the
/// last acknowledgement's.
async fn publish_ws_open(c: Conn, mut rng: MaskRng, plan: OpenLoop<'_>, out: &mut Published) {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
    let mut c = c;
    let leftover = c.input().to_vec();
    let (mut rd, mut wr) = c.stream.into_split();
    let acks = Rc::new(RefCell::new(Acks::default()));
    let acks2 = acks.clone();
    let reader = monoio::spawn(async move {
        let mut dec = ws_decoder();
        let mut buf = leftover;
        buf.reserve(16 * 1024);
        let end = |a: &RefCell<Acks>, e: &str| {
            let mut a = a.borrow_mut();
            a.error.get_or_insert_with(|| e.to_owned());
            if let Some(w) = a.waiter.take() {
                w.wake();
            }
        };
        loop {
            let mut pos = 0;
            loop {
                let rest = buf.get_mut(pos..).unwrap_or_default();
                let (k, msg) = match dec.decode(rest) {
                    Ok(r) => r,
                    Err(e) => return end(&acks2, e.as_str()),
                };
                pos += k;
                match msg {
                    Some(Message::Text(s)) => match server_text(s.as_bytes()) {
                        ServerText::Ack => {
                            let seq = json_u64(s.as_bytes(), b"\"seq\":").unwrap_or(0);
                            let mut a = acks2.borrow_mut();
                            a.seqs.push(seq);
                            if let Some(w) = a.waiter.take() {
                                w.wake();
                            }
                        }
                        ServerText::Other => return end(&acks2, "publish_refused"),
                        _ => {}
                    },
                    Some(Message::Close(_)) => return end(&acks2, "closed_by_server"),
                    Some(_) => {}
                    None => break,
                }
            }
            // A frame cut by the read stays for the decoder, which consumed it into its own state.
            buf.clear();
            let (res, b) = rd.read(buf).await;
            buf = b;
            match res {
                Ok(0) => return end(&acks2, "closed_by_server"),
                Ok(_) => {}
                Err(e) => return end(&acks2, &failure_reason(&e)),
            }
        }
    });
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let mut frame = Vec::with_capacity(256);
    let mut op = Vec::with_capacity(256);
    while Instant::now() < plan.end && (plan.messages == 0 || sent < plan.messages) {
        if acks.borrow().error.is_some() {
            break;
        }
        let topic = plan.names.get((sent as usize) % plan.names.len().max(1));
        let body = publish_body(sent, plan.pad);
        let id = sent.to_string();
        op.clear();
        write_client_op(
            &mut op,
            &ClientOp::Pub {
                topic: topic.map_or("", String::as_str),
                data: &body,
                id: Some(RequestId(&id)),
            },
        );
        frame.clear();
        ringcast_protocol::ws::encode_client_frame(&mut frame, true, OpCode::Text, &op, &mut rng);
        let (res, f) = wr.write_all(std::mem::take(&mut frame)).await;
        frame = f;
        if let Err(e) = res {
            acks.borrow_mut().error = Some(failure_reason(&e));
            break;
        }
        sent += 1;
        next += plan.interval;
        let now = Instant::now();
        if next > now {
            monoio::time::sleep(next - now).await;
        }
    }
    out.secs = start.elapsed().as_secs_f64();
    // The last acknowledgements: every publish is answered, or the reader ended, or the wait ran out.
    let waited = monoio::time::timeout(
        plan.ack_wait,
        std::future::poll_fn(|cx| {
            let mut a = acks.borrow_mut();
            if a.seqs.len() as u64 >= sent || a.error.is_some() {
                std::task::Poll::Ready(())
            } else {
                a.waiter = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }),
    )
    .await;
    drop(reader);
    let a = acks.borrow();
    let topics = out.ranges.len().max(1);
    for (i, &seq) in a.seqs.iter().enumerate() {
        if let Some(slot) = out.ranges.get_mut(i % topics) {
            *slot = Some(slot.map_or((seq, seq), |(first, _)| (first, seq)));
        }
    }
    out.count = a.seqs.len() as u64;
    out.error = a.error.clone().or_else(|| {
        (waited.is_err() && (a.seqs.len() as u64) < sent)
            .then(|| "publish_unacknowledged".to_owned())
    });
}

async fn publish_http(c: &mut Conn, topic: &str, body: &str) -> io::Result<u64> {
    let req = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(req.as_bytes()).await?;
    let (status, resp) = c.read_response().await?;
    if status != 200 {
        return Err(crate::net::status_error(status));
    }
    json_u64(&resp, b"\"seq\":")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "publish_no_seq"))
}

async fn publish_ws(
    c: &mut Conn,
    dec: &mut ringcast_protocol::ws::Decoder<ringcast_protocol::ws::Client>,
    rng: &mut MaskRng,
    topic: &str,
    body: &str,
    n: u64,
) -> io::Result<u64> {
    let id = n.to_string();
    let mut op = Vec::new();
    write_client_op(
        &mut op,
        &ClientOp::Pub {
            topic,
            data: body,
            id: Some(RequestId(&id)),
        },
    );
    c.push_frame(OpCode::Text, &op, rng);
    c.flush().await?;
    loop {
        c.fill().await?;
        let input = c.input();
        let len = input.len();
        let mut pos = 0;
        let mut seq = None;
        loop {
            let rest = input.get_mut(pos..).unwrap_or_default();
            let (k, msg) = dec
                .decode(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.as_str()))?;
            pos += k;
            match msg {
                Some(Message::Text(s)) => {
                    let b = s.as_bytes();
                    if memmem::find(b, b"\"type\":\"ack\"").is_some() {
                        seq = json_u64(b, b"\"seq\":");
                    } else if memmem::find(b, b"\"type\":\"error\"").is_some() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "publish_refused",
                        ));
                    }
                }
                Some(Message::Close(_)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Some(_) => {}
                None => break,
            }
        }
        c.consume(len);
        if let Some(s) = seq {
            return Ok(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields() {
        let m =
            br#"{"type":"msg","topic":"load.0","seq":42,"data":{"t":1700000000000000000,"i":3}}"#;
        assert_eq!(json_u64(m, b"\"seq\":"), Some(42));
        assert_eq!(json_u64(m, b"\"t\":"), Some(1_700_000_000_000_000_000));
        assert_eq!(json_u64(b"{\"seq\": 7}", b"\"seq\":"), Some(7));
        assert_eq!(json_u64(b"{\"seq\":\"7\"}", b"\"seq\":"), None);
        assert_eq!(json_u64(b"{}", b"\"seq\":"), None);
        assert_eq!(
            json_u64(b"{\"seq\":99999999999999999999}", b"\"seq\":"),
            None
        );
        let body = publish_body(5, "ab");
        assert!(body.ends_with(",\"i\":5,\"p\":\"ab\"}"), "{body}");
        assert!(json_u64(body.as_bytes(), b"\"t\":").is_some());
    }

    /// The digit-at-a-time parse `leading_u64` replaced, as the reference.
    fn leading_u64_reference(b: &[u8]) -> Option<(u64, usize)> {
        let spaces = b.iter().take_while(|c| **c == b' ').count();
        let digits = &b[spaces..];
        let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v = 0u64;
        for c in &digits[..n] {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        }
        (n > 0).then_some((v, spaces + n))
    }

    #[test]
    fn eight_digit_chunks_parse_like_one_digit_at_a_time() {
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"12345678")),
            Some(12_345_678)
        );
        assert_eq!(eight_digits(u64::from_le_bytes(*b"00000009")), Some(9));
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"99999999")),
            Some(99_999_999)
        );
        for bad in [b"1234567:", b"/2345678", b"1234 678", b"12345\x0078"] {
            assert_eq!(eight_digits(u64::from_le_bytes(*bad)), None, "{bad:?}");
        }
        // Random digit runs of every length up to 25 (with and without leading zeros and spaces, and whatever
        // follows), against the reference: values, lengths and overflows must agree.
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let tails: [&[u8]; 4] = [b"", b",", b"}", b"x9"];
        for _ in 0..20_000 {
            let len = (next() % 26) as usize;
            let mut s = vec![b' '; (next() % 3) as usize];
            for i in 0..len {
                let d = if i == 0 && next().is_multiple_of(4) {
                    0
                } else {
                    next() % 10
                };
                s.push(b'0' + d as u8);
            }
            s.extend_from_slice(tails[(next() % 4) as usize]);
            assert_eq!(
                leading_u64(&s),
                leading_u64_reference(&s),
                "{}",
                String::from_utf8_lossy(&s)
            );
        }
        for s in [
            &b"18446744073709551615"[..],
            b"18446744073709551616",
            b"99999999999999999999",
            b"0000000000000000000000018446744073709551615",
            b"1844674407370955161",
            b"12345678",
            b"1234567812345678",
        ] {
            assert_eq!(
                leading_u64(s),
                leading_u64_reference(s),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn integers_up_to_u64_max() {
        let k = b"\"seq\":";
        assert_eq!(
            json_u64(b"{\"seq\":18446744073709551615}", k),
            Some(u64::MAX)
        );
        assert_eq!(json_u64(b"{\"seq\":18446744073709551616}", k), None);
        assert_eq!(
            json_u64(b"{\"seq\":9999999999999999999}", k),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(json_u64(b"{\"seq\":007}", k), Some(7));
        assert_eq!(json_u64(b"{\"seq\":0}", k), Some(0));
    }

    #[test]
    fn server_texts_in_any_key_order() {
        let msg = |seq, data: &'static [u8]| ServerText::Msg { seq, data };
        let cases: &[(&[u8], ServerText<'static>)] = &[
            (
                br#"{"type":"msg","topic":"a.b","seq":42,"data":{"t":17,"i":3}}"#,
                msg(42, br#"{"t":17,"i":3}}"#),
            ),
            // The peers' layout, a topic whose name holds the key, and other key orders take the slow path.
            (
                br#"{"type":"msg","topic":"x\"seq\":9","seq":5,"data":1}"#,
                msg(5, b"1}"),
            ),
            (
                br#"{"seq":7,"data":{"t":1},"type":"msg"}"#,
                msg(7, br#"{"t":1},"type":"msg"}"#),
            ),
            (
                br#"{"data":2,"type":"msg","seq": 8}"#,
                msg(8, br#"2,"type":"msg","seq": 8}"#),
            ),
            (br#"{"type":"msg","data":3}"#, msg(0, b"3}")),
            (br#"{"type":"ack","id":"1","seq":3}"#, ServerText::Ack),
            (br#"{"type":"reset","topic":"a"}"#, ServerText::Reset),
            (br#"{"type":"error","code":"bad"}"#, ServerText::Other),
            (b"", ServerText::Other),
        ];
        for (text, want) in cases {
            assert_eq!(
                server_text(text),
                *want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // A subscriber's shortcut agrees with the general classification whatever topic it expects.
        let more: &[&[u8]] = &[
            br#"{"type":"msg","topic":"a.b","seq": 7,"data":2}"#,
            br#"{"type":"msg","topic":"a.b","seq":,"data":2}"#,
            br#"{"type":"msg","topic":"a.b","seq":18446744073709551616,"data":2}"#,
            br#"{"type":"msg","topic":"a.b","seq":12}"#,
            br#"{"type":"msg","topic":"a.b","seq":12,"data""#,
            br#"{"type":"msg","topic":"a.bc","seq":3,"data":4}"#,
        ];
        for prefix in ["a.b", "x\"seq\":9", "a", "", "load.0"].map(delivery_prefix) {
            for text in cases.iter().map(|(t, _)| *t).chain(more.iter().copied()) {
                assert_eq!(
                    subscriber_text(text, &prefix),
                    server_text(text),
                    "{} with {}",
                    String::from_utf8_lossy(text),
                    String::from_utf8_lossy(&prefix)
                );
            }
        }
        assert_eq!(
            delivery_prefix("x\"seq\":9"),
            br#"{"type":"msg","topic":"x\"seq\":9","seq":"#
        );
    }

    /// A deterministic xorshift64 sequence for the randomised tests.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn cached_stamps_are_the_parsed_ones() {
        // Seqs that share slots, stamps that share prefixes, lengths around the key size, junk after the digits.
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let mut cache = StampCache::new();
        for _ in 0..50_000 {
            let seq = next() % 8 * STAMP_SLOTS as u64 + next() % 4;
            let digits = 1 + (next() % 26) as usize;
            let mut d = String::from(r#"{"t":"#);
            if next().is_multiple_of(8) {
                d.push(' ');
            }
            for i in 0..digits {
                // Few distinct stamps, so the same key comes back under other seqs and other keys under the same.
                let c = if i < 15 {
                    b'1'
                } else {
                    b'0' + (next() % 3) as u8
                };
                d.push(c as char);
            }
            d.push_str([",\"i\":3}", "}", "x", ""][(next() % 4) as usize]);
            d.push_str(&"p".repeat((next() % 30) as usize));
            assert_eq!(
                cache.get(seq, d.as_bytes()),
                stamp(d.as_bytes()),
                "{d} seq {seq}"
            );
        }
        assert_eq!(cache.get(1, br#"{"i":3,"t":12}"#), Some(12));
    }

    #[test]
    fn stamps_first_or_anywhere() {
        assert_eq!(
            stamp(br#"{"t":1700000000000000000,"i":3}"#),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(stamp(br#"{"i":3,"t": 12}"#), Some(12));
        assert_eq!(stamp(br#"{"i":3}"#), None);
        assert_eq!(stamp(br#"{"t":"x"}"#), None);
    }
}
