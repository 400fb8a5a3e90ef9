//! The only way cores (and outside threads) talk to a core: a full mesh of bounded lock-free channels, each paired
//! with the target core's eventfd waker.
//!
//! A core never sends a message the moment it produces it: it queues it in a per-target outbox and, at the end of the
//! turn, moves each outbox into the target's channel and wakes the target once. Many messages to one core cost one
//! `write(2)` on its eventfd. When a channel is full the rest of the outbox waits for the next turn (or the next
//! sweep); an outbox past `outbox_limit` drops its oldest message and counts it, and the subscribers on that core see
//! the gap in sequence numbers and are reset (see ARCHITECTURE.md, "Cross-core flow control").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::poller::Waker;

/// Names a request waiting on a connection: the core it lives on, its slab key and serial (so a reply to a
/// connection that closed meanwhile is recognised and dropped), and the client's request id to echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) core: u16,
    pub(crate) key: u32,
    pub(crate) serial: u32,
    /// The raw JSON text of the client's `id`, when it sent one.
    pub(crate) id: Option<Box<str>>,
}

/// A message between cores.
#[derive(Debug)]
pub(crate) enum CoreMsg {
    /// To the topic's owner: number, retain and deliver this message; acknowledge to `ack` when set.
    Publish {
        topic: Arc<str>,
        data: Bytes,
        ack: Option<Token>,
    },
    /// From the owner to the publisher's core: the message was numbered `seq`.
    PublishAck {
        token: Token,
        topic: Arc<str>,
        seq: u64,
    },
    /// To the owner: core `token.core` wants live messages of `topic` (and the retained ones after `since`).
    Subscribe {
        topic: Arc<str>,
        token: Token,
        since: Option<u64>,
    },
    /// To the owner: core `core` has no subscriber of `topic` left.
    Unsubscribe { topic: Arc<str>, core: u16 },
    /// From the Redis bridge to the publisher's core: the message was not published (Redis unreachable or failed);
    /// the publisher gets 503 (HTTP) or an `unavailable` error (WebSocket).
    PublishFailed { token: Token, topic: Arc<str> },
    /// From the owner to a subscribing core: history for one subscriber, after which live messages follow in order.
    Replay {
        topic: Arc<str>,
        token: Token,
        reset: Option<u64>,
        entries: Vec<(u64, Bytes)>,
        last_seq: u64,
    },
    /// From the owner to every core with subscribers: one numbered message.
    Deliver {
        topic: Arc<str>,
        seq: u64,
        data: Bytes,
    },
    /// To the owner: a poll request; with `wait_until`, held until a message arrives or that instant passes.
    Fetch {
        topic: Arc<str>,
        token: Token,
        since: Option<u64>,
        limit: usize,
        wait_until: Option<Instant>,
    },
    /// To every core (a broadcast): a direct message for the pub/sub WebSocket connections of `user` on that core,
    /// as the finished text frame `{"type":"direct","from":..,"data":..}` (encoded once by the sender's core, or by
    /// the Redis bridge for a message from another node). Never sent to the bridge (see `DirectOut`).
    Direct { user: Arc<str>, frame: Bytes },
    /// To the Redis bridge: a direct message sent on this node (`json` is the `{"type":"direct",..}` object), for
    /// `user`'s connections on the other nodes; this node's cores got it as `Direct`.
    DirectOut { user: Arc<str>, json: Bytes },
    /// To the Redis bridge: core `core` now has a connection of `user` (`joined`: its first) or no longer has any
    /// (its last closed). The bridge listens to the user's channel while any core of the node has one.
    User {
        user: Arc<str>,
        core: u16,
        joined: bool,
    },
    /// Test only: take over this connected stream socket as a new connection (the read-path property test feeds
    /// one end of a socketpair to a core this way, with no network peer).
    #[cfg(test)]
    Adopt(std::os::fd::OwnedFd),
    /// From the owner: the answer to a `Fetch`.
    Fetched {
        topic: Arc<str>,
        token: Token,
        reset: bool,
        entries: Vec<(u64, Bytes)>,
        next: u64,
    },
}

/// The send side of the mesh, shared read-only by every core and every [`crate::Publisher`].
pub(crate) struct Mesh {
    /// One channel per core, then (in multi-node mode) the Redis bridge's.
    pub(crate) senders: Vec<Sender<CoreMsg>>,
    pub(crate) wakers: Vec<Arc<Waker>>,
    /// How many of the endpoints are cores.
    cores: usize,
    /// The bridge's endpoint index (= `cores`) when multi-node mode is on: it owns every topic.
    bridge: Option<usize>,
}

impl Mesh {
    /// Builds the mesh: one bounded channel into each core.
    #[cfg(test)]
    pub(crate) fn new(
        wakers: Vec<Arc<Waker>>,
        capacity: usize,
    ) -> (Arc<Mesh>, Vec<Receiver<CoreMsg>>) {
        Self::with_bridge(wakers, None, capacity)
    }

