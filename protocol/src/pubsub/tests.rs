//! Tests for the pub/sub wire protocol: table-driven parse cases for every op shape and error, exact writer
//! outputs, and property tests that every writer's output is the JSON it claims to be.

use super::*;
use crate::poll::write_topic_poll_body;
use crate::sse::{EventParser, SseItem};
use crate::topic::MAX_TOPIC_LEN;
use proptest::prelude::*;
use serde_json::{Value, json};

fn id(s: &str) -> Option<RequestId<'_>> {
    Some(RequestId(s))
}

fn s(out: &[u8]) -> &str {
    std::str::from_utf8(out).unwrap()
}

#[test]
fn parse_ok_table() {
    let table: &[(&str, ClientOp<'static>)] = &[
        (
            r#"{"op":"sub","topic":"t"}"#,
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        (
            r#"{"op":"sub","topic":"t","since":0}"#,
            ClientOp::Sub {
                topic: "t",
                since: Some(0),
                id: None,
            },
        ),
        (
            r#"{"op":"sub","topic":"t","since":18446744073709551615,"id":1}"#,
            ClientOp::Sub {
                topic: "t",
                since: Some(u64::MAX),
                id: id("1"),
            },
        ),
        (
            r#"{"op":"sub","topic":"t","since":null,"id":null}"#,
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        (
            r#"{"op":"unsub","topic":"a.b:c-d_e","id":7}"#,
            ClientOp::Unsub {
                topic: "a.b:c-d_e",
                id: id("7"),
            },
        ),
        (
            r#"{"op":"pub","topic":"t","data":{"a":[1,2]},"id":-5}"#,
            ClientOp::Pub {
                topic: "t",
                data: r#"{"a":[1,2]}"#,
                id: id("-5"),
            },
        ),
        // Any JSON number is a valid id, echoed verbatim.
        (
            r#"{"op":"pub","topic":"t","data":1,"id":1e3}"#,
            ClientOp::Pub {
                topic: "t",
                data: "1",
                id: id("1e3"),
            },
        ),
        (
            r#"{"op":"pub","topic":"t","data":1,"id":2.50E-1}"#,
            ClientOp::Pub {
                topic: "t",
                data: "1",
                id: id("2.50E-1"),
            },
        ),
        (
            r#"{"op":"pub","topic":"t","data":1,"id":0}"#,
            ClientOp::Pub {
                topic: "t",
                data: "1",
                id: id("0"),
            },
        ),
        // Range is not checked, only the grammar (documented).
        (
            r#"{"op":"unsub","topic":"t","id":1e999}"#,
            ClientOp::Unsub {
                topic: "t",
                id: id("1e999"),
            },
        ),
        // `null` data is data.
        (
            r#"{"op":"pub","topic":"t","data":null}"#,
            ClientOp::Pub {
                topic: "t",
                data: "null",
                id: None,
            },
        ),
        (
            r#"{"op":"pub","topic":"t","data":"x\ny"}"#,
            ClientOp::Pub {
                topic: "t",
                data: r#""x\ny""#,
                id: None,
            },
        ),
        // Inner whitespace of data kept, outer whitespace dropped.
        (
            "{ \"op\" : \"pub\" , \"topic\" : \"t\" , \"data\" : { \"a\" : 1 } \n}",
            ClientOp::Pub {
                topic: "t",
                data: r#"{ "a" : 1 }"#,
                id: None,
            },
        ),
        // Unknown fields ignored, wherever they are and whatever they hold.
        (
            r#"{"v":2,"op":"sub","extra":{"x":[1,{"y":null}]},"topic":"t","Op":"pub"}"#,
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        // Field order is free.
        (
            r#"{"data":"x","id":3,"topic":"t","op":"pub"}"#,
            ClientOp::Pub {
                topic: "t",
                data: r#""x""#,
                id: id("3"),
            },
        ),
        // Whitespace around the object.
        (
            " \r\n\t{\"op\":\"sub\",\"topic\":\"t\"}\n ",
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        // Escaped keys are decoded.
        (
            r#"{"\u006fp":"sub","topic":"t"}"#,
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        // Fields that do not belong to the op are ignored, even when they would be invalid.
        (
            r#"{"op":"unsub","topic":"t","since":-1,"data":1}"#,
            ClientOp::Unsub {
                topic: "t",
                id: None,
            },
        ),
        (
            r#"{"op":"sub","topic":"t","data":{}}"#,
            ClientOp::Sub {
                topic: "t",
                since: None,
                id: None,
            },
        ),
        (
            r#"{"op":"pub","topic":"t","data":[],"since":"x"}"#,
            ClientOp::Pub {
                topic: "t",
                data: "[]",
                id: None,
            },
        ),
    ];
    for (text, want) in table {
        assert_eq!(parse_client_op(text).as_ref(), Ok(want), "{text}");
    }
}

#[test]
fn parse_error_table() {
    use OpError as E;
    let t128 = format!(
        r#"{{"op":"sub","topic":"{}","id":1}}"#,
        "a".repeat(MAX_TOPIC_LEN)
    );
    let t129 = format!(
        r#"{{"op":"sub","topic":"{}","id":1}}"#,
        "a".repeat(MAX_TOPIC_LEN + 1)
    );
    let deep = format!(
        r#"{{"op":"pub","topic":"t","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_id = format!(
        r#"{{"op":"sub","topic":"t","id":{}}}"#,
        "9".repeat(MAX_ID_LEN + 1)
    );
    let long_user = format!(
        r#"{{"op":"pub","user":"{}","data":1}}"#,
        "u".repeat(MAX_USER_LEN + 1)
    );
    let max_user = format!(
        r#"{{"op":"pub","user":"{}","data":1}}"#,
        "u".repeat(MAX_USER_LEN)
    );
    assert!(matches!(
        parse_client_op(&max_user),
        Ok(ClientOp::Direct { .. })
    ));
    let max_id = format!(
        r#"{{"op":"sub","topic":"t","id":{}}}"#,
        "9".repeat(MAX_ID_LEN)
    );
    assert!(parse_client_op(&t128).is_ok());
    // Nesting is validated iteratively: deep data is accepted and cannot overflow the stack.
    assert!(
        matches!(parse_client_op(&deep), Ok(ClientOp::Pub { data, .. }) if data.len() == 200_000)
    );
    assert_eq!(
        parse_client_op(&deep[..deep.len() - 2]),
        Err((None, OpError::MalformedJson))
    );
    assert!(parse_client_op(&max_id).is_ok());
    let table: Vec<(&str, Option<&str>, OpError)> = vec![
        // Malformed JSON: never an id.
        ("", None, E::MalformedJson),
        ("   ", None, E::MalformedJson),
        ("{", None, E::MalformedJson),
        (r#"{"op":"sub","topic":"t","id":1"#, None, E::MalformedJson),
        (
            r#"{"op":"sub","topic":"t","id":1} x"#,
            None,
            E::MalformedJson,
        ),
        (
            r#"{"op":"sub","topic":"t","id":1}{}"#,
            None,
            E::MalformedJson,
        ),
        ("{'op':'sub'}", None, E::MalformedJson),
        (r#"{"op":"sub",}"#, None, E::MalformedJson),
        (
            r#"{"op":"sub","topic":"t","id":01}"#,
            None,
            E::MalformedJson,
        ),
        (
            "{\"op\":\"pub\",\"topic\":\"t\",\"data\":\"a\u{1}\"}",
            None,
            E::MalformedJson,
        ),
        // Not an object.
        ("[]", None, E::NotAnObject),
        (r#"[{"op":"sub","topic":"t"}]"#, None, E::NotAnObject),
        (r#""sub""#, None, E::NotAnObject),
        ("1", None, E::NotAnObject),
        ("-1.5", None, E::NotAnObject),
        ("null", None, E::NotAnObject),
        ("true", None, E::NotAnObject),
        // Op.
        ("{}", None, E::MissingOp),
        (r#"{"topic":"t","id":3}"#, Some("3"), E::MissingOp),
        (r#"{"op":null,"topic":"t","id":3}"#, Some("3"), E::MissingOp),
        (
            r#"{"op":"subscribe","topic":"t","id":1}"#,
            Some("1"),
            E::UnknownOp,
        ),
        (r#"{"op":"SUB","topic":"t"}"#, None, E::UnknownOp),
        (r#"{"op":1,"topic":"t"}"#, None, E::UnknownOp),
        (r#"{"op":["sub"],"topic":"t"}"#, None, E::UnknownOp),
        (r#"{"op":"\u0073ub","topic":"t"}"#, None, E::UnknownOp),
        // Topic.
        (r#"{"op":"sub","id":2}"#, Some("2"), E::MissingTopic),
        (
            r#"{"op":"unsub","topic":null,"id":2}"#,
            Some("2"),
            E::MissingTopic,
        ),
        (r#"{"op":"pub","data":1}"#, None, E::MissingTopic),
        (
            r#"{"op":"sub","topic":"","id":2}"#,
            Some("2"),
            E::InvalidTopic(TopicError::Empty),
        ),
        (&t129, Some("1"), E::InvalidTopic(TopicError::TooLong)),
        (
            r#"{"op":"sub","topic":"a b"}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"sub","topic":"a/b"}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"sub","topic":"é"}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"sub","topic":5}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"sub","topic":["t"]}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"sub","topic":"\u0061"}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        (
            r#"{"op":"pub","topic":"a\"b","data":1}"#,
            None,
            E::InvalidTopic(TopicError::InvalidChar),
        ),
        // Since.
        (
            r#"{"op":"sub","topic":"t","since":-1,"id":4}"#,
            Some("4"),
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":-0}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":1.5}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":1.0}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":1e3}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":"5"}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":true}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":{}}"#,
            None,
            E::InvalidSince,
        ),
        (
            r#"{"op":"sub","topic":"t","since":18446744073709551616}"#,
            None,
            E::InvalidSince,
        ),
        // Id: a string id is refused and cannot be echoed.
        (r#"{"op":"sub","topic":"t","id":"1"}"#, None, E::InvalidId),
        (r#"{"op":"sub","topic":"t","id":[1]}"#, None, E::InvalidId),
        (r#"{"op":"sub","topic":"t","id":true}"#, None, E::InvalidId),
        (r#"{"op":"sub","topic":"t","id":{}}"#, None, E::InvalidId),
        (r#"{"op":"nope","id":"x"}"#, None, E::InvalidId),
        (&long_id, None, E::InvalidId),
        // Data.
        (
            r#"{"op":"pub","topic":"t","id":2}"#,
            Some("2"),
            E::MissingData,
        ),
        // Duplicates of known fields; unknown duplicates are fine (see the ok table).
        (
            r#"{"op":"sub","op":"pub","topic":"t","id":4}"#,
            Some("4"),
            E::DuplicateField,
        ),
        (
            r#"{"op":"sub","topic":"t","topic":"u"}"#,
            None,
            E::DuplicateField,
        ),
        (
            r#"{"op":"pub","topic":"t","data":1,"data":2}"#,
            None,
            E::DuplicateField,
        ),
        (
            r#"{"op":"sub","topic":"t","since":1,"since":2}"#,
            None,
            E::DuplicateField,
        ),
        (
            r#"{"op":"sub","topic":"t","id":1,"id":2}"#,
            None,
            E::DuplicateField,
        ),
        (
            r#"{"op":"sub","topic":"t","\u0069d":1,"id":1}"#,
            None,
            E::DuplicateField,
        ),
        (
            r#"{"op":"pub","user":"a","user":"b","data":1,"id":3}"#,
            Some("3"),
            E::DuplicateField,
        ),
        // Direct messages: exactly one target, a non-empty string user.
        (
            r#"{"op":"pub","topic":"t","user":"bob","data":1,"id":5}"#,
            Some("5"),
            E::TopicAndUser,
        ),
        (r#"{"op":"pub","user":"","data":1}"#, None, E::InvalidUser),
        (
            r#"{"op":"pub","user":5,"data":1,"id":6}"#,
            Some("6"),
            E::InvalidUser,
        ),
        (
            r#"{"op":"pub","user":["bob"],"data":1}"#,
            None,
            E::InvalidUser,
        ),
        (r#"{"op":"pub","user":{},"data":1}"#, None, E::InvalidUser),
        (r#"{"op":"pub","user":true,"data":1}"#, None, E::InvalidUser),
        (&long_user, None, E::InvalidUser),
        // Valid JSON syntax, but not a Unicode string.
        (
            r#"{"op":"pub","user":"\ud800","data":1}"#,
            None,
            E::InvalidUser,
        ),
        (
            r#"{"op":"pub","user":"bob","id":7}"#,
            Some("7"),
            E::MissingData,
        ),
        (
            r#"{"op":"pub","user":null,"data":1}"#,
            None,
            E::MissingTopic,
        ),
        // `user` does not stand in for `topic` on sub/unsub.
        (r#"{"op":"sub","user":"bob"}"#, None, E::MissingTopic),
        (r#"{"op":"unsub","user":"bob"}"#, None, E::MissingTopic),
    ];
    for (text, want_id, want) in table {
        assert_eq!(
            parse_client_op(text),
            Err((want_id.map(RequestId), want)),
            "{text}"
        );
    }
    // Duplicated unknown fields are not an error.
    assert!(parse_client_op(r#"{"op":"sub","topic":"t","x":1,"x":2}"#).is_ok());
}

#[test]
fn op_error_surface() {
    use OpError as E;
    let all = [
        (E::MalformedJson, "bad_json"),
        (E::NotAnObject, "not_an_object"),
        (E::MissingOp, "missing_op"),
        (E::UnknownOp, "unknown_op"),
        (E::MissingTopic, "missing_topic"),
        (E::InvalidTopic(TopicError::Empty), "invalid_topic"),
        (E::InvalidTopic(TopicError::TooLong), "invalid_topic"),
        (E::InvalidTopic(TopicError::InvalidChar), "invalid_topic"),
        (E::InvalidSince, "invalid_since"),
        (E::InvalidId, "invalid_id"),
        (E::MissingData, "missing_data"),
        (E::DuplicateField, "duplicate_field"),
        (E::InvalidUser, "invalid_user"),
        (E::TopicAndUser, "topic_and_user"),
    ];
    for (e, code) in all {
        assert_eq!(e.code(), code);
        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        assert!(!e.message().is_empty());
        assert_eq!(e.to_string(), e.message());
        // The reply is valid JSON carrying the code and message.
        let mut out = Vec::new();
        write_error(&mut out, Some(RequestId("9")), e.code(), e.message());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "id": 9, "code": code, "message": e.message()})
        );
    }
    assert_eq!(
        E::InvalidTopic(TopicError::TooLong).message(),
        TopicError::TooLong.message()
    );
    assert_eq!(
        OpError::from(TopicError::Empty),
        E::InvalidTopic(TopicError::Empty)
    );
    for e in [PublishError::InvalidJson, PublishError::NotUtf8] {
        assert_eq!(e.http_status(), 400);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn accessors() {
    let op = parse_client_op(r#"{"op":"pub","topic":"t","data":1,"id":5}"#).unwrap();
    assert_eq!(op.topic(), Some("t"));
    assert_eq!(op.user(), None);
    assert_eq!(op.id(), id("5"));
    let op = parse_client_op(r#"{"op":"unsub","topic":"u"}"#).unwrap();
    assert_eq!((op.topic(), op.id()), (Some("u"), None));
    let op = parse_client_op(r#"{"op":"pub","user":"bob","data":1,"id":6}"#).unwrap();
    assert_eq!(
        (op.topic(), op.user(), op.id()),
        (None, UserId::new("bob"), id("6"))
    );
}

#[test]
fn direct_ops() {
    let table: &[(&str, &str, &str, &str, Option<&str>)] = &[
        // frame, user as written, decoded name, data, id
        (
            r#"{"op":"pub","user":"bob","data":{"a":1}}"#,
            "bob",
            "bob",
            r#"{"a":1}"#,
            None,
        ),
        (
            r#"{"user":"bob","data":null,"op":"pub","id":2}"#,
            "bob",
            "bob",
            "null",
            Some("2"),
        ),
        (
            r#"{"op":"pub","topic":null,"user":"bob","data":1}"#,
            "bob",
            "bob",
            "1",
            None,
        ),
        // Any character a `sub` may hold, escaped or not.
        (
            r#"{"op":"pub","user":"jos\u00e9","data":1}"#,
            r"jos\u00e9",
            "jos\u{e9}",
            "1",
            None,
        ),
        (
            r#"{"op":"pub","user":"josé","data":1}"#,
            "josé",
            "josé",
            "1",
            None,
        ),
        (
            r#"{"op":"pub","user":"a\"b\\c","data":1}"#,
            r#"a\"b\\c"#,
            r#"a"b\c"#,
            "1",
            None,
        ),
        (
            r#"{"op":"pub","user":"a b/c","data":1}"#,
            "a b/c",
            "a b/c",
            "1",
            None,
        ),
        // Fields of other ops are ignored.
        (
            r#"{"op":"pub","user":"u","data":1,"since":"x"}"#,
            "u",
            "u",
            "1",
            None,
        ),
    ];
    for &(text, written, name, data, want_id) in table {
        let op = parse_client_op(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let ClientOp::Direct {
            user,
            data: d,
            id: i,
        } = op
        else {
            panic!("{text}: {op:?}");
        };
        assert_eq!(user.as_written(), written, "{text}");
        assert_eq!(user.name(), name, "{text}");
        assert_eq!(
            matches!(user.name(), Cow::Borrowed(_)),
            !written.contains('\\')
        );
        assert_eq!((d, i), (data, want_id.map(RequestId)), "{text}");
        // Written back and parsed again: the same op.
        let mut buf = Vec::new();
        write_client_op(&mut buf, &op);
        assert_eq!(parse_client_op(s(&buf)), Ok(op), "{}", s(&buf));
    }
    assert_eq!(UserId::new(""), None);
    assert_eq!(UserId::new("a\"b"), None);
    assert_eq!(UserId::new("a\\b"), None);
    assert_eq!(UserId::new("a\nb"), None);
    assert_eq!(UserId::new(&"u".repeat(MAX_USER_LEN + 1)), None);
    assert!(UserId::new(&"u".repeat(MAX_USER_LEN)).is_some());
    let mut buf = Vec::new();
    write_client_op(
        &mut buf,
        &ClientOp::Direct {
            user: UserId::new("bob").unwrap(),
            data: "[1]",
            id: id("3"),
        },
    );
    assert_eq!(s(&buf), r#"{"op":"pub","user":"bob","data":[1],"id":3}"#);
    let mut out = Vec::new();
    write_direct(&mut out, "a\"b", b"");
    assert_eq!(s(&out), r#"{"type":"direct","from":"a\"b","data":null}"#);
}

#[test]
fn writer_exact_outputs() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut b = Vec::new();
                write_msg(&mut b, "chat", 42, br#"{"text":"hi"}"#);
                b
            },
            r#"{"type":"msg","topic":"chat","seq":42,"data":{"text":"hi"}}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_msg(&mut b, "t", u64::MAX, b"");
                b
            },
            r#"{"type":"msg","topic":"t","seq":18446744073709551615,"data":null}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_reset(&mut b, "chat", 30);
                b
            },
            r#"{"type":"reset","topic":"chat","seq":30}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_ack(&mut b, None, None);
                b
            },
            r#"{"type":"ack"}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_ack(&mut b, id("-5"), None);
                b
            },
            r#"{"type":"ack","id":-5}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_ack(&mut b, None, Some(0));
                b
            },
            r#"{"type":"ack","seq":0}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_ack(&mut b, id("1e3"), Some(7));
                b
            },
            r#"{"type":"ack","id":1e3,"seq":7}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_error(&mut b, None, "bad_json", "say \"x\"");
                b
            },
            r#"{"type":"error","code":"bad_json","message":"say \"x\""}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_error(&mut b, id("2"), "unknown_op", "m");
                b
            },
            r#"{"type":"error","id":2,"code":"unknown_op","message":"m"}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_publish_ok(&mut b, "prices:EURUSD", 9);
                b
            },
            r#"{"topic":"prices:EURUSD","seq":9}"#,
        ),
        (
            {
                let mut b = Vec::new();
                write_sse_msg(&mut b, 42, br#"{"text":"hi"}"#).unwrap();
                b
            },
            "id: 42\ndata: {\"text\":\"hi\"}\n\n",
        ),
        (
            {
                let mut b = Vec::new();
                write_sse_msg(&mut b, 1, b"").unwrap();
                b
            },
            "id: 1\ndata: null\n\n",
        ),
        (
            {
                let mut b = Vec::new();
                write_sse_reset(&mut b, 30).unwrap();
                b
            },
            "id: 30\nevent: reset\ndata: {\"seq\":30}\n\n",
        ),
        (
            {
                let mut b = Vec::new();
                write_sse_reset(&mut b, u64::MAX).unwrap();
                b
            },
            "id: 18446744073709551615\nevent: reset\ndata: {\"seq\":18446744073709551615}\n\n",
        ),
        (
            {
                let mut b = Vec::new();
                write_topic_poll_body(&mut b, "t", [], 5, true);
                b
            },
            r#"{"topic":"t","messages":[],"next":5,"reset":true}"#,
        ),
        (
            {
                let mut b = Vec::new();
                let m: [(u64, &[u8]); 2] = [(1, b"[1]"), (2, b"")];
                write_topic_poll_body(&mut b, "t", m, 2, false);
                b
            },
            r#"{"topic":"t","messages":[{"seq":1,"data":[1]},{"seq":2,"data":null}],"next":2,"reset":false}"#,
        ),
    ];
    for (got, want) in cases {
        assert_eq!(s(&got), want);
    }
}

#[test]
fn writers_append() {
    let mut b = b"prefix".to_vec();
    write_ack(&mut b, None, Some(1));
    assert_eq!(s(&b), r#"prefix{"type":"ack","seq":1}"#);
    let mut b = bytes::BytesMut::new();
    write_msg(&mut b, "t", 1, b"1");
    assert_eq!(&b[..], br#"{"type":"msg","topic":"t","seq":1,"data":1}"#);
}

#[test]
fn sse_msg_with_multiline_json() {
    // Pretty-printed data: line breaks are JSON whitespace, so the browser's reassembled text is still the value.
    let data = b"{\r\n  \"a\": [1,\n 2]\r}";
    let mut out = Vec::new();
    write_sse_msg(&mut out, 3, data).unwrap();
    let mut p = EventParser::new();
    let mut items = Vec::new();
    p.feed(&out, &mut items);
    let [SseItem::Event(ev)] = &items[..] else {
        panic!("{items:?}")
    };
    assert_eq!(ev.id.as_deref(), Some("3"));
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(v, json!({"a": [1, 2]}));
    // Not UTF-8 (impossible from this crate's parsers): replaced, still one event.
    let mut out = Vec::new();
    write_sse_msg(&mut out, 4, b"\"\xff\"").unwrap();
    assert_eq!(out, "id: 4\ndata: \"\u{fffd}\"\n\n".as_bytes());
}

#[test]
fn publish_data_table() {
    let json = Some(&b"application/json"[..]);
    type Case<'a> = (Option<&'a [u8]>, &'a [u8], Result<&'a [u8], PublishError>);
    let table: &[Case<'_>] = &[
        (json, br#"{"a":1}"#, Ok(br#"{"a":1}"#)),
        (json, b" \t\r\n[1, 2]\n ", Ok(b"[1, 2]")),
        (json, b"null", Ok(b"null")),
        (json, b"\"x\"", Ok(b"\"x\"")),
        (json, b"-1.5e3", Ok(b"-1.5e3")),
        (Some(b"Application/JSON"), b"1", Ok(b"1")),
        (Some(b"application/json; charset=utf-8"), b"1", Ok(b"1")),
        (Some(b"  application/json ;charset=UTF-8"), b"1", Ok(b"1")),
        (json, b"", Err(PublishError::InvalidJson)),
        (json, b"   ", Err(PublishError::InvalidJson)),
        (json, b"{", Err(PublishError::InvalidJson)),
        (json, b"1 2", Err(PublishError::InvalidJson)),
        (json, b"{}x", Err(PublishError::InvalidJson)),
        (json, b"hello", Err(PublishError::InvalidJson)),
        (json, b"\"\xff\"", Err(PublishError::InvalidJson)),
        (json, b"\"a\x01\"", Err(PublishError::InvalidJson)),
        (json, b"[1]\x0c", Err(PublishError::InvalidJson)),
        // Not JSON media types: the body becomes a JSON string.
        (None, b"hello", Ok(br#""hello""#)),
        (None, b"", Ok(br#""""#)),
        (Some(b"text/plain"), b"{\"a\":1}", Ok(br#""{\"a\":1}""#)),
        (Some(b"application/jsonx"), b"1", Ok(br#""1""#)),
        (Some(b"application/ld+json"), b"1", Ok(br#""1""#)),
        (Some(b""), b"line\n\xc3\xa9", Ok(b"\"line\\n\xc3\xa9\"")),
        (None, b"\xff", Err(PublishError::NotUtf8)),
        (Some(b"text/plain"), b"a\xc3", Err(PublishError::NotUtf8)),
    ];
    for (ct, body, want) in table {
        let mut scratch = b"old".to_vec();
        assert_eq!(
            publish_data(*ct, body, &mut scratch),
            *want,
            "{:?} {:?}",
            ct.map(String::from_utf8_lossy),
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        publish_data(json, deep.as_bytes(), &mut Vec::new()),
        Ok(deep.as_bytes())
    );
    assert_eq!(
        publish_data(json, &deep.as_bytes()[1..], &mut Vec::new()),
        Err(PublishError::InvalidJson)
    );
}

#[test]
fn route_table() {
    use PubSubRoute as R;
    let t128 = format!("/sse/{}", "a".repeat(128));
    let t129 = format!("/sse/{}", "a".repeat(129));
    let pct129 = format!("/sse/{}", "%61".repeat(129));
    let table: Vec<(&str, Option<Result<PubSubRoute<'_>, TopicError>>)> = vec![
        ("/ws", Some(Ok(R::Ws))),
        ("/ws?x=1", Some(Ok(R::Ws))),
        ("/sse/chat", Some(Ok(R::Sse("chat")))),
        ("/poll/chat?since=3&timeout=10", Some(Ok(R::Poll("chat")))),
        ("/messages/a.b", Some(Ok(R::Messages("a.b")))),
        ("/publish/x:y", Some(Ok(R::Publish("x:y")))),
        ("/sse/a%3Ab", Some(Ok(R::Sse("a:b")))),
        ("/sse/a%3ab%2D", Some(Ok(R::Sse("a:b-")))),
        (&t128, Some(Ok(R::Sse(&t128[5..])))),
        (&t129, Some(Err(TopicError::TooLong))),
        (&pct129, Some(Err(TopicError::TooLong))),
        ("/sse/", Some(Err(TopicError::Empty))),
        ("/sse/?since=1", Some(Err(TopicError::Empty))),
        ("/poll/a/b", Some(Err(TopicError::InvalidChar))),
        ("/poll/a%2Fb", Some(Err(TopicError::InvalidChar))),
        ("/poll/a%20b", Some(Err(TopicError::InvalidChar))),
        ("/poll/a%", Some(Err(TopicError::InvalidChar))),
        ("/poll/a%4", Some(Err(TopicError::InvalidChar))),
        ("/poll/a%zz", Some(Err(TopicError::InvalidChar))),
        ("/poll/%C3%A9", Some(Err(TopicError::InvalidChar))),
        ("/poll/é", Some(Err(TopicError::InvalidChar))),
        ("/", None),
        ("", None),
        ("/ws/", None),
        ("/wss", None),
        ("/sse", None),
        ("/SSE/chat", None),
        ("/publishx/t", None),
        ("/api/sse/t", None),
    ];
    for (path, want) in table {
        let mut scratch = String::new();
        assert_eq!(route_path(path, &mut scratch), want, "{path}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Exactly representable, short decimals: serde_json's default float parsing is not round-trip exact.
        (-1_000_000i64..1_000_000).prop_map(|n| Value::from(n as f64 / 64.0)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn topic() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

/// JSON number texts in many forms.
fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,2})?",
    ]
}

#[derive(Clone, Debug)]
enum OwnedOp {
    Sub(String, Option<u64>, Option<String>),
    Unsub(String, Option<String>),
    Pub(String, String, Option<String>),
    Direct(String, String, Option<String>),
}

impl OwnedOp {
    fn borrow(&self) -> ClientOp<'_> {
        match self {
            Self::Sub(t, since, id) => ClientOp::Sub {
                topic: t,
                since: *since,
                id: id.as_deref().map(RequestId),
            },
            Self::Unsub(t, id) => ClientOp::Unsub {
                topic: t,
                id: id.as_deref().map(RequestId),
            },
            Self::Pub(t, data, id) => ClientOp::Pub {
                topic: t,
                data,
                id: id.as_deref().map(RequestId),
            },
            Self::Direct(u, data, id) => ClientOp::Direct {
                user: UserId::new(u).unwrap(),
                data,
                id: id.as_deref().map(RequestId),
            },
        }
    }
}

/// User ids that need no JSON escape (what [`UserId::new`] takes).
fn user() -> impl Strategy<Value = String> {
    "[^\"\\\\\u{0}-\u{1f}]{1,64}"
}

fn owned_op() -> impl Strategy<Value = OwnedOp> {
    let id = || proptest::option::of(id_text());
    prop_oneof![
        (topic(), proptest::option::of(any::<u64>()), id())
            .prop_map(|(t, s, i)| OwnedOp::Sub(t, s, i)),
        (topic(), id()).prop_map(|(t, i)| OwnedOp::Unsub(t, i)),
        (topic(), json_value(), any::<bool>(), id()).prop_map(|(t, v, pretty, i)| {
            let data = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            OwnedOp::Pub(t, data, i)
        }),
        (user(), json_value(), id())
            .prop_map(|(u, v, i)| { OwnedOp::Direct(u, serde_json::to_string(&v).unwrap(), i) }),
    ]
}

fn parse_json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

proptest! {
    #[test]
    fn client_op_round_trip(op in owned_op()) {
        let op = op.borrow();
        let mut buf = Vec::new();
        write_client_op(&mut buf, &op);
        let text = std::str::from_utf8(&buf).unwrap();
        prop_assert_eq!(parse_client_op(text), Ok(op));
    }

    #[test]
    fn client_op_matches_serde_json(op in owned_op()) {
        // What a client library builds with serde_json parses to the same op.
        let op = op.borrow();
        let mut obj = serde_json::Map::new();
        let name = match op {
            ClientOp::Sub { .. } => "sub",
            ClientOp::Unsub { .. } => "unsub",
            ClientOp::Pub { .. } | ClientOp::Direct { .. } => "pub",
        };
        let (t, i) = (op.topic(), op.id());
        obj.insert("op".into(), json!(name));
        if let Some(t) = t {
            obj.insert("topic".into(), json!(t));
        }
        if let Some(u) = op.user() {
            obj.insert("user".into(), json!(u.name()));
        }
        if let ClientOp::Sub { since: Some(s), .. } = op {
            obj.insert("since".into(), json!(s));
        }
        if let ClientOp::Pub { data, .. } | ClientOp::Direct { data, .. } = op {
            obj.insert("data".into(), serde_json::from_str(data).unwrap());
        }
        if let Some(RequestId(i)) = i {
            obj.insert("id".into(), serde_json::from_str(i).unwrap());
        }
        let text = serde_json::to_string(&Value::Object(obj)).unwrap();
        let parsed = parse_client_op(&text).unwrap();
        prop_assert_eq!(parsed.topic(), t);
        prop_assert_eq!(parsed.id().is_some(), i.is_some());
        if let (Some(RequestId(got)), Some(RequestId(sent))) = (parsed.id(), i) {
            // serde_json's default float parsing is not correctly rounded, so a float id that went through
            // serde_json may differ in the last bit; integers must match exactly.
            let a: Value = serde_json::from_str(got).unwrap();
            let b: Value = serde_json::from_str(sent).unwrap();
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if a.is_f64() || b.is_f64() => {
                    prop_assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
                }
                _ => prop_assert_eq!(a, b),
            }
        }
        match (parsed, op) {
            (ClientOp::Sub { since: a, .. }, ClientOp::Sub { since: b, .. }) => prop_assert_eq!(a, b),
            (ClientOp::Unsub { .. }, ClientOp::Unsub { .. }) => {}
            (ClientOp::Direct { user: a, data: da, .. }, ClientOp::Direct { user: b, data: db, .. }) => {
                // serde_json may escape what the client wrote plainly (or not): the decoded names agree.
                prop_assert_eq!(a.name(), b.name());
                prop_assert_eq!(
                    serde_json::from_str::<Value>(da).unwrap(),
                    serde_json::from_str::<Value>(db).unwrap()
                );
            }
            (ClientOp::Pub { data: a, .. }, ClientOp::Pub { data: b, .. }) => {
                prop_assert_eq!(
                    serde_json::from_str::<Value>(a).unwrap(),
                    serde_json::from_str::<Value>(b).unwrap()
                );
            }
            (a, b) => prop_assert!(false, "{a:?} != {b:?}"),
        }
    }

    #[test]
    fn parse_never_panics(text in any::<String>()) {
        let _ = parse_client_op(&text);
    }

    #[test]
    fn parse_never_panics_on_near_misses(
        fields in proptest::collection::vec(
            (prop_oneof![Just("op"), Just("topic"), Just("user"), Just("since"), Just("id"), Just("data"), Just("x")],
             prop_oneof![
                json_value().prop_map(|v| serde_json::to_string(&v).unwrap()),
                Just("\"sub\"".to_string()), Just("\"pub\"".to_string()), Just("\"unsub\"".to_string()),
                topic().prop_map(|t| format!("\"{t}\"")),
                any::<String>().prop_map(|u| serde_json::to_string(&u).unwrap()),
                id_text(),
             ]),
            0..6),
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        if let Ok(op) = parse_client_op(&text) {
            let mut buf = Vec::new();
            write_client_op(&mut buf, &op);
            prop_assert_eq!(parse_client_op(std::str::from_utf8(&buf).unwrap()), Ok(op));
        }
    }

    #[test]
    fn server_writers_parse_as_expected(
        topic in prop_oneof![topic(), any::<String>()],
        seq in any::<u64>(),
        data in json_value(),
        id in proptest::option::of(id_text()),
        ack_seq in proptest::option::of(any::<u64>()),
        code in any::<String>(),
        message in any::<String>(),
    ) {
        let data_json = serde_json::to_vec(&data).unwrap();
        let rid = id.as_deref().map(RequestId);
        let id_value = id.as_deref().map(|i| serde_json::from_str::<Value>(i).unwrap());

        let mut b = Vec::new();
        write_msg(&mut b, &topic, seq, &data_json);
        prop_assert_eq!(parse_json(&b), json!({"type":"msg","topic":topic,"seq":seq,"data":data}));

        let mut b = Vec::new();
        write_reset(&mut b, &topic, seq);
        prop_assert_eq!(parse_json(&b), json!({"type":"reset","topic":topic,"seq":seq}));

        let mut b = Vec::new();
        write_ack(&mut b, rid, ack_seq);
        let mut want = json!({"type":"ack"});
        if let Some(v) = &id_value { want["id"] = v.clone(); }
        if let Some(s) = ack_seq { want["seq"] = json!(s); }
        prop_assert_eq!(parse_json(&b), want);
        // The id is echoed verbatim, byte for byte.
        if let Some(i) = &id {
            let needle = format!("\"id\":{i}");
            prop_assert!(s(&b).contains(&needle));
        }

        let mut b = Vec::new();
        write_error(&mut b, rid, &code, &message);
        let mut want = json!({"type":"error","code":code,"message":message});
        if let Some(v) = &id_value { want["id"] = v.clone(); }
        prop_assert_eq!(parse_json(&b), want);

        let mut b = Vec::new();
        write_publish_ok(&mut b, &topic, seq);
        prop_assert_eq!(parse_json(&b), json!({"topic":topic,"seq":seq}));
    }

    #[test]
    fn poll_body_parses_as_expected(
        topic in prop_oneof![topic(), any::<String>()],
        msgs in proptest::collection::vec((any::<u64>(), json_value()), 0..6),
        next in any::<u64>(),
        reset in any::<bool>(),
    ) {
        let encoded: Vec<(u64, Vec<u8>)> =
            msgs.iter().map(|(s, v)| (*s, serde_json::to_vec(v).unwrap())).collect();
        let mut b = Vec::new();
        write_topic_poll_body(&mut b, &topic, encoded.iter().map(|(s, d)| (*s, d.as_slice())), next, reset);
        let want_msgs: Vec<Value> = msgs.iter().map(|(s, v)| json!({"seq": s, "data": v})).collect();
        prop_assert_eq!(
            parse_json(&b),
            json!({"topic": topic, "messages": want_msgs, "next": next, "reset": reset})
        );
    }

    #[test]
    fn sse_events_reach_a_browser_intact(seq in any::<u64>(), data in json_value(), pretty in any::<bool>()) {
        let data_json = if pretty {
            serde_json::to_vec_pretty(&data).unwrap()
        } else {
            serde_json::to_vec(&data).unwrap()
        };
        let mut b = Vec::new();
        write_sse_msg(&mut b, seq, &data_json).unwrap();
        write_sse_reset(&mut b, seq).unwrap();
        let mut p = EventParser::new();
        let mut items = Vec::new();
        p.feed(&b, &mut items);
        prop_assert_eq!(items.len(), 2);
        let seq_text = seq.to_string();
        let SseItem::Event(msg) = &items[0] else { panic!("{items:?}") };
        prop_assert_eq!(msg.id.as_deref(), Some(seq_text.as_str()));
        prop_assert_eq!(msg.event_type_or_message(), "message");
        prop_assert_eq!(serde_json::from_str::<Value>(&msg.data).unwrap(), data);
        let SseItem::Event(reset) = &items[1] else { panic!("{items:?}") };
        prop_assert_eq!(reset.id.as_deref(), Some(seq_text.as_str()));
        prop_assert_eq!(reset.event_type_or_message(), "reset");
        prop_assert_eq!(serde_json::from_str::<Value>(&reset.data).unwrap(), json!({"seq": seq}));
        prop_assert_eq!(p.last_event_id(), seq_text.as_str());
    }

    #[test]
    fn publish_json_body_round_trips(
        data in json_value(),
        pretty in any::<bool>(),
        lead in "[ \t\r\n]{0,3}",
        trail in "[ \t\r\n]{0,3}",
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&data).unwrap()
        } else {
            serde_json::to_string(&data).unwrap()
        };
        let body = format!("{lead}{text}{trail}");
        let mut scratch = Vec::new();
        let got = publish_data(Some(b"application/json"), body.as_bytes(), &mut scratch).unwrap();
        prop_assert_eq!(got, text.as_bytes());
        // Anything but whitespace after the value is refused.
        let bad = format!("{body}x");
        prop_assert_eq!(
            publish_data(Some(b"application/json"), bad.as_bytes(), &mut scratch),
            Err(PublishError::InvalidJson)
        );
    }

    #[test]
    fn publish_text_body_becomes_string(body in any::<String>()) {
        let mut scratch = Vec::new();
        let got = publish_data(Some(b"text/plain"), body.as_bytes(), &mut scratch).unwrap();
        prop_assert_eq!(parse_json(got), Value::from(body.clone()));
        let got = publish_data(None, body.as_bytes(), &mut scratch).unwrap();
        prop_assert_eq!(parse_json(got), Value::from(body));
    }

    #[test]
    fn route_decodes_any_percent_encoding(t in topic(), mask in any::<u128>(), upper in any::<bool>()) {
        let mut path = String::from("/publish/");
        for (i, b) in t.bytes().enumerate() {
            if mask >> (i % 128) & 1 == 1 {
                if upper { path.push_str(&format!("%{b:02X}")) } else { path.push_str(&format!("%{b:02x}")) }
            } else {
                path.push(char::from(b));
            }
        }
        let mut scratch = String::new();
        prop_assert_eq!(route_path(&path, &mut scratch), Some(Ok(PubSubRoute::Publish(t.as_str()))));
    }

    #[test]
    fn route_never_panics(path in any::<String>()) {
        let mut scratch = String::new();
        if let Some(Ok(PubSubRoute::Sse(t) | PubSubRoute::Poll(t) | PubSubRoute::Messages(t)
            | PubSubRoute::Publish(t))) = route_path(&path, &mut scratch) {
            prop_assert_eq!(validate_topic(t), Ok(()));
        }
    }
}
