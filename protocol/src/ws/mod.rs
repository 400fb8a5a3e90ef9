//! The RFC 6455 §5 frame codec, in server and client roles.
//!
//! This module owns
//! - [`Decoder`]: the message-level decoder (header validation, in-place unmasking, reassembly of fragmented
//!   messages, strict incremental UTF-8, size limits) that lives in every connection and holds no heap memory
//!   while idle;
//! - the encoder: [`write_header`], [`encode_server_frame`], [`encode_client_frame`], [`server_frame_bytes`];
//! - close frames: [`CloseCode`], [`CloseFrame`], [`parse_close_payload`], [`encode_close_payload`];
//! - masking: [`apply_mask`], word at a time;
//! - [`ProtocolError`], every framing violation with its close code.
//!
//! Roles are types ([`Server`], [`Client`]) so the mask rules are fixed at compile time.
//! Extensions (RSV bits) are not supported: any RSV bit is a protocol error.

mod close;
mod decoder;
mod encoder;
mod error;
mod frame;
mod mask;
#[cfg(test)]
mod tests;

pub use close::{
    CloseCode, CloseFrame, MAX_CLOSE_REASON_LEN, encode_close_payload, parse_close_payload,
};
pub use decoder::{Decoder, DecoderConfig, Message};
pub use encoder::{
    MaskKeySource, encode_client_frame, encode_server_frame, server_close_frame_bytes,
    server_frame_bytes,
};
pub use error::ProtocolError;
pub use frame::{Client, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, Role, Server, write_header};
pub use mask::apply_mask;
