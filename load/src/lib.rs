//! `ringcast-load`: a load generator for push servers that is never the bottleneck: one monoio io_uring runtime
//! per pinned thread, the client role of ringcast's own codec (masked frames, keys from a fast PRNG), worker
//! processes and source-address spreading to get past per-process and per-address limits.
//!
//! Modes: [`connect`] (hold N idle connections, server memory per connection), [`echo`] (round trips with a window
//! in flight), [`fanout`] (subscribers checking every seq, publish-to-receive latency) and churn (in [`echo`]; subscribing churn
//! in [`churn_sub`]).
//! [`app::run`] is the whole program; the binary only calls it.

pub mod app;
pub mod churn_sub;
pub mod cli;
pub mod connect;
pub mod echo;
pub mod fanout;
pub mod net;
pub mod run;
pub mod seq;
pub mod stats;
