//! Server-Sent Events: the `text/event-stream` writer, the stream's response head, `Last-Event-ID` parsing, and a
//! small sans-IO [`EventParser`] that implements the browser side of the format.
//!
//! The format is defined by WHATWG HTML, "Server-sent events" (sections "Parsing an event stream" and
//! "Interpreting an event stream"). This module owns every byte ringcast writes on an SSE response:
//!
//! - [`write_stream_head`]: the `HTTP/1.1 200 OK` head that starts a stream;
//! - [`write_event`] / [`encoded_len`]: one event block (`id:`, `event:`, `retry:`, `data:` lines, blank line);
//! - [`write_comment`]: a `:` comment block, used as a keep-alive;
//! - [`parse_last_event_id`]: the resume cursor a reconnecting client sends back.
//!
//! [`EventParser`] is the reverse direction. The server never needs it; it exists so tests (and the load generator)
//! can check that what the writer produces is what a browser's `EventSource` reconstructs.
//!
//! ## What a browser reconstructs
//! The parser joins the values of an event's `data:` lines with `"\n"` and drops one trailing `"\n"`. The writer
//! therefore splits [`Event::data`] on every line break (`"\r\n"`, `"\r"` or `"\n"`) and writes each piece, even an
//! empty one, as its own `data:` line: `n` line breaks give `n + 1` lines. A browser then sees exactly the input
//! with every line break normalised to `"\n"`; this includes a trailing line break (`"a\n"` becomes
//! `data: a` + `data:`) and empty data (one `data:` line, so the event is still dispatched, with `data == ""`).
//!
//! `id` and `event` values are written on a single line, so they cannot contain CR or LF; an `id` containing NUL
//! would be ignored by the browser, so it is refused too. Validation runs before anything is written: on error the
//! buffer is untouched.

use bytes::BufMut;
use core::fmt;

/// Why an SSE operation was refused. No variant allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// The event id contains CR or LF, which would end the `id:` line early and inject fields. Fault: whoever
    /// supplied the id (the publisher, when ids come from a publish request).
    NewlineInId,
    /// The event id contains U+0000 NULL; browsers ignore such an `id:` field, so the resume cursor would silently
    /// not advance. Fault: whoever supplied the id.
    NullInId,
    /// The event type contains CR or LF, which would end the `event:` line early and inject fields. Fault: whoever
    /// supplied the event type (the publisher).
    NewlineInEvent,
    /// A `Last-Event-ID` header (or `lastEventId` query parameter) is neither empty nor a decimal `u64`. Fault: the
    /// subscribing client.
    InvalidLastEventId,
    /// An extra response header handed to [`write_stream_head`] has a name that is not an HTTP token or a value with
    /// control characters (CR, LF, NUL, ...). Fault: the server's own configuration or code.
    InvalidHeader,
}

impl SseError {
    /// The HTTP status to answer with: `400 Bad Request` for everything derived from a request, `500 Internal Server
    /// Error` for [`SseError::InvalidHeader`], which is the server's own mistake.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::NewlineInId
            | Self::NullInId
            | Self::NewlineInEvent
            | Self::InvalidLastEventId => 400,
            Self::InvalidHeader => 500,
        }
    }
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NewlineInId => "SSE event id contains a line break",
            Self::NullInId => "SSE event id contains a NUL character",
            Self::NewlineInEvent => "SSE event type contains a line break",
            Self::InvalidLastEventId => "Last-Event-ID is not a decimal sequence number",
            Self::InvalidHeader => "invalid extra header for the SSE response head",
        })
    }
}

impl std::error::Error for SseError {}

/// One event to write. Every field is borrowed; `Event::default()` is an event with empty data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Event<'a> {
    /// The `id:` field: becomes the browser's `lastEventId` and is sent back as `Last-Event-ID` on reconnect.
    /// ringcast writes decimal sequence numbers here (see [`parse_last_event_id`]). `Some("")` resets the browser's
    /// last event id. Must not contain CR, LF or NUL.
    pub id: Option<&'a str>,
    /// The `event:` field: the event type a browser dispatches (`"message"` when absent or empty). Must not contain
    /// CR or LF.
    pub event: Option<&'a str>,
    /// The `retry:` field: the reconnection delay in milliseconds the browser should use from now on.
    pub retry: Option<u32>,
    /// The payload. Any text; line breaks (`"\r\n"`, `"\r"`, `"\n"`) reach the browser as `"\n"`.
    pub data: &'a str,
}

