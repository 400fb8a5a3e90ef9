//! Topics on a core: the topics it owns (sequence numbers, history, which cores to deliver to, waiting long polls)
//! and its local subscribers (WebSocket and SSE connections), plus the handling of every cross-core message.
//!
//! Ownership: a topic belongs to core `topic_hash(name) % cores`. The owner alone numbers its messages, so all
//! subscribers on all cores see one order. A core with local subscribers of a topic asks the owner once
//! (`Subscribe`); the owner answers with the history the subscriber missed (`Replay`) and from then on sends every
//! message once to that core (`Deliver`). Channels between two cores are FIFO, so a replay is always followed by
//! exactly the messages after it: no gap, no duplicate. The subscriber core encodes each message once per transport
//! and hands the same `Bytes` to every local subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringcast_protocol::poll::write_topic_poll_body;
use ringcast_protocol::pubsub::{
    ClientOp, RequestId, write_ack, write_error, write_msg, write_publish_ok, write_reset,
    write_sse_msg, write_sse_reset,
};
use ringcast_protocol::ws::{OpCode, server_frame_bytes};
use smallvec::SmallVec;

use super::{Core, SendTag};
use crate::bus::{CoreMsg, Token};
use crate::config::topic_matches;
use crate::conn::{DIRTY, State};
use crate::history::History;
use crate::sendring::{self, SendRing};
use crate::stats::{add, sub};

mod direct;

/// Most bus messages handled in one turn before the loop lets sockets run (the rest wait for the next turn).
const MAX_MSGS_PER_TURN: usize = 65_536;

/// A topic this core owns.
pub(crate) struct OwnedTopic {
    last_seq: u64,
    history: History,
    /// Cores with at least one subscriber.
    cores: Vec<bool>,
    /// Long polls waiting for the next message.
    waiters: Vec<Waiter>,
}

struct Waiter {
    token: Token,
    limit: usize,
    until: Instant,
}

/// One local subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sub {
    key: u32,
    serial: u32,
    sse: bool,
}

/// A topic's batch on its way to the topic's subscribers, written `fanout_slice` subscribers per turn.
pub(crate) struct Pass {
    topic: Arc<str>,
    /// The messages, as in `LocalTopic::batch`.
    batch: Vec<(Option<Bytes>, Option<Bytes>)>,
    /// The topic's subscribers when the pass began (a join or an unsubscribe finishes or edits the topic's passes
    /// first, so this only differs from `LocalTopic::subs` by connections closed since).
    subs: Vec<Sub>,
    /// Subscribers `subs[..next]` have been written.
    next: usize,
    /// `subs` was all of the topic's subscribers when the pass began (not a part split off another pass), so a
    /// batch may join the pass while it waits.
    full: bool,
    /// The WebSocket frames of `batch` back to back, built when the pass starts (the batch no longer changes
    /// then) if it has two or more and some subscriber reads WebSocket: one `write` per subscriber instead of one
    /// iovec per message, and one queue entry (a shared slice, no copy) for a subscriber that is behind.
    joined: Bytes,
    /// End offset in `joined` of each WebSocket frame.
    joined_ends: Vec<usize>,
}

impl Pass {
    /// A pass of `batch` to `subs`, not begun; `ends` is a spare (empty) list for `joined_ends`.
    fn new(
        topic: Arc<str>,
        batch: Vec<(Option<Bytes>, Option<Bytes>)>,
        subs: Vec<Sub>,
        full: bool,
        ends: Vec<usize>,
    ) -> Pass {
        Pass {
            topic,
            batch,
            subs,
            next: 0,
            full,
            joined: Bytes::new(),
            joined_ends: ends,
        }
    }

    /// Adds messages for the subscribers not yet written; the frames are joined again, with them, when the pass
    /// (re)starts, and the old joined buffer becomes the spare when nothing else holds it.
    fn add(
        &mut self,
        more: impl Iterator<Item = (Option<Bytes>, Option<Bytes>)>,
        spare: &mut Option<BytesMut>,
    ) {
        self.batch.extend(more);
        self.joined_ends.clear();
        *spare = reclaim(spare.take(), std::mem::take(&mut self.joined));
    }
}

/// A topic with subscribers on this core.
pub(crate) struct LocalTopic {
    subs: Vec<Sub>,
    /// Subscribers in `subs` that read SSE (the others read WebSocket frames).
    sse_subs: u32,
    /// This turn's live messages, not yet handed to the subscribers: (WebSocket frame, SSE event), each encoded
    /// only when some subscriber needs that form. At the end of the turn they become a [`Pass`] (or join the topic's
    /// waiting one): one `writev` per subscriber for all of them, with no per-delivery entry. They are turned into per-delivery entries first (`materialize`) when a
    /// subscriber joins or a message needs per-subscriber handling (a gap, conflation), so a subscriber never gets
    /// a message batched before it joined (its replay has those) and every subscriber gets its messages in order.
    batch: Vec<(Option<Bytes>, Option<Bytes>)>,
    /// Subscribe requests sent to the owner and not yet answered.
    pending: u32,
    /// The last seq delivered here (0: none yet).
    last_seq: u64,
    conflate: bool,
    /// Tag of this topic's frames in output queues (for conflation).
    slot: u32,
    /// The topic's passes in the core's queue, with `caught_up`, hold each of its subscribers exactly once: a new
    /// batch then goes to each of them (see `flush_batches`).
    partitioned: bool,
    /// While `partitioned`: the subscribers of the topic's passes that finished while others were still queued
    /// (they wait for nothing).
    caught_up: Vec<Sub>,
}

/// What a connection waits for when its HTTP request is answered by another core.
pub(crate) enum Waiting {
    /// A long or short poll.
    Poll {
        topic: Arc<str>,
        since: Option<u64>,
        cors: Option<Box<str>>,
        keep_alive: bool,
    },
    /// An HTTP publish waiting for its sequence number.
    Publish {
        cors: Option<Box<str>>,
        keep_alive: bool,
    },
}

