//! Polling envelopes (placeholder; being written).
