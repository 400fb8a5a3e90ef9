//! The pub/sub wire protocol, version 1: parsing the operations clients send over WebSocket, turning HTTP publish
//! bodies into message data, routing the pub/sub request paths, and writing every JSON object and SSE event the
//! server sends about topics.
//!
//! Everything here is sans-IO: parsers borrow from the caller's input, writers append to a caller-supplied
//! [`BufMut`]. The polling body lives in [`crate::poll::write_topic_poll_body`]; topic names are validated by
//! [`crate::topic`].
//!
//! ## Client → server (WebSocket text frames), see [`parse_client_op`]
//! ```json
//! {"op":"sub","topic":"prices:EURUSD","since":41,"id":1}
//! {"op":"unsub","topic":"prices:EURUSD","id":2}
//! {"op":"pub","topic":"chat","data":{"text":"hi"},"id":3}
//! {"op":"pub","user":"bob","data":{"text":"hi"},"id":4}
//! ```
//! - `op` and `topic` are required, `data` is required for `pub` (any JSON value, `null` included), `since` (only
//!   read for `sub`) and `id` are optional. A field set to `null` counts as absent, except `data`.
//! - A `pub` names exactly one target: a `topic`, or a `user` (a direct message to every connection of that user,
//!   [`ClientOp::Direct`]). `user` is any non-empty JSON string of at most [`MAX_USER_LEN`] bytes as written;
//!   escapes are allowed there (a user id is a token's `sub`, which may hold any character), and
//!   [`UserId::name`] decodes them. `user` is ignored on `sub` and `unsub`.
//! - Unknown fields, and known fields that do not belong to the op (`since` on `pub`, `data` on `sub`), are
//!   ignored, so clients may add their own. A known field that appears twice is an error (`duplicate_field`):
//!   JSON leaves duplicates undefined and two parsers disagreeing about which one wins is a classic smuggling bug.
//! - `op` and `topic` must be written literally, without backslash escapes. No character of a valid topic (nor of
//!   an op name) ever needs escaping, so no serializer produces them; refusing them lets the topic be borrowed
//!   from the frame without a copy.
//! - `since` is a non-negative integer literal that fits a `u64` (`1.0`, `1e3`, `-1` and `"5"` are refused).
//! - `id` is any JSON number of at most [`MAX_ID_LEN`] characters, kept as its raw text and echoed verbatim in the
//!   reply: `1e3` comes back as `1e3`, `-5` as `-5`, `2.50` as `2.50`. A client therefore always recognises its
//!   own id, whatever its JSON library does with numbers. A string id is refused (`invalid_id`).
//!
//! - Numbers (in `id` and `data`) are checked against the JSON grammar only, not for range, as RFC 8259 allows:
//!   `1e999` passes through verbatim and a subscriber's parser decides what it means.
//! - Nesting depth is not limited here: JSON is validated iteratively (serde_json skips values without
//!   recursion), so deep nesting cannot overflow the stack; the frame or body size limit bounds it.
//!
//! ## Server → client
//! ```json
//! {"type":"msg","topic":"chat","seq":42,"data":{"text":"hi"}}
//! {"type":"reset","topic":"chat","seq":30}
//! {"type":"ack","id":3,"seq":42}
//! {"type":"direct","from":"alice","data":{"text":"hi"}}
//! {"type":"error","id":4,"code":"invalid_topic","message":"topic is empty: ..."}
//! ```
//! written by [`write_msg`], [`write_reset`], [`write_ack`], [`write_direct`] and [`write_error`]. Over HTTP, a publish answers
//! [`write_publish_ok`] (`{"topic":"chat","seq":42}`), SSE carries [`write_sse_msg`] and [`write_sse_reset`].
//!
//! ## Error codes
//! Stable, snake_case, part of the protocol: see [`OpError::code`].

use crate::poll::write_json_string;
use crate::sse::{self, Event, SseError};
use crate::topic::{TopicError, is_topic_byte, validate_topic};
use bytes::BufMut;
use core::fmt;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The longest request `id` accepted, in characters of its JSON text. Enough for any integer or float a client
/// library writes; bounds what a reply echoes.
pub const MAX_ID_LEN: usize = 64;

/// The longest `user` target accepted, in bytes of its JSON string text between the quotes (escapes counted as
/// written).
pub const MAX_USER_LEN: usize = 256;

/// A client request id: the raw JSON number text, echoed verbatim in the reply.
///
/// Writers copy the text as is, so it must be a JSON number: take it from [`parse_client_op`] or build it from a
/// number literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId<'a>(pub &'a str);