/// Rarely-needed connection state, boxed so idle echo connections do not pay for it.
#[derive(Default)]
pub(crate) struct ConnExt {
    /// Topics this connection subscribes to (or asked to); the first is stored inline, as most connections
    /// subscribe to one topic.
    pub(crate) topics: SmallVec<[Arc<str>; 1]>,
    /// The HTTP request waiting for another core's answer (boxed: rare, and large next to the rest).
    pub(crate) waiting: Option<Box<Waiting>>,
    /// The verified token of an authenticated WebSocket or SSE connection.
    pub(crate) identity: Option<Arc<crate::auth::Identity>>,
    /// The tick at which that token expires (the sweep closes the connection then).
    pub(crate) expires: Option<crate::conn::Tick>,
    /// Publish token bucket (tokens left, tick of the last refill), created on the first publish.
    pub(crate) publish_bucket: Option<(u32, crate::conn::Tick)>,
}

/// Per-core pub/sub state.
pub(crate) struct Topics {
    pub(crate) owned: HashMap<Arc<str>, OwnedTopic>,
    pub(crate) local: HashMap<Arc<str>, LocalTopic>,
    next_slot: u32,
}

impl Topics {
    pub(crate) fn new() -> Self {
        Topics {
            owned: HashMap::new(),
            local: HashMap::new(),
            next_slot: 1,
        }
    }
}

/// A finished server text frame carrying `json`.
pub(crate) fn ws_text(json: &[u8]) -> Bytes {
    server_frame_bytes(OpCode::Text, json)
}

fn json_bytes(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    f(&mut v);
    v
}

impl Core {
    /// The owner core of a topic.
    pub(super) fn owner_of(&self, topic: &str) -> usize {
        self.mesh.owner_of(topic)
    }

    /// A token naming connection `key` and the client's request id.
    pub(super) fn token(&self, key: usize, id: Option<RequestId<'_>>) -> Token {
        Token {
            core: self.id as u16,
            key: key as u32,
            serial: self.conns[key].serial,
            id: id.map(|i| Box::from(i.0)),
        }
    }

    /// Sends a message to a core (handled in this turn when the target is this core).
    pub(super) fn send(&mut self, target: usize, msg: CoreMsg) {
        if target == self.id {
            self.local_msgs.push_back(msg);
        } else {
            self.outbox.push(target, msg);
        }
    }

    /// The connection a token names, if it is still the same connection.
    pub(super) fn conn_of(&self, token: &Token) -> Option<usize> {
        let key = token.key as usize;
        match self.conns.get(key) {
            Some(c) if c.serial == token.serial && token.core as usize == self.id => Some(key),
            _ => None,
        }
    }

    /// Handles queued bus messages, then sends staged output and the outbox.
    pub(super) fn end_turn(&mut self) {
        let mut handled = 0;
        while handled < MAX_MSGS_PER_TURN {
            let msg = match self.local_msgs.pop_front() {
                Some(m) => m,
                None => match self.inbox.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            handled += 1;
            self.handle_msg(msg);
        }
        if handled == MAX_MSGS_PER_TURN {
            // More is waiting: come back after the sockets had their turn.
            self.waker.wake();
        }
        // Other cores get their share (deliveries, acknowledgements) before this core spends its time writing to
        // its own subscribers, so the cores fan out in parallel.
        self.outbox.flush(&self.mesh);
        self.flush_staged();
        self.flush_batches();
        self.outbox_waiting = self.outbox.flush(&self.mesh);
        add(&self.stats.bus_dropped, self.outbox.dropped);
        self.outbox.dropped = 0;
    }

    fn handle_msg(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Publish { topic, data, ack } => self.owner_publish(topic, data, ack),
            CoreMsg::PublishAck { token, topic, seq } => self.on_publish_ack(token, &topic, seq),
            CoreMsg::PublishFailed { token, topic } => self.on_publish_failed(token, &topic),
            CoreMsg::Subscribe {
                topic,
                token,
                since,
            } => self.owner_subscribe(topic, token, since),
            CoreMsg::Unsubscribe { topic, core } => {
                if let Some(t) = self.topics.owned.get_mut(&topic) {
                    t.cores[core as usize] = false;
                }
            }
            CoreMsg::Replay {
                topic,
                token,
                reset,
                entries,
                last_seq,
            } => self.on_replay(topic, token, reset, entries, last_seq),
            CoreMsg::Deliver { topic, seq, data } => self.deliver_local(&topic, seq, &data),
            CoreMsg::Direct { user, frame } => self.on_direct(&user, &frame),
            // Only the Redis bridge reads these.
            CoreMsg::DirectOut { .. } | CoreMsg::User { .. } => {}
            #[cfg(test)]
            CoreMsg::Adopt(fd) => {
                // The test's socket arrives blocking; accepted ones come non-blocking from `accept4`.
                let s = std::os::unix::net::UnixStream::from(fd);
                if s.set_nonblocking(true).is_ok() {
                    self.register(std::os::fd::IntoRawFd::into_raw_fd(s), None);
                }
            }
            CoreMsg::Fetch {
                topic,
                token,
                since,
                limit,
                wait_until,
            } => self.owner_fetch(topic, token, since, limit, wait_until),
            CoreMsg::Fetched {
                topic,
                token,
                reset,
                entries,
                next,
            } => self.on_fetched(&topic, token, reset, &entries, next),
        }
    }

    fn owned_topic(&mut self, topic: &Arc<str>) -> &mut OwnedTopic {
        let cores = self.mesh.cores();
        self.topics
            .owned
            .entry(topic.clone())
            .or_insert_with(|| OwnedTopic {
                last_seq: 0,
                history: History::default(),
                cores: vec![false; cores],
                waiters: Vec::new(),
            })
    }

    /// Owner: number, retain and fan a message out to every core with subscribers and every waiting poll.
    fn owner_publish(&mut self, topic: Arc<str>, data: Bytes, ack: Option<Token>) {
        let limits = self.shared.config.history;
        let now = Instant::now();
        let t = self.owned_topic(&topic);
        t.last_seq += 1;
        let seq = t.last_seq;
        t.history.push(&limits, seq, data.clone(), now);
        let targets: Vec<usize> = t
            .cores
            .iter()
            .enumerate()
            .filter(|(_, on)| **on)
            .map(|(i, _)| i)
            .collect();
        let waiters = std::mem::take(&mut t.waiters);
        add(&self.stats.messages_published, 1);
        for core in targets {
            self.send(
                core,
                CoreMsg::Deliver {
                    topic: topic.clone(),
                    seq,
                    data: data.clone(),
                },
            );
        }
        for w in waiters {
            let core = w.token.core as usize;
            let entries = if w.limit > 0 {
                vec![(seq, data.clone())]
            } else {
                Vec::new()
            };
            self.send(
                core,
                CoreMsg::Fetched {
                    topic: topic.clone(),
                    token: w.token,
                    reset: false,
                    entries,
                    next: seq,
                },
            );
        }
        if let Some(token) = ack {
            let core = token.core as usize;
            self.send(core, CoreMsg::PublishAck { token, topic, seq });
        }
    }

