//! Direct messages: a WebSocket `pub` with a `user` instead of a `topic`, delivered to every pub/sub WebSocket
//! connection of that user on every core of this node (and of every node, with the Redis bridge).
//!
//! The sender's core checks the token (`Identity::may_direct`; refused with `forbidden` when authentication is off,
//! since there are then no identities to address or to name as the sender), takes a publish token from the rate
//! limit, encodes the frame once and broadcasts it to every core, itself included, as `CoreMsg::Direct`. Each core
//! looks the user up in its `users` index and queues the shared frame on that user's pub/sub WebSocket connections.
//! The sender is acknowledged at once (no `seq`: direct messages are not numbered or retained), whether or not the
//! user has a connection anywhere: the ack means accepted, not delivered. Delivery is at most once, like the
//! cross-core path of topic messages (an outbox over its limit drops its oldest message).
//!
//! Multi-node mode: the sender's core also hands the message to the Redis bridge (`CoreMsg::DirectOut`), which
//! publishes it on the user's channel for the other nodes; each core tells the bridge when it gets its first
//! connection of a user and loses its last (`CoreMsg::User`), so a node listens to exactly the users it has. The
//! bridge ignores its own node's echo: this node's connections already got the message from the cores.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringcast_protocol::pubsub::{RequestId, UserId, write_ack, write_direct};

use super::{json_bytes, ws_text};
use crate::bus::CoreMsg;
use crate::conn::{Route, State};
use crate::core::Core;

impl Core {
    /// A client's direct message to `user`: check, then broadcast to every core and acknowledge.
    pub(in crate::core) fn direct(
        &mut self,
        key: usize,
        user: UserId<'_>,
        data: &str,
        id: Option<RequestId<'_>>,
    ) {
        let name = user.name();
        let sender = if self.shared.verifier.is_none() {
            None
        } else {
            self.conns[key]
                .ext
                .as_ref()
                .and_then(|e| e.identity.as_ref())
                .filter(|i| i.may_direct(&name))
                .map(|i| i.user.clone())
        };
        let Some(from) = sender else {
            let why = if self.shared.verifier.is_none() {
                "direct messages need authentication (--auth-secret or --auth-public-key): there are no users"
            } else {
                "the token does not allow direct messages to this user"
            };
            self.forbidden(key, id, why);
            return;
        };
        if !self.take_publish_token(key) {
            self.close_over_limit(key, "publish rate limit exceeded");
            return;
        }
        let mut json = BytesMut::with_capacity(data.len() + from.len() + 48);
        write_direct(&mut json, &from, data.as_bytes());
        let frame = ws_text(&json);
        let user: Arc<str> = match self.users.get_key_value(&*name) {
            Some((k, _)) => k.clone(),
            None => Arc::from(name),
        };
        for core in 0..self.mesh.cores() {
            self.send(
                core,
                CoreMsg::Direct {
                    user: user.clone(),
                    frame: frame.clone(),
                },
            );
        }
        if let Some(bridge) = self.mesh.bridge() {
            self.send(
                bridge,
                CoreMsg::DirectOut {
                    user,
                    json: json.freeze(),
                },
            );
        }
        if id.is_some() {
            let reply = json_bytes(|b| write_ack(b, id, None));
            self.stage_reply(key, &reply);
        }
    }

    /// Multi-node mode: tells the Redis bridge that this core got its first connection of `user` (`joined`) or lost
    /// its last, so the node listens to the user's channel exactly while it has connections of that user.
    pub(in crate::core) fn tell_bridge_user(&mut self, user: &Arc<str>, joined: bool) {
        if let Some(bridge) = self.mesh.bridge() {
            self.send(
                bridge,
                CoreMsg::User {
                    user: user.clone(),
                    core: self.id as u16,
                    joined,
                },
            );
        }
    }

    /// A direct message broadcast by some core: queue it on this core's pub/sub WebSocket connections of `user`.
    pub(in crate::core) fn on_direct(&mut self, user: &str, frame: &Bytes) {
        let Some(conns) = self.users.get(user) else {
            return;
        };
        let targets: Vec<usize> = conns
            .iter()
            .filter(|&&(k, serial)| {
                self.conns.get(k as usize).is_some_and(|c| {
                    c.serial == serial && c.state == State::Ws && c.route == Route::PubSub
                })
            })
            .map(|&(k, _)| k as usize)
            .collect();
        for key in targets {
            self.stage_shared(key, frame.clone(), false, 0);
        }
    }
}