const ID: &[u8] = b"id:";
const EVENT: &[u8] = b"event:";
const RETRY: &[u8] = b"retry: ";
const DATA: &[u8] = b"data:";

fn check_id(id: &str) -> Result<(), SseError> {
    let b = id.as_bytes();
    if memchr::memchr2(b'\r', b'\n', b).is_some() {
        Err(SseError::NewlineInId)
    } else if memchr::memchr(0, b).is_some() {
        Err(SseError::NullInId)
    } else {
        Ok(())
    }
}

fn check_event(event: &str) -> Result<(), SseError> {
    if memchr::memchr2(b'\r', b'\n', event.as_bytes()).is_some() {
        Err(SseError::NewlineInEvent)
    } else {
        Ok(())
    }
}

fn validate(ev: &Event<'_>) -> Result<(), SseError> {
    if let Some(id) = ev.id {
        check_id(id)?;
    }
    if let Some(event) = ev.event {
        check_event(event)?;
    }
    Ok(())
}

/// Calls `f` on each line of `s`, splitting on `"\r\n"`, `"\r"` and `"\n"`. `n` line breaks give `n + 1` calls
/// (so `""` gives one empty line and a trailing break gives a final empty line).
#[inline]
fn for_each_line(mut s: &[u8], mut f: impl FnMut(&[u8])) {
    loop {
        match memchr::memchr2(b'\r', b'\n', s) {
            None => {
                f(s);
                return;
            }
            Some(i) => {
                let (line, rest) = s.split_at(i);
                f(line);
                let skip = if rest.starts_with(b"\r\n") { 2 } else { 1 };
                s = rest.get(skip..).unwrap_or_default();
            }
        }
    }
}

/// Writes `name` (which includes the colon), then `" " + value` when `value` is not empty, then `"\n"`.
#[inline]
fn put_line<B: BufMut>(buf: &mut B, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    if !value.is_empty() {
        buf.put_u8(b' ');
        buf.put_slice(value);
    }
    buf.put_u8(b'\n');
}

/// Length of what [`put_line`] writes.
#[inline]
fn line_len(name: &[u8], value: &[u8]) -> usize {
    name.len() + if value.is_empty() { 0 } else { 1 + value.len() } + 1
}

fn decimal_digits(mut n: u32) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Appends one event block to `buf`: an `id:` line, an `event:` line and a `retry:` line when those fields are set
/// (in that order), then one `data:` line per line of [`Event::data`], then a blank line.
///
/// Each field is written as `name: value` (one space, which the browser strips), or as a bare `name:` when the value
/// is empty. See the module docs for how data line breaks are handled.
///
/// # Errors
/// [`SseError::NewlineInId`], [`SseError::NullInId`] or [`SseError::NewlineInEvent`]; nothing is written then.
///
/// # Example
/// ```
/// use ringcast_protocol::sse::{write_event, Event};
/// let mut out = Vec::new();
/// let ev = Event { id: Some("42"), data: "hello\nworld", ..Event::default() };
/// write_event(&mut out, &ev).unwrap();
/// assert_eq!(out, b"id: 42\ndata: hello\ndata: world\n\n");
/// ```
pub fn write_event<B: BufMut>(buf: &mut B, ev: &Event<'_>) -> Result<(), SseError> {
    validate(ev)?;
    if let Some(id) = ev.id {
        put_line(buf, ID, id.as_bytes());
    }
    if let Some(event) = ev.event {
        put_line(buf, EVENT, event.as_bytes());
    }
    if let Some(retry) = ev.retry {
        buf.put_slice(RETRY);
        buf.put_slice(itoa::Buffer::new().format(retry).as_bytes());
        buf.put_u8(b'\n');
    }
    for_each_line(ev.data.as_bytes(), |line| put_line(buf, DATA, line));
    buf.put_u8(b'\n');
    Ok(())
}