    /// Owner: register a subscribing core and send it the history after `since`.
    fn owner_subscribe(&mut self, topic: Arc<str>, token: Token, since: Option<u64>) {
        let limit = self.shared.config.history.max_messages;
        let t = self.owned_topic(&topic);
        let core = token.core as usize;
        t.cores[core] = true;
        let last_seq = t.last_seq;
        let (reset, entries) = match since {
            None => (None, Vec::new()),
            Some(since) => {
                let r = t.history.after(since, last_seq, limit.max(1));
                (
                    r.reset,
                    t.history
                        .entries(&r)
                        .map(|e| (e.seq, e.data.clone()))
                        .collect(),
                )
            }
        };
        self.send(
            core,
            CoreMsg::Replay {
                topic,
                token,
                reset,
                entries,
                last_seq,
            },
        );
    }

    /// Owner: answer a poll now, or hold it until the next message.
    fn owner_fetch(
        &mut self,
        topic: Arc<str>,
        token: Token,
        since: Option<u64>,
        limit: usize,
        wait: Option<Instant>,
    ) {
        let t = self.owned_topic(&topic);
        let last_seq = t.last_seq;
        let core = token.core as usize;
        match since {
            Some(since) if since != last_seq => {
                let r = t.history.after(since, last_seq, limit.max(1));
                let entries: Vec<(u64, Bytes)> = t
                    .history
                    .entries(&r)
                    .map(|e| (e.seq, e.data.clone()))
                    .collect();
                let next = entries.last().map_or(r.reset.unwrap_or(since), |e| e.0);
                let reset = r.reset.is_some();
                self.send(
                    core,
                    CoreMsg::Fetched {
                        topic,
                        token,
                        reset,
                        entries,
                        next,
                    },
                );
            }
            _ => match wait {
                Some(until) => t.waiters.push(Waiter {
                    token,
                    limit,
                    until,
                }),
                None => {
                    let next = since
                        .unwrap_or(last_seq)
                        .min(last_seq.max(since.unwrap_or(0)));
                    self.send(
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
            },
        }
    }

    /// Owner: answer long polls whose wait is over; trim histories by age.
    pub(super) fn owner_sweep(&mut self, now: Instant) {
        let limits = self.shared.config.history;
        let mut expired = Vec::new();
        for (name, t) in self.topics.owned.iter_mut() {
            t.history.expire(&limits, now);
            let last = t.last_seq;
            t.waiters.retain(|w| {
                if w.until <= now {
                    expired.push((name.clone(), w.token.clone(), last));
                    false
                } else {
                    true
                }
            });
        }
        for (topic, token, next) in expired {
            let core = token.core as usize;
            self.send(
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
    }

    /// Subscribes connection `key` to `topic` (asks the owner; the subscription starts when the replay arrives).
    pub(super) fn subscribe(
        &mut self,
        key: usize,
        topic: &str,
        since: Option<u64>,
        id: Option<RequestId<'_>>,
    ) {
        let ext = self.conns[key].ext.get_or_insert_with(Box::default);
        if ext.topics.iter().any(|t| &**t == topic) {
            // Already subscribed: acknowledge again, change nothing.
            if id.is_some() {
                let reply = json_bytes(|b| write_ack(b, id, None));
                self.stage_reply(key, &reply);
            }
            return;
        }
        let topic: Arc<str> = match self.topics.local.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(topic),
        };
        ext.topics.push(topic.clone());
        let conflate = self
            .shared
            .config
            .conflate
            .iter()
            .any(|p| topic_matches(p, &topic));
        let slot = self.topics.next_slot;
        let lt = self
            .topics
            .local
            .entry(topic.clone())
            .or_insert_with(|| LocalTopic {
                subs: Vec::new(),
                sse_subs: 0,
                batch: Vec::new(),
                pending: 0,
                last_seq: 0,
                conflate,
                slot,
                partitioned: false,
                caught_up: Vec::new(),
            });
        if lt.slot == slot {
            self.topics.next_slot = self.topics.next_slot.wrapping_add(1).max(1);
        }
        lt.pending += 1;
        let token = self.token(key, id);
        let owner = self.owner_of(&topic);
        self.send(
            owner,
            CoreMsg::Subscribe {
                topic,
                token,
                since,
            },
        );
    }

    /// Removes connection `key` from `topic`; tells the owner when the core has no subscriber left.
    pub(super) fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        let conn = &mut self.conns[key];
        let serial = conn.serial;
        let Some(ext) = conn.ext.as_mut() else {
            return false;
        };
        let Some(pos) = ext.topics.iter().position(|t| &**t == topic) else {
            return false;
        };
        let name = ext.topics.swap_remove(pos);
        // Not written to any more, so that a subscription again (with its replay) cannot get these twice.
        for p in self.passes.iter_mut().filter(|p| p.topic == name) {
            if let Some(i) = p
                .subs
                .iter()
                .position(|s| s.key == key as u32 && s.serial == serial)
            {
                p.subs.remove(i);
                if i < p.next {
                    p.next -= 1;
                }
            }
        }
        self.leave_local(&name, key as u32, serial);
        true
    }

    fn leave_local(&mut self, topic: &Arc<str>, key: u32, serial: u32) {
        // No `materialize` here: a connection that unsubscribes or closes need not get this turn's batched
        // messages, and the subscribers that stay get them at the end of the turn whatever the order of `subs`.
        let Some(lt) = self.topics.local.get_mut(topic) else {
            return;
        };
        if let Some(i) = lt
            .subs
            .iter()
            .position(|s| s.key == key && s.serial == serial)
        {
            let gone = lt.subs.swap_remove(i);
            lt.sse_subs = lt.sse_subs.saturating_sub(u32::from(gone.sse));
            sub(&self.stats.subscribers, 1);
        }
        lt.caught_up.retain(|s| s.key != key || s.serial != serial);
        self.drop_local_if_unused(topic);
    }

    fn drop_local_if_unused(&mut self, topic: &Arc<str>) {
        let unused = self
            .topics
            .local
            .get(topic)
            .is_some_and(|lt| lt.subs.is_empty() && lt.pending == 0);
        if unused {
            self.topics.local.remove(topic);
            let owner = self.owner_of(topic);
            self.send(
                owner,
                CoreMsg::Unsubscribe {
                    topic: topic.clone(),
                    core: self.id as u16,
                },
            );
        }
    }

    /// Cleans up a closing connection's subscriptions.
    pub(super) fn forget_subscriptions(
        &mut self,
        key: usize,
        serial: u32,
        ext: Option<Box<ConnExt>>,
    ) {
        let Some(ext) = ext else { return };
        if let Some(id) = &ext.identity
            && let Some(v) = self.users.get_mut(&id.user)
        {
            v.retain(|&(k, s)| (k, s) != (key as u32, serial));
            if v.is_empty() {
                self.users.remove(&id.user);
                self.tell_bridge_user(&id.user, false);
            }
        }
        for topic in ext.topics {
            self.leave_local(&topic, key as u32, serial);
        }
    }

    /// The owner's answer to a subscribe: history for this subscriber, then it joins the live fan-out.
    fn on_replay(
        &mut self,
        topic: Arc<str>,
        token: Token,
        reset: Option<u64>,
        entries: Vec<(u64, Bytes)>,
        last: u64,
    ) {
        self.materialize(&topic);
        let Some(lt) = self.topics.local.get_mut(&topic) else {
            return;
        };
        lt.pending = lt.pending.saturating_sub(1);
        // Messages delivered here before this replay are in it; later ones come after it, in order. The owner sends
        // this core every message before the replay, so a replay ahead of what the live subscribers here were sent
        // means they lost some (an outbox overflowed, or Redis came back empty and the topic jumped to a new epoch):
        // like a gap in `deliver_local`, they are told to resync.
        let prev = lt.last_seq;
        lt.last_seq = lt.last_seq.max(last);
        if prev != 0 && last > prev && !lt.subs.is_empty() {
            let subs: Vec<Sub> = lt.subs.clone();
            add(&self.stats.bus_gaps, 1);
            for s in subs {
                if self
                    .conns
                    .get(s.key as usize)
                    .is_none_or(|c| c.serial != s.serial)
                {
                    continue;
                }
                let frame = if s.sse {
                    let mut b = Vec::new();
                    let _ = write_sse_reset(&mut b, last);
                    Bytes::from(b)
                } else {
                    ws_text(&json_bytes(|b| write_reset(b, &topic, last)))
                };
                self.stage_shared(s.key as usize, frame, false, 0);
            }
        }
        let key = self.conn_of(&token);
        let wanted = key.is_some_and(|k| {
            self.conns[k].ext.as_ref().is_some_and(|e| {
                e.topics
                    .iter()
                    .any(|t| Arc::ptr_eq(t, &topic) || **t == *topic)
            })
        });
        let Some(key) = key.filter(|_| wanted) else {
            self.drop_local_if_unused(&topic);
            return;
        };
        let sse = self.conns[key].state == State::Sse;
        if !sse && token.id.is_some() {
            let reply = json_bytes(|b| write_ack(b, token.id.as_deref().map(RequestId), None));
            self.stage_reply(key, &reply);
        }
        // `sub`, `unsub`, `sub` before the owner answered sends two subscribe requests. The first answer makes the
        // connection a live subscriber; a later one only acknowledges its `sub`: its replay would repeat messages
        // already delivered, and a second entry would deliver every message twice and outlive the connection.
        let serial = self.conns[key].serial;
        let live = self.topics.local.get(&topic).is_some_and(|lt| {
            lt.subs
                .iter()
                .any(|s| s.key == key as u32 && s.serial == serial)
        });
        if live {
            return;
        }
        if let Some(m) = reset {
            let frame = if sse {
                let mut b = Vec::new();
                let _ = write_sse_reset(&mut b, m);
                Bytes::from(b)
            } else {
                ws_text(&json_bytes(|b| write_reset(b, &topic, m)))
            };
            self.stage_shared(key, frame, false, 0);
        }
        for (seq, data) in &entries {
            let frame = if sse {
                sse_msg(*seq, data)
            } else {
                ws_text(&json_bytes(|b| write_msg(b, &topic, *seq, data)))
            };
            self.stage_shared(key, frame, false, 0);
        }
        if let Some(lt) = self.topics.local.get_mut(&topic) {
            lt.subs.push(Sub {
                key: key as u32,
                serial,
                sse,
            });
            lt.sse_subs += u32::from(sse);
            add(&self.stats.subscribers, 1);
        }
    }

    /// One numbered message for this core's subscribers: encoded once per transport, shared by all.
    fn deliver_local(&mut self, topic: &Arc<str>, seq: u64, data: &Bytes) {
        let Some(lt) = self.topics.local.get_mut(topic) else {
            return;
        };
        if seq <= lt.last_seq {
            return; // already in a replay
        }
        let gap = lt.last_seq != 0 && seq > lt.last_seq + 1;
        lt.last_seq = seq;
        let (slot, conflate) = (lt.slot, lt.conflate);
        if !gap && !conflate {
            // The common case: one more message for the same subscribers, written at the end of the turn.
            let n = lt.subs.len();
            let sse_n = lt.sse_subs as usize;
            if n == 0 {
                return;
            }
            let ws = (sse_n < n).then(|| {
                let mut b = BytesMut::with_capacity(data.len() + topic.len() + 64);
                write_msg(&mut b, topic, seq, data);
                ws_text(&b)
            });
            let sse = (sse_n > 0).then(|| sse_msg(seq, data));
            if lt.batch.is_empty() {
                self.batched.push(topic.clone());
            }
            lt.batch.push((ws, sse));
            add(&self.stats.deliveries, n as u64);
            return;
        }
        // A gap or a conflated topic needs per-subscriber entries; what was batched before goes first.
        self.materialize(topic);
        let Some(lt) = self.topics.local.get_mut(topic) else {
            return;
        };
        let subs = std::mem::take(&mut lt.subs);
        let mut ws: Option<Bytes> = None;
        let mut sse: Option<Bytes> = None;
        if gap {
            // Messages were lost between cores (an outbox overflowed): tell subscribers to resync.
            add(&self.stats.bus_gaps, 1);
        }
        for s in &subs {
            let key = s.key as usize;
            if self.conns.get(key).is_none_or(|c| c.serial != s.serial) {
                continue;
            }
            if gap {
                let reset = if s.sse {
                    let mut b = Vec::new();
                    let _ = write_sse_reset(&mut b, seq - 1);
                    Bytes::from(b)
                } else {
                    ws_text(&json_bytes(|b| write_reset(b, topic, seq - 1)))
                };
                self.stage_shared(key, reset, false, 0);
            }
            let frame = if s.sse {
                sse.get_or_insert_with(|| sse_msg(seq, data)).clone()
            } else {
                ws.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(data.len() + topic.len() + 64);
                    write_msg(&mut b, topic, seq, data);
                    ws_text(&b)
                })
                .clone()
            };
            self.stage_shared(key, frame, false, if conflate { slot } else { 0 });
        }
        add(&self.stats.deliveries, subs.len() as u64);
        if let Some(lt) = self.topics.local.get_mut(topic) {
            let mut subs = subs;
            // Subscribers added while we delivered (none today: delivery does not subscribe) keep their place.
            subs.append(&mut lt.subs);
            lt.subs = subs;
        }
    }

