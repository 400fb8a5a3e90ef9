//! The RFC 6455 opening handshake (placeholder; being written).
