//! # ringcast-engine
//!
//! Share-nothing, thread-per-core reactors (placeholder; being written).
