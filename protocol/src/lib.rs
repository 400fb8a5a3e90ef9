//! # ringcast-protocol
//!
//! The sans-IO core of ringcast: every wire format the server speaks, as pure functions and state machines over
//! byte slices.
//!
//! This crate owns
//! - [`http`]: incremental HTTP/1.1 request-head parsing with limits, zero-copy accessors and percent-decoding;
//! - [`handshake`]: the RFC 6455 §4.2 opening handshake (validation, `Sec-WebSocket-Accept`, subprotocol choice)
//!   and every HTTP response the server writes before or instead of an upgrade;
//! - [`ws`]: the RFC 6455 §5 frame codec in server and client roles (decoder state machine, message reassembly,
//!   strict incremental UTF-8, close payloads, encoder, masking);
//! - [`sse`]: the Server-Sent Events writer and `Last-Event-ID` parsing;
//! - [`poll`]: the JSON envelopes long and short polling return;
//! - [`topic`]: topic-name validation and the stable owner-core hash;
//! - [`pubsub`]: the pub/sub wire protocol v1 (client ops, server JSON and SSE forms, publish bodies, routes).
//!
//! ## Invariants
//! - No IO, no runtime, no threads, no clock: callers feed bytes (and, where a rule needs it, the time) in and take
//!   bytes and events out. The dependency tree has no async runtime and no networking crate; CI checks it.
//! - Input-derived data never panics the code: every malformed input maps to an error value that says who is at
//!   fault and what to answer on the wire (`http_status()` or `close_code()`).
//! - Errors are small `Copy` enums; the error path does not allocate.
//!
//! ## Non-goals
//! HTTP/2, request bodies beyond what the caller frames itself, permessage-deflate (a later extension), and any
//! socket or buffer ownership: that is the engine's job.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod handshake;
pub mod http;
pub mod poll;
pub mod pubsub;
pub mod sse;
pub mod topic;
mod utf8;
pub mod ws;
