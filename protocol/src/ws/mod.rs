//! The RFC 6455 frame codec (placeholder; being written).