    /// Builds the mesh with, when `bridge` is given, one more endpoint after the cores: the Redis bridge, which then
    /// owns every topic. The receivers come in endpoint order (the bridge's last).
    pub(crate) fn with_bridge(
        mut wakers: Vec<Arc<Waker>>,
        bridge: Option<Arc<Waker>>,
        capacity: usize,
    ) -> (Arc<Mesh>, Vec<Receiver<CoreMsg>>) {
        let cores = wakers.len();
        let bridge = bridge.map(|w| {
            wakers.push(w);
            cores
        });
        let (senders, receivers) = wakers
            .iter()
            .map(|_| crossbeam_channel::bounded(capacity))
            .unzip();
        (
            Arc::new(Mesh {
                senders,
                wakers,
                cores,
                bridge,
            }),
            receivers,
        )
    }

    /// The Redis bridge's endpoint in multi-node mode.
    pub(crate) fn bridge(&self) -> Option<usize> {
        self.bridge
    }

    /// The endpoint that owns a topic: the Redis bridge in multi-node mode, else a core chosen by the topic's hash.
    pub(crate) fn owner_of(&self, topic: &str) -> usize {
        match self.bridge {
            Some(b) => b,
            None => (ringcast_protocol::topic::topic_hash(topic) % self.cores as u64) as usize,
        }
    }

    /// Sends one message from outside any core and wakes the target; a full channel hands the message back.
    pub(crate) fn send_now(&self, target: usize, msg: CoreMsg) -> Result<(), CoreMsg> {
        match self.senders[target].try_send(msg) {
            Ok(()) => {
                self.wakers[target].wake();
                Ok(())
            }
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => Err(m),
        }
    }

    /// How many cores there are (the bridge endpoint not counted).
    pub(crate) fn cores(&self) -> usize {
        self.cores
    }
}

/// One core's outgoing messages, per target core.
pub(crate) struct Outbox {
    queues: Vec<VecDeque<CoreMsg>>,
    limit: usize,
    /// Messages dropped because an outbox passed its limit.
    pub(crate) dropped: u64,
}

impl Outbox {
    pub(crate) fn new(cores: usize, limit: usize) -> Self {
        Outbox {
            queues: (0..cores).map(|_| VecDeque::new()).collect(),
            limit,
            dropped: 0,
        }
    }

    /// Queues a message for `target`.
    pub(crate) fn push(&mut self, target: usize, msg: CoreMsg) {
        if target >= self.queues.len() {
            // The bridge endpoint, after the cores.
            self.queues.resize_with(target + 1, VecDeque::new);
        }
        let q = &mut self.queues[target];
        if q.len() >= self.limit {
            q.pop_front();
            self.dropped += 1;
        }
        q.push_back(msg);
    }

    /// Moves what fits into each target's channel and wakes each target that got something. Returns true when
    /// something is still waiting (a channel was full).
    pub(crate) fn flush(&mut self, mesh: &Mesh) -> bool {
        let mut left = false;
        for (target, q) in self.queues.iter_mut().enumerate() {
            let mut sent = false;
            while let Some(m) = q.pop_front() {
                match mesh.senders[target].try_send(m) {
                    Ok(()) => sent = true,
                    Err(TrySendError::Full(m)) => {
                        q.push_front(m);
                        left = true;
                        break;
                    }
                    // The target stopped (shutdown): nothing will read it.
                    Err(TrySendError::Disconnected(_)) => q.clear(),
                }
            }
            if sent {
                mesh.wakers[target].wake();
            }
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(seq: u64) -> CoreMsg {
        CoreMsg::Deliver {
            topic: Arc::from("t"),
            seq,
            data: Bytes::new(),
        }
    }

    #[test]
    fn outbox_keeps_order_across_a_full_channel_and_bounds_itself() {
        let wakers = vec![
            Arc::new(Waker::new().unwrap()),
            Arc::new(Waker::new().unwrap()),
        ];
        let (mesh, rx) = Mesh::new(wakers, 2);
        let mut out = Outbox::new(2, 3);
        for seq in 1..=5 {
            out.push(1, deliver(seq));
        }
        assert_eq!(out.dropped, 2, "limit 3 keeps the newest three");
        assert!(out.flush(&mesh), "channel of 2 leaves one waiting");
        let got: Vec<u64> = rx[1]
            .try_iter()
            .map(|m| match m {
                CoreMsg::Deliver { seq, .. } => seq,
                _ => 0,
            })
            .collect();
        assert_eq!(got, vec![3, 4]);
        assert!(!out.flush(&mesh));
        match rx[1].try_recv().unwrap() {
            CoreMsg::Deliver { seq, .. } => assert_eq!(seq, 5),
            other => panic!("{other:?}"),
        }
        assert!(rx[0].try_recv().is_err());
    }
}