    /// A WebSocket text frame on the pub/sub route.
    pub(super) fn on_pubsub_text(&mut self, key: usize, text: &str) {
        match ringcast_protocol::pubsub::parse_client_op(text) {
            Ok(ClientOp::Sub { topic, since, id }) => {
                if !self.permits(key, |p| p.may_subscribe(topic)) {
                    self.forbidden(
                        key,
                        id,
                        "the token does not allow subscribing to this topic",
                    );
                    return;
                }
                self.subscribe(key, topic, since, id)
            }
            Ok(ClientOp::Unsub { topic, id }) => {
                self.unsubscribe(key, topic);
                if id.is_some() {
                    let reply = json_bytes(|b| write_ack(b, id, None));
                    self.stage_reply(key, &reply);
                }
            }
            Ok(ClientOp::Pub { topic, data, id }) => {
                if !self.permits(key, |p| p.may_publish(topic)) {
                    self.forbidden(key, id, "the token does not allow publishing on this topic");
                    return;
                }
                if !self.take_publish_token(key) {
                    self.close_over_limit(key, "publish rate limit exceeded");
                    return;
                }
                let ack = id.map(|_| self.token(key, id));
                let owner = self.owner_of(topic);
                let topic: Arc<str> = match self.topics.local.get_key_value(topic) {
                    Some((k, _)) => k.clone(),
                    None => Arc::from(topic),
                };
                self.send(
                    owner,
                    CoreMsg::Publish {
                        topic,
                        data: Bytes::copy_from_slice(data.as_bytes()),
                        ack,
                    },
                );
            }
            Ok(ClientOp::Direct { user, data, id }) => self.direct(key, user, data, id),
            Err((id, e)) => {
                let reply = json_bytes(|b| write_error(b, id, e.code(), e.message()));
                self.stage_reply(key, &reply);
            }
        }
    }

