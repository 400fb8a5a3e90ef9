//! Owns the message-level [`Decoder`]: frame parsing, in-place unmasking, reassembly of fragmented messages,
//! strict incremental UTF-8 validation and size limits, with zero heap allocation while idle.
//!
//! All partial state lives in one boxed [`Partial`] that exists only while a frame or a fragmented message is
//! incomplete, so an idle connection costs `size_of::<Decoder<_>>()` bytes and nothing on the heap.

use core::marker::PhantomData;

use super::close::{CloseFrame, parse_close_payload};
use super::error::ProtocolError;
use super::frame::{
    FrameHeader, Limits, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, Role, parse_header,
};
use super::mask::apply_mask;

/// Decoder limits.
#[derive(Clone, Copy, Debug)]
pub struct DecoderConfig {
    /// Maximum size of one data message, the sum of its fragments (default 1 MiB). Values above `u32::MAX` are
    /// clamped to `u32::MAX`.
    pub max_message_size: usize,
    /// Maximum payload length of one data frame, checked from its header (default 1 MiB). Values above
    /// `u32::MAX` are clamped to `u32::MAX`. Control frames are bounded at 125 bytes by the protocol instead.
    pub max_frame_size: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
        }
    }
}

/// One decoded item. Data messages are whole (reassembled); control frames are surfaced as soon as complete,
/// even between the fragments of a data message, without disturbing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A complete, UTF-8-validated text message.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping with its application data (at most 125 bytes).
    Ping(&'a [u8]),
    /// A pong with its application data (at most 125 bytes).
    Pong(&'a [u8]),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame<'a>>),
}

/// Message-level decoder for role `R` ([`super::Server`] or [`super::Client`]).
///
/// Feed bytes with [`Decoder::decode`] in a loop until it returns `None`. Memory: 24 bytes inline plus a heap
/// block only while a frame or fragmented message is incomplete.
pub struct Decoder<R: Role> {
    /// Partial state; `None` when idle.
    partial: Option<Box<Partial>>,
    /// Header-checked limits.
    limits: Limits,
    /// Set once decoding failed; every later call returns it.
    error: Option<ProtocolError>,
    _role: PhantomData<R>,
}

impl<R: Role> core::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decoder")
            .field("server", &R::IS_SERVER)
            .field("buffered_bytes", &self.buffered_bytes())
            .field("limits", &self.limits)
            .field("error", &self.error)
            .finish()
    }
}

impl<R: Role> Default for Decoder<R> {
    fn default() -> Self {
        Self::new(DecoderConfig::default())
    }
}

/// What the previous `decode` call handed out of [`Partial`], to be released at the start of the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivered {
    Nothing,
    Control,
    Data,
}

/// The frame whose payload is currently being received into [`Partial`].
#[derive(Clone, Copy, Debug)]
struct OpenFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload offset mod 4, for unmasking.
    phase: u8,
}

/// Everything an incomplete frame or message needs; boxed, and dropped as soon as nothing is pending.
#[derive(Debug)]
struct Partial {
    /// Reassembled payload of the open data message.
    msg: Vec<u8>,
    /// Prefix of `msg` already proven to be complete UTF-8 code points (text messages only); the rest, at most
    /// 3 bytes, is the carry of an incomplete code point.
    utf8_checked: usize,
    /// Opcode (Text/Binary) of the open data message, if any.
    msg_opcode: Option<OpCode>,
    /// Frame currently receiving payload, if any.
    frame: Option<OpenFrame>,
    /// What was handed to the caller last time.
    delivered: Delivered,
    /// Header bytes of a frame whose header is incomplete.
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    /// Payload of the control frame being received.
    ctrl: [u8; MAX_CONTROL_PAYLOAD],
    ctrl_len: u8,
}

/// Outcome of feeding payload bytes into [`Partial`].
enum Feed {
    /// Input ran out before the frame ended.
    NeedMore,
    /// A non-final data frame ended; the message stays open.
    FrameDone,
    /// A control frame with this opcode is complete in `ctrl`.
    Control(OpCode),
    /// A data message is complete in `msg`.
    Data,
}

/// Where the message to return lives.
enum Done {
    Nothing,
    /// Whole frame `start..end` of the input (already unmasked).
    Input {
        opcode: OpCode,
        start: usize,
        end: usize,
    },
    /// Control frame in `Partial::ctrl`.
    PartialControl(OpCode),
    /// Data message in `Partial::msg`.
    PartialData(OpCode),
}

/// A decoded message whose bytes are still in the input, or a marker that it is in [`Partial`].
enum Ready<'a> {
    Nothing,
    Message(Message<'a>),
    PartialControl(OpCode),
    PartialData(OpCode),
}