/// The exact number of bytes [`write_event`] appends for `ev`, without writing anything: use it to reserve capacity
/// or to size a shared buffer built once per published message.
///
/// # Errors
/// The same as [`write_event`].
pub fn encoded_len(ev: &Event<'_>) -> Result<usize, SseError> {
    validate(ev)?;
    let mut n = 1; // the blank line
    if let Some(id) = ev.id {
        n += line_len(ID, id.as_bytes());
    }
    if let Some(event) = ev.event {
        n += line_len(EVENT, event.as_bytes());
    }
    if let Some(retry) = ev.retry {
        n += RETRY.len() + decimal_digits(retry) + 1;
    }
    for_each_line(ev.data.as_bytes(), |line| n += line_len(DATA, line));
    Ok(n)
}

/// Appends a comment block: one `: line` per line of `text` (split like event data; an empty line is a bare `:`),
/// then a blank line. Browsers ignore comments; proxies see traffic, so this is the keep-alive. The blank line ends
/// no event because ringcast only ever writes complete event blocks.
///
/// ```
/// let mut out = Vec::new();
/// ringcast_protocol::sse::write_comment(&mut out, "ping");
/// assert_eq!(out, b": ping\n\n");
/// ```
pub fn write_comment<B: BufMut>(buf: &mut B, text: &str) {
    for_each_line(text.as_bytes(), |line| put_line(buf, b":", line));
    buf.put_u8(b'\n');
}

/// The fixed part of the stream head, after the status line.
const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\n\
Connection: keep-alive\r\n";

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `field-value` characters: VCHAR, obs-text, SP and HTAB.
fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Appends the response head that starts an event stream:
///
/// ```text
/// HTTP/1.1 200 OK
/// Content-Type: text/event-stream
/// Cache-Control: no-cache
/// X-Accel-Buffering: no
/// Connection: keep-alive
/// <extra headers, in order>
/// <blank line>
/// ```
///
/// with CRLF line endings. There is no `Content-Length` and no `Transfer-Encoding`: the body runs until the server
/// closes the connection. `extra_headers` (CORS headers and the like) are written as given; the caller must not
/// pass `Content-Length` or `Transfer-Encoding`, which would change how the body is framed.
///
/// # Errors
/// [`SseError::InvalidHeader`] when an extra header's name is not an RFC 9110 token or its value contains a control
/// character other than HTAB (CR/LF would allow header injection). Nothing is written then.
///
/// ```
/// let mut out = Vec::new();
/// let extra: &[(&str, &[u8])] = &[("Access-Control-Allow-Origin", b"*")];
/// ringcast_protocol::sse::write_stream_head(&mut out, extra).unwrap();
/// assert!(out.ends_with(b"Access-Control-Allow-Origin: *\r\n\r\n"));
/// ```
pub fn write_stream_head<B: BufMut>(
    buf: &mut B,
    extra_headers: &[(&str, &[u8])],
) -> Result<(), SseError> {
    for (name, value) in extra_headers {
        let name_ok = !name.is_empty() && name.bytes().all(is_tchar);
        if !name_ok || !value.iter().copied().all(is_field_value_byte) {
            return Err(SseError::InvalidHeader);
        }
    }
    buf.put_slice(STREAM_HEAD);
    for (name, value) in extra_headers {
        buf.put_slice(name.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value);
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"\r\n");
    Ok(())
}

/// Parses a `Last-Event-ID` header value (or a percent-decoded `lastEventId` query parameter) as ringcast's resume
/// cursor.
///
/// The ids ringcast writes are decimal `u64` sequence numbers, so after trimming ASCII whitespace (space, tab, LF,
/// FF, CR) the value must be empty (→ `Ok(None)`: no cursor, start from "now") or consist only of ASCII digits that
/// fit a `u64` (→ `Ok(Some(n))`; leading zeros are accepted). No sign, no other characters.
///
/// # Errors
/// [`SseError::InvalidLastEventId`] for anything else, including overflow.
///
/// ```
/// use ringcast_protocol::sse::parse_last_event_id;
/// assert_eq!(parse_last_event_id(b" 17 "), Ok(Some(17)));
/// assert_eq!(parse_last_event_id(b""), Ok(None));
/// assert!(parse_last_event_id(b"-1").is_err());
/// ```
pub fn parse_last_event_id(value: &[u8]) -> Result<Option<u64>, SseError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(SseError::InvalidLastEventId);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(SseError::InvalidLastEventId)?;
    }
    Ok(Some(n))
}

