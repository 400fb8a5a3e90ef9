//! Owns frame encoding: whole frames into caller buffers (server role unmasked, client role masked with keys
//! from a [`MaskKeySource`]) and shared [`Bytes`] frames for fan-out.

use bytes::{BufMut, Bytes, BytesMut};

use super::close::{CloseCode, encode_close_payload};
use super::frame::{MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, write_header};
use super::mask::apply_mask;

/// Source of masking keys for the client role. Tests can use a fixed key; the engine and load generator supply
/// a fast PRNG. Implemented for every `FnMut() -> [u8; 4]` closure.
pub trait MaskKeySource {
    /// The key for the next frame.
    fn next_key(&mut self) -> [u8; 4];
}

impl<F: FnMut() -> [u8; 4]> MaskKeySource for F {
    fn next_key(&mut self) -> [u8; 4] {
        self()
    }
}

/// Append a whole unmasked frame (server role) to `buf`, allocating nothing beyond `buf`'s own growth.
pub fn encode_server_frame<B: BufMut>(buf: &mut B, fin: bool, opcode: OpCode, payload: &[u8]) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = write_header(&mut hdr, fin, opcode, payload.len() as u64, None);
    buf.put_slice(hdr.get(..n).unwrap_or_default());
    buf.put_slice(payload);
}

/// Append a whole masked frame (client role) to `buf`, with a fresh key from `keys`. The payload is masked
/// through a small stack buffer; nothing is allocated beyond `buf`'s own growth.
pub fn encode_client_frame<B: BufMut>(
    buf: &mut B,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    keys: &mut impl MaskKeySource,
) {
    const CHUNK: usize = 512;
    let key = keys.next_key();
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = write_header(&mut hdr, fin, opcode, payload.len() as u64, Some(key));
    buf.put_slice(hdr.get(..n).unwrap_or_default());
    let mut tmp = [0u8; CHUNK];
    // CHUNK is a multiple of 4, so every chunk starts at mask phase 0.
    for chunk in payload.chunks(CHUNK) {
        let t = tmp.get_mut(..chunk.len()).unwrap_or_default();
        t.copy_from_slice(chunk);
        apply_mask(t, key, 0);
        buf.put_slice(t);
    }
}

/// One whole (FIN) server frame as shared bytes, so one encoded message can be handed to many connections.
pub fn server_frame_bytes(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    encode_server_frame(&mut b, true, opcode, payload);
    b.freeze()
}

/// A whole server close frame carrying `code` and `reason` (truncated to 123 bytes at a char boundary).
pub fn server_close_frame_bytes(code: CloseCode, reason: &str) -> Bytes {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let n = encode_close_payload(code, reason, &mut payload);
    server_frame_bytes(OpCode::Close, payload.get(..n).unwrap_or_default())
}
