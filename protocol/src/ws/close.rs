//! Owns close frames: [`CloseCode`], [`CloseFrame`], and parsing/encoding of close payloads (RFC 6455 §5.5.1,
//! §7.4).

use super::error::ProtocolError;

/// A close status code (RFC 6455 §7.4), as a `u16` newtype so unregistered values round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: endpoint going away (server shutdown, page navigated away).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: received a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: message data inconsistent with its type (e.g. non-UTF-8 text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: unexpected condition on the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// May this code appear in a close frame on the wire?
    ///
    /// True for 1000-1003, 1007-1014 (1010/1011 from RFC 6455; 1012 service restart, 1013 try again later and
    /// 1014 bad gateway from the IANA registry, which the Autobahn test suite accepts) and 3000-4999 (registered
    /// and private use). False for 0-999, 1004 (reserved), 1005/1006/1015 (must never be sent), 1016-2999
    /// (reserved for future protocol use) and 5000 and above.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        CloseCode(v)
    }
}

/// A parsed close frame payload: status code and UTF-8 reason (possibly empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code; always [`CloseCode::is_sendable`] when produced by [`parse_close_payload`].
    pub code: CloseCode,
    /// The reason text, at most 123 bytes.
    pub reason: &'a str,
}

/// Maximum length of a close reason: a control payload is at most 125 bytes, 2 of which are the code.
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// Parse a close frame's payload.
///
/// Empty → `Ok(None)` (no status code); length 1 → [`ProtocolError::InvalidCloseLength`]; code not
/// [`CloseCode::is_sendable`] → [`ProtocolError::InvalidCloseCode`]; reason not UTF-8 →
/// [`ProtocolError::InvalidUtf8`].
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidCloseLength),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode);
            }
            let reason = crate::utf8::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Write a close payload (big-endian code, then the reason truncated to at most 123 bytes at a char boundary)
/// into `out`; returns the number of bytes written.
pub fn encode_close_payload(code: CloseCode, reason: &str, out: &mut [u8; 125]) -> usize {
    let reason = truncate_at_char_boundary(reason, MAX_CLOSE_REASON_LEN);
    let [hi, lo] = code.0.to_be_bytes();
    out[0] = hi;
    out[1] = lo;
    let n = reason.len();
    if let Some(dst) = out.get_mut(2..2 + n) {
        dst.copy_from_slice(reason.as_bytes());
    }
    2 + n
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
pub(crate) fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s.get(..n).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_table() {
        let table: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1008, true),
            (1009, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (1100, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (65535, false),
        ];
        for &(code, ok) in table {
            assert_eq!(CloseCode(code).is_sendable(), ok, "code {code}");
        }
    }

    #[test]
    fn parse_table() {
        type Expect = Result<Option<(u16, &'static str)>, ProtocolError>;
        let table: &[(&[u8], Expect)] = &[
            (b"", Ok(None)),
            (b"\x03", Err(ProtocolError::InvalidCloseLength)),
            (b"\x03\xe8", Ok(Some((1000, "")))),
            (b"\x03\xe8bye", Ok(Some((1000, "bye")))),
            (b"\x0f\xa0\xce\xba", Ok(Some((4000, "\u{3ba}")))),
            (b"\x03\xed", Err(ProtocolError::InvalidCloseCode)),
            (b"\x03\xee", Err(ProtocolError::InvalidCloseCode)),
            (b"\x00\x00", Err(ProtocolError::InvalidCloseCode)),
            (b"\x13\x88", Err(ProtocolError::InvalidCloseCode)),
            (b"\x03\xe8\xff", Err(ProtocolError::InvalidUtf8)),
            (b"\x03\xe8\xce", Err(ProtocolError::InvalidUtf8)),
            (b"\x03\xe7ok", Err(ProtocolError::InvalidCloseCode)),
        ];
        for (input, want) in table {
            let got = parse_close_payload(input).map(|o| o.map(|f| (f.code.0, f.reason)));
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn encode_truncates_at_char_boundary() {
        let mut out = [0u8; 125];
        // 61 two-byte chars = 122 bytes, then a 2-byte char that would cross 123.
        let reason: String = "é".repeat(62);
        let n = encode_close_payload(CloseCode::GOING_AWAY, &reason, &mut out);
        assert_eq!(n, 2 + 122);
        let parsed = parse_close_payload(&out[..n]).unwrap().unwrap();
        assert_eq!(parsed.code, CloseCode::GOING_AWAY);
        assert_eq!(parsed.reason, "é".repeat(61));

        let ascii = "x".repeat(200);
        let n = encode_close_payload(CloseCode::NORMAL, &ascii, &mut out);
        assert_eq!(n, 125);
        let n = encode_close_payload(CloseCode::NORMAL, "", &mut out);
        assert_eq!(n, 2);
        assert_eq!(&out[..2], b"\x03\xe8");
    }

    #[test]
    fn error_close_codes() {
        use ProtocolError::*;
        for e in [
            ReservedBits,
            UnknownOpcode,
            ControlFrameTooLong,
            FragmentedControlFrame,
            UnmaskedFrame,
            MaskedFrame,
            UnexpectedContinuation,
            ExpectedContinuation,
            InvalidLength,
            InvalidCloseLength,
            InvalidCloseCode,
        ] {
            assert_eq!(e.close_code(), CloseCode(1002), "{e}");
        }
        assert_eq!(InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(MessageTooBig.close_code(), CloseCode(1009));
        assert_eq!(FrameTooBig.close_code(), CloseCode(1009));
        assert_eq!(InvalidUtf8.to_string(), "invalid UTF-8");
    }
}
