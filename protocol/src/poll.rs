//! The JSON bodies long and short polling return, written straight into a caller's buffer (no intermediate JSON
//! tree), and RFC 8259 string escaping.
//!
//! ## Body shape
//! ```json
//! {"messages":[{"topic":"chat","seq":41,"data":{"text":"hi"}},
//!              {"topic":"chat","seq":42,"data":"plain text"}],
//!  "cursor":{"chat":42,"news":7},
//!  "reset":{"news":true}}
//! ```
//! (written without the line breaks and indentation shown here).
//!
//! - `messages`: in the order given, each with its topic, its per-topic sequence number and its data, either a JSON
//!   value the caller already validated ([`Data::Json`], written verbatim) or a string ([`Data::Text`], escaped).
//! - `cursor`: one entry per subscribed topic mapping the topic to the sequence number of the last message the client
//!   has now seen on it. The client sends the whole object back unchanged on its next poll, meaning "everything
//!   after these", i.e. for each topic the messages with `seq` greater than the value. A topic with nothing new keeps
//!   the value the client sent.
//! - `reset`: present only when at least one topic is flagged ([`TopicCursor::reset`]). `"topic":true` means the
//!   server's history no longer reaches back to the point the client asked for: messages were lost, and the cursor
//!   for that topic was moved forward to what the server can still serve. Clients should resynchronise that topic's
//!   state from elsewhere.
//!
//! Topic names are written as JSON strings (escaped), so any text is a valid topic. Each topic should appear at most
//! once in the cursor: duplicate keys are legal JSON but clients disagree about which one wins.

use bytes::BufMut;

/// A message's data.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// One complete JSON value the caller has already validated; written verbatim. An empty slice is written as
    /// `null` so the body stays valid JSON.
    Json(&'a [u8]),
    /// Text, written as an escaped JSON string.
    Text(&'a str),
}

/// One message in a poll response.
#[derive(Clone, Copy, Debug)]
pub struct PollMessage<'a> {
    /// The topic the message was published on.
    pub topic: &'a str,
    /// Its sequence number within the topic.
    pub seq: u64,
    /// Its payload.
    pub data: Data<'a>,
}

/// One topic's entry in the response cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicCursor<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The last sequence number the client has now seen on the topic; it asks for messages after this next time.
    pub seq: u64,
    /// History no longer covered the point the client asked for: messages before `seq` were lost to this client.
    /// Written into the body's `reset` object.
    pub reset: bool,
}

impl<'a> From<(&'a str, u64)> for TopicCursor<'a> {
    fn from((topic, seq): (&'a str, u64)) -> Self {
        Self {
            topic,
            seq,
            reset: false,
        }
    }
}

