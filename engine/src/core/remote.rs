//! A core's handling of the answers only the Redis bridge sends (multi-node mode): a publish Redis did not take.

use ringcast_protocol::pubsub::{RequestId, write_error};

use super::Core;
use crate::bus::Token;
use crate::conn::State;

impl Core {
    /// The bridge could not publish (Redis unreachable or failing): HTTP 503, or a WebSocket error reply
    /// `unavailable`. The message was not stored and will never be delivered.
    pub(super) fn on_publish_failed(&mut self, token: Token, _topic: &str) {
        let Some(key) = self.conn_of(&token) else {
            return;
        };
        match self.conns[key].state {
            State::Waiting => {
                let Some((cors, keep_alive)) = self.take_waiting_publish(key) else {
                    return;
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
