//! One reactor: the state a core owns and the loop that drives it.
//!
//! A core owns its listener, a slab of [`Conn`]s, one epoll readiness set where idle connections are parked, a
//! shared read buffer and a shared write-staging buffer. Two monoio tasks run on it: the readiness loop (awaits the
//! epoll descriptor, then serves every ready connection and accepts what the listener, a member of the same set,
//! has waiting, without blocking) and the timer sweep (handshake deadlines, heartbeats, idle and close timeouts, the
//! shutdown drain). They share the core through an `Rc<RefCell<Core>>` and never hold the borrow across an await.
//!
//! Per readable connection and wake-up the core does one `read(2)` into the shared buffer, decodes in place, stages
//! every reply in the shared write buffer and hands it to the kernel with one `write(2)`: a reply to many messages
//! is one syscall (corking). Only what the kernel refuses is copied into the connection's own bounded queue, which
//! is then drained with `writev(2)` when writable: such a connection is also in the core's write set, a second
//! epoll set for `EPOLLOUT` nested in the first, which a turn serves after everything readable and up to the turn's
//! write budget.

use std::cell::RefCell;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringcast_protocol::handshake::{
    validate_upgrade, write_handshake_error, write_http_error, write_rejection,
    write_switching_protocols,
};
use ringcast_protocol::http::{self, HeadLimits, parse_request, write_response};
use ringcast_protocol::pubsub::PubSubRoute;
use ringcast_protocol::ws::{
    CloseCode, Decoder, DecoderConfig, Message, OpCode, encode_close_payload, encode_server_frame,
};
use slab::Slab;

mod output;
mod pubsub;
mod remote;
mod routing;
pub(crate) use pubsub::{ConnExt, ws_text};
use pubsub::{Topics, Waiting};

use crate::bus::{CoreMsg, Mesh, Outbox};
use crate::config::{Config, SlowConsumerPolicy, origin_allowed};
use crate::conn::{
    CLOSE_ON_FLUSH, Conn, ERRORED, IP_LIMITED, NO_IP_SLOT, OutFrame, PING_OUT, REJECT, Route,
    SHUT_WRITE, State, Tick, WANT_WRITE, ticks,
};
use crate::poller::{Epoll, READ, WRITE, Waker};
use crate::stats::{CoreStats, add, render_prometheus, sub};

/// The epoll token of the core's waker.
const WAKER_TOKEN: u64 = u64::MAX;
/// The epoll token of the core's write set (nested in its readiness set).
const WRITE_SET_TOKEN: u64 = u64::MAX - 1;
/// The epoll token of the core's listener.
const LISTENER_TOKEN: u64 = u64::MAX - 2;
/// Most connections accepted in one turn; the listener is level-triggered, so the rest wait for the next turn
/// behind the connections already ready.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after the process ran out of descriptors or memory (at least until the next sweep).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Most buffers handed to one writev.
const MAX_IOVECS: usize = 1024;
/// Most client IPs one core tracks for the per-IP limits; connections from further IPs are not limited per IP
/// until idle entries are evicted by the sweep.
const MAX_TRACKED_IPS: usize = 1 << 18;

/// One client IP's per-core limit state.
struct IpEntry {
    ip: std::net::IpAddr,
    /// Connections from this IP open on this core.
    open: u32,
    /// Token bucket of new connections per second.
    tokens: u32,
    tick: Tick,
}

/// What every core shares, read-only.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) stats: Arc<[Arc<CoreStats>]>,
    pub(crate) shutdown: AtomicBool,
    /// Verifies client tokens when authentication is configured.
    pub(crate) verifier: Option<crate::auth::Verifier>,
    /// The Redis bridge's state (multi-node mode): readiness and its `/metrics` block.
    pub(crate) bridge: Option<Arc<crate::bridge::BridgeStats>>,
}

/// Timer lengths converted once to ticks.
struct Timers {
    sse_keepalive: Tick,
    handshake: Tick,
    ping: Tick,
    idle: Tick,
    close: Tick,
    drain: Tick,
}