    /// Does the connection's token allow an operation? Always, when authentication is off.
    fn permits(&self, key: usize, rule: impl Fn(&crate::auth::Identity) -> bool) -> bool {
        if self.shared.verifier.is_none() {
            return true;
        }
        self.conns[key]
            .ext
            .as_ref()
            .and_then(|e| e.identity.as_deref())
            .is_some_and(rule)
    }

    /// Refuses an operation the token does not allow: an error reply `forbidden`, the connection stays open.
    fn forbidden(&mut self, key: usize, id: Option<RequestId<'_>>, message: &str) {
        add(&self.stats.forbidden, 1);
        let reply = json_bytes(|b| write_error(b, id, "forbidden", message));
        self.stage_reply(key, &reply);
    }

    /// Takes the HTTP publish a connection waits on (its CORS origin and keep-alive), leaving any other kind of
    /// wait in place.
    pub(super) fn take_waiting_publish(&mut self, key: usize) -> Option<(Option<Box<str>>, bool)> {
        let ext = self.conns[key].ext.as_mut()?;
        match ext.waiting.as_deref() {
            Some(Waiting::Publish { .. }) => match ext.waiting.take().map(|w| *w) {
                Some(Waiting::Publish { cors, keep_alive }) => Some((cors, keep_alive)),
                _ => None,
            },
            _ => None,
        }
    }

    /// A reply for one WebSocket connection (ack or error), written in this turn.
    fn stage_reply(&mut self, key: usize, json: &[u8]) {
        self.stage_shared(key, ws_text(json), false, 0);
    }

    fn on_publish_ack(&mut self, token: Token, topic: &str, seq: u64) {
        let Some(key) = self.conn_of(&token) else {
            return;
        };
        match self.conns[key].state {
            State::Waiting => {
                let Some((cors, keep_alive)) = self.take_waiting_publish(key) else {
                    return;
                };
                let body = json_bytes(|b| write_publish_ok(b, topic, seq));
                self.finish_waiting(key, 200, &body, cors.as_deref(), keep_alive);
            }
            State::Ws => {
                let reply =
                    json_bytes(|b| write_ack(b, token.id.as_deref().map(RequestId), Some(seq)));
                self.stage_reply(key, &reply);
            }
            _ => {}
        }
    }