/// The target of a direct message: a user id (a token's `sub`) as written in the frame, between the quotes of its
/// JSON string. Borrowed; escapes are decoded only on demand by [`UserId::name`]. Two ids compare equal when they
/// are written the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserId<'a> {
    /// The JSON string's text between its quotes, escapes as written.
    text: &'a str,
    /// Whether `text` holds a backslash escape.
    escaped: bool,
}

impl<'a> UserId<'a> {
    /// A user id from a plain name. `None` when the name is empty, longer than [`MAX_USER_LEN`], or holds a
    /// character JSON must escape (`"`, `\`, a control character); such names can only arrive escaped from the
    /// wire, through [`parse_client_op`].
    #[must_use]
    pub fn new(name: &'a str) -> Option<Self> {
        let plain = name.bytes().all(|b| b != b'"' && b != b'\\' && b >= 0x20);
        (plain && !name.is_empty() && name.len() <= MAX_USER_LEN).then_some(UserId {
            text: name,
            escaped: false,
        })
    }

    /// The text between the JSON string's quotes, escapes as the client wrote them (what [`write_client_op`]
    /// writes back).
    #[must_use]
    pub fn as_written(&self) -> &'a str {
        self.text
    }

    /// The user id with JSON escapes decoded: borrowed when the client wrote none (the usual case), else a new
    /// string.
    #[must_use]
    pub fn name(&self) -> Cow<'a, str> {
        if !self.escaped {
            return Cow::Borrowed(self.text);
        }
        let mut quoted = String::with_capacity(self.text.len() + 2);
        quoted.push('"');
        quoted.push_str(self.text);
        quoted.push('"');
        // `parse_client_op` decoded this text once already, so this cannot fail.
        Cow::Owned(serde_json::from_str::<String>(&quoted).unwrap_or_default())
    }
}

/// One operation a client sent over WebSocket. Every field borrows from the frame's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// Subscribe to `topic`; with `since`, first replay the retained messages with `seq > since`.
    Sub {
        /// The topic, already validated.
        topic: &'a str,
        /// Resume point: the last `seq` the client has seen.
        since: Option<u64>,
        /// Request id to echo in the ack or error.
        id: Option<RequestId<'a>>,
    },
    /// Stop receiving messages from `topic`.
    Unsub {
        /// The topic, already validated.
        topic: &'a str,
        /// Request id to echo in the ack or error.
        id: Option<RequestId<'a>>,
    },
    /// Publish `data` on `topic`.
    Pub {
        /// The topic, already validated.
        topic: &'a str,
        /// `data` is the raw JSON text of the value (any JSON), borrowed from the input.
        data: &'a str,
        /// Request id to echo in the ack (which also carries the assigned `seq`) or error.
        id: Option<RequestId<'a>>,
    },
    /// Send `data` directly to every connection of `user` (a `pub` with a `user` instead of a `topic`).
    Direct {
        /// The target user, a non-empty JSON string of at most [`MAX_USER_LEN`] bytes.
        user: UserId<'a>,
        /// `data` is the raw JSON text of the value (any JSON), borrowed from the input.
        data: &'a str,
        /// Request id to echo in the ack (no `seq`: direct messages are not numbered) or error.
        id: Option<RequestId<'a>>,
    },
}

impl<'a> ClientOp<'a> {
    /// The op's topic (`None` for a direct message, which names a user instead).
    #[must_use]
    pub fn topic(&self) -> Option<&'a str> {
        match *self {
            Self::Sub { topic, .. } | Self::Unsub { topic, .. } | Self::Pub { topic, .. } => {
                Some(topic)
            }
            Self::Direct { .. } => None,
        }
    }

    /// The target user of a direct message (`None` for the topic ops).
    #[must_use]
    pub fn user(&self) -> Option<UserId<'a>> {
        match *self {
            Self::Direct { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The op's request id, if the client sent one.
    #[must_use]
    pub fn id(&self) -> Option<RequestId<'a>> {
        match *self {
            Self::Sub { id, .. }
            | Self::Unsub { id, .. }
            | Self::Pub { id, .. }
            | Self::Direct { id, .. } => id,
        }
    }
}