/// Writes a poll response body (see the module docs for the shape) with no topic flagged `reset`.
///
/// ```
/// use ringcast_protocol::poll::{write_poll_body, Data, PollMessage};
/// let mut out = Vec::new();
/// let msgs = [PollMessage { topic: "chat", seq: 42, data: Data::Text("hi") }];
/// write_poll_body(&mut out, &msgs, &[("chat", 42), ("news", 7)]);
/// assert_eq!(
///     out,
///     br#"{"messages":[{"topic":"chat","seq":42,"data":"hi"}],"cursor":{"chat":42,"news":7}}"#
/// );
/// ```
pub fn write_poll_body<B: BufMut>(
    buf: &mut B,
    messages: &[PollMessage<'_>],
    cursor: &[(&str, u64)],
) {
    write_body(buf, messages, cursor.iter().map(|&c| TopicCursor::from(c)));
}

/// Writes a poll response body whose cursor entries may carry the `reset` flag.
///
/// ```
/// use ringcast_protocol::poll::{write_poll_body_with_resets, TopicCursor};
/// let mut out = Vec::new();
/// let cursor = [TopicCursor { topic: "news", seq: 90, reset: true }];
/// write_poll_body_with_resets(&mut out, &[], &cursor);
/// assert_eq!(out, br#"{"messages":[],"cursor":{"news":90},"reset":{"news":true}}"#);
/// ```
pub fn write_poll_body_with_resets<B: BufMut>(
    buf: &mut B,
    messages: &[PollMessage<'_>],
    cursor: &[TopicCursor<'_>],
) {
    write_body(buf, messages, cursor.iter().copied());
}

fn write_body<'c, B, I>(buf: &mut B, messages: &[PollMessage<'_>], cursor: I)
where
    B: BufMut,
    I: Iterator<Item = TopicCursor<'c>> + Clone,
{
    let mut num = itoa::Buffer::new();
    buf.put_slice(b"{\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"topic\":");
        write_json_string(buf, m.topic);
        buf.put_slice(b",\"seq\":");
        buf.put_slice(num.format(m.seq).as_bytes());
        buf.put_slice(b",\"data\":");
        match m.data {
            Data::Json([]) => buf.put_slice(b"null"),
            Data::Json(json) => buf.put_slice(json),
            Data::Text(text) => write_json_string(buf, text),
        }
        buf.put_u8(b'}');
    }
    buf.put_slice(b"],\"cursor\":{");
    for (i, c) in cursor.clone().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        write_json_string(buf, c.topic);
        buf.put_u8(b':');
        buf.put_slice(num.format(c.seq).as_bytes());
    }
    buf.put_u8(b'}');
    let mut resets = cursor.filter(|c| c.reset).peekable();
    if resets.peek().is_some() {
        buf.put_slice(b",\"reset\":{");
        for (i, c) in resets.enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            write_json_string(buf, c.topic);
            buf.put_slice(b":true");
        }
        buf.put_u8(b'}');
    }
    buf.put_u8(b'}');
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A word with the high bit set in (at least) the lowest byte of `w` that is `"`, `\` or below 0x20, and no bit set
/// below that byte; zero when no byte of `w` needs escaping. (Bits above the first hit may be spurious.)
#[inline]
fn escape_mask(w: u64) -> u64 {
    let zero_byte = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    control | zero_byte(w ^ (LO * u64::from(b'"'))) | zero_byte(w ^ (LO * u64::from(b'\\')))
}

#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Index of the first byte of `s` at or after `from` that needs escaping.
#[inline]
fn next_escape(s: &[u8], mut from: usize) -> Option<usize> {
    while let Some(word) = s.get(from..).and_then(|rest| rest.first_chunk::<8>()) {
        let mask = escape_mask(u64::from_le_bytes(*word));
        if mask != 0 {
            return Some(from + (mask.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    let tail = s.get(from..)?;
    tail.iter().position(|&b| needs_escape(b)).map(|i| from + i)
}

/// Appends `s` as a JSON string literal (RFC 8259 §7): quotes around it; `"` and `\` backslash-escaped; `\n`,
/// `\r`, `\t`, `\b`, `\f` in their short forms; every other byte below 0x20 as `\u00XX` (lowercase hex). Everything
/// else, including non-ASCII, is copied as UTF-8. Clean runs are found eight bytes at a time and copied whole.
///
/// ```
/// let mut out = Vec::new();
/// ringcast_protocol::poll::write_json_string(&mut out, "a\"b\n\u{1}é");
/// assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\n\u0001é""#);
/// ```
pub fn write_json_string<B: BufMut>(buf: &mut B, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    buf.put_u8(b'"');
    let mut run_start = 0;
    while let Some(i) = next_escape(bytes, run_start) {
        let (Some(run), Some(&b)) = (bytes.get(run_start..i), bytes.get(i)) else {
            break;
        };
        buf.put_slice(run);
        match b {
            b'"' => buf.put_slice(b"\\\""),
            b'\\' => buf.put_slice(b"\\\\"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            b'\t' => buf.put_slice(b"\\t"),
            0x08 => buf.put_slice(b"\\b"),
            0x0c => buf.put_slice(b"\\f"),
            _ => buf.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        run_start = i + 1;
    }
    buf.put_slice(bytes.get(run_start..).unwrap_or_default());
    buf.put_u8(b'"');
}

/// Long/short polling body for one topic, the shape issue 4 fixes:
/// `{"topic":"t","messages":[{"seq":1,"data":<JSON>},...],"next":K,"reset":false}`.
///
/// - `messages`: `(seq, data)` pairs in the order given; each `data` is one JSON value the caller already
///   validated, copied verbatim (an empty slice is written as `null`).
/// - `next`: the `since` the client should send on its next poll (normally the last `seq` returned, or the
///   client's own `since` when nothing is new).
/// - `reset`: `true` when the history no longer reached back to the client's `since`, so the messages start at the
///   oldest retained one and everything before was lost to this client.
///
/// `topic` is escaped (a valid topic never needs it). No allocation.
///
/// ```
/// use ringcast_protocol::poll::write_topic_poll_body;
/// let mut out = Vec::new();
/// let msgs: [(u64, &[u8]); 2] = [(41, br#"{"a":1}"#), (42, b"\"hi\"")];
/// write_topic_poll_body(&mut out, "chat", msgs, 42, false);
/// assert_eq!(
///     out,
///     br#"{"topic":"chat","messages":[{"seq":41,"data":{"a":1}},{"seq":42,"data":"hi"}],"next":42,"reset":false}"#
/// );
/// ```
pub fn write_topic_poll_body<'m, B: BufMut>(
    buf: &mut B,
    topic: &str,
    messages: impl IntoIterator<Item = (u64, &'m [u8])>,
    next: u64,
    reset: bool,
) {
    let mut num = itoa::Buffer::new();
    buf.put_slice(b"{\"topic\":");
    write_json_string(buf, topic);
    buf.put_slice(b",\"messages\":[");
    for (i, (seq, data)) in messages.into_iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"seq\":");
        buf.put_slice(num.format(seq).as_bytes());
        buf.put_slice(b",\"data\":");
        if data.is_empty() {
            buf.put_slice(b"null");
        } else {
            buf.put_slice(data);
        }
        buf.put_u8(b'}');
    }
    buf.put_slice(b"],\"next\":");
    buf.put_slice(num.format(next).as_bytes());
    buf.put_slice(if reset {
        b",\"reset\":true}"
    } else {
        b",\"reset\":false}"
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    /// Byte-at-a-time reference for [`write_json_string`].
    fn reference(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn escape_table() {
        let table: &[(&str, &str)] = &[
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("\"", r#""\"""#),
            ("\\", r#""\\""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            ("\u{0}", r#""\u0000""#),
            ("\u{1}\u{1f}", r#""\u0001\u001f""#),
            ("\u{b}", r#""\u000b""#),
            ("\u{7f}", "\"\u{7f}\""),
            (" ", r#"" ""#),
            ("/", r#""/""#),
            ("é€😀", "\"é€😀\""),
            ("\u{2028}", "\"\u{2028}\""),
            ("0123456\"", r#""0123456\"""#),
            ("01234567\"", r#""01234567\"""#),
            ("01234567890123456789\\x", r#""01234567890123456789\\x""#),
            ("a\"b\\c\nd", r#""a\"b\\c\nd""#),
        ];
        for (input, want) in table {
            assert_eq!(escaped(input), *want, "{input:?}");
        }
        for b in 0u8..0x80 {
            let s = char::from(b).to_string();
            assert_eq!(escaped(&s), reference(&s), "byte {b:#x}");
        }
    }

    #[test]
    fn escape_mask_finds_every_position() {
        for pos in 0..8 {
            for bad in [0u8, 0x1f, b'"', b'\\', b'\n'] {
                let mut w = [b'a'; 8];
                w[pos] = bad;
                let m = escape_mask(u64::from_le_bytes(w));
                assert_eq!(m.trailing_zeros() / 8, pos as u32, "{bad:#x} at {pos}");
            }
        }
        assert_eq!(escape_mask(u64::from_le_bytes(*b" !#[]~\x7f\xff")), 0);
    }

    #[test]
    fn body_shapes() {
        let mut out = Vec::new();
        write_poll_body(&mut out, &[], &[]);
        assert_eq!(out, br#"{"messages":[],"cursor":{}}"#);

        let msgs = [
            PollMessage {
                topic: "a\"b",
                seq: 0,
                data: Data::Json(br#"{"x":[1,2]}"#),
            },
            PollMessage {
                topic: "t",
                seq: u64::MAX,
                data: Data::Text("line\n"),
            },
            PollMessage {
                topic: "t",
                seq: 5,
                data: Data::Json(b""),
            },
        ];
        let cursor = [
            TopicCursor {
                topic: "a\"b",
                seq: 0,
                reset: true,
            },
            TopicCursor {
                topic: "t",
                seq: u64::MAX,
                reset: false,
            },
            TopicCursor {
                topic: "z",
                seq: 3,
                reset: true,
            },
        ];
        let mut out = Vec::new();
        write_poll_body_with_resets(&mut out, &msgs, &cursor);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            concat!(
                r#"{"messages":[{"topic":"a\"b","seq":0,"data":{"x":[1,2]}},"#,
                r#"{"topic":"t","seq":18446744073709551615,"data":"line\n"},"#,
                r#"{"topic":"t","seq":5,"data":null}],"#,
                r#""cursor":{"a\"b":0,"t":18446744073709551615,"z":3},"reset":{"a\"b":true,"z":true}}"#
            )
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["reset"], json!({"a\"b": true, "z": true}));

        // No reset flags: no "reset" key at all.
        let mut out = Vec::new();
        write_poll_body(&mut out, &msgs[..1], &[("t", 1)]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("reset").is_none());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn escaping_matches_reference_and_serde(s in prop_oneof![
            any::<String>(),
            "[a-z\"\\\\\u{0}-\u{1f}é]{0,40}",
        ]) {
            let out = escaped(&s);
            prop_assert_eq!(&out, &reference(&s));
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn body_parses_to_expected_structure(
            msgs in proptest::collection::vec(
                (any::<String>(), any::<u64>(), prop_oneof![
                    json_value().prop_map(Ok),
                    any::<String>().prop_map(Err),
                ]),
                0..6),
            cursor in proptest::collection::btree_map(any::<String>(), (any::<u64>(), any::<bool>()), 0..5),
        ) {
            let json_bytes: Vec<Option<Vec<u8>>> = msgs.iter()
                .map(|(_, _, d)| d.as_ref().ok().map(|v| serde_json::to_vec(v).unwrap()))
                .collect();
            let poll_msgs: Vec<PollMessage<'_>> = msgs.iter().zip(&json_bytes).map(|((topic, seq, d), jb)| {
                let data = match (d, jb) {
                    (Err(text), _) => Data::Text(text),
                    (Ok(_), Some(b)) => Data::Json(b),
                    (Ok(_), None) => unreachable!(),
                };
                PollMessage { topic, seq: *seq, data }
            }).collect();
            let cur: Vec<TopicCursor<'_>> = cursor.iter()
                .map(|(t, &(seq, reset))| TopicCursor { topic: t, seq, reset })
                .collect();
            let mut out = Vec::new();
            write_poll_body_with_resets(&mut out, &poll_msgs, &cur);
            let got: Value = serde_json::from_slice(&out).unwrap();

            let expected_msgs: Vec<Value> = msgs.iter().map(|(topic, seq, d)| json!({
                "topic": topic,
                "seq": seq,
                "data": match d { Ok(v) => v.clone(), Err(t) => Value::from(t.clone()) },
            })).collect();
            let expected_cursor: serde_json::Map<String, Value> =
                cursor.iter().map(|(t, (seq, _))| (t.clone(), json!(seq))).collect();
            let resets: serde_json::Map<String, Value> =
                cursor.iter().filter(|(_, (_, r))| *r).map(|(t, _)| (t.clone(), json!(true))).collect();
            let mut expected = json!({"messages": expected_msgs, "cursor": expected_cursor});
            if !resets.is_empty() {
                expected["reset"] = Value::Object(resets);
            }
            prop_assert_eq!(&got, &expected);

            // The tuple form writes the same body minus the reset object.
            let tuples: Vec<(&str, u64)> = cur.iter().map(|c| (c.topic, c.seq)).collect();
            let mut plain = Vec::new();
            write_poll_body(&mut plain, &poll_msgs, &tuples);
            let plain_v: Value = serde_json::from_slice(&plain).unwrap();
            prop_assert!(plain_v.get("reset").is_none());
            let mut exp = expected;
            if let Some(obj) = exp.as_object_mut() { obj.remove("reset"); }
            prop_assert_eq!(plain_v, exp);
        }
    }
}