/// One dispatched event, as a browser's `EventSource` would see it, plus the per-block `id`/`retry` fields for
/// inspection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event type buffer: the value of the last `event:` field in the block, or `""` when there was none (a
    /// browser then dispatches the type `"message"`, see [`ParsedEvent::event_type_or_message`]).
    pub event_type: String,
    /// The `data:` values joined with `"\n"`.
    pub data: String,
    /// The stream's last event id at dispatch time. Per spec it persists across events until an `id:` field
    /// changes it; this is the browser's `MessageEvent.lastEventId`.
    pub last_event_id: String,
    /// The value of the last accepted `id:` field in this event's block, if any (an `id:` value containing NUL is
    /// ignored, as by a browser).
    pub id: Option<String>,
    /// The value of the last valid `retry:` field in this event's block, if any.
    pub retry: Option<u64>,
}

impl ParsedEvent {
    /// The type a browser dispatches: [`ParsedEvent::event_type`], or `"message"` when that is empty.
    #[must_use]
    pub fn event_type_or_message(&self) -> &str {
        if self.event_type.is_empty() {
            "message"
        } else {
            &self.event_type
        }
    }
}

/// What [`EventParser::feed`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(ParsedEvent),
    /// A comment line's text: what follows the `:`, minus one leading space. Browsers ignore comments; this is
    /// surfaced so tools can see keep-alives.
    Comment(String),
}

/// An incremental, sans-IO `text/event-stream` parser following the WHATWG "event stream interpretation" rules.
///
/// Feed it the response body in chunks of any size ([`EventParser::feed`]); it handles CRLF, LF and lone CR line
/// endings (including a CR ending one chunk and its LF starting the next), a leading UTF-8 BOM, comments, fields
/// without a colon, and unknown fields (ignored). Invalid UTF-8 is replaced with U+FFFD per line, as a browser's
/// decoder would. An event still incomplete at end of stream is never dispatched (the spec discards it).
///
/// Memory grows with the longest line and the largest event: it is meant for streams from a trusted server (tests,
/// the load generator), not for untrusted input.
///
/// ```
/// use ringcast_protocol::sse::{EventParser, SseItem};
/// let mut p = EventParser::new();
/// let mut out = Vec::new();
/// p.feed(b"id: 7\r\ndata: a\r", &mut out);
/// p.feed(b"\ndata: b\r\n\r\n", &mut out);
/// let SseItem::Event(ev) = &out[0] else { panic!() };
/// assert_eq!((ev.data.as_str(), ev.last_event_id.as_str()), ("a\nb", "7"));
/// ```
#[derive(Clone, Debug)]
pub struct EventParser {
    /// Bytes of the current, still unterminated line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF at the start of the next chunk belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a BOM is stripped from the first line only).
    at_start: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    block_id: Option<String>,
    block_retry: Option<u64>,
    reconnection_time: Option<u64>,
}