/// Why a client frame was refused. The fault is always the client's; the server answers with an error reply
/// ([`write_error`] with [`OpError::code`] and [`OpError::message`]) and keeps the connection open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpError {
    /// The frame is not one well-formed JSON value (syntax error, truncated, or trailing bytes). Fault: the
    /// client. Code `bad_json`.
    MalformedJson,
    /// The frame is valid JSON but not an object. Fault: the client. Code `not_an_object`.
    NotAnObject,
    /// The object has no `op` field (or `"op":null`). Fault: the client. Code `missing_op`.
    MissingOp,
    /// `op` is not one of the strings `"sub"`, `"unsub"`, `"pub"`. Fault: the client. Code `unknown_op`.
    UnknownOp,
    /// The op needs a `topic` and there is none (or `"topic":null`). Fault: the client. Code `missing_topic`.
    MissingTopic,
    /// `topic` is not a valid topic name (a non-string or an escaped string counts as
    /// [`TopicError::InvalidChar`]). Fault: the client. Code `invalid_topic`.
    InvalidTopic(TopicError),
    /// `since` is not a non-negative integer that fits a `u64`. Fault: the client. Code `invalid_since`.
    InvalidSince,
    /// `id` is not a JSON number, or is longer than [`MAX_ID_LEN`]. Fault: the client. Code `invalid_id`.
    InvalidId,
    /// A `pub` op has no `data` field. Fault: the client. Code `missing_data`.
    MissingData,
    /// A known field (`op`, `topic`, `user`, `since`, `id`, `data`) appears more than once. Fault: the client.
    /// Code `duplicate_field`.
    DuplicateField,
    /// A `pub`'s `user` is not a non-empty JSON string of at most [`MAX_USER_LEN`] bytes. Fault: the client. Code
    /// `invalid_user`.
    InvalidUser,
    /// A `pub` names both a `topic` and a `user`. Fault: the client. Code `topic_and_user`.
    TopicAndUser,
}

impl OpError {
    /// The stable machine-readable code sent in the error reply's `code` field:
    ///
    /// | variant | code |
    /// |---|---|
    /// | [`MalformedJson`](Self::MalformedJson) | `bad_json` |
    /// | [`NotAnObject`](Self::NotAnObject) | `not_an_object` |
    /// | [`MissingOp`](Self::MissingOp) | `missing_op` |
    /// | [`UnknownOp`](Self::UnknownOp) | `unknown_op` |
    /// | [`MissingTopic`](Self::MissingTopic) | `missing_topic` |
    /// | [`InvalidTopic`](Self::InvalidTopic) | `invalid_topic` |
    /// | [`InvalidSince`](Self::InvalidSince) | `invalid_since` |
    /// | [`InvalidId`](Self::InvalidId) | `invalid_id` |
    /// | [`MissingData`](Self::MissingData) | `missing_data` |
    /// | [`DuplicateField`](Self::DuplicateField) | `duplicate_field` |
    /// | [`InvalidUser`](Self::InvalidUser) | `invalid_user` |
    /// | [`TopicAndUser`](Self::TopicAndUser) | `topic_and_user` |
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedJson => "bad_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingOp => "missing_op",
            Self::UnknownOp => "unknown_op",
            Self::MissingTopic => "missing_topic",
            Self::InvalidTopic(_) => "invalid_topic",
            Self::InvalidSince => "invalid_since",
            Self::InvalidId => "invalid_id",
            Self::MissingData => "missing_data",
            Self::DuplicateField => "duplicate_field",
            Self::InvalidUser => "invalid_user",
            Self::TopicAndUser => "topic_and_user",
        }
    }

    /// A human-readable explanation for the reply's `message` field (static: no allocation). Not stable; match on
    /// [`OpError::code`] instead.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::MalformedJson => "the frame is not valid JSON",
            Self::NotAnObject => "the frame must be a JSON object",
            Self::MissingOp => "the \"op\" field is missing",
            Self::UnknownOp => "\"op\" must be \"sub\", \"unsub\" or \"pub\"",
            Self::MissingTopic => "the \"topic\" field is missing",
            Self::InvalidTopic(e) => e.message(),
            Self::InvalidSince => "\"since\" must be a non-negative integer below 2^64",
            Self::InvalidId => "\"id\" must be a JSON number of at most 64 characters",
            Self::MissingData => "\"pub\" needs a \"data\" field",
            Self::DuplicateField => "a field appears more than once",
            Self::InvalidUser => "\"user\" must be a non-empty JSON string of at most 256 bytes",
            Self::TopicAndUser => "a \"pub\" names either a \"topic\" or a \"user\", not both",
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for OpError {}

