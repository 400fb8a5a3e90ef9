//! Per-connection state, kept compact because an idle connection is nothing but this slab entry.
//!
//! A [`Conn`] owns its socket descriptor, the WebSocket decoder's partial state (empty, and on no heap, when idle),
//! the bytes of a request head that arrived in pieces (only during the handshake), and its bounded output queue,
//! which exists only while the kernel refuses to take more bytes. Timers are coarse ticks compared by the core's
//! sweep, so a connection carries no timer object either.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use bytes::Bytes;
use ringcast_protocol::ws::{Decoder, Server};

/// Time in the core's clock: tenths of a second since the core started (wraps after 13 years).
pub(crate) type Tick = u32;

/// Ticks per second.
pub(crate) const TICKS_PER_SEC: u64 = 10;

/// Converts a duration to ticks, rounding up, at least one tick.
pub(crate) fn ticks(d: std::time::Duration) -> Tick {
    let t = d.as_millis().div_ceil(1000 / TICKS_PER_SEC as u128);
    t.clamp(1, Tick::MAX as u128 / 2) as Tick
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading an HTTP request head (plain request or upgrade).
    Http,
    /// An open WebSocket.
    Ws,
    /// An open Server-Sent Events stream.
    Sse,
    /// An HTTP request (poll or publish) waiting for an answer from a topic's owner core.
    Waiting,
    /// A close frame was queued; waiting for the peer's close (or EOF) or the close deadline.
    Closing,
}

/// Which handler an upgraded connection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Echo text and binary messages as received.
    Echo,
    /// The JSON pub/sub protocol v1.
    PubSub,
}

/// A ping was sent and nothing has been heard since.
pub(crate) const PING_OUT: u8 = 1;
/// The descriptor is registered for EPOLLOUT.
pub(crate) const WANT_WRITE: u8 = 2;
/// Accepted over the core's connection limit: answer 503 to the request head.
pub(crate) const REJECT: u8 = 4;
/// Close the descriptor as soon as the output queue is empty.
pub(crate) const CLOSE_ON_FLUSH: u8 = 8;
/// The decoder failed: bytes that still arrive are discarded.
pub(crate) const ERRORED: u8 = 16;
/// Our side of the TCP stream was shut down after an error close.
pub(crate) const SHUT_WRITE: u8 = 32;
/// Listed in the core's dirty list (queued output to flush at the end of the turn).
pub(crate) const DIRTY: u8 = 64;
/// Accepted over its IP's connection rate or count: answer 429 to the request head.
pub(crate) const IP_LIMITED: u8 = 128;

/// `Conn::ip_slot` of a connection whose IP is not tracked.
pub(crate) const NO_IP_SLOT: u32 = u32::MAX;

/// One queued frame (or response), or a fan-out pass's WebSocket frames joined back to back, and whether it may be
/// dropped by the drop-oldest policy.
pub(crate) struct OutFrame {
    pub(crate) bytes: Bytes,
    /// The conflation slot of the topic this data frame belongs to (0: none).
    pub(crate) topic: u32,
    /// Messages in `bytes`, for the drop counters: 1, or a joined pass's frame count (saturating).
    pub(crate) messages: u16,
    pub(crate) control: bool,
}

impl OutFrame {
    /// One frame or response.
    pub(crate) fn one(bytes: Bytes, control: bool, topic: u32) -> OutFrame {
        OutFrame {
            bytes,
            topic,
            messages: 1,
            control,
        }
    }
}

/// Output the kernel has not taken yet. Allocated only while the socket is backed up.
#[derive(Default)]
pub(crate) struct OutQueue {
    pub(crate) frames: VecDeque<OutFrame>,
    /// Sum of the unwritten bytes in `frames`.
    pub(crate) bytes: usize,
    /// Bytes of the front frame already written.
    pub(crate) head_written: usize,
}

/// One connection: its descriptor, state and the little it must remember between reads.
pub(crate) struct Conn {
    pub(crate) fd: RawFd,
    /// Distinguishes this connection from a later one reusing its slab key.
    pub(crate) serial: u32,
    pub(crate) state: State,
    pub(crate) route: Route,
    pub(crate) flags: u8,
    /// Last tick at which bytes arrived.
    pub(crate) last_heard: Tick,
    /// Handshake deadline (state Http) or close deadline (state Closing).
    pub(crate) deadline: Tick,
    pub(crate) decoder: Decoder<Server>,
    /// Token bucket of the pub/sub message rate limit: messages the client may still send, and when it was refilled.
    pub(crate) rate_tokens: u32,
    pub(crate) rate_tick: Tick,
    /// Index of the client IP's entry in the core's per-IP table, or [`NO_IP_SLOT`].
    pub(crate) ip_slot: u32,
    /// A request head received in pieces; empty (no allocation) otherwise.
    pub(crate) head: Vec<u8>,
    pub(crate) out: Option<Box<OutQueue>>,
    /// Subscriptions and pending HTTP answers; `None` for plain echo connections.
    pub(crate) ext: Option<Box<crate::core::ConnExt>>,
}

impl Conn {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn idle_connection_is_compact() {
        // The per-connection budget is 256 bytes of user space in all; the slab entry is most of it.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 128, "Conn grew to {size} bytes");
    }

    #[test]
    fn queued_frame_is_compact() {
        // Every message a slow subscriber has queued costs one of these (a joined pass: one for all its messages).
        assert_eq!(std::mem::size_of::<OutFrame>(), 40);
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::from_millis(100)), 1);
        assert_eq!(ticks(Duration::from_millis(101)), 2);
        assert_eq!(ticks(Duration::from_secs(30)), 300);
    }
}
