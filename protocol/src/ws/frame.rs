//! Owns the frame header (RFC 6455 §5.2): [`OpCode`], the [`Role`] markers, header validation while parsing
//! (incrementally, byte by byte in a fixed order) and header writing.

use super::error::ProtocolError;

mod sealed {
    /// Prevents downstream implementations of [`super::Role`].
    pub trait Sealed {}
    impl Sealed for super::Server {}
    impl Sealed for super::Client {}
}

/// Which end of the connection we are, decided at compile time. Sealed: only [`Server`] and [`Client`].
pub trait Role: sealed::Sealed + 'static {
    /// True for [`Server`]: we receive masked frames and send unmasked ones.
    const IS_SERVER: bool;
}

/// Server role: receives masked frames, sends unmasked frames.
#[derive(Debug)]
pub enum Server {}

/// Client role: receives unmasked frames, sends masked frames.
#[derive(Debug)]
pub enum Client {}

impl Role for Server {
    const IS_SERVER: bool = true;
}

impl Role for Client {
    const IS_SERVER: bool = false;
}

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation = 0,
    /// 0x1: UTF-8 text data.
    Text = 1,
    /// 0x2: binary data.
    Binary = 2,
    /// 0x8: connection close.
    Close = 8,
    /// 0x9: ping.
    Ping = 9,
    /// 0xA: pong.
    Pong = 10,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for reserved values (and anything above 15).
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong are control frames (opcode high bit set).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Largest possible frame header: 2 fixed bytes + 8 bytes of extended length + 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Write a frame header into `out`; returns its length (2 to 14 bytes).
///
/// `mask` is `Some` for frames sent in the client role. The shortest length form is always used.
/// `payload_len` must be below 2^63 (any real buffer is); larger values would be rejected by peers.
pub fn write_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    debug_assert!(payload_len >> 63 == 0, "payload length must be below 2^63");
    out[0] = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u64::from(u16::MAX) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        out[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    n
}

/// Size limits enforced from frame headers (u32 to keep the decoder small).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Maximum payload of one data frame.
    pub(crate) max_frame: u32,
    /// Maximum total payload of one data message.
    pub(crate) max_message: u32,
}

/// A fully parsed and validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// FIN bit.
    pub(crate) fin: bool,
    /// The opcode.
    pub(crate) opcode: OpCode,
    /// Masking key, if the MASK bit was set.
    pub(crate) mask: Option<[u8; 4]>,
    /// Payload length.
    pub(crate) len: u64,
    /// Header length in bytes (2 to 14).
    pub(crate) header_len: usize,
}