impl Default for EventParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EventParser {
    /// A parser at the start of a stream, with an empty last event id.
    #[must_use]
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            block_id: None,
            block_retry: None,
            reconnection_time: None,
        }
    }

    /// The stream's current last event id (what a browser would send as `Last-Event-ID` when reconnecting).
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time (ms) set by the last valid `retry:` field, even one in a block that was never
    /// dispatched.
    #[must_use]
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Consumes the next `chunk` of the stream and appends every event and comment it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseItem>) {
        let mut s = chunk;
        if self.after_cr && !s.is_empty() {
            self.after_cr = false;
            if let Some(rest) = s.strip_prefix(b"\n") {
                s = rest;
            }
        }
        while let Some(i) = memchr::memchr2(b'\r', b'\n', s) {
            let (head, rest) = s.split_at(i);
            if self.line.is_empty() {
                self.process_line(head, out);
            } else {
                let mut line = core::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }
            let skip = match rest {
                [b'\r', b'\n', ..] => 2,
                [b'\r'] => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            s = rest.get(skip..).unwrap_or_default();
        }
        self.line.extend_from_slice(s);
    }

    fn process_line(&mut self, mut line: &[u8], out: &mut Vec<SseItem>) {
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let (name, rest) = line.split_at(i);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"" => out.push(SseItem::Comment(value.into_owned())),
            b"event" => set(&mut self.event_type, &value),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"id" if !value.contains('\0') => {
                set(&mut self.last_event_id, &value);
                self.block_id = Some(value.into_owned());
            }
            // Only ASCII digits count; values beyond u64 are ignored like any other unusable value.
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.reconnection_time = Some(ms);
                    self.block_retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let id = self.block_id.take();
        let retry = self.block_retry.take();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        out.push(SseItem::Event(ParsedEvent {
            event_type: core::mem::take(&mut self.event_type),
            data: core::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
            id,
            retry,
        }));
    }
}

