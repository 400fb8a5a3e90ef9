//! The Server-Sent Events writer (placeholder; being written).
