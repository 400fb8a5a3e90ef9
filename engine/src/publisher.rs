//! Publishing from any thread: the handle a feed handler, a test or an embedding program uses to push messages
//! into the engine without being a reactor.

use std::sync::Arc;

use bytes::Bytes;
use ringcast_protocol::topic::{TopicError, validate_topic};

use crate::bridge::BridgeStats;
use crate::bus::{CoreMsg, Mesh};

/// Why a publish was refused. Nothing was published in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name breaks the naming rule (1–128 bytes of `[A-Za-z0-9._:-]`).
    #[error("invalid topic: {0}")]
    InvalidTopic(TopicError),
    /// The data is not one JSON value.
    #[error("data is not one JSON value")]
    InvalidJson,
    /// The data is larger than the configured maximum message size.
    #[error("data larger than the maximum message size")]
    TooLarge,
    /// The owner core's channel is full (it is overloaded): retry later or shed load.
    #[error("the topic's core is saturated; retry later")]
    Backpressure,
    /// The server is shut down.
    #[error("the server has stopped")]
    Stopped,
    /// Multi-node mode: the node is not connected to Redis right now (`/readyz` answers 503), so nothing can be
    /// numbered; retry later.
    #[error("multi-node mode: Redis is unreachable; retry later")]
    Unavailable,
}

/// A cloneable, thread-safe handle that publishes into a running server.
///
/// Each publish goes straight to the topic's owner core over its lock-free channel and wakes it; the owner numbers
/// the message, retains it and fans it out. `publish_*` never blocks: a full channel returns
/// [`PublishError::Backpressure`] and the message is not published.
///
/// In multi-node mode the owner is the Redis bridge: while it is not connected to Redis, `publish_*` returns
/// [`PublishError::Unavailable`]. A publish accepted just before Redis is lost may still fail in the bridge; this
/// handle has no answer path, so such a failure only shows in `ringcast_bridge_publish_errors_total`.
#[derive(Clone)]
pub struct Publisher {
    mesh: Arc<Mesh>,
    max_message_size: usize,
    /// The bridge's state in multi-node mode (is Redis connected?).
    bridge: Option<Arc<BridgeStats>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("cores", &self.mesh.cores())
            .finish()
    }
}

impl Publisher {
    pub(crate) fn new(
        mesh: Arc<Mesh>,
        max_message_size: usize,
        bridge: Option<Arc<BridgeStats>>,
    ) -> Self {
        Publisher {
            mesh,
            max_message_size,
            bridge,
        }
    }

    /// The mesh this handle sends on.
    #[cfg(test)]
    pub(crate) fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Publishes `json` (one JSON value, e.g. `{"px":101.5}`) as the message's data.
    pub fn publish_json(&self, topic: &str, json: impl Into<Bytes>) -> Result<(), PublishError> {
        let json = json.into();
        let mut scratch = Vec::new();
        match ringcast_protocol::pubsub::publish_data(
            Some(b"application/json"),
            &json,
            &mut scratch,
        ) {
            Ok(d) if d.len() == json.len() => self.send(topic, json),
            Ok(d) => {
                let trimmed = Bytes::copy_from_slice(d);
                self.send(topic, trimmed)
            }
            Err(_) => Err(PublishError::InvalidJson),
        }
    }

    /// Publishes `text` as a JSON string. The size limit applies to `text` itself, as it does to an HTTP publish
    /// body, not to its escaped form.
    pub fn publish_text(&self, topic: &str, text: &str) -> Result<(), PublishError> {
        if text.len() > self.max_message_size {
            return Err(PublishError::TooLarge);
        }
        let mut json = Vec::with_capacity(text.len() + 2);
        ringcast_protocol::poll::write_json_string(&mut json, text);
        self.send_unchecked_size(topic, Bytes::from(json))
    }

    fn send(&self, topic: &str, data: Bytes) -> Result<(), PublishError> {
        if data.len() > self.max_message_size {
            return Err(PublishError::TooLarge);
        }
        self.send_unchecked_size(topic, data)
    }

    fn send_unchecked_size(&self, topic: &str, data: Bytes) -> Result<(), PublishError> {
        validate_topic(topic).map_err(PublishError::InvalidTopic)?;
        if self.bridge.as_ref().is_some_and(|b| !b.ready()) {
            return Err(PublishError::Unavailable);
        }
        let owner = self.mesh.owner_of(topic);
        let msg = CoreMsg::Publish {
            topic: Arc::from(topic),
            data,
            ack: None,
        };
        self.mesh.send_now(owner, msg).map_err(|_| {
            if self.mesh.senders[owner].is_full() {
                PublishError::Backpressure
            } else {
                PublishError::Stopped
            }
        })
    }
}