/// The state one core owns.
pub(crate) struct Core {
    shared: Arc<Shared>,
    stats: Arc<CoreStats>,
    conns: Slab<Conn>,
    epoll: Epoll,
    /// Connections with unsent output, waiting to be writable; registered in `epoll` as one member.
    write_set: Epoll,
    waker: Arc<Waker>,
    read_buf: Box<[u8]>,
    /// Replies staged for the connection being served.
    wbuf: Vec<u8>,
    /// End offset in `wbuf` of each staged frame and whether it is a control frame (or HTTP response).
    marks: Vec<(usize, bool)>,
    events: Vec<libc::epoll_event>,
    sweep_keys: Vec<usize>,
    decoder_config: DecoderConfig,
    limits: HeadLimits,
    timers: Timers,
    start: Instant,
    now: Tick,
    /// Set once shutdown has begun: the tick at which remaining connections are cut.
    drain_deadline: Option<Tick>,
    finished: bool,
    /// The listening socket (non-blocking, in `epoll` under [`LISTENER_TOKEN`]); closed when shutdown begins.
    listener: Option<OwnedFd>,
    /// Accepting paused after `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` (the listener left `epoll`) until this instant;
    /// the sweep puts it back.
    accept_paused: Option<Instant>,
    last_accept_warn: Option<Instant>,
    /// Whether accepted sockets inherit `TCP_NODELAY` from the listener (Linux does): unknown until the first
    /// accept checks, then each connection is spared a `setsockopt`, or gets one if not.
    nodelay_inherited: Option<bool>,
    /// This core's index.
    id: usize,
    mesh: Arc<Mesh>,
    inbox: crossbeam_channel::Receiver<CoreMsg>,
    outbox: Outbox,
    /// Messages this core sends itself, handled in the same turn.
    local_msgs: std::collections::VecDeque<CoreMsg>,
    /// A channel was full at the end of the last turn: retry at the next turn or sweep.
    outbox_waiting: bool,
    topics: Topics,
    /// Shared output staged this turn: (connection key, control, conflation slot, bytes).
    staged: Vec<(u32, bool, u32, Bytes)>,
    /// Topics whose live messages of this turn wait in their `LocalTopic::batch` (see `pubsub::flush_batches`).
    batched: Vec<Arc<str>>,
    /// Reused list of one subscriber's frames while a batch is written.
    batch_group: Vec<(u32, bool, u32, Bytes)>,
    /// The core's io_uring for batched fan-out sends (io_uring driver and `Config::batch_sends` only).
    send_ring: Option<crate::sendring::SendRing<SendTag>>,
    /// Reused list of a send batch's results.
    send_done: Vec<crate::sendring::SendOp<SendTag>>,
    /// A finished pass's joined-frames buffer, kept for the next pass when no queue still holds a slice of it.
    spare_joined: Option<bytes::BytesMut>,
    /// A finished pass's frame-end offsets, kept for the next pass.
    spare_ends: Vec<Vec<usize>>,
    /// Topic batches being written to their subscribers, a slice per turn (see `pubsub::flush_batches`), oldest
    /// first.
    passes: std::collections::VecDeque<pubsub::Pass>,
    /// Connections with newly queued output.
    dirty: Vec<usize>,
    /// Connections whose waiting HTTP request was answered this turn and may have pipelined requests behind it.
    resume_http: Vec<usize>,
    next_serial: u32,
    /// Per-IP limit state, indexed by `Conn::ip_slot` (only when a per-IP limit is configured).
    ip_entries: Slab<IpEntry>,
    ip_index: std::collections::HashMap<std::net::IpAddr, u32>,
    /// Authenticated WebSocket and SSE connections of each user on this core: (key, serial).
    pub(crate) users: std::collections::HashMap<Arc<str>, Vec<(u32, u32)>>,
}

/// A batched fan-out send's connection (key and serial) and whether it carries a pass's joined frames (else one
/// shared frame).
pub(crate) type SendTag = (u32, u32, bool);

enum Next {
    /// Parse the next pipelined request.
    Continue,
    /// Stop reading requests on this connection (upgrade done, or closing).
    Stop,
    /// The answer comes later from another core (poll, publish).
    Wait,
}

fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Core {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: usize,
        waker: Arc<Waker>,
        mesh: Arc<Mesh>,
        inbox: crossbeam_channel::Receiver<CoreMsg>,
        uring: bool,
    ) -> io::Result<Self> {
        let c = &shared.config;
        let send_ring = if uring && c.batch_sends {
            crate::sendring::SendRing::new()
        } else {
            None
        };
        let epoll = Epoll::new()?;
        epoll.add(waker.raw_fd(), READ, WAKER_TOKEN)?;
        let write_set = Epoll::new()?;
        epoll.add(write_set.raw_fd(), READ, WRITE_SET_TOKEN)?;
        let decoder_config = DecoderConfig {
            max_message_size: c.max_message_size,
            max_frame_size: c.max_frame_size,
        };
        let limits = HeadLimits {
            max_head_bytes: c.max_head_bytes,
            max_headers: c.max_headers,
        };
        let timers = Timers {
            sse_keepalive: ticks(c.sse_keepalive),
            handshake: ticks(c.handshake_timeout),
            ping: ticks(c.ping_interval),
            idle: ticks(c.idle_timeout),
            close: ticks(c.close_timeout),
            drain: ticks(c.drain_timeout),
        };
        let stats = shared.stats[id].clone();
        let outbox = Outbox::new(mesh.cores(), c.outbox_limit);
        Ok(Core {
            read_buf: vec![0u8; c.read_buffer_size].into_boxed_slice(),
            wbuf: Vec::with_capacity(64 * 1024),
            marks: Vec::with_capacity(64),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; c.events_per_wake],
            sweep_keys: Vec::new(),
            conns: Slab::new(),
            shared,
            stats,
            epoll,
            write_set,
            waker,
            decoder_config,
            limits,
            timers,
            start: Instant::now(),
            now: 0,
            drain_deadline: None,
            finished: false,
            listener: None,
            accept_paused: None,
            last_accept_warn: None,
            nodelay_inherited: None,
            id,
            outbox,
            mesh,
            inbox,
            local_msgs: std::collections::VecDeque::new(),
            outbox_waiting: false,
            topics: Topics::new(),
            staged: Vec::new(),
            batched: Vec::new(),
            batch_group: Vec::new(),
            send_ring,
            send_done: Vec::new(),
            spare_joined: None,
            spare_ends: Vec::new(),
            passes: std::collections::VecDeque::new(),
            dirty: Vec::new(),
            resume_http: Vec::new(),
            next_serial: 0,
            ip_entries: Slab::new(),
            ip_index: std::collections::HashMap::new(),
            users: std::collections::HashMap::new(),
        })
    }

    /// Advances the coarse clock; returns the instant it read, for timing the turn.
    fn update_clock(&mut self) -> Instant {
        let now = Instant::now();
        let ms = now.duration_since(self.start).as_millis() as u64;
        self.now = (ms / (1000 / crate::conn::TICKS_PER_SEC)) as Tick;
        now
    }

    /// Bytes this core may hand to the kernel per turn for fan-out passes, and again for backlogs.
    pub(crate) fn write_budget(&self) -> u64 {
        match self.shared.config.turn_write_budget {
            0 => u64::MAX,
            n => n as u64,
        }
    }

    /// How often the sweep runs: a quarter of the shortest timer, between 100 ms and 1 s.
    pub(crate) fn sweep_interval(&self) -> Duration {
        let c = &self.shared.config;
        let shortest = c
            .handshake_timeout
            .min(c.ping_interval)
            .min(c.close_timeout)
            .min(c.drain_timeout);
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Accepts what the listener has waiting, up to [`ACCEPT_BATCH`]: `accept4` hands each socket over
    /// non-blocking and close-on-exec, so registering it costs no further syscall (and none for `TCP_NODELAY`,
    /// inherited from the listener; see `nodelay_inherited`). The peer address is fetched only for per-IP limits.
    fn accept_ready(&mut self) {
        let Some(listen_fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        let want_peer = {
            let c = &self.shared.config;
            c.ip_connect_rate > 0 || c.max_connections_per_ip > 0
        };
        for _ in 0..ACCEPT_BATCH {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let (addr_ptr, len_ptr) = if want_peer {
                (
                    (&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr>(),
                    &mut len as *mut libc::socklen_t,
                )
            } else {
                (std::ptr::null_mut(), std::ptr::null_mut())
            };
            // SAFETY: `addr_ptr`/`len_ptr` are both null, or point at a sockaddr_storage and its length, valid and
            // exclusively borrowed for the call.
            let fd = unsafe {
                libc::accept4(
                    listen_fd,
                    addr_ptr,
                    len_ptr,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    // The peer gave up before we took it, or a signal: try the next one.
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        // Out of descriptors or memory: the level-triggered listener would report the same
                        // connection again at once, so it leaves the set until the backoff has passed.
                        self.pause_accepting(&e);
                        return;
                    }
                    _ => {
                        self.warn_accept(&e);
                        return;
                    }
                }
            }
            if self.nodelay_inherited.is_none() {
                self.nodelay_inherited = Some(nodelay_set(fd));
            }
            if self.nodelay_inherited == Some(false) && set_nodelay(fd).is_err() {
                close_fd(fd);
                continue;
            }
            let peer = if want_peer { sockaddr_ip(&addr) } else { None };
            self.register(fd, peer);
        }
    }

    fn warn_accept(&mut self, e: &io::Error) {
        if self
            .last_accept_warn
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            tracing::warn!(error = %e, "accept failed");
            self.last_accept_warn = Some(Instant::now());
        }
    }

    fn pause_accepting(&mut self, e: &io::Error) {
        self.warn_accept(e);
        add(&self.stats.accept_pauses, 1);
        if let Some(l) = &self.listener
            && self.epoll.delete(l.as_raw_fd()).is_ok()
        {
            self.accept_paused = Some(Instant::now() + ACCEPT_BACKOFF);
        }
    }

    /// Puts the listener back in the readiness set once an accept pause is over (called by the sweep).
    fn resume_accepting(&mut self) {
        if let Some(until) = self.accept_paused
            && Instant::now() >= until
        {
            self.accept_paused = None;
            if let Some(l) = &self.listener
                && let Err(e) = self
                    .epoll
                    .add(l.as_raw_fd(), libc::EPOLLIN as u32, LISTENER_TOKEN)
            {
                tracing::error!(error = %e, "cannot resume accepting");
            }
        }
    }

    /// Takes ownership of an accepted socket (already non-blocking, with `TCP_NODELAY` where it is TCP) and parks
    /// it in the readiness set.
    pub(crate) fn register(&mut self, fd: RawFd, peer: Option<std::net::IpAddr>) {
        if self.drain_deadline.is_some() {
            close_fd(fd);
            return;
        }
        let limit = self.shared.config.max_connections_per_core;
        // Over the limit a connection is still read, to answer 503; far over it, it is closed at once.
        if self.conns.len() >= limit.saturating_add(limit / 8).saturating_add(64) {
            add(&self.stats.connections_rejected, 1);
            close_fd(fd);
            return;
        }
        set_send_buffer(fd, self.shared.config.send_buffer);
        self.update_clock();
        let reject = self.conns.len() >= limit;
        let key = self.conns.vacant_key();
        if let Err(e) = self.epoll.add(fd, READ, key as u64) {
            tracing::warn!(error = %e, "epoll registration failed");
            close_fd(fd);
            return;
        }
        let (ip_slot, limited) = match peer {
            Some(ip) => self.admit_ip(ip),
            None => (NO_IP_SLOT, false),
        };
        let mut flags = if reject { REJECT } else { 0 };
        if limited {
            flags |= IP_LIMITED;
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        debug_assert_eq!(entry.key(), key);
        entry.insert(Conn {
            fd,
            serial: self.next_serial,
            state: State::Http,
            route: Route::Echo,
            flags,
            last_heard: self.now,
            deadline: self.now.wrapping_add(self.timers.handshake),
            decoder: Decoder::new(self.decoder_config),
            rate_tokens: self.shared.config.ws_rate_limit,
            rate_tick: self.now,
            ip_slot,
            head: Vec::new(),
            out: None,
            ext: None,
        });
        add(&self.stats.connections_open, 1);
        add(&self.stats.connections_accepted, 1);
    }

    /// Counts a new connection from `ip` against the per-IP limits: its table slot, and whether it is over a limit
    /// (it is then answered 429). No tracking without per-IP limits.
    fn admit_ip(&mut self, ip: std::net::IpAddr) -> (u32, bool) {
        let c = &self.shared.config;
        let (rate, max_open) = (c.ip_connect_rate, c.max_connections_per_ip);
        if rate == 0 && max_open == 0 {
            return (NO_IP_SLOT, false);
        }
        let slot = match self.ip_index.get(&ip) {
            Some(&s) => s,
            None => {
                if self.ip_entries.len() >= MAX_TRACKED_IPS {
                    return (NO_IP_SLOT, false);
                }
                let s = self.ip_entries.insert(IpEntry {
                    ip,
                    open: 0,
                    tokens: rate,
                    tick: self.now,
                }) as u32;
                self.ip_index.insert(ip, s);
                s
            }
        };
        let e = &mut self.ip_entries[slot as usize];
        e.open += 1;
        let mut limited = max_open != 0 && e.open > max_open;
        if rate != 0 {
            let elapsed = u64::from(self.now.wrapping_sub(e.tick));
            if elapsed > 0 {
                let refill = elapsed * u64::from(rate) / crate::conn::TICKS_PER_SEC;
                if refill > 0 {
                    e.tokens = (u64::from(e.tokens) + refill).min(u64::from(rate)) as u32;
                    e.tick = self.now;
                }
            }
            if e.tokens == 0 {
                limited = true;
            } else if !limited {
                e.tokens -= 1;
            }
        }
        (slot, limited)
    }

    /// Evicts per-IP entries with no open connection and a full bucket (called by the sweep).
    fn evict_idle_ips(&mut self) {
        let rate = self.shared.config.ip_connect_rate;
        let now = self.now;
        let index = &mut self.ip_index;
        self.ip_entries.retain(|_, e| {
            let full = rate == 0
                || u64::from(now.wrapping_sub(e.tick)) * u64::from(rate)
                    / crate::conn::TICKS_PER_SEC
                    + u64::from(e.tokens)
                    >= u64::from(rate);
            let keep = e.open > 0 || !full;
            if !keep {
                index.remove(&e.ip);
            }
            keep
        });
    }

    /// Takes one publish from the connection's publish bucket; false when it is empty (or the rate is off: true).
    fn take_publish_token(&mut self, key: usize) -> bool {
        let rate = self.shared.config.publish_rate_limit;
        if rate == 0 {
            return true;
        }
        let now = self.now;
        let ext = self.conns[key].ext.get_or_insert_with(Box::default);
        let (tokens, tick) = ext.publish_bucket.get_or_insert((rate, now));
        let elapsed = u64::from(now.wrapping_sub(*tick));
        let refill = elapsed * u64::from(rate) / crate::conn::TICKS_PER_SEC;
        if refill > 0 {
            *tokens = (u64::from(*tokens) + refill).min(u64::from(rate)) as u32;
            *tick = now;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    /// Closes a WebSocket with 1008 for going over a limit.
    pub(crate) fn close_over_limit(&mut self, key: usize, reason: &str) {
        add(&self.stats.limit_rejected, 1);
        self.stats.protocol_error(CloseCode::POLICY_VIOLATION.0);
        self.stage_close(CloseCode::POLICY_VIOLATION, reason);
        let conn = &mut self.conns[key];
        conn.state = State::Closing;
        conn.flags |= ERRORED;
        conn.deadline = self.now.wrapping_add(self.timers.close);
    }

    /// Stages a 429 with `Retry-After`.
    fn too_many(&mut self, message: &str, cors: Option<&str>, keep_alive: bool) {
        add(&self.stats.limit_rejected, 1);
        self.error_response_with(429, message, cors, keep_alive, &[("retry-after", b"1")]);
    }

    /// Serves every ready connection once. Called by the readiness loop after the epoll descriptor turned readable.
    pub(crate) fn turn(&mut self) {
        let began = self.update_clock();
        let mut events = std::mem::take(&mut self.events);
        let n = match self.epoll.poll_now(&mut events) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait failed");
                0
            }
        };
        // What arrived first (requests, new connections' first bytes, publishes, closes), then the backlogs: a
        // connection waiting to write is in the write set, reported here as one event.
        let mut writable = false;
        for ev in &events[..n] {
            let token = ev.u64;
            if token == WAKER_TOKEN {
                self.waker.clear();
                if self.shared.shutdown.load(Ordering::Acquire) {
                    self.begin_shutdown();
                }
                continue;
            }
            if token == WRITE_SET_TOKEN {
                writable = true;
                continue;
            }
            if token == LISTENER_TOKEN {
                self.accept_ready();
                continue;
            }
            let key = token as usize;
            if self.conns.contains(key) {
                self.on_readable(key);
            }
        }
        if writable {
            let n = match self.write_set.poll_now(&mut events) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait (write set) failed");
                    0
                }
            };
            // Backlogs get at most the turn's write budget; the write set is level-triggered, so whoever is left
            // is reported again in the next turn.
            let out0 = self.stats.bytes_out();
            let limit = self.write_budget();
            for ev in &events[..n] {
                if self.stats.bytes_out() - out0 >= limit {
                    break;
                }
                let key = ev.u64 as usize;
                if self.conns.contains(key) {
                    self.flush(key);
                }
            }
        }
        self.events = events;
        self.end_turn();
        self.check_finished();
        self.stats
            .record_turn(began.elapsed().as_micros().min(u64::MAX as u128) as u64);
    }

    fn on_readable(&mut self, key: usize) {
        let fd = self.conns[key].fd;
        let mut buf = std::mem::take(&mut self.read_buf);
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes for the duration of the call.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.read_buf = buf;
            if !is_would_block(&e) && e.kind() != io::ErrorKind::Interrupted {
                self.close(key);
            }
            return;
        }
        let n = r as usize;
        if n == 0 {
            self.read_buf = buf;
            self.close(key);
            return;
        }
        add(&self.stats.bytes_in, n as u64);
        let conn = &mut self.conns[key];
        conn.last_heard = self.now;
        conn.flags &= !PING_OUT;
        match conn.state {
            State::Http => self.on_http(key, &mut buf[..n]),
            State::Ws => self.on_ws(key, &mut buf[..n]),
            State::Closing => self.on_closing(key, &mut buf[..n]),
            // An EventSource sends nothing after its request; bytes here are ignored.
            State::Sse => {}
            State::Waiting => {
                // Requests pipelined behind a poll or publish wait until it is answered (bounded like a head).
                let conn = &mut self.conns[key];
                if conn.head.len() + n
                    > self.limits.max_head_bytes + self.shared.config.max_message_size
                {
                    self.close(key);
                    self.read_buf = buf;
                    return;
                }
                conn.head.extend_from_slice(&buf[..n]);
            }
        }
        self.read_buf = buf;
        if self.conns.contains(key) {
            self.finish_output(key);
        }
    }

    /// Records the end of a staged frame.
    fn mark(&mut self, control: bool) {
        self.marks.push((self.wbuf.len(), control));
    }

    fn stage_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        encode_server_frame(&mut self.wbuf, true, opcode, payload);
        self.mark(opcode.is_control());
        add(&self.stats.frames_out, 1);
    }

    fn stage_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = [0u8; 125];
        let n = encode_close_payload(code, reason, &mut payload);
        self.stage_frame(OpCode::Close, &payload[..n]);
    }

    /// Decodes and answers WebSocket bytes.
    fn on_ws(&mut self, key: usize, data: &mut [u8]) {
        // The decoder is taken out for the loop so that decoded messages (which may borrow its buffer) can be
        // handed to methods of the core; it goes back before returning.
        let placeholder = Decoder::new(self.decoder_config);
        let mut decoder = std::mem::replace(&mut self.conns[key].decoder, placeholder);
        let route = self.conns[key].route;
        let mut pos = 0;
        while pos < data.len() || pos == 0 {
            match decoder.decode(&mut data[pos..]) {
                Ok((_, None)) => break,
                Ok((n, Some(msg))) => {
                    pos += n;
                    add(&self.stats.frames_in, 1);
                    match msg {
                        _ if route == Route::PubSub && !self.take_rate_token(key) => {
                            add(&self.stats.rate_limited, 1);
                            self.stats.protocol_error(CloseCode::POLICY_VIOLATION.0);
                            self.stage_close(CloseCode::POLICY_VIOLATION, "rate limit exceeded");
                            let conn = &mut self.conns[key];
                            conn.state = State::Closing;
                            conn.flags |= ERRORED;
                            conn.deadline = self.now.wrapping_add(self.timers.close);
                            break;
                        }
                        Message::Text(t) if route == Route::PubSub => {
                            self.on_pubsub_text(key, t);
                            if self.conns[key].state == State::Closing {
                                break; // closed over a limit: nothing more is read
                            }
                        }
                        Message::Binary(_) if route == Route::PubSub => {
                            let mut reply = Vec::new();
                            ringcast_protocol::pubsub::write_error(
                                &mut reply,
                                None,
                                "binary_unsupported",
                                "the pub/sub protocol uses JSON text frames",
                            );
                            encode_server_frame(&mut self.wbuf, true, OpCode::Text, &reply);
                            self.marks.push((self.wbuf.len(), false));
                            add(&self.stats.frames_out, 1);
                        }
                        Message::Text(t) => {
                            encode_server_frame(&mut self.wbuf, true, OpCode::Text, t.as_bytes());
                            self.marks.push((self.wbuf.len(), false));
                            add(&self.stats.frames_out, 1);
                        }
                        Message::Binary(b) => {
                            encode_server_frame(&mut self.wbuf, true, OpCode::Binary, b);
                            self.marks.push((self.wbuf.len(), false));
                            add(&self.stats.frames_out, 1);
                        }
                        Message::Ping(p) => {
                            encode_server_frame(&mut self.wbuf, true, OpCode::Pong, p);
                            self.marks.push((self.wbuf.len(), true));
                            add(&self.stats.frames_out, 1);
                        }
                        Message::Pong(_) => {}
                        Message::Close(frame) => {
                            // Echo the peer's code (RFC 6455 §5.5.1), then close the TCP connection first.
                            let mut payload = [0u8; 125];
                            let len = match frame {
                                Some(f) => encode_close_payload(f.code, "", &mut payload),
                                None => 0,
                            };
                            encode_server_frame(
                                &mut self.wbuf,
                                true,
                                OpCode::Close,
                                &payload[..len],
                            );
                            self.marks.push((self.wbuf.len(), true));
                            add(&self.stats.frames_out, 1);
                            let conn = &mut self.conns[key];
                            conn.state = State::Closing;
                            conn.flags |= CLOSE_ON_FLUSH;
                            conn.deadline = self.now.wrapping_add(self.timers.close);
                            break;
                        }
                    }
                }
                Err(e) => {
                    let code = e.close_code();
                    self.stats.protocol_error(code.0);
                    self.stage_close(code, "");
                    let conn = &mut self.conns[key];
                    conn.state = State::Closing;
                    conn.flags |= ERRORED;
                    conn.deadline = self.now.wrapping_add(self.timers.close);
                    break;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.decoder = decoder;
        }
    }

    /// Takes one message from the connection's rate bucket (refilled by elapsed time); false when it is empty.
    fn take_rate_token(&mut self, key: usize) -> bool {
        let rate = self.shared.config.ws_rate_limit;
        if rate == 0 {
            return true;
        }
        let conn = &mut self.conns[key];
        let elapsed = u64::from(self.now.wrapping_sub(conn.rate_tick));
        if elapsed > 0 {
            let refill = elapsed * u64::from(rate) / crate::conn::TICKS_PER_SEC;
            conn.rate_tokens = (u64::from(conn.rate_tokens) + refill).min(u64::from(rate)) as u32;
            conn.rate_tick = self.now;
        }
        if conn.rate_tokens == 0 {
            return false;
        }
        conn.rate_tokens -= 1;
        true
    }

    /// Bytes that arrive after our close frame was queued.
    fn on_closing(&mut self, key: usize, data: &mut [u8]) {
        if self.conns[key].has(ERRORED) {
            // Nothing more is decoded after a protocol error: what still arrives is discarded until the peer's EOF
            // (our side was shut down once the close frame left) or the close deadline.
            return;
        }
        let mut pos = 0;
        loop {
            let conn = &mut self.conns[key];
            match conn.decoder.decode(&mut data[pos..]) {
                Ok((_, None)) => return,
                Ok((_, Some(Message::Close(_)))) => {
                    // Both closes seen: the server closes the TCP connection first.
                    conn.flags |= CLOSE_ON_FLUSH;
                    return;
                }
                Ok((n, Some(_))) => pos += n,
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns.try_remove(key) {
            close_fd(conn.fd);
            sub(&self.stats.connections_open, 1);
            if conn.has(WANT_WRITE) {
                sub(&self.stats.backlogged, 1);
            }
            if let Some(e) = self.ip_entries.get_mut(conn.ip_slot as usize) {
                e.open = e.open.saturating_sub(1);
            }
            self.forget_subscriptions(key, conn.serial, conn.ext);
        }
    }

    /// Enforces every deadline: handshake, heartbeat, idle, close, drain.
    pub(crate) fn sweep(&mut self) {
        let began = self.update_clock();
        self.resume_accepting();
        let now = self.now;
        if let Some(deadline) = self.drain_deadline
            && tick_reached(now, deadline)
        {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.close(k);
            }
            self.check_finished();
            return;
        }
        let mut keys = std::mem::take(&mut self.sweep_keys);
        keys.clear();
        for (k, c) in self.conns.iter() {
            let due = match c.state {
                State::Http | State::Closing | State::Waiting => tick_reached(now, c.deadline),
                State::Sse => {
                    now.wrapping_sub(c.last_heard) >= self.timers.sse_keepalive
                        || token_expired(c, now)
                }
                State::Ws => {
                    let silent = now.wrapping_sub(c.last_heard);
                    silent >= self.timers.idle
                        || (silent >= self.timers.ping && !c.has(PING_OUT))
                        || token_expired(c, now)
                }
            };
            if due {
                keys.push(k);
            }
        }
        for &k in &keys {
            let c = &mut self.conns[k];
            match c.state {
                State::Http => {
                    add(&self.stats.handshake_timeouts, 1);
                    self.close(k);
                }
                State::Closing => self.close(k),
                State::Sse if token_expired(c, now) => {
                    // The stream just ends; the client reconnects with a fresh token.
                    add(&self.stats.auth_expired, 1);
                    self.close(k);
                }
                State::Ws if token_expired(c, now) => {
                    add(&self.stats.auth_expired, 1);
                    self.stats.protocol_error(CloseCode::POLICY_VIOLATION.0);
                    c.state = State::Closing;
                    c.deadline = now.wrapping_add(self.timers.close);
                    if let Some(e) = c.ext.as_mut() {
                        e.expires = None;
                    }
                    self.stage_close(CloseCode::POLICY_VIOLATION, "token expired");
                    self.finish_output(k);
                }
                State::Sse => {
                    c.last_heard = now;
                    self.stage_shared(k, Bytes::from_static(b": keep-alive\n\n"), true, 0);
                }
                State::Waiting => {
                    // The owner core did not answer in time (it normally answers a long poll at its deadline).
                    let waiting = c.ext.as_mut().and_then(|e| e.waiting.take()).map(|w| *w);
                    let (status, body, cors, keep_alive): (u16, Vec<u8>, _, bool) = match waiting {
                        Some(Waiting::Poll {
                            topic,
                            since,
                            cors,
                            keep_alive,
                        }) => {
                            let mut body = Vec::new();
                            ringcast_protocol::poll::write_topic_poll_body(
                                &mut body,
                                &topic,
                                std::iter::empty(),
                                since.unwrap_or(0),
                                false,
                            );
                            (200, body, cors, keep_alive)
                        }
                        Some(Waiting::Publish { cors, keep_alive }) => {
                            let body = br#"{"error":"Service Unavailable","message":"the topic's core did not answer in time"}"#;
                            (503, body.to_vec(), cors, keep_alive)
                        }
                        None => (503, b"{}".to_vec(), None, false),
                    };
                    self.finish_waiting(k, status, &body, cors.as_deref(), keep_alive);
                }
                State::Ws => {
                    if now.wrapping_sub(c.last_heard) >= self.timers.idle {
                        add(&self.stats.idle_timeouts, 1);
                        c.state = State::Closing;
                        c.deadline = now.wrapping_add(self.timers.close);
                        self.stage_close(CloseCode::GOING_AWAY, "idle timeout");
                    } else {
                        c.flags |= PING_OUT;
                        add(&self.stats.pings_sent, 1);
                        self.stage_frame(OpCode::Ping, b"");
                    }
                    self.finish_output(k);
                }
            }
        }
        self.sweep_keys = keys;
        if !self.ip_entries.is_empty() {
            self.evict_idle_ips();
        }
        self.owner_sweep(Instant::now());
        self.end_turn();
        self.check_finished();
        self.stats
            .record_turn(began.elapsed().as_micros().min(u64::MAX as u128) as u64);
    }

    /// Stops accepting, sends close 1001 to every WebSocket and closes plain HTTP connections.
    fn begin_shutdown(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.update_clock();
        self.drain_deadline = Some(self.now.wrapping_add(self.timers.drain));
        if let Some(fd) = self.listener.take() {
            // Refuse new connections now: closed here, synchronously, the socket leaves LISTEN state at once, so
            // SO_REUSEPORT hashes new connections to the listeners still open (or a new server's) rather than to a
            // dead backlog.
            let _ = self.epoll.delete(fd.as_raw_fd());
            drop(fd);
        }
        self.accept_paused = None;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            let c = &mut self.conns[k];
            match c.state {
                State::Http | State::Sse | State::Waiting => {
                    if c.out.is_none() {
                        self.close(k);
                    } else {
                        c.flags |= CLOSE_ON_FLUSH;
                    }
                }
                State::Ws => {
                    c.state = State::Closing;
                    c.deadline = self
                        .now
                        .wrapping_add(self.timers.close.min(self.timers.drain));
                    self.stage_close(CloseCode::GOING_AWAY, "server shutting down");
                    self.finish_output(k);
                }
                State::Closing => {}
            }
        }
        self.check_finished();
    }

    fn check_finished(&mut self) {
        if self.drain_deadline.is_some() && self.conns.is_empty() && !self.finished {
            self.finished = true;
            // Wake the readiness loop so it sees `finished` even if no socket event is pending.
            self.waker.wake();
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.finished
    }
}

/// A JSON answer with `Cache-Control: no-store` and, when `cors` is set, the CORS headers for that origin.
pub(crate) fn write_json_response(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    cors: Option<&str>,
    keep_alive: bool,
) {
    write_json_response_extra(out, status, body, cors, keep_alive, &[]);
}

/// [`write_json_response`] with extra headers.
pub(crate) fn write_json_response_extra(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    cors: Option<&str>,
    keep_alive: bool,
    extra: &[(&str, &[u8])],
) {
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("cache-control", b"no-store"),
    ];
    headers.extend_from_slice(extra);
    if let Some(o) = cors {
        headers.push(("access-control-allow-origin", o.as_bytes()));
        headers.push(("vary", b"Origin"));
    }
    write_response(out, status, &headers, body, keep_alive);
}

/// Has the connection's token expired at `now`?
fn token_expired(c: &Conn, now: Tick) -> bool {
    c.ext
        .as_ref()
        .and_then(|e| e.expires)
        .is_some_and(|t| tick_reached(now, t))
}

fn tick_reached(now: Tick, deadline: Tick) -> bool {
    (now.wrapping_sub(deadline) as i32) >= 0
}

fn close_fd(fd: RawFd) {
    // SAFETY: `fd` is a socket this core owns exclusively; it is removed from every table before this call.
    unsafe { libc::close(fd) };
}

/// Whether `TCP_NODELAY` is set on `fd` (false when unknown).
fn nodelay_set(fd: RawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: TCP_NODELAY writes one c_int and its length through valid, exclusively borrowed pointers.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

/// The IP address in `addr` (IPv4 or IPv6), if it is one.
fn sockaddr_ip(addr: &libc::sockaddr_storage) -> Option<std::net::IpAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and aligned enough for.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

/// Sets `TCP_NODELAY` on `fd`; a socket that is not TCP (the read-path tests' Unix sockets) needs nothing.
fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: TCP_NODELAY reads one c_int from a valid pointer of the given length.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Not a TCP socket (a Unix stream socket handed to a core by the read-path tests): nothing to disable.
        if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOPROTOOPT)) {
            return Err(e);
        }
    }
    Ok(())
}

