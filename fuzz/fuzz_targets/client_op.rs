//! Fuzzes `pubsub::parse_client_op`: on arbitrary (lossy UTF-8) input it never panics; every op it accepts has
//! exactly one target (a valid topic, or a bounded non-empty user for a direct message) and a numeric id,
//! re-serializes with `write_client_op` and parses back to the same op; every error reply built from a refusal is
//! valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::pubsub::{self, ClientOp, RequestId};
use ringcast_protocol::topic::validate_topic;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    match pubsub::parse_client_op(&text) {
        Ok(op) => {
            // Exactly one target: a valid topic, or a non-empty user id of bounded length.
            match (op.topic(), op.user()) {
                (Some(topic), None) => assert_eq!(validate_topic(topic), Ok(()), "{op:?}"),
                (None, Some(user)) => {
                    let written = user.as_written();
                    assert!(!written.is_empty() && written.len() <= pubsub::MAX_USER_LEN);
                    assert!(matches!(op, ClientOp::Direct { .. }), "{op:?}");
                    // Decoding never loses the whole name (escapes only shorten it).
                    assert!(!user.name().is_empty(), "{op:?}");
                }
                other => panic!("{other:?} for {op:?}"),
            }
            if let Some(RequestId(id)) = op.id() {
                assert!(id.len() <= pubsub::MAX_ID_LEN);
                assert!(
                    id.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
                    "{id:?}"
                );
            }
            if let ClientOp::Pub { data, .. } | ClientOp::Direct { data, .. } = op {
                assert!(!data.is_empty());
            }
            let mut buf = Vec::new();
            pubsub::write_client_op(&mut buf, &op);
            let again = std::str::from_utf8(&buf).expect("writer emits UTF-8");
            assert_eq!(pubsub::parse_client_op(again), Ok(op), "{again}");

            let mut reply = Vec::new();
            pubsub::write_ack(&mut reply, op.id(), Some(1));
            assert_eq!(
                pubsub::parse_client_op(std::str::from_utf8(&reply).expect("UTF-8"))
                    .map_err(|(_, e)| e),
                Err(pubsub::OpError::MissingOp),
                "an ack is a JSON object without op"
            );
        }
        Err((id, e)) => {
            let mut reply = Vec::new();
            pubsub::write_error(&mut reply, id, e.code(), e.message());
            let reply = std::str::from_utf8(&reply).expect("UTF-8");
            // A JSON object (parses past the syntax stage) that carries the same id.
            assert_eq!(
                pubsub::parse_client_op(reply),
                Err((id, pubsub::OpError::MissingOp)),
                "{reply}"
            );
        }
    }
});