    fn on_fetched(
        &mut self,
        topic: &str,
        token: Token,
        reset: bool,
        entries: &[(u64, Bytes)],
        next: u64,
    ) {
        let Some(key) = self.conn_of(&token) else {
            return;
        };
        if self.conns[key].state != State::Waiting {
            return;
        }
        let (cors, keep_alive) = match self.conns[key]
            .ext
            .as_mut()
            .and_then(|e| e.waiting.take())
            .map(|w| *w)
        {
            Some(Waiting::Poll {
                cors, keep_alive, ..
            }) => (cors, keep_alive),
            other => {
                if let Some(e) = self.conns[key].ext.as_mut() {
                    e.waiting = other.map(Box::new);
                }
                return;
            }
        };
        let mut body =
            Vec::with_capacity(64 + entries.iter().map(|e| e.1.len() + 24).sum::<usize>());
        write_topic_poll_body(
            &mut body,
            topic,
            entries.iter().map(|(s, d)| (*s, &d[..])),
            next,
            reset,
        );
        self.finish_waiting(key, 200, &body, cors.as_deref(), keep_alive);
    }

    /// Answers a waiting HTTP request and returns the connection to reading requests (or closes it after the
    /// answer when the request asked so).
    pub(super) fn finish_waiting(
        &mut self,
        key: usize,
        status: u16,
        body: &[u8],
        cors: Option<&str>,
        keep_alive: bool,
    ) {
        let mut out = Vec::with_capacity(body.len() + 256);
        super::write_json_response(&mut out, status, body, cors, keep_alive);
        let conn = &mut self.conns[key];
        conn.state = State::Http;
        if !keep_alive {
            conn.flags |= crate::conn::CLOSE_ON_FLUSH;
        }
        conn.deadline = self.now.wrapping_add(self.timers.handshake);
        if let Some(e) = conn.ext.as_mut() {
            e.waiting = None;
        }
        self.stage_shared(key, Bytes::from(out), true, 0);
        self.resume_http.push(key);
    }