impl From<TopicError> for OpError {
    fn from(e: TopicError) -> Self {
        Self::InvalidTopic(e)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------------

/// The known fields of a client op object, as raw JSON text borrowed from the frame.
#[derive(Default)]
struct Fields<'a> {
    op: Option<&'a RawValue>,
    topic: Option<&'a RawValue>,
    user: Option<&'a RawValue>,
    since: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    duplicate: bool,
    duplicate_id: bool,
}

/// A frame's top-level value: an object's fields, or the fact that it was something else.
enum Top<'a> {
    Object(Fields<'a>),
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Op,
    Topic,
    User,
    Since,
    Id,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "op" => Key::Op,
                    "topic" => Key::Topic,
                    "user" => Key::User,
                    "since" => Key::Since,
                    "id" => Key::Id,
                    "data" => Key::Data,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

/// Accepts any JSON value so that the only errors serde_json can report are syntax errors.
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Op => &mut f.op,
                Key::Topic => &mut f.topic,
                Key::User => &mut f.user,
                Key::Since => &mut f.since,
                Key::Id => &mut f.id,
                Key::Data => &mut f.data,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: &'de RawValue = map.next_value()?;
            if slot.is_some() {
                f.duplicate = true;
                f.duplicate_id |= key == Key::Id;
            } else {
                *slot = Some(value);
            }
        }
        Ok(Top::Object(f))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }
}

/// The raw text of a field, with `null` treated as absent.
fn present(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get).filter(|s| *s != "null")
}

/// The contents of a JSON string literal written without escapes, or `None` for anything else.
fn literal_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

fn parse_id(raw: &str) -> Result<RequestId<'_>, OpError> {
    // The text is a syntactically valid JSON value, so one starting with '-' or a digit is a number.
    let is_number = raw
        .as_bytes()
        .first()
        .is_some_and(|&b| b == b'-' || b.is_ascii_digit());
    if is_number && raw.len() <= MAX_ID_LEN {
        Ok(RequestId(raw))
    } else {
        Err(OpError::InvalidId)
    }
}

fn parse_since(raw: &str) -> Result<u64, OpError> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse().map_err(|_| OpError::InvalidSince)
    } else {
        Err(OpError::InvalidSince)
    }
}

fn parse_topic(raw: Option<&RawValue>) -> Result<&str, OpError> {
    let raw = present(raw).ok_or(OpError::MissingTopic)?;
    let topic = literal_string(raw).ok_or(OpError::InvalidTopic(TopicError::InvalidChar))?;
    validate_topic(topic)?;
    Ok(topic)
}

fn parse_user(raw: &str) -> Result<UserId<'_>, OpError> {
    // The text is a syntactically valid JSON value: one starting with '"' is a whole, well-formed string.
    let text = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or(OpError::InvalidUser)?;
    if text.is_empty() || text.len() > MAX_USER_LEN {
        return Err(OpError::InvalidUser);
    }
    let escaped = text.contains('\\');
    // JSON syntax lets a lone surrogate escape (`\ud800`) through; such a string has no Unicode value. Decoding
    // once here (only escaped ids, which are rare, pay for it) keeps `UserId::name` infallible.
    if escaped && serde_json::from_str::<String>(raw).is_err() {
        return Err(OpError::InvalidUser);
    }
    Ok(UserId { text, escaped })
}