impl Partial {
    fn new() -> Box<Self> {
        Box::new(Partial {
            msg: Vec::new(),
            utf8_checked: 0,
            msg_opcode: None,
            frame: None,
            delivered: Delivered::Nothing,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            ctrl: [0; MAX_CONTROL_PAYLOAD],
            ctrl_len: 0,
        })
    }

    /// Forget what was handed out last call.
    fn release_delivered(&mut self) {
        match self.delivered {
            Delivered::Nothing => {}
            Delivered::Control => self.ctrl_len = 0,
            Delivered::Data => {
                self.msg = Vec::new();
                self.msg_opcode = None;
                self.utf8_checked = 0;
            }
        }
        self.delivered = Delivered::Nothing;
    }

    /// True when nothing is pending and the box can be dropped.
    fn is_empty(&self) -> bool {
        self.hdr_len == 0
            && self.frame.is_none()
            && self.msg_opcode.is_none()
            && self.delivered == Delivered::Nothing
    }

    /// Start receiving the payload of a frame that is not wholly in the input (or is a data fragment).
    fn begin_frame(&mut self, h: &FrameHeader) {
        if h.opcode.is_control() {
            self.ctrl_len = 0;
        } else if self.msg_opcode.is_none() {
            // A new Text/Binary message (the header check rejected continuations without an open message).
            self.msg_opcode = Some(h.opcode);
            self.msg.clear();
            self.utf8_checked = 0;
        }
        self.frame = Some(OpenFrame {
            opcode: h.opcode,
            fin: h.fin,
            mask: h.mask,
            remaining: h.len,
            phase: 0,
        });
    }

    /// Consume payload for the open frame from `input`; returns bytes consumed and what happened.
    fn feed(&mut self, input: &mut [u8]) -> Result<(usize, Feed), ProtocolError> {
        let Some(mut f) = self.frame else {
            return Ok((0, Feed::FrameDone));
        };
        let take = usize::try_from(f.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let chunk = input.get_mut(..take).unwrap_or_default();
        if let Some(key) = f.mask {
            apply_mask(chunk, key, usize::from(f.phase));
        }
        f.phase = ((usize::from(f.phase) + take) % 4) as u8;
        f.remaining -= take as u64;
        if f.opcode.is_control() {
            let at = usize::from(self.ctrl_len);
            // The header check bounds control payloads at 125 bytes, so this always fits.
            let dst = self
                .ctrl
                .get_mut(at..at + take)
                .ok_or(ProtocolError::ControlFrameTooLong)?;
            dst.copy_from_slice(chunk);
            self.ctrl_len = (at + take) as u8;
        } else {
            self.msg.extend_from_slice(chunk);
            if self.msg_opcode == Some(OpCode::Text) {
                check_utf8_incremental(&self.msg, &mut self.utf8_checked)?;
            }
        }
        if f.remaining > 0 {
            self.frame = Some(f);
            return Ok((take, Feed::NeedMore));
        }
        self.frame = None;
        if f.opcode.is_control() {
            if f.opcode == OpCode::Close {
                let payload = self
                    .ctrl
                    .get(..usize::from(self.ctrl_len))
                    .unwrap_or_default();
                parse_close_payload(payload)?;
            }
            self.delivered = Delivered::Control;
            return Ok((take, Feed::Control(f.opcode)));
        }
        if !f.fin {
            return Ok((take, Feed::FrameDone));
        }
        if self.msg_opcode == Some(OpCode::Text) && self.utf8_checked != self.msg.len() {
            // The message ended inside a code point.
            return Err(ProtocolError::InvalidUtf8);
        }
        self.delivered = Delivered::Data;
        Ok((take, Feed::Data))
    }
}

/// Validate the bytes of `buf` after `*checked`, advancing `*checked` past every complete code point. An
/// incomplete but still possible sequence at the end is carried; anything already impossible is an error.
fn check_utf8_incremental(buf: &[u8], checked: &mut usize) -> Result<(), ProtocolError> {
    let tail = buf.get(*checked..).unwrap_or_default();
    if crate::utf8::is_short_ascii(tail) {
        *checked = buf.len();
        return Ok(());
    }
    match simdutf8::compat::from_utf8(tail) {
        Ok(_) => *checked = buf.len(),
        Err(e) => match e.error_len() {
            Some(_) => return Err(ProtocolError::InvalidUtf8),
            None => *checked += e.valid_up_to(),
        },
    }
    Ok(())
}

impl<R: Role> Decoder<R> {
    /// A decoder with the given limits (stored compactly as `u32`).
    pub fn new(config: DecoderConfig) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Decoder {
            partial: None,
            limits: Limits {
                max_frame: clamp(config.max_frame_size),
                max_message: clamp(config.max_message_size),
            },
            error: None,
            _role: PhantomData,
        }
    }

