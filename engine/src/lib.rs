//! # ringcast-engine
//!
//! Share-nothing, thread-per-core reactors that serve ringcast's transports over the sans-IO codecs of
//! `ringcast-protocol`.
//!
//! ## What it owns
//! - [`server`]: one pinned thread per core, each running a monoio runtime (io_uring, or the legacy epoll driver)
//!   and owning its own SO_REUSEPORT listener. No acceptor thread, no shared connection table, no lock on the data
//!   path.
//! - the core loop: accept, read into one per-core buffer, decode in place, answer, write; idle connections are
//!   parked in a per-core epoll set as a compact slab entry holding no buffer, no task and no timer.
//! - per-connection bounded output queues of shared `Bytes` with a slow-consumer policy
//!   ([`SlowConsumerPolicy`]), heartbeats, handshake/idle/close timeouts and the graceful-shutdown drain.
//! - [`auth`]: JWT verification and per-topic permissions (optional); origin checks and per-IP/per-user limits
//!   live in the core loop.
//! - [`stats`]: per-core counters and the Prometheus exposition served at `/metrics`.
//!
//! ## Invariants
//! - A core's state is touched only by its own thread; other threads reach a core only through its bounded
//!   channel and its waker (an eventfd in the core's readiness set).
//! - An idle WebSocket connection holds no heap allocation: its decoder, head buffer and output queue are empty.
//! - Every queue is bounded: the output queue by the high-water mark and its policy, request heads by the head
//!   limits, messages by the message-size limit.
//!
//! ## Topics
//! Every topic has one owner core (by a stable hash of its name) that numbers its messages and keeps its history;
//! cores exchange messages only through bounded lock-free channels with an eventfd wake-up (see `bus`). Outside
//! threads publish through a [`Publisher`]. In multi-node mode ([`Config::redis`]) the owner of every topic is the
//! Redis bridge, one more endpoint of the same mesh served by its own thread; seq and history then live in Redis.
//!
//! ## Non-goals (for now)
//! TLS (terminate in front), permessage-deflate, Redis Cluster and Sentinel (see ARCHITECTURE.md).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod auth;
mod bridge;
mod bus;
pub mod config;
mod conn;
mod core;
mod error;
mod history;
mod poller;
mod publisher;
mod sendring;
pub mod server;
pub mod stats;

#[cfg(test)]
mod read_path_tests;

pub use auth::{AuthKey, Identity, Permissions};
pub use bridge::{RedisConfig, default_node_id};
pub use config::{Asset, Config, CoreSet, Driver, HistoryLimits, SlowConsumerPolicy};
pub use error::EngineError;
pub use publisher::{PublishError, Publisher};
pub use server::{ActiveDriver, ServerHandle, ShutdownTrigger, start};