/// Parses one WebSocket text frame into a [`ClientOp`] (see the module docs for the rules).
///
/// On error, returns the request id too when it could still be read (the frame was a JSON object with a valid,
/// non-duplicated `id`), so the error reply can carry it.
///
/// ```
/// use ringcast_protocol::pubsub::{parse_client_op, ClientOp, OpError, RequestId};
/// let op = parse_client_op(r#"{"op":"pub","topic":"chat","data":{"text":"hi"},"id":1e3}"#);
/// assert_eq!(op, Ok(ClientOp::Pub { topic: "chat", data: r#"{"text":"hi"}"#, id: Some(RequestId("1e3")) }));
/// let err = parse_client_op(r#"{"op":"subscribe","topic":"chat","id":7}"#);
/// assert_eq!(err, Err((Some(RequestId("7")), OpError::UnknownOp)));
/// ```
///
/// # Errors
/// Any [`OpError`]; the error path itself does not allocate (serde_json may, while reporting a syntax error).
pub fn parse_client_op(text: &str) -> Result<ClientOp<'_>, (Option<RequestId<'_>>, OpError)> {
    let fields = match serde_json::from_str::<Top<'_>>(text) {
        Ok(Top::Object(fields)) => fields,
        Ok(Top::Other) => return Err((None, OpError::NotAnObject)),
        Err(_) => return Err((None, OpError::MalformedJson)),
    };
    if fields.duplicate_id {
        return Err((None, OpError::DuplicateField));
    }
    let id = match present(fields.id) {
        None => None,
        Some(raw) => Some(parse_id(raw).map_err(|e| (None, e))?),
    };
    let fail = |e: OpError| (id, e);
    if fields.duplicate {
        return Err(fail(OpError::DuplicateField));
    }
    let op = present(fields.op).ok_or(fail(OpError::MissingOp))?;
    match op {
        "\"sub\"" => {
            let topic = parse_topic(fields.topic).map_err(fail)?;
            let since = present(fields.since)
                .map(parse_since)
                .transpose()
                .map_err(fail)?;
            Ok(ClientOp::Sub { topic, since, id })
        }
        "\"unsub\"" => {
            let topic = parse_topic(fields.topic).map_err(fail)?;
            Ok(ClientOp::Unsub { topic, id })
        }
        "\"pub\"" => {
            let user = match (present(fields.topic), present(fields.user)) {
                (Some(_), Some(_)) => return Err(fail(OpError::TopicAndUser)),
                (None, Some(raw)) => Some(parse_user(raw).map_err(fail)?),
                _ => None,
            };
            let topic = match user {
                Some(_) => "",
                None => parse_topic(fields.topic).map_err(fail)?,
            };
            let data = fields
                .data
                .map(RawValue::get)
                .ok_or(fail(OpError::MissingData))?;
            Ok(match user {
                Some(user) => ClientOp::Direct { user, data, id },
                None => ClientOp::Pub { topic, data, id },
            })
        }
        _ => Err(fail(OpError::UnknownOp)),
    }
}

/// Writes `op` as the compact JSON object a client sends (`{"op":..,"topic"|"user":..,"since"|"data":..,"id":..}`,
/// absent fields omitted; a [`ClientOp::Direct`] is a `pub` with `user`, written as the client wrote it). [`parse_client_op`] of the output gives `op` back for every op it returned. Used by
/// tests, the fuzz target and load generators.
pub fn write_client_op<B: BufMut>(buf: &mut B, op: &ClientOp<'_>) {
    let name = match *op {
        ClientOp::Sub { .. } => "sub",
        ClientOp::Unsub { .. } => "unsub",
        ClientOp::Pub { .. } | ClientOp::Direct { .. } => "pub",
    };
    buf.put_slice(b"{\"op\":\"");
    buf.put_slice(name.as_bytes());
    match (op.topic(), op.user()) {
        (Some(topic), _) => {
            buf.put_slice(b"\",\"topic\":");
            write_json_string(buf, topic);
        }
        (None, Some(user)) => {
            buf.put_slice(b"\",\"user\":\"");
            buf.put_slice(user.as_written().as_bytes());
            buf.put_u8(b'"');
        }
        (None, None) => buf.put_u8(b'"'),
    }
    match *op {
        ClientOp::Sub {
            since: Some(since), ..
        } => {
            buf.put_slice(b",\"since\":");
            buf.put_slice(itoa::Buffer::new().format(since).as_bytes());
        }
        ClientOp::Pub { data, .. } | ClientOp::Direct { data, .. } => {
            buf.put_slice(b",\"data\":");
            put_json(buf, data.as_bytes());
        }
        _ => {}
    }
    if let Some(RequestId(id)) = op.id() {
        buf.put_slice(b",\"id\":");
        buf.put_slice(id.as_bytes());
    }
    buf.put_u8(b'}');
}

// ---------------------------------------------------------------------------------------------------------------
// Server → client JSON
// ---------------------------------------------------------------------------------------------------------------

/// Writes a JSON value the caller already validated; an empty slice becomes `null` so the output stays JSON.
#[inline]
fn put_json<B: BufMut>(buf: &mut B, json: &[u8]) {
    if json.is_empty() {
        buf.put_slice(b"null");
    } else {
        buf.put_slice(json);
    }
}