/// Parse and validate a frame header from the bytes available so far.
///
/// Checks run in wire order as soon as the byte they need is present, so the verdict (and which error) does not
/// depend on how the input was split. `open_message` is the length buffered so far of the fragmented data
/// message currently open, if any. Returns `Ok(None)` when more bytes are needed.
#[inline]
pub(crate) fn parse_header(
    buf: &[u8],
    server: bool,
    open_message: Option<usize>,
    limits: Limits,
) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::UnknownOpcode)?;
    let fin = b0 & 0x80 != 0;
    let control = opcode.is_control();
    if control && !fin {
        return Err(ProtocolError::FragmentedControlFrame);
    }
    match (opcode, open_message) {
        (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
        (OpCode::Text | OpCode::Binary, Some(_)) => {
            return Err(ProtocolError::ExpectedContinuation);
        }
        _ => {}
    }

    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    if server && !masked {
        return Err(ProtocolError::UnmaskedFrame);
    }
    if !server && masked {
        return Err(ProtocolError::MaskedFrame);
    }
    let len7 = b1 & 0x7f;
    if control && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlFrameTooLong);
    }
    if opcode == OpCode::Close && len7 == 1 {
        return Err(ProtocolError::InvalidCloseLength);
    }

    let (len, mut at) = match len7 {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(bytes) => {
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if !control {
        if len > u64::from(limits.max_frame) {
            return Err(ProtocolError::FrameTooBig);
        }
        let so_far = open_message.unwrap_or(0) as u64;
        if so_far.saturating_add(len) > u64::from(limits.max_message) {
            return Err(ProtocolError::MessageTooBig);
        }
    }

    let mask = if masked {
        match buf
            .get(at..at + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
        {
            Some(key) => {
                at += 4;
                Some(key)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        len,
        header_len: at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };

    #[test]
    fn opcode_table() {
        for v in 0u8..=255 {
            let op = OpCode::from_u8(v);
            match v {
                0 | 1 | 2 | 8 | 9 | 10 => {
                    let op = op.unwrap();
                    assert_eq!(op as u8, v);
                    assert_eq!(op.is_control(), v >= 8);
                }
                _ => assert_eq!(op, None, "{v}"),
            }
        }
    }

    #[test]
    fn header_length_forms_round_trip() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 32, (1 << 63) - 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = write_header(&mut out, true, OpCode::Binary, len, mask);
                let want = match len {
                    0..=125 => 2,
                    126..=65535 => 4,
                    _ => 10,
                } + if mask.is_some() { 4 } else { 0 };
                assert_eq!(n, want, "len {len}");
                let lim = Limits {
                    max_frame: u32::MAX,
                    max_message: u32::MAX,
                };
                let parsed = parse_header(&out[..n], mask.is_some(), None, lim);
                if len > u64::from(u32::MAX) {
                    assert_eq!(parsed, Err(ProtocolError::FrameTooBig));
                    continue;
                }
                let h = parsed.unwrap().unwrap();
                assert_eq!(h.len, len);
                assert_eq!(h.header_len, n);
                assert_eq!(h.mask, mask);
                assert!(h.fin);
                // Every strict prefix is incomplete, not an error.
                for cut in 0..n {
                    assert_eq!(
                        parse_header(&out[..cut], mask.is_some(), None, lim),
                        Ok(None)
                    );
                }
            }
        }
    }

    #[test]
    fn header_error_table() {
        use ProtocolError::*;
        // (bytes, server role, open message, expected)
        type Row = (
            &'static [u8],
            bool,
            Option<usize>,
            Result<Option<()>, ProtocolError>,
        );
        let table: &[Row] = &[
            (b"\xc1", true, None, Err(ReservedBits)),
            (b"\xa1", true, None, Err(ReservedBits)),
            (b"\x91", true, None, Err(ReservedBits)),
            (b"\xf3", true, None, Err(ReservedBits)), // RSV checked before opcode
            (b"\x83", true, None, Err(UnknownOpcode)),
            (b"\x87", true, None, Err(UnknownOpcode)),
            (b"\x8b", true, None, Err(UnknownOpcode)),
            (b"\x8f", true, None, Err(UnknownOpcode)),
            (b"\x09", true, None, Err(FragmentedControlFrame)),
            (b"\x08", true, Some(3), Err(FragmentedControlFrame)),
            (b"\x80", true, None, Err(UnexpectedContinuation)),
            (b"\x00", true, None, Err(UnexpectedContinuation)),
            (b"\x81", true, Some(0), Err(ExpectedContinuation)),
            (b"\x02", true, Some(5), Err(ExpectedContinuation)),
            (b"\x80", true, Some(5), Ok(None)),
            (b"\x81\x00", true, None, Err(UnmaskedFrame)),
            (b"\x81\x80", false, None, Err(MaskedFrame)),
            (b"\x89\xfe", true, None, Err(ControlFrameTooLong)),
            (b"\x89\x7e", false, None, Err(ControlFrameTooLong)),
            (b"\x8a\x7f", false, None, Err(ControlFrameTooLong)),
            (b"\x88\x81", true, None, Err(InvalidCloseLength)),
            (b"\x88\x01", false, None, Err(InvalidCloseLength)),
            (b"\x89\x7d", false, None, Ok(Some(()))),
            (b"\x89\xfd", true, None, Ok(None)),
            (
                b"\x82\x7f\x80\0\0\0\0\0\0\0",
                false,
                None,
                Err(InvalidLength),
            ),
            (
                b"\x82\x7f\x00\0\0\0\0\x10\0\x01",
                false,
                None,
                Err(FrameTooBig),
            ),
            (b"\x82\x7e\xff\xff", false, None, Ok(Some(()))),
            (b"\x82\x7f\x00\0\0\0\0\x10\0\x00", false, None, Ok(Some(()))),
            (
                b"\x80\x7f\x00\0\0\0\0\x10\0\x00",
                false,
                Some(1),
                Err(MessageTooBig),
            ),
            (
                b"\x80\x7f\x00\0\0\0\0\x0f\xff\xff",
                false,
                Some(1),
                Ok(Some(())),
            ),
        ];
        for (bytes, server, open, want) in table {
            let got = parse_header(bytes, *server, *open, LIM).map(|o| o.map(|_| ()));
            assert_eq!(
                &got, want,
                "bytes {bytes:02x?} server {server} open {open:?}"
            );
        }
    }
}
