//! A core's handling of the answers only the Redis bridge sends (multi-node mode): a publish Redis did not take.

use ringcast_protocol::pubsub::{RequestId, write_error};

use super::Core;
use super::pubsub::Waiting;
use crate::bus::Token;
use crate::conn::State;

impl Core {
    /// The bridge could not publish (Redis unreachable or failing): HTTP 503, or a WebSocket error reply
    /// `unavailable`. The message was not stored and will never be delivered.
    pub(super) fn on_publish_failed(&mut self, token: Token, _topic: &str) {
        let key = token.key as usize;
        let same = self
            .conns
            .get(key)
            .is_some_and(|c| c.serial == token.serial && token.core as usize == self.id);
        if !same {
            return;
        }
        match self.conns[key].state {
            State::Waiting => {
                let (cors, keep_alive) = match self.conns[key]
                    .ext
                    .as_mut()
                    .and_then(|e| e.waiting.take())
                    .map(|w| *w)
                {
                    Some(Waiting::Publish { cors, keep_alive }) => (cors, keep_alive),
                    other => {
                        if let Some(e) = self.conns[key].ext.as_mut() {
                            e.waiting = other.map(Box::new);
                        }
                        return;
                    }
                };
                let body = br#"{"error":"Service Unavailable","message":"the message bus (Redis) is unavailable; not published"}"#;
                self.finish_waiting(key, 503, body, cors.as_deref(), keep_alive);
            }
            State::Ws => {
                let mut reply = Vec::with_capacity(128);
                write_error(
                    &mut reply,
                    token.id.as_deref().map(RequestId),
                    "unavailable",
                    "the message bus (Redis) is unavailable; not published",
                );
                self.stage_shared(
                    key,
                    ringcast_protocol::ws::server_frame_bytes(
                        ringcast_protocol::ws::OpCode::Text,
                        &reply,
                    ),
                    false,
                    0,
                );
            }
            _ => {}
        }
    }
}