#[inline]
fn put_u64<B: BufMut>(buf: &mut B, n: u64) {
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `{"type":"msg","topic":"t","seq":N,"data":<JSON>}`.
///
/// `data_json` is one JSON value the caller validated (from [`parse_client_op`] or [`publish_data`]), copied
/// verbatim; an empty slice is written as `null`. `topic` is escaped (a valid topic never needs it).
///
/// ```
/// let mut out = Vec::new();
/// ringcast_protocol::pubsub::write_msg(&mut out, "chat", 42, br#"{"text":"hi"}"#);
/// assert_eq!(out, br#"{"type":"msg","topic":"chat","seq":42,"data":{"text":"hi"}}"#);
/// ```
#[inline]
pub fn write_msg<B: BufMut>(buf: &mut B, topic: &str, seq: u64, data_json: &[u8]) {
    buf.put_slice(b"{\"type\":\"msg\",\"topic\":");
    write_json_string(buf, topic);
    buf.put_slice(b",\"seq\":");
    put_u64(buf, seq);
    buf.put_slice(b",\"data\":");
    put_json(buf, data_json);
    buf.put_u8(b'}');
}

/// Appends `{"type":"reset","topic":"t","seq":M}`: the history no longer reaches back to the client's `since`;
/// `M` is the oldest retained seq − 1, and the retained messages from `M + 1` on follow.
pub fn write_reset<B: BufMut>(buf: &mut B, topic: &str, seq: u64) {
    buf.put_slice(b"{\"type\":\"reset\",\"topic\":");
    write_json_string(buf, topic);
    buf.put_slice(b",\"seq\":");
    put_u64(buf, seq);
    buf.put_u8(b'}');
}

/// Appends `{"type":"ack","id":..,"seq":..}`, omitting absent fields (`pub`'s ack carries the assigned `seq`).
///
/// ```
/// use ringcast_protocol::pubsub::{write_ack, RequestId};
/// let mut out = Vec::new();
/// write_ack(&mut out, Some(RequestId("1e3")), Some(7));
/// assert_eq!(out, br#"{"type":"ack","id":1e3,"seq":7}"#);
/// ```
pub fn write_ack<B: BufMut>(buf: &mut B, id: Option<RequestId<'_>>, seq: Option<u64>) {
    buf.put_slice(b"{\"type\":\"ack\"");
    if let Some(RequestId(id)) = id {
        buf.put_slice(b",\"id\":");
        buf.put_slice(id.as_bytes());
    }
    if let Some(seq) = seq {
        buf.put_slice(b",\"seq\":");
        put_u64(buf, seq);
    }
    buf.put_u8(b'}');
}

/// Appends `{"type":"direct","from":"<sender>","data":<JSON>}`: a direct message from user `from` (escaped as
/// needed). `data_json` is one JSON value the caller validated, copied verbatim; an empty slice is written as `null`.
///
/// ```
/// let mut out = Vec::new();
/// ringcast_protocol::pubsub::write_direct(&mut out, "alice", br#"{"text":"hi"}"#);
/// assert_eq!(out, br#"{"type":"direct","from":"alice","data":{"text":"hi"}}"#);
/// ```
pub fn write_direct<B: BufMut>(buf: &mut B, from: &str, data_json: &[u8]) {
    buf.put_slice(b"{\"type\":\"direct\",\"from\":");
    write_json_string(buf, from);
    buf.put_slice(b",\"data\":");
    put_json(buf, data_json);
    buf.put_u8(b'}');
}

/// Appends `{"type":"error","id":..,"code":"..","message":".."}` (no `id` when absent). `code` and `message`
/// are escaped; for a parse failure pass [`OpError::code`] and [`OpError::message`].
pub fn write_error<B: BufMut>(buf: &mut B, id: Option<RequestId<'_>>, code: &str, message: &str) {
    buf.put_slice(b"{\"type\":\"error\"");
    if let Some(RequestId(id)) = id {
        buf.put_slice(b",\"id\":");
        buf.put_slice(id.as_bytes());
    }
    buf.put_slice(b",\"code\":");
    write_json_string(buf, code);
    buf.put_slice(b",\"message\":");
    write_json_string(buf, message);
    buf.put_u8(b'}');
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP publish
// ---------------------------------------------------------------------------------------------------------------

/// Why an HTTP publish body was refused. The fault is the publisher's; answer `400 Bad Request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The content type is `application/json` but the body is not exactly one JSON value (syntax error, empty,
    /// not UTF-8, or trailing bytes). Fault: the publisher.
    InvalidJson,
    /// The body of a non-JSON publish is not UTF-8 and so cannot become a JSON string. Fault: the publisher.
    NotUtf8,
}

impl PublishError {
    /// The HTTP status to answer with: `400 Bad Request` for both.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidJson | Self::NotUtf8 => 400,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidJson => "the body is not exactly one JSON value",
            Self::NotUtf8 => "the body is not UTF-8",
        })
    }
}