    /// Turns a topic's batched messages into per-subscriber staged entries (in order, behind whatever each
    /// subscriber already has staged), before a subscriber joins or a message needs per-subscriber work.
    fn materialize(&mut self, topic: &Arc<str>) {
        // Earlier turns' messages still on their way go out first, as they are.
        self.finish_passes(topic);
        let Some(lt) = self.topics.local.get_mut(topic) else {
            return;
        };
        if lt.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut lt.batch);
        let subs = lt.subs.clone();
        for (ws, sse) in &batch {
            for s in &subs {
                if self
                    .conns
                    .get(s.key as usize)
                    .is_none_or(|c| c.serial != s.serial)
                {
                    continue;
                }
                let frame = if s.sse { sse } else { ws };
                if let Some(f) = frame {
                    self.stage_shared(s.key as usize, f.clone(), false, 0);
                }
            }
        }
    }

    /// Hands every batched topic's messages of this turn to its subscribers: per subscriber one `writev` of all of
    /// them (what the kernel refuses is queued, as for staged output). Runs after `flush_staged`, so control answers
    /// and each subscriber's staged entries (replays, resets: all older than its batched messages) go first.
    ///
    /// A turn writes at most `fanout_slice` subscribers; a bigger fan-out goes on in the next turns (the core wakes
    /// itself), so one topic with many subscribers does not hold up the core's other sockets, a publisher's next
    /// message among them. Passes are written oldest first, so each subscriber gets a topic's messages in order; a
    /// batch whose topic already has a pass waiting to begin joins that pass.
    fn flush_batches(&mut self) {
        let topics = std::mem::take(&mut self.batched);
        for topic in &topics {
            let Some(lt) = self.topics.local.get_mut(topic) else {
                continue;
            };
            let batch = std::mem::take(&mut lt.batch);
            if batch.is_empty() {
                continue;
            }
            let mut mine = self.passes.iter().filter(|p| p.topic == *topic);
            let has_passes = match (mine.next(), mine.next()) {
                (None, _) => false,
                // One pass for all the subscribers: a partition again.
                (Some(p), None) if p.full => {
                    lt.partitioned = true;
                    lt.caught_up.clear();
                    true
                }
                _ => true,
            };
            if has_passes
                && lt.partitioned
                && !self
                    .passes
                    .iter()
                    .filter(|p| p.topic == *topic)
                    .all(|p| mergeable(&p.batch, &batch))
            {
                // Too much to join again per pass (a flood): the batch waits behind, for everyone.
                lt.partitioned = false;
                lt.caught_up.clear();
            }
            if has_passes && lt.partitioned {
                // Every subscriber is in exactly one waiting or running pass, or caught up: the batch goes behind
                // what each waits for, in the same write. The running pass's written part and the caught-up
                // subscribers get it in a pass of their own; the unwritten part gets it joined to the messages it
                // still waits for, so a subscriber that is behind catches up with one write instead of one per
                // message.
                let mut done_part = None;
                for p in self.passes.iter_mut().filter(|p| p.topic == *topic) {
                    if p.next > 0 {
                        let rest = p.subs.split_off(p.next);
                        let done = std::mem::replace(&mut p.subs, rest);
                        p.next = 0;
                        p.full = false;
                        done_part = Some(done);
                    }
                    p.add(batch.iter().cloned(), &mut self.spare_joined);
                }
                let mut subs: Vec<Sub> = done_part.unwrap_or_default();
                subs.append(&mut lt.caught_up);
                if !subs.is_empty() {
                    let ends = self.spare_ends.pop().unwrap_or_default();
                    self.passes
                        .push_back(Pass::new(topic.clone(), batch, subs, false, ends));
                }
                continue;
            }
            let waiting = self
                .passes
                .iter_mut()
                .rev()
                .find(|p| p.topic == *topic)
                .filter(|p| p.next == 0 && p.full);
            match waiting {
                Some(p) => p.add(batch.into_iter(), &mut self.spare_joined),
                None => {
                    lt.partitioned = !has_passes;
                    let ends = self.spare_ends.pop().unwrap_or_default();
                    self.passes.push_back(Pass::new(
                        topic.clone(),
                        batch,
                        lt.subs.clone(),
                        true,
                        ends,
                    ));
                }
            }
        }
        let mut topics = topics;
        topics.clear();
        self.batched = topics;
        let slice = match self.shared.config.fanout_slice {
            0 => usize::MAX,
            n => n,
        };
        let mut budget = slice;
        let bytes_limit = self.write_budget();
        let out0 = self.stats.bytes_out();
        while budget > 0 {
            let written = self.stats.bytes_out() - out0;
            if written >= bytes_limit {
                break;
            }
            let Some(mut p) = self.passes.pop_front() else {
                break;
            };
            budget -= self.write_pass(&mut p, budget, bytes_limit - written);
            if p.next < p.subs.len() {
                self.passes.push_front(p);
            } else {
                let others = self.passes.iter().any(|q| q.topic == p.topic);
                if let Some(lt) = self.topics.local.get_mut(&p.topic) {
                    if others && lt.partitioned {
                        // Its subscribers wait for nothing now: the next batch's own pass takes them.
                        lt.caught_up.extend_from_slice(&p.subs);
                    } else {
                        lt.partitioned = false;
                        lt.caught_up.clear();
                    }
                }
                self.recycle(p);
            }
        }
        if !self.passes.is_empty() {
            // The rest in the next turn, after the sockets had theirs.
            self.waker.wake();
        }
    }

    /// Writes the rest of every pass of `topic`, oldest first, now.
    fn finish_passes(&mut self, topic: &Arc<str>) {
        if !self.passes.iter().any(|p| p.topic == *topic) {
            return;
        }
        let passes = std::mem::take(&mut self.passes);
        let mut kept = std::collections::VecDeque::with_capacity(passes.len());
        for mut p in passes {
            if p.topic == *topic {
                self.write_pass(&mut p, usize::MAX, u64::MAX);
                self.recycle(p);
            } else {
                kept.push_back(p);
            }
        }
        // Writing cannot start a pass (only `flush_batches` does), so nothing was added meanwhile.
        self.passes = kept;
        if let Some(lt) = self.topics.local.get_mut(topic) {
            lt.partitioned = false;
            lt.caught_up.clear();
        }
    }

    /// Keeps a finished pass's buffers for the next pass (one spare: passes are written one after another).
    fn recycle(&mut self, mut p: Pass) {
        if self.spare_ends.is_empty() {
            p.joined_ends.clear();
            self.spare_ends.push(std::mem::take(&mut p.joined_ends));
        }
        self.spare_joined = reclaim(self.spare_joined.take(), p.joined);
    }

    /// Writes `p`'s messages to up to `max` more of its subscribers, stopping early (after a whole subscriber)
    /// once `max_bytes` went to the kernel; returns how many subscribers it went through.
    fn write_pass(&mut self, p: &mut Pass, max: usize, max_bytes: u64) -> usize {
        let mut group = std::mem::take(&mut self.batch_group);
        // Sends to subscribers with nothing queued go through the core's io_uring batch when it has one (see
        // `sendring`); `batched` counts their bytes, which reach `bytes_out` only once the batch ran.
        let mut ring = self.send_ring.take();
        let mut batched = 0u64;
        let mut end = p.subs.len().min(p.next.saturating_add(max));
        let from = p.next;
        let out0 = self.stats.bytes_out();
        if from == 0 && p.joined_ends.is_empty() {
            let frames = p.batch.iter().filter_map(|(ws, _)| ws.as_ref());
            if frames.clone().nth(1).is_some() && p.subs.iter().any(|s| !s.sse) {
                let mut joined = self.spare_joined.take().unwrap_or_default();
                for f in frames {
                    joined.extend_from_slice(f);
                    p.joined_ends.push(joined.len());
                }
                p.joined = joined.freeze();
            }
        }
        for (i, s) in p.subs[from..end].iter().enumerate() {
            if self.stats.bytes_out() - out0 + batched >= max_bytes {
                // What is batched counts as sent until the batch runs; run it, then count what the kernel took.
                if let Some(r) = ring.as_mut()
                    && batched > 0
                {
                    self.run_sends(r, p);
                    batched = 0;
                }
                if self.stats.bytes_out() - out0 >= max_bytes {
                    end = from + i;
                    break;
                }
            }
            let key = s.key as usize;
            let fd = match self.conns.get_mut(key) {
                Some(c) if c.serial == s.serial => {
                    if s.sse {
                        c.last_heard = self.now;
                    }
                    c.fd
                }
                _ => continue,
            };
            if let Some(r) = ring.as_mut()
                && r.len() >= sendring::ENTRIES as usize
            {
                self.run_sends(r, p);
                batched = 0;
            }
            if !s.sse && !p.joined_ends.is_empty() {
                add(&self.stats.frames_out, p.joined_ends.len() as u64);
                if self.conns[key].out.is_none() {
                    match ring.as_mut() {
                        Some(r) => {
                            r.push((s.key, s.serial, true), fd, p.joined.clone());
                            batched += p.joined.len() as u64;
                        }
                        None => self.write_joined(key, p),
                    }
                } else {
                    // Behind already: the whole pass as one queue entry, behind what waits.
                    self.queue_joined(key, &p.joined, &p.joined_ends, 0, 0);
                }
                continue;
            }
            group.clear();
            group.extend(p.batch.iter().filter_map(|(ws, sse)| {
                let f = if s.sse { sse } else { ws };
                f.as_ref().map(|b| (s.key, false, 0, b.clone()))
            }));
            if group.is_empty() {
                continue;
            }
            if let (Some(r), 1) = (ring.as_mut(), group.len())
                && self.conns[key].out.is_none()
            {
                self.count_frames_out(key, 1);
                let b = std::mem::take(&mut group[0].3);
                batched += b.len() as u64;
                r.push((s.key, s.serial, false), fd, b);
                continue;
            }
            // A backed-up connection gets them queued behind what waits, under the slow-consumer policy.
            self.write_shared(key, &mut group);
        }
        if let Some(mut r) = ring {
            self.run_sends(&mut r, p);
            // A ring that failed is dropped: the core writes with syscalls from now on.
            self.send_ring = r.usable().then_some(r);
        }
        group.clear();
        self.batch_group = group;
        p.next = end;
        end - from
    }

    /// Runs the sends batched by [`Core::write_pass`] and finishes each as its `write(2)` would have been: all
    /// taken, or the rest queued (the socket was full), or the connection closed on an error.
    fn run_sends(&mut self, ring: &mut SendRing<SendTag>, p: &Pass) {
        let mut done = std::mem::take(&mut self.send_done);
        ring.submit(&mut done);
        for send in done.drain(..) {
            let (key, serial, joined) = send.tag;
            let key = key as usize;
            if self.conns.get(key).is_none_or(|c| c.serial != serial) {
                continue;
            }
            let r = send.result;
            if r < 0 && r != -libc::EAGAIN && r != -libc::EINTR {
                self.close(key);
                continue;
            }
            let written = r.max(0) as usize;
            add(&self.stats.bytes_out, written as u64);
            if joined {
                self.joined_written(key, p, written);
            } else if written == send.buf.len() {
                self.drained(key);
            } else {
                let mut one = [(key as u32, false, 0, send.buf)];
                self.queue_shared(key, &mut one, written);
            }
        }
        self.send_done = done;
    }

    /// Writes a pass's joined WebSocket frames to a connection with nothing queued: one `write` of them all. What
    /// the kernel refuses is queued as slices of the joined frames from the first frame not wholly written (its
    /// written part recorded, so the slow-consumer policy never cuts it mid-frame).
    fn write_joined(&mut self, key: usize, p: &Pass) {
        let fd = self.conns[key].fd;
        let mut written = 0;
        while written < p.joined.len() {
            let rest = &p.joined[written..];
            // SAFETY: `rest` is a live, initialised slice of `p.joined` for the duration of the call.
            let r = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    break;
                }
                self.close(key);
                return;
            }
            written += r as usize;
            add(&self.stats.bytes_out, r as u64);
            if (r as usize) < rest.len() {
                break; // the socket is full
            }
        }
        self.joined_written(key, p, written);
    }

    /// After `written` bytes of `p`'s joined frames went to a connection with nothing queued: done, or the rest
    /// queued from the first frame not wholly written.
    fn joined_written(&mut self, key: usize, p: &Pass, written: usize) {
        // Frames wholly written, and how much of the next one.
        let idx = p.joined_ends.partition_point(|&e| e <= written);
        let start = idx.checked_sub(1).map_or(0, |i| p.joined_ends[i]);
        if idx == p.joined_ends.len() {
            self.drained(key);
            return;
        }
        self.queue_joined(key, &p.joined, &p.joined_ends, idx, written - start);
    }

    /// Queues shared bytes for a connection; sent at the end of the turn, one writev per connection.
    pub(super) fn stage_shared(&mut self, key: usize, bytes: Bytes, control: bool, slot: u32) {
        let conn = &mut self.conns[key];
        if conn.state == State::Sse {
            conn.last_heard = self.now;
        }
        if conn.out.is_some() {
            self.count_frames_out(key, 1);
        }
        let conn = &mut self.conns[key];
        if let Some(out) = conn.out.as_mut() {
            // Already backed up: keep order behind what is queued.
            out.bytes += bytes.len();
            out.frames
                .push_back(crate::conn::OutFrame::one(bytes, control, slot));
            if conn.flags & DIRTY == 0 {
                conn.flags |= DIRTY;
                self.dirty.push(key);
            }
            self.enforce_high_water(key);
            return;
        }
        self.staged.push((key as u32, control, slot, bytes));
    }

    /// Sends everything staged this turn: one writev per connection, the rest queued.
    pub(super) fn flush_staged(&mut self) {
        let mut staged = std::mem::take(&mut self.staged);
        if !staged.is_empty() {
            // Small control answers (HTTP responses to publishes and polls) go out before the turn's fan-out
            // writes, so a publisher's acknowledgement does not wait behind thousands of deliveries. The sort is
            // stable: per connection and kind, staging order is kept.
            staged.sort_by_key(|s| (!s.1, s.0));
            let mut i = 0;
            while i < staged.len() {
                let key = staged[i].0 as usize;
                let mut j = i;
                while j < staged.len() && staged[j].0 as usize == key {
                    j += 1;
                }
                if self.conns.contains(key) {
                    self.write_shared(key, &mut staged[i..j]);
                }
                i = j;
            }
            staged.clear();
        }
        self.staged = staged;
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.flags &= !DIRTY;
                self.flush(key);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
        let resume = std::mem::take(&mut self.resume_http);
        for key in resume {
            // Requests that arrived behind an answered poll or publish.
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.state == State::Http && !c.head.is_empty())
            {
                self.on_http(key, &mut []);
                if self.conns.contains(key) {
                    self.finish_output(key);
                }
            }
        }
    }
}