    /// Feed input; unmasks `input` in place (server role). Returns (bytes consumed, at most one message).
    ///
    /// Call in a loop: `let mut pos = 0; loop { let (n, msg) = dec.decode(&mut buf[pos..])?; pos += n; match
    /// msg { Some(m) => handle(m), None => break } }`. When it returns `None` it has consumed all of `input`
    /// (anything incomplete is copied into internal state), so the caller may then drop or reuse its buffer.
    /// A message that was reassembled internally stays borrowed until the next call, which releases it (the
    /// loop above always makes that call). Input split at any byte boundary gives the same sequence of
    /// messages and the same error. After an `Err` the decoder is poisoned: every later call returns the same
    /// error, and its buffers are freed.
    ///
    /// A whole unfragmented frame present in `input` is returned as a slice of `input` without copying.
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Message<'a>>), ProtocolError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.partial.is_none()
            && let Some((n, op, start)) = small_frame(input, R::IS_SERVER, self.limits)
        {
            let input: &'a [u8] = input;
            let payload = input.get(start..n).unwrap_or_default();
            return match data_message(op, payload) {
                Ok(m) => Ok((n, Some(m))),
                Err(e) => {
                    self.error = Some(e);
                    Err(e)
                }
            };
        }
        let (n, ready) = match run(&mut self.partial, R::IS_SERVER, self.limits, input) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                self.partial = None;
                return Err(e);
            }
        };
        let msg = match ready {
            Ready::Nothing => None,
            Ready::Message(m) => Some(m),
            Ready::PartialControl(op) => {
                let p = self.partial.as_deref();
                let payload = p
                    .and_then(|p| p.ctrl.get(..usize::from(p.ctrl_len)))
                    .unwrap_or_default();
                match control_message(op, payload) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // Unreachable: `feed` validated the close payload already.
                        self.error = Some(e);
                        return Err(e);
                    }
                }
            }
            Ready::PartialData(op) => {
                let payload = self
                    .partial
                    .as_deref()
                    .map(|p| &p.msg[..])
                    .unwrap_or_default();
                match data_message(op, payload) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // Unreachable: `feed` validated the text incrementally already.
                        self.error = Some(e);
                        return Err(e);
                    }
                }
            }
        };
        Ok((n, msg))
    }

    /// True when no partial frame or message is held (nothing buffered). A message reassembled internally and
    /// returned by the last [`Decoder::decode`] counts as held until the next call releases it.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Bytes currently held on the heap for partial state (0 when idle).
    pub fn buffered_bytes(&self) -> usize {
        self.partial
            .as_deref()
            .map_or(0, |p| core::mem::size_of::<Partial>() + p.msg.capacity())
    }

    /// The error this decoder failed with, if any.
    pub fn error(&self) -> Option<ProtocolError> {
        self.error
    }
}

/// Build a control message from its (unmasked, complete) payload.
#[inline]
fn control_message(op: OpCode, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    Ok(match op {
        OpCode::Ping => Message::Ping(payload),
        OpCode::Pong => Message::Pong(payload),
        _ => Message::Close(parse_close_payload(payload)?),
    })
}