impl std::error::Error for PublishError {}

/// Whether a `Content-Type` value's media type is `application/json` (case-insensitive, parameters and optional
/// whitespace ignored).
fn is_json_media_type(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// Strips JSON whitespace (space, tab, LF, CR) from both ends.
fn trim_json_ws(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

/// HTTP publish: turns a request body into the message's JSON data.
///
/// - `application/json` (media type compared case-insensitively, parameters ignored): the body must be exactly one
///   JSON value (surrounding whitespace allowed, anything else after it is an error) and is returned as is,
///   trimmed of the surrounding whitespace.
/// - any other or no content type: the body must be UTF-8 and becomes a JSON string, written into `scratch`
///   (cleared first) and returned from there.
///
/// ```
/// use ringcast_protocol::pubsub::publish_data;
/// let mut scratch = Vec::new();
/// assert_eq!(publish_data(Some(b"application/json; charset=utf-8"), b" [1, 2] \n", &mut scratch), Ok(&b"[1, 2]"[..]));
/// assert_eq!(publish_data(Some(b"text/plain"), b"say \"hi\"", &mut scratch), Ok(&br#""say \"hi\"""#[..]));
/// ```
///
/// # Errors
/// [`PublishError::InvalidJson`] or [`PublishError::NotUtf8`].
pub fn publish_data<'a>(
    content_type: Option<&[u8]>,
    body: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], PublishError> {
    let text = crate::utf8::from_utf8(body);
    if content_type.is_some_and(is_json_media_type) {
        let text = text.map_err(|_| PublishError::InvalidJson)?;
        serde_json::from_str::<IgnoredAny>(text).map_err(|_| PublishError::InvalidJson)?;
        Ok(trim_json_ws(body))
    } else {
        let text = text.map_err(|_| PublishError::NotUtf8)?;
        scratch.clear();
        scratch.reserve(text.len() + 2);
        write_json_string(scratch, text);
        Ok(scratch.as_slice())
    }
}

/// Appends the HTTP publish answer body `{"topic":"t","seq":N}`.
pub fn write_publish_ok<B: BufMut>(buf: &mut B, topic: &str, seq: u64) {
    buf.put_slice(b"{\"topic\":");
    write_json_string(buf, topic);
    buf.put_slice(b",\"seq\":");
    put_u64(buf, seq);
    buf.put_u8(b'}');
}

// ---------------------------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------------------------

/// The JSON text as `str`. Data from this crate's parsers is always UTF-8; anything else is replaced lossily
/// rather than refused (only that impossible path allocates). Empty data becomes `null`, as in [`write_msg`].
fn json_text(data_json: &[u8]) -> Cow<'_, str> {
    if data_json.is_empty() {
        return Cow::Borrowed("null");
    }
    match crate::utf8::from_utf8(data_json) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data_json),
    }
}

/// Appends the SSE form of a message: `id: N`, then `data:` line(s) carrying the JSON data, default event type (so
/// `EventSource.onmessage` fires). A browser's `event.data` is the JSON text (JSON whitespace line breaks inside
/// the value arrive as `"\n"`, which is still JSON whitespace), and its `lastEventId` becomes `N`.
///
/// ```
/// let mut out = Vec::new();
/// ringcast_protocol::pubsub::write_sse_msg(&mut out, 42, br#"{"text":"hi"}"#).unwrap();
/// assert_eq!(out, b"id: 42\ndata: {\"text\":\"hi\"}\n\n");
/// ```
///
/// # Errors
/// None in practice (the id is decimal digits); the `Result` is [`sse::write_event`]'s.
pub fn write_sse_msg<B: BufMut>(buf: &mut B, seq: u64, data_json: &[u8]) -> Result<(), SseError> {
    let mut num = itoa::Buffer::new();
    let ev = Event {
        id: Some(num.format(seq)),
        data: &json_text(data_json),
        ..Event::default()
    };
    sse::write_event(buf, &ev)
}

