//! Incremental HTTP/1.1 request-head parsing (placeholder; being written).