/// Build a data message from its complete payload, validating text.
#[inline]
fn data_message(op: OpCode, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
    Ok(match op {
        OpCode::Text => {
            Message::Text(crate::utf8::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
        }
        _ => Message::Binary(payload),
    })
}

/// The common case, checked before the general loop: `input` starts with a whole final text or binary frame whose
/// length fits the header's 7 or 16 bits (a pub/sub delivery, an echo up to 64 KiB), masked as the role requires
/// and within the limits. Unmasks its payload in place and returns the frame's end, its opcode and where its
/// payload starts; `None` sends anything else (a longer, fragmented, control, reserved-bit or incomplete frame, or one that breaks
/// a rule) to the general loop, which decides it exactly as before.
#[inline]
fn small_frame(input: &mut [u8], server: bool, limits: Limits) -> Option<(usize, OpCode, usize)> {
    let (&b0, &b1) = (input.first()?, input.get(1)?);
    let op = match b0 {
        0x81 => OpCode::Text,
        0x82 => OpCode::Binary,
        _ => return None,
    };
    if (b1 & 0x80 != 0) != server {
        return None;
    }
    let (len, key_at) = match b1 & 0x7f {
        127 => return None,
        126 => (u16::from_be_bytes([*input.get(2)?, *input.get(3)?]), 4),
        n => (u16::from(n), 2),
    };
    let len32 = u32::from(len);
    if len32 > limits.max_frame || len32 > limits.max_message {
        return None;
    }
    let start = if server { key_at + 4 } else { key_at };
    let end = start + usize::from(len);
    if server {
        let key = <[u8; 4]>::try_from(input.get(key_at..start)?).ok()?;
        apply_mask(input.get_mut(start..end)?, key, 0);
    } else if input.len() < end {
        return None;
    }
    Some((end, op, start))
}

/// The decoding loop. Never hands out borrows of `slot`, only of `input`, so the caller can poison on error.
#[inline]
fn run<'a>(
    slot: &mut Option<Box<Partial>>,
    server: bool,
    limits: Limits,
    input: &'a mut [u8],
) -> Result<(usize, Ready<'a>), ProtocolError> {
    if let Some(p) = slot.as_deref_mut() {
        p.release_delivered();
        if p.is_empty() {
            *slot = None;
        }
    }
    let mut pos = 0usize;
    let done = loop {
        // 1. Payload of a frame already in progress.
        if let Some(p) = slot.as_deref_mut()
            && p.frame.is_some()
        {
            let (n, fed) = p.feed(input.get_mut(pos..).unwrap_or_default())?;
            pos += n;
            match fed {
                Feed::NeedMore => break Done::Nothing,
                Feed::FrameDone => {}
                Feed::Control(op) => break Done::PartialControl(op),
                Feed::Data => break Done::PartialData(p.msg_opcode.unwrap_or(OpCode::Binary)),
            }
        }
        let rest = input.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break Done::Nothing;
        }

        // 2. A header, possibly continuing one stashed by an earlier call.
        let open = slot
            .as_deref()
            .and_then(|p| p.msg_opcode.map(|_| p.msg.len()));
        let header = match slot.as_deref_mut().filter(|p| p.hdr_len > 0) {
            Some(p) => {
                let have = usize::from(p.hdr_len);
                let take = (MAX_HEADER_LEN - have).min(rest.len());
                let mut tmp = p.hdr;
                if let (Some(dst), Some(src)) = (tmp.get_mut(have..have + take), rest.get(..take)) {
                    dst.copy_from_slice(src);
                }
                match parse_header(
                    tmp.get(..have + take).unwrap_or_default(),
                    server,
                    open,
                    limits,
                )? {
                    Some(h) => {
                        p.hdr_len = 0;
                        pos += h.header_len - have;
                        h
                    }
                    None => {
                        // Incomplete even with all of `rest`: take it all.
                        p.hdr = tmp;
                        p.hdr_len = (have + take) as u8;
                        pos += take;
                        continue;
                    }
                }
            }
            None => match parse_header(rest, server, open, limits)? {
                Some(h) => {
                    pos += h.header_len;
                    h
                }
                None => {
                    let p = slot.get_or_insert_with(Partial::new);
                    if let Some(dst) = p.hdr.get_mut(..rest.len()) {
                        dst.copy_from_slice(rest);
                    }
                    p.hdr_len = rest.len() as u8;
                    pos += rest.len();
                    continue;
                }
            },
        };

        // 3. Zero-copy fast path: the whole frame is here and is not part of a fragmented message.
        let avail = (input.len() - pos) as u64;
        let standalone = header.opcode.is_control() || (header.fin && open.is_none());
        if standalone && header.len <= avail {
            let start = pos;
            let end = pos + header.len as usize;
            if let (Some(key), Some(payload)) = (header.mask, input.get_mut(start..end)) {
                apply_mask(payload, key, 0);
            }
            pos = end;
            // A header that was completed from stashed bytes may have been the only thing held.
            if slot.as_deref().is_some_and(Partial::is_empty) {
                *slot = None;
            }
            break Done::Input {
                opcode: header.opcode,
                start,
                end,
            };
        }

        // 4. Copy path: incomplete frame, or a fragment of a message.
        let p = slot.get_or_insert_with(Partial::new);
        p.begin_frame(&header);
    };

    let input: &'a [u8] = input;
    let ready = match done {
        Done::Nothing => Ready::Nothing,
        Done::Input { opcode, start, end } => {
            let payload = input.get(start..end).unwrap_or_default();
            Ready::Message(if opcode.is_control() {
                control_message(opcode, payload)?
            } else {
                data_message(opcode, payload)?
            })
        }
        Done::PartialControl(op) => Ready::PartialControl(op),
        Done::PartialData(op) => Ready::PartialData(op),
    };
    Ok((pos, ready))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{Client, CloseCode, Server, encode_client_frame, encode_server_frame};

    /// An owned copy of a decoded message, for comparisons.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    fn own(m: Message<'_>) -> Owned {
        match m {
            Message::Text(s) => Owned::Text(s.to_owned()),
            Message::Binary(b) => Owned::Binary(b.to_vec()),
            Message::Ping(b) => Owned::Ping(b.to_vec()),
            Message::Pong(b) => Owned::Pong(b.to_vec()),
            Message::Close(c) => Owned::Close(c.map(|c| (c.code.0, c.reason.to_owned()))),
        }
    }

    /// Decode all of `input` with role R, in chunks of `chunk` bytes.
    fn decode_all<R: Role>(input: &[u8], chunk: usize) -> (Vec<Owned>, Option<ProtocolError>) {
        let mut dec = Decoder::<R>::new(DecoderConfig::default());
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut buf = piece.to_vec();
            let mut pos = 0;
            loop {
                match dec.decode(&mut buf[pos..]) {
                    Ok((n, Some(m))) => {
                        pos += n;
                        out.push(own(m));
                    }
                    Ok((n, None)) => {
                        assert_eq!(pos + n, buf.len(), "None must consume everything");
                        break;
                    }
                    Err(e) => {
                        // Poisoned: the same error again.
                        assert_eq!(dec.decode(&mut [0x81]).err(), Some(e));
                        assert!(dec.is_idle());
                        return (out, Some(e));
                    }
                }
            }
        }
        (out, None)
    }

    fn key() -> [u8; 4] {
        [0xa1, 0x5b, 0x3c, 0x07]
    }

    /// Client-encoded (masked) frame.
    fn cframe(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_client_frame(&mut v, fin, op, payload, &mut key);
        v
    }

    /// Server-encoded (unmasked) frame.
    fn sframe(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_server_frame(&mut v, fin, op, payload);
        v
    }

    /// Decode in every chunk size and check all agree with the one-shot decode; return it.
    fn decode_server_all_splits(input: &[u8]) -> (Vec<Owned>, Option<ProtocolError>) {
        let whole = decode_all::<Server>(input, input.len());
        for chunk in 1..=input.len().min(40) {
            assert_eq!(decode_all::<Server>(input, chunk), whole, "chunk {chunk}");
        }
        whole
    }

    #[test]
    fn decoder_is_small() {
        assert!(core::mem::size_of::<Decoder<Server>>() <= 48);
        assert!(core::mem::size_of::<Decoder<Client>>() <= 48);
        assert_eq!(core::mem::size_of::<Decoder<Server>>(), 24);
    }

    #[test]
    fn every_length_form_and_boundary() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = cframe(true, OpCode::Binary, &payload);
            let hdr = wire.len() - len;
            assert_eq!(
                hdr,
                match len {
                    0..=125 => 6,
                    126..=65535 => 8,
                    _ => 14,
                }
            );
            for chunk in [1, 2, 3, 7, 1000, wire.len()] {
                let (msgs, err) = decode_all::<Server>(&wire, chunk);
                assert_eq!(err, None);
                assert_eq!(
                    msgs,
                    vec![Owned::Binary(payload.clone())],
                    "len {len} chunk {chunk}"
                );
            }
            let (msgs, err) = decode_all::<Client>(&sframe(true, OpCode::Binary, &payload), 4096);
            assert_eq!((msgs, err), (vec![Owned::Binary(payload)], None));
        }
    }

    /// Decodes `wire` (possibly several frames) with role R and the given limits: in one call per message
    /// (`whole`, where `small_frame` takes every frame it can), or one byte per call, which never holds a whole
    /// frame and so always goes through the general loop. The two must agree on every message and the error, and
    /// without an error on the bytes consumed.
    fn small_frame_agrees<R: Role>(wire: &[u8], limits: DecoderConfig) {
        let run = |split: bool| {
            let mut dec = Decoder::<R>::new(limits);
            let mut buf = wire.to_vec();
            let mut pos = 0;
            let mut out = Vec::new();
            while pos < buf.len() {
                let end = if split { pos + 1 } else { buf.len() };
                match dec.decode(&mut buf[pos..end]) {
                    Ok((n, m)) => {
                        pos += n;
                        out.push(m.map(own));
                        if n == 0 {
                            break;
                        }
                    }
                    Err(e) => return (out, pos, Some(e)),
                }
            }
            (out, pos, None)
        };
        let (whole, split) = (run(false), run(true));
        let messages = |v: &Vec<Option<Owned>>| v.iter().flatten().cloned().collect::<Vec<_>>();
        assert_eq!(messages(&whole.0), messages(&split.0), "{wire:02x?}");
        assert_eq!(whole.2, split.2, "{wire:02x?}");
        if whole.2.is_none() {
            assert_eq!(whole.1, split.1, "{wire:02x?}");
        }
    }

    #[test]
    fn small_frames_decode_as_the_general_loop_does() {
        let tight = DecoderConfig {
            max_message_size: 100,
            max_frame_size: 120,
        };
        let texts: [&[u8]; 4] = [b"", b"hello", "caf\u{e9} \u{20ac}".as_bytes(), &[b'a'; 125]];
        for limits in [DecoderConfig::default(), tight] {
            for len in [
                0usize, 1, 99, 100, 101, 120, 121, 125, 126, 300, 65535, 65536,
            ] {
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                for op in [OpCode::Text, OpCode::Binary] {
                    // Two frames back to back, and a frame cut short by one byte.
                    let mut two = cframe(true, op, &payload);
                    two.extend(cframe(true, op, b"next"));
                    small_frame_agrees::<Server>(&two, limits);
                    small_frame_agrees::<Server>(
                        &two[..cframe(true, op, &payload).len() - 1],
                        limits,
                    );
                    let mut two = sframe(true, op, &payload);
                    two.extend(sframe(true, op, b"next"));
                    small_frame_agrees::<Client>(&two, limits);
                    // The wrong masking for the role, a non-final frame, a reserved bit.
                    small_frame_agrees::<Server>(&sframe(true, op, &payload), limits);
                    small_frame_agrees::<Client>(&cframe(true, op, &payload), limits);
                    small_frame_agrees::<Server>(&cframe(false, op, &payload), limits);
                    let mut rsv = cframe(true, op, &payload);
                    rsv[0] |= 0x40;
                    small_frame_agrees::<Server>(&rsv, limits);
                }
            }
            for t in texts {
                small_frame_agrees::<Server>(&cframe(true, OpCode::Text, t), limits);
                small_frame_agrees::<Client>(&sframe(true, OpCode::Text, t), limits);
            }
            // Invalid UTF-8 in a whole small text frame: the same error, and the decoder stays poisoned.
            for bad in [&[0xffu8][..], b"ab\xc3", b"\xed\xa0\x80x"] {
                small_frame_agrees::<Server>(&cframe(true, OpCode::Text, bad), limits);
                small_frame_agrees::<Client>(&sframe(true, OpCode::Text, bad), limits);
                let mut dec = Decoder::<Client>::new(limits);
                let mut wire = sframe(true, OpCode::Text, bad);
                assert_eq!(
                    dec.decode(&mut wire).err(),
                    Some(ProtocolError::InvalidUtf8)
                );
                assert_eq!(
                    dec.decode(&mut sframe(true, OpCode::Text, b"ok")).err(),
                    Some(ProtocolError::InvalidUtf8)
                );
            }
        }
    }

    #[test]
    fn zero_copy_returns_slice_of_input() {
        let mut wire = cframe(true, OpCode::Text, b"hello");
        wire.extend(cframe(true, OpCode::Ping, b"p"));
        let range = wire.as_ptr_range();
        let mut dec = Decoder::<Server>::default();
        let (n, m) = dec.decode(&mut wire).unwrap();
        assert_eq!(n, 11);
        let Some(Message::Text(s)) = m else {
            panic!("expected text, got {m:?}")
        };
        assert_eq!(s, "hello");
        assert!(
            range.contains(&s.as_ptr()),
            "text must point into the input"
        );
        assert_eq!(dec.buffered_bytes(), 0);
        let (n2, m) = dec.decode(&mut wire[n..]).unwrap();
        let Some(Message::Ping(p)) = m else {
            panic!("expected ping")
        };
        assert_eq!(p, b"p");
        assert!(range.contains(&p.as_ptr()));
        assert_eq!(n + n2, wire.len());
        assert!(dec.is_idle());
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn idle_again_after_partial_message() {
        let payload = vec![7u8; 3000];
        let mut wire = cframe(false, OpCode::Binary, &payload[..1000]);
        wire.extend(cframe(true, OpCode::Continuation, &payload[1000..]));
        let mut dec = Decoder::<Server>::default();
        let (first, second) = wire.split_at_mut(1500);
        let (n, m) = dec.decode(first).unwrap();
        assert_eq!((n, m), (1500, None));
        assert!(!dec.is_idle());
        assert!(dec.buffered_bytes() >= 1000);
        let second_len = second.len();
        let (n, m) = dec.decode(second).unwrap();
        assert_eq!(n, second_len);
        assert_eq!(m, Some(Message::Binary(&payload)));
        let (n, m) = dec.decode(&mut []).unwrap();
        assert_eq!((n, m), (0, None));
        assert!(dec.is_idle());
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn idle_after_header_split_across_calls() {
        let mut wire = cframe(true, OpCode::Binary, b"payload");
        let mut dec = Decoder::<Server>::default();
        let (a, b) = wire.split_at_mut(3);
        assert_eq!(dec.decode(a).unwrap(), (3, None));
        assert!(!dec.is_idle());
        assert!(dec.buffered_bytes() > 0);
        let (n, m) = dec.decode(b).unwrap();
        assert_eq!(m, Some(Message::Binary(b"payload")));
        assert_eq!(n, 10);
        assert!(dec.is_idle());
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn control_frames_between_fragments() {
        let mut wire = cframe(false, OpCode::Text, "fra".as_bytes());
        wire.extend(cframe(true, OpCode::Ping, b"ping!"));
        wire.extend(cframe(false, OpCode::Continuation, "gm\u{e9}".as_bytes()));
        wire.extend(cframe(true, OpCode::Pong, b""));
        wire.extend(cframe(true, OpCode::Continuation, "nt".as_bytes()));
        wire.extend(cframe(true, OpCode::Close, b"\x03\xe8done"));
        let (msgs, err) = decode_server_all_splits(&wire);
        assert_eq!(err, None);
        assert_eq!(
            msgs,
            vec![
                Owned::Ping(b"ping!".to_vec()),
                Owned::Pong(vec![]),
                Owned::Text("fragm\u{e9}nt".into()),
                Owned::Close(Some((1000, "done".into()))),
            ]
        );
    }

    #[test]
    fn utf8_split_code_point_across_fragments() {
        let text = "a\u{1F600}b";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut wire = cframe(false, OpCode::Text, &bytes[..cut]);
            wire.extend(cframe(true, OpCode::Continuation, &bytes[cut..]));
            let (msgs, err) = decode_server_all_splits(&wire);
            assert_eq!(
                (msgs, err),
                (vec![Owned::Text(text.into())], None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn invalid_utf8_detected_early() {
        // 0xF4 0x90 can never start a valid code point: fail before the fragment (or frame) ends.
        let mut wire = cframe(false, OpCode::Text, b"ok\xf4\x90");
        wire.extend(cframe(true, OpCode::Continuation, b"\x80\x80"));
        let mut dec = Decoder::<Server>::default();
        let first_len = wire.len() - 8;
        assert_eq!(
            dec.decode(&mut wire[..first_len]),
            Err(ProtocolError::InvalidUtf8)
        );
        // Within one incomplete frame too.
        let mut wire = cframe(true, OpCode::Text, b"abc\xed\xa0\x80 and more");
        let mut dec = Decoder::<Server>::default();
        assert_eq!(
            dec.decode(&mut wire[..6 + 5]),
            Err(ProtocolError::InvalidUtf8)
        );
        // An incomplete but possible sequence is not an error until the message ends.
        let mut wire = cframe(false, OpCode::Text, b"ok\xf0\x9f");
        let mut dec = Decoder::<Server>::default();
        assert_eq!(dec.decode(&mut wire).unwrap().1, None);
        let mut fin = cframe(true, OpCode::Continuation, b"");
        assert_eq!(dec.decode(&mut fin), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn error_table() {
        use ProtocolError::*;
        let too_big = 1usize << 20;
        let mut big_hdr = vec![0x82, 0xff];
        big_hdr.extend(((too_big + 1) as u64).to_be_bytes());
        big_hdr.extend(key());
        let mut msg_too_big = cframe(false, OpCode::Binary, &vec![0; 1000]);
        let mut rest_hdr = vec![0x80, 0xff];
        rest_hdr.extend(((too_big - 999) as u64).to_be_bytes());
        rest_hdr.extend(key());
        msg_too_big.extend(rest_hdr);
        let mut frag_close = cframe(true, OpCode::Close, b"\x03\xe8");
        frag_close[0] &= 0x7f;
        let table: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
            ("rsv1", vec![0xc1, 0x80, 0, 0, 0, 0], ReservedBits),
            ("rsv2", vec![0xa2, 0x80, 0, 0, 0, 0], ReservedBits),
            ("rsv3", vec![0x91, 0x80, 0, 0, 0, 0], ReservedBits),
            ("opcode 3", vec![0x83, 0x80, 0, 0, 0, 0], UnknownOpcode),
            ("opcode 0xb", vec![0x8b, 0x80, 0, 0, 0, 0], UnknownOpcode),
            (
                "ping 126",
                cframe(true, OpCode::Ping, &[0; 126]),
                ControlFrameTooLong,
            ),
            ("fragmented close", frag_close, FragmentedControlFrame),
            ("unmasked", sframe(true, OpCode::Text, b"hi"), UnmaskedFrame),
            (
                "bare continuation",
                cframe(true, OpCode::Continuation, b"x"),
                UnexpectedContinuation,
            ),
            (
                "text inside text",
                [
                    cframe(false, OpCode::Text, b"a"),
                    cframe(true, OpCode::Text, b"b"),
                ]
                .concat(),
                ExpectedContinuation,
            ),
            (
                "binary inside text",
                [
                    cframe(false, OpCode::Text, b"a"),
                    cframe(false, OpCode::Binary, b"b"),
                ]
                .concat(),
                ExpectedContinuation,
            ),
            (
                "msb length",
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                InvalidLength,
            ),
            (
                "close len 1",
                cframe(true, OpCode::Close, b"\x03"),
                InvalidCloseLength,
            ),
            (
                "close 1005",
                cframe(true, OpCode::Close, b"\x03\xed"),
                InvalidCloseCode,
            ),
            (
                "close 999",
                cframe(true, OpCode::Close, b"\x03\xe7"),
                InvalidCloseCode,
            ),
            (
                "close 5000",
                cframe(true, OpCode::Close, b"\x13\x88"),
                InvalidCloseCode,
            ),
            (
                "close bad utf8",
                cframe(true, OpCode::Close, b"\x03\xe8\xff"),
                InvalidUtf8,
            ),
            (
                "text bad utf8",
                cframe(true, OpCode::Text, b"\xce\xba\xff"),
                InvalidUtf8,
            ),
            (
                "text truncated",
                cframe(true, OpCode::Text, b"\xce"),
                InvalidUtf8,
            ),
            ("frame too big", big_hdr, FrameTooBig),
            ("message too big", msg_too_big, MessageTooBig),
        ];
        for (name, wire, want) in table {
            let (_, err) = decode_server_all_splits(&wire);
            assert_eq!(err, Some(want), "{name}");
            assert_eq!(want.close_code(), err.unwrap().close_code());
        }
        // Client role: masked server frames are rejected.
        let (_, err) = decode_all::<Client>(&cframe(true, OpCode::Text, b"hi"), 100);
        assert_eq!(err, Some(MaskedFrame));
        assert_eq!(MaskedFrame.close_code(), CloseCode(1002));
    }

    #[test]
    fn limits_are_configurable() {
        let cfg = DecoderConfig {
            max_message_size: 10,
            max_frame_size: 6,
        };
        let mut dec = Decoder::<Server>::new(cfg);
        let mut ok = cframe(true, OpCode::Binary, b"123456");
        assert_eq!(
            dec.decode(&mut ok).unwrap().1,
            Some(Message::Binary(b"123456"))
        );
        let mut big = cframe(true, OpCode::Binary, b"1234567");
        // Only the header is needed to reject it.
        assert_eq!(dec.decode(&mut big[..2]), Err(ProtocolError::FrameTooBig));

        let mut dec = Decoder::<Server>::new(cfg);
        let mut first = cframe(false, OpCode::Binary, b"123456");
        assert_eq!(dec.decode(&mut first).unwrap(), (12, None));
        let mut ok = cframe(false, OpCode::Continuation, b"1234");
        assert_eq!(dec.decode(&mut ok).unwrap(), (10, None));
        let mut over = cframe(true, OpCode::Continuation, b"1");
        assert_eq!(
            dec.decode(&mut over[..2]),
            Err(ProtocolError::MessageTooBig)
        );
        assert!(dec.is_idle());
    }

    #[test]
    fn close_frames_parse() {
        let (msgs, err) = decode_server_all_splits(&cframe(true, OpCode::Close, b""));
        assert_eq!((msgs, err), (vec![Owned::Close(None)], None));
        let (msgs, err) =
            decode_server_all_splits(&cframe(true, OpCode::Close, b"\x0f\xa0r\xc3\xa9son"));
        assert_eq!(
            (msgs, err),
            (vec![Owned::Close(Some((4000, "r\u{e9}son".into())))], None)
        );
    }

    #[test]
    fn messages_then_error_are_reported_in_order() {
        let mut wire = cframe(true, OpCode::Text, b"one");
        wire.extend(cframe(true, OpCode::Binary, b"two"));
        wire.extend([0x83, 0x80]);
        let (msgs, err) = decode_server_all_splits(&wire);
        assert_eq!(
            msgs,
            vec![Owned::Text("one".into()), Owned::Binary(b"two".to_vec())]
        );
        assert_eq!(err, Some(ProtocolError::UnknownOpcode));
    }
}