/// Sets `SO_SNDBUF` to `bytes` (0: leave the kernel's autotuning). Best effort: a refusal leaves the default.
fn set_send_buffer(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: SO_SNDBUF reads one c_int from a valid pointer of the given length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Bytes waiting in the kernel's send buffer of `fd` (unsent plus unacknowledged; `SIOCOUTQ`), 0 when unknown.
pub(crate) fn kernel_queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) writes one c_int through the valid, exclusively borrowed pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r < 0 { 0 } else { n.max(0) as usize }
}

/// Runs one core until shutdown has drained it. Must be called inside a monoio runtime with timers enabled.
pub(crate) async fn run(core: Core, listener: StdListener) -> io::Result<()> {
    let interval = core.sweep_interval();
    // The readiness loop awaits a duplicate of the epoll descriptor through monoio, so io_uring (or the legacy
    // driver) tells us when any parked connection is ready; the original stays owned by `Epoll`.
    // SAFETY: dup of a descriptor we own; the result is a new descriptor handed to the wrapper below.
    let dup = unsafe { libc::dup(core.epoll.raw_fd()) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else. It is an epoll descriptor, not a socket: the
    // wrapper is used only to await readability (poll), never to send or receive.
    let std_dgram = unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(dup) };
    let epoll_wait = monoio::net::UnixDatagram::from_std(std_dgram)?;

    listener.set_nonblocking(true)?;
    let listener = OwnedFd::from(listener);
    core.epoll
        .add(listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER_TOKEN)?;
    let core = Rc::new(RefCell::new(core));
    core.borrow_mut().listener = Some(listener);

    // The helper task holds only a weak reference: monoio does not drop tasks still pending when `block_on`
    // returns, so a strong one would leak the core (its descriptors and its inbox, which then keeps accepting
    // `Publisher` messages after the server stopped instead of reporting `Stopped`).
    let timer_core = Rc::downgrade(&core);
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(interval).await;
            let Some(c) = timer_core.upgrade() else {
                break;
            };
            let mut c = c.borrow_mut();
            c.sweep();
            if c.finished() {
                break;
            }
        }
    });

    loop {
        epoll_wait.readable(false).await?;
        let mut c = core.borrow_mut();
        c.turn();
        if c.finished() {
            break;
        }
    }
    let _ = epoll_wait.as_raw_fd();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one connection from `listener` as `accept_ready` does; the socket and the peer's address.
    fn accept_one(listener: &StdListener) -> (OwnedFd, libc::sockaddr_storage) {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a listening socket we own, and a sockaddr_storage with its length, valid for the call.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
        (unsafe { OwnedFd::from_raw_fd(fd) }, ss)
    }

    #[test]
    fn accepted_sockets_get_nodelay_and_their_peer_address() {
        // The listener is made as `server::start` makes it; its TCP_NODELAY reaches accepted sockets (what
        // `accept_ready` relies on after checking the first one; else it calls `set_nodelay` for each).
        let listener = crate::server::bind_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (fd, ss) = accept_one(&listener);
        assert!(
            nodelay_set(fd.as_raw_fd()),
            "TCP_NODELAY set on the listener and passed on by the kernel"
        );
        assert_eq!(sockaddr_ip(&ss), Some(client.local_addr().unwrap().ip()));
        // The fallback for a kernel that would not pass it on.
        assert!(!nodelay_set(client.as_raw_fd()));
        set_nodelay(client.as_raw_fd()).unwrap();
        assert!(nodelay_set(client.as_raw_fd()));
        // An IPv6 peer, where the machine has IPv6 loopback.
        if let Ok(l6) = crate::server::bind_listener("[::1]:0".parse().unwrap(), 16) {
            let c6 = std::net::TcpStream::connect(l6.local_addr().unwrap()).unwrap();
            let (_fd6, ss6) = accept_one(&l6);
            assert_eq!(sockaddr_ip(&ss6), Some(c6.local_addr().unwrap().ip()));
        }
    }
}