/// Messages a waiting subscriber's pass may gather from later batches (see `flush_batches`).
const MERGE_MESSAGES: usize = 64;
/// Bytes of WebSocket frames a waiting subscriber's pass may gather from later batches.
const MERGE_BYTES: usize = 64 << 10;

/// Whether `more` may join a pass that holds `batch`: few messages, as with live traffic a little faster than a
/// pass, not a flood (whose passes would be joined again, ever larger, at every turn).
fn mergeable(
    batch: &[(Option<Bytes>, Option<Bytes>)],
    more: &[(Option<Bytes>, Option<Bytes>)],
) -> bool {
    batch.len() + more.len() <= MERGE_MESSAGES
        && batch
            .iter()
            .chain(more)
            .map(|(ws, sse)| ws.as_ref().or(sse.as_ref()).map_or(0, Bytes::len))
            .sum::<usize>()
            <= MERGE_BYTES
}

/// The spare joined buffer after a pass let go of `joined`: kept as the spare when there was none and nothing
/// else holds it (no subscriber queued a slice of it); otherwise the last queue to drain frees it.
fn reclaim(spare: Option<BytesMut>, joined: Bytes) -> Option<BytesMut> {
    if spare.is_some() {
        return spare;
    }
    joined.try_into_mut().ok().map(|mut b| {
        b.clear();
        b
    })
}

fn sse_msg(seq: u64, data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(data.len() + 32);
    let _ = write_sse_msg(&mut b, seq, data);
    Bytes::from(b)
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn subscriber_state_is_compact() {
        // A subscribed idle connection's budget is 256 bytes of user space: the slab entry (≤ 128), this box
        // (≤ 64, one malloc chunk of 80) and its entry in the topic's subscriber list (12).
        let size = std::mem::size_of::<ConnExt>();
        assert!(size <= 64, "ConnExt grew to {size} bytes");
        assert_eq!(std::mem::size_of::<Sub>(), 12);
        // One topic is stored inline: subscribing to it allocates nothing more.
        let mut e = ConnExt::default();
        e.topics.push(Arc::from("t"));
        assert!(!e.topics.spilled());
    }
}