/// Appends the SSE form of a reset: `id: M`, `event: reset`, `data: {"seq":M}` (M = oldest retained seq − 1).
///
/// The `id: M` line is deliberate: it moves the browser's `Last-Event-ID` to `M`, the point the stream has now
/// resumed from. Without it, a client that reconnects before the next message would send its old, stale cursor
/// and get the same reset again; with it, the reconnect asks for `seq > M`, which is exactly what follows.
///
/// # Errors
/// None in practice; the `Result` is [`sse::write_event`]'s.
pub fn write_sse_reset<B: BufMut>(buf: &mut B, seq: u64) -> Result<(), SseError> {
    let mut num = itoa::Buffer::new();
    let id = num.format(seq);
    // `{"seq":` + at most 20 digits + `}`.
    const CAP: usize = 28;
    let mut data = [0u8; CAP];
    let mut w = &mut data[..];
    w.put_slice(b"{\"seq\":");
    w.put_slice(id.as_bytes());
    w.put_u8(b'}');
    let len = CAP - w.len();
    let data = core::str::from_utf8(data.get(..len).unwrap_or_default()).unwrap_or("null");
    let ev = Event {
        id: Some(id),
        event: Some("reset"),
        retry: None,
        data,
    };
    sse::write_event(buf, &ev)
}

// ---------------------------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------------------------

/// Which pub/sub endpoint a request path names; topics are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubSubRoute<'a> {
    /// `/ws`: the WebSocket endpoint.
    Ws,
    /// `/sse/{topic}`: an SSE stream.
    Sse(&'a str),
    /// `/poll/{topic}`: long polling.
    Poll(&'a str),
    /// `/messages/{topic}`: short polling.
    Messages(&'a str),
    /// `/publish/{topic}`: HTTP publish (the method, `POST`, is the caller's to check).
    Publish(&'a str),
}

/// Builds a [`PubSubRoute`] from its validated topic.
type RouteCtor<'a> = fn(&'a str) -> PubSubRoute<'a>;

/// Routes a request path: `/ws`, or `/{sse,poll,messages,publish}/{topic}`.
///
/// A query string (`?...`), if present, is ignored. The topic is everything after the prefix; it is
/// percent-decoded into `scratch` when it contains `%` (otherwise borrowed from `path`), then validated. So
/// `/sse/a%3Ab` names topic `a:b`, while `/sse/a/b` and `/sse/` are invalid topics rather than other paths.
///
/// ```
/// use ringcast_protocol::pubsub::{route_path, PubSubRoute};
/// use ringcast_protocol::topic::TopicError;
/// let mut scratch = String::new();
/// assert_eq!(route_path("/sse/a%3Ab?since=4", &mut scratch), Some(Ok(PubSubRoute::Sse("a:b"))));
/// assert_eq!(route_path("/poll/", &mut String::new()), Some(Err(TopicError::Empty)));
/// assert_eq!(route_path("/index.html", &mut String::new()), None);
/// ```
///
/// Returns `None` when the path is not a pub/sub path, `Some(Err(_))` when it is but the topic is invalid
/// (answer 400; a malformed percent-encoding or a non-ASCII byte counts as [`TopicError::InvalidChar`]).
pub fn route_path<'a>(
    path: &'a str,
    scratch: &'a mut String,
) -> Option<Result<PubSubRoute<'a>, TopicError>> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path == "/ws" {
        return Some(Ok(PubSubRoute::Ws));
    }
    let routes: [(&str, RouteCtor<'a>); 4] = [
        ("/sse/", PubSubRoute::Sse),
        ("/poll/", PubSubRoute::Poll),
        ("/messages/", PubSubRoute::Messages),
        ("/publish/", PubSubRoute::Publish),
    ];
    for (prefix, route) in routes {
        if let Some(raw) = path.strip_prefix(prefix) {
            return Some(decode_topic(raw, scratch).map(route));
        }
    }
    None
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a topic path segment (into `scratch` only when it has a `%`) and validates it.
fn decode_topic<'a>(raw: &'a str, scratch: &'a mut String) -> Result<&'a str, TopicError> {
    if !raw.contains('%') {
        validate_topic(raw)?;
        return Ok(raw);
    }
    scratch.clear();
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let (byte, tail) = match (b, tail) {
            (b'%', [hi, lo, tail @ ..]) => match (hex_value(*hi), hex_value(*lo)) {
                (Some(hi), Some(lo)) => ((hi << 4) | lo, tail),
                _ => return Err(TopicError::InvalidChar),
            },
            (b'%', _) => return Err(TopicError::InvalidChar),
            (b, tail) => (b, tail),
        };
        if !is_topic_byte(byte) {
            return Err(TopicError::InvalidChar);
        }
        if scratch.len() == crate::topic::MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        scratch.push(char::from(byte));
        rest = tail;
    }
    validate_topic(scratch)?;
    Ok(scratch.as_str())
}

#[cfg(test)]
mod tests;