/// Replaces `dst`'s contents with `src`, reusing its allocation.
fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(ev: &Event<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_event(&mut out, ev).unwrap();
        assert_eq!(
            encoded_len(ev).unwrap(),
            out.len(),
            "encoded_len disagrees for {ev:?}"
        );
        out
    }

    fn data(d: &str) -> Event<'_> {
        Event {
            data: d,
            ..Event::default()
        }
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut p = EventParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out
    }

    fn events(items: Vec<SseItem>) -> Vec<ParsedEvent> {
        items
            .into_iter()
            .filter_map(|i| match i {
                SseItem::Event(e) => Some(e),
                SseItem::Comment(_) => None,
            })
            .collect()
    }

    #[test]
    fn data_splitting_table() {
        let table: &[(&str, &str)] = &[
            ("", "data:\n\n"),
            ("a", "data: a\n\n"),
            ("a\nb", "data: a\ndata: b\n\n"),
            ("a\r\nb", "data: a\ndata: b\n\n"),
            ("a\rb", "data: a\ndata: b\n\n"),
            ("a\n", "data: a\ndata:\n\n"),
            ("a\r\n", "data: a\ndata:\n\n"),
            ("a\r", "data: a\ndata:\n\n"),
            ("\n", "data:\ndata:\n\n"),
            ("\r\r\n", "data:\ndata:\ndata:\n\n"),
            ("\n\r", "data:\ndata:\ndata:\n\n"),
            ("a\n\nb", "data: a\ndata:\ndata: b\n\n"),
            (" lead", "data:  lead\n\n"),
            ("x:y", "data: x:y\n\n"),
            ("\u{FEFF}é\0", "data: \u{FEFF}é\0\n\n"),
        ];
        for (input, want) in table {
            assert_eq!(
                String::from_utf8(write(&data(input))).unwrap(),
                *want,
                "data {input:?}"
            );
        }
    }

    #[test]
    fn browser_reconstruction_normalises_line_breaks() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("a\r\nb\rc\nd", "a\nb\nc\nd"),
            ("a\n", "a\n"),
            ("\r\n\r\n", "\n\n"),
            (" x ", " x "),
        ];
        for (input, want) in table {
            let got = events(parse_chunks(&[&write(&data(input))]));
            assert_eq!(got.len(), 1, "{input:?}");
            assert_eq!(got[0].data, *want, "{input:?}");
            assert_eq!(got[0].event_type_or_message(), "message");
        }
    }

    #[test]
    fn fields_in_order() {
        let ev = Event {
            id: Some("9"),
            event: Some("tick"),
            retry: Some(1500),
            data: "x",
        };
        assert_eq!(write(&ev), b"id: 9\nevent: tick\nretry: 1500\ndata: x\n\n");
        let empty = Event {
            id: Some(""),
            event: Some(""),
            retry: Some(0),
            data: "",
        };
        assert_eq!(write(&empty), b"id:\nevent:\nretry: 0\ndata:\n\n");
        let max = Event {
            retry: Some(u32::MAX),
            ..Event::default()
        };
        assert_eq!(write(&max), b"retry: 4294967295\ndata:\n\n");
    }

    #[test]
    fn refusals_write_nothing() {
        let table: &[(Option<&str>, Option<&str>, SseError)] = &[
            (Some("a\nb"), None, SseError::NewlineInId),
            (Some("a\r"), None, SseError::NewlineInId),
            (Some("\r\n"), None, SseError::NewlineInId),
            (Some("a\0b"), None, SseError::NullInId),
            (None, Some("x\ny"), SseError::NewlineInEvent),
            (None, Some("\r"), SseError::NewlineInEvent),
            (Some("ok"), Some("bad\n"), SseError::NewlineInEvent),
        ];
        for &(id, event, want) in table {
            let ev = Event {
                id,
                event,
                retry: Some(5),
                data: "payload",
            };
            let mut out = b"keep".to_vec();
            assert_eq!(write_event(&mut out, &ev), Err(want), "{ev:?}");
            assert_eq!(out, b"keep");
            assert_eq!(encoded_len(&ev), Err(want));
            assert_eq!(want.http_status(), 400);
        }
        // NUL is fine in the event type and in data.
        let ok = Event {
            event: Some("a\0"),
            data: "\0",
            ..Event::default()
        };
        assert!(write_event(&mut Vec::new(), &ok).is_ok());
    }

    #[test]
    fn comments() {
        let table: &[(&str, &str)] = &[
            ("", ":\n\n"),
            ("ping", ": ping\n\n"),
            ("a\nb", ": a\n: b\n\n"),
            ("a\r\nb\rc", ": a\n: b\n: c\n\n"),
            ("a\n", ": a\n:\n\n"),
        ];
        for (text, want) in table {
            let mut out = Vec::new();
            write_comment(&mut out, text);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), *want);
            let items = parse_chunks(&[&out]);
            assert!(
                items.iter().all(|i| matches!(i, SseItem::Comment(_))),
                "a comment dispatched an event"
            );
        }
        let mut out = Vec::new();
        write_comment(&mut out, "x\ny");
        assert_eq!(
            parse_chunks(&[&out]),
            vec![SseItem::Comment("x".into()), SseItem::Comment("y".into())]
        );
    }

    #[test]
    fn stream_head_exact() {
        let mut out = Vec::new();
        write_stream_head(&mut out, &[]).unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut out = Vec::new();
        let extra: &[(&str, &[u8])] = &[
            ("Access-Control-Allow-Origin", b"https://a.example"),
            ("Vary", b"Origin"),
            ("X-Empty", b""),
        ];
        write_stream_head(&mut out, extra).unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\nConnection: keep-alive\r\nAccess-Control-Allow-Origin: https://a.example\r\n\
Vary: Origin\r\nX-Empty: \r\n\r\n"
        );
        assert!(
            !out.windows(14)
                .any(|w| w.eq_ignore_ascii_case(b"content-length"))
        );
    }

    #[test]
    fn stream_head_refuses_bad_extra_headers() {
        let bad: &[(&str, &[u8])] = &[
            ("", b"v"),
            ("Bad Name", b"v"),
            ("Bad:Name", b"v"),
            ("X", b"a\r\nSet-Cookie: x"),
            ("X", b"a\nb"),
            ("X", b"a\0"),
            ("X", b"\x7f"),
        ];
        for h in bad {
            let mut out = Vec::new();
            assert_eq!(
                write_stream_head(&mut out, &[("Ok", b"1"), *h]),
                Err(SseError::InvalidHeader),
                "{h:?}"
            );
            assert!(out.is_empty());
        }
        assert_eq!(SseError::InvalidHeader.http_status(), 500);
        assert!(write_stream_head(&mut Vec::new(), &[("X", b"tab\there \xC3\xA9")]).is_ok());
    }

    #[test]
    fn last_event_id_table() {
        let e = Err(SseError::InvalidLastEventId);
        type Row = (&'static [u8], Result<Option<u64>, SseError>);
        let table: &[Row] = &[
            (b"", Ok(None)),
            (b"   ", Ok(None)),
            (b"\t\r\n\x0c ", Ok(None)),
            (b"0", Ok(Some(0))),
            (b"42", Ok(Some(42))),
            (b" 42\t", Ok(Some(42))),
            (b"007", Ok(Some(7))),
            (b"18446744073709551615", Ok(Some(u64::MAX))),
            (b"18446744073709551616", e),
            (b"99999999999999999999999", e),
            (b"-1", e),
            (b"+1", e),
            (b"1 2", e),
            (b"1.0", e),
            (b"0x10", e),
            (b"abc", e),
            (b"\x0b1", e), // vertical tab is not ASCII whitespace per WHATWG
            (b"\xC2\xA01", e),
            (b"\x001", e),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_last_event_id(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn display_and_error() {
        let e: &dyn std::error::Error = &SseError::NullInId;
        assert!(e.to_string().contains("NUL"));
    }

    #[test]
    fn parser_spec_rules() {
        // Field without colon, unknown field, BOM, comment, id persistence, NUL id ignored, bad retry ignored,
        // event type reset after dispatch, data-less block not dispatched.
        let stream: &[u8] = b"\xEF\xBB\xBFdata\nfoo: bar\n: c\nid: 1\n\nevent: e\nretry: 12x\n\n\
data:no-space\nid: a\0b\n\nretry: 250\nid\n\ndata: last\n\n";
        let items = parse_chunks(&[stream]);
        let evs = events(items.clone());
        assert_eq!(
            items
                .iter()
                .filter(|i| matches!(i, SseItem::Comment(c) if c == "c"))
                .count(),
            1
        );
        assert_eq!(evs.len(), 3, "{evs:?}");
        assert_eq!(
            (evs[0].data.as_str(), evs[0].last_event_id.as_str()),
            ("", "1")
        );
        assert_eq!(evs[0].id.as_deref(), Some("1"));
        assert_eq!(evs[1].data, "no-space");
        assert_eq!(
            evs[1].event_type, "",
            "event type must reset when a data-less block is dropped"
        );
        assert_eq!(
            (evs[1].last_event_id.as_str(), evs[1].id.as_deref()),
            ("1", None)
        );
        assert_eq!(
            (evs[2].data.as_str(), evs[2].last_event_id.as_str()),
            ("last", "")
        );
        assert_eq!(
            evs[2].retry, None,
            "retry belonged to the undispatched block"
        );
        let mut p = EventParser::new();
        p.feed(stream, &mut Vec::new());
        assert_eq!(p.reconnection_time(), Some(250));
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn parser_bom_only_at_start_and_split() {
        assert_eq!(
            events(parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]))[0].data,
            "x"
        );
        // A second BOM is part of the field name, so the line is an unknown field.
        assert!(events(parse_chunks(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"])).is_empty());
        // BOM after the first line is not stripped.
        assert!(events(parse_chunks(&[b"\n\xEF\xBB\xBFdata: x\n\n"])).is_empty());
    }

    #[test]
    fn parser_cr_at_chunk_end() {
        let evs = events(parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\r", b"\n"]));
        // "a\r" + "\n" is one break; "b\r" then "\r" ends the event; the final "\n" completes that CRLF.
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "a\nb");
        let evs = events(parse_chunks(&[b"data: a\r", b"", b"\r"]));
        assert_eq!(
            evs.len(),
            1,
            "an empty chunk must not forget the pending CR"
        );
        let evs = events(parse_chunks(&[b"data: a\r", b"\n", b"\r", b"\n"]));
        assert_eq!(evs.len(), 1);
        // Incomplete event at end of stream is not dispatched.
        assert!(events(parse_chunks(&[b"data: a\n"])).is_empty());
    }

    #[test]
    fn parser_invalid_utf8_is_replaced() {
        let evs = events(parse_chunks(&[b"data: a\xFFb\xE2\x82\n\n"]));
        assert_eq!(evs[0].data, "a\u{FFFD}b\u{FFFD}");
    }

    fn normalise(s: &str) -> String {
        s.replace("\r\n", "\n").replace('\r', "\n")
    }

    fn feed_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<SseItem> {
        let mut p = EventParser::new();
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for c in cuts {
            p.feed(&bytes[start..c], &mut out);
            start = c;
        }
        p.feed(&bytes[start..], &mut out);
        out
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a\r\n :\u{0}\u{FEFF}é]{0,12}",
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![Just("\r"), Just("\n"), Just("\r\n"), Just("x"), Just(" ")],
                0..10
            )
            .prop_map(|v| v.concat()),
        ]
    }

    fn single_line() -> impl Strategy<Value = String> {
        text().prop_map(|s| s.replace(['\r', '\n', '\0'], ""))
    }

    proptest! {
        #[test]
        fn roundtrip_through_parser(
            evs in proptest::collection::vec(
                (proptest::option::of(single_line()), proptest::option::of(single_line()),
                 proptest::option::of(any::<u32>()), text(), proptest::option::of(text())),
                1..5),
            bom in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut stream = Vec::new();
            if bom {
                stream.extend_from_slice(b"\xEF\xBB\xBF");
            }
            let mut expected_comments = Vec::new();
            for (id, event, retry, data, comment) in &evs {
                if let Some(c) = comment {
                    write_comment(&mut stream, c);
                    expected_comments.extend(normalise(c).split('\n').map(str::to_owned));
                }
                let ev = Event { id: id.as_deref(), event: event.as_deref(), retry: *retry, data };
                let before = stream.len();
                write_event(&mut stream, &ev).unwrap();
                prop_assert_eq!(encoded_len(&ev).unwrap(), stream.len() - before);
            }
            let items = feed_chunked(&stream, &cuts);
            let comments: Vec<String> = items.iter().filter_map(|i| match i {
                SseItem::Comment(c) => Some(c.clone()),
                SseItem::Event(_) => None,
            }).collect();
            prop_assert_eq!(comments, expected_comments);
            let got = events(items);
            prop_assert_eq!(got.len(), evs.len());
            let mut last_id = String::new();
            for (g, (id, event, retry, data, _)) in got.iter().zip(&evs) {
                if let Some(id) = id {
                    last_id.clone_from(id);
                }
                prop_assert_eq!(&g.data, &normalise(data));
                prop_assert_eq!(&g.id, id);
                prop_assert_eq!(&g.last_event_id, &last_id);
                prop_assert_eq!(&g.event_type, &event.clone().unwrap_or_default());
                prop_assert_eq!(g.retry, retry.map(u64::from));
            }
        }

        #[test]
        fn refuses_exactly_bad_ids_and_events(id in text(), event in text()) {
            let ev = Event { id: Some(&id), event: Some(&event), retry: None, data: "d" };
            let id_bad = id.contains(['\r', '\n', '\0']);
            let event_bad = event.contains(['\r', '\n']);
            let mut out = Vec::new();
            let r = write_event(&mut out, &ev);
            prop_assert_eq!(r.is_err(), id_bad || event_bad);
            prop_assert_eq!(r.is_err(), out.is_empty());
            prop_assert_eq!(encoded_len(&ev).is_err(), r.is_err());
        }

        #[test]
        fn last_event_id_matches_reference(bytes in proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'\t'), Just(b'\n'), Just(b'0'), Just(b'9'), Just(b'+'), any::<u8>()], 0..24)) {
            let trimmed = bytes.trim_ascii();
            let reference = if trimmed.is_empty() {
                Ok(None)
            } else if trimmed.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(trimmed).unwrap().parse::<u64>().map(Some)
                    .map_err(|_| SseError::InvalidLastEventId)
            } else {
                Err(SseError::InvalidLastEventId)
            };
            prop_assert_eq!(parse_last_event_id(&bytes), reference);
        }

        #[test]
        fn last_event_id_roundtrips_u64(n in any::<u64>()) {
            let s = n.to_string();
            prop_assert_eq!(parse_last_event_id(s.as_bytes()), Ok(Some(n)));
            let ev = Event { id: Some(&s), data: "x", ..Event::default() };
            let got = events(parse_chunks(&[&write(&ev)]));
            prop_assert_eq!(parse_last_event_id(got[0].last_event_id.as_bytes()), Ok(Some(n)));
        }
    }
}
