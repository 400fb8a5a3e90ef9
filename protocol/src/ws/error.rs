//! Owns [`ProtocolError`]: every way a peer can violate RFC 6455 §5 framing, mapped to the close code to answer.

use core::fmt;

use super::close::CloseCode;

/// A framing violation detected while decoding. The peer is always at fault; the connection must be failed with
/// [`ProtocolError::close_code`] (RFC 6455 §7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Peer set RSV1, RSV2 or RSV3 although no extension was negotiated (§5.2). Close code 1002.
    ReservedBits,
    /// Peer used an opcode that RFC 6455 reserves (3-7, 0xB-0xF) (§5.2). Close code 1002.
    UnknownOpcode,
    /// Peer sent a control frame with a payload longer than 125 bytes (§5.5). Close code 1002.
    ControlFrameTooLong,
    /// Peer sent a control frame with FIN clear; control frames must not be fragmented (§5.5). Close code 1002.
    FragmentedControlFrame,
    /// Client peer sent an unmasked frame to us in the server role (§5.1). Close code 1002.
    UnmaskedFrame,
    /// Server peer sent a masked frame to us in the client role (§5.1). Close code 1002.
    MaskedFrame,
    /// Peer sent a continuation frame while no fragmented message was open (§5.4). Close code 1002.
    UnexpectedContinuation,
    /// Peer started a new Text/Binary message while a fragmented one was still open (§5.4). Close code 1002.
    ExpectedContinuation,
    /// Peer used the 64-bit length form with the most significant bit set (§5.2). Close code 1002.
    InvalidLength,
    /// Peer sent a close frame whose payload is exactly one byte long (§5.5.1). Close code 1002.
    InvalidCloseLength,
    /// Peer sent a close frame with a status code that must not appear on the wire (§7.4). Close code 1002.
    InvalidCloseCode,
    /// Peer sent a text message or close reason that is not valid UTF-8 (§8.1). Close code 1007.
    InvalidUtf8,
    /// Peer's message (the sum of its fragments) exceeds our configured maximum. Close code 1009.
    MessageTooBig,
    /// Peer's frame payload length exceeds our configured maximum. Close code 1009.
    FrameTooBig,
}

impl ProtocolError {
    /// The close status code to send when failing the connection for this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooBig | Self::FrameTooBig => CloseCode::MESSAGE_TOO_BIG,
            Self::ReservedBits
            | Self::UnknownOpcode
            | Self::ControlFrameTooLong
            | Self::FragmentedControlFrame
            | Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidLength
            | Self::InvalidCloseLength
            | Self::InvalidCloseCode => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short static description, also usable as a close reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::UnknownOpcode => "unknown opcode",
            Self::ControlFrameTooLong => "control frame payload longer than 125 bytes",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::UnmaskedFrame => "unmasked client frame",
            Self::MaskedFrame => "masked server frame",
            Self::UnexpectedContinuation => "continuation frame without an open message",
            Self::ExpectedContinuation => "new data frame inside a fragmented message",
            Self::InvalidLength => "64-bit payload length with the most significant bit set",
            Self::InvalidCloseLength => "close payload of length 1",
            Self::InvalidCloseCode => "invalid close status code",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::MessageTooBig => "message too big",
            Self::FrameTooBig => "frame too big",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ProtocolError {}
