//! Fuzz target: `parse_close_payload` never panics; accepted payloads have a sendable code and UTF-8 reason and
//! round-trip through `encode_close_payload` and a whole server close frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::ws::{
    Client, Decoder, DecoderConfig, Message, ProtocolError, encode_close_payload,
    parse_close_payload, server_close_frame_bytes,
};

fuzz_target!(|data: &[u8]| {
    match parse_close_payload(data) {
        Ok(None) => assert!(data.is_empty()),
        Ok(Some(frame)) => {
            assert!(frame.code.is_sendable());
            assert!(std::str::from_utf8(frame.reason.as_bytes()).is_ok());
            assert_eq!(frame.reason.as_bytes(), &data[2..]);

            let mut out = [0u8; 125];
            let n = encode_close_payload(frame.code, frame.reason, &mut out);
            assert!(n <= 125);
            let back = parse_close_payload(&out[..n])
                .expect("encoded close payload must parse")
                .expect("has code");
            assert_eq!(back.code, frame.code);
            assert!(frame.reason.starts_with(back.reason));
            if data.len() <= 125 {
                assert_eq!(&out[..n], data);
            } else {
                assert!(back.reason.len() <= 123 && back.reason.len() > 119);
            }

            let mut wire = server_close_frame_bytes(frame.code, frame.reason).to_vec();
            let wire_len = wire.len();
            let mut dec = Decoder::<Client>::new(DecoderConfig::default());
            let (used, msg) = dec
                .decode(&mut wire)
                .expect("server close frame must decode");
            assert_eq!(used, wire_len);
            assert_eq!(msg, Some(Message::Close(Some(back))));
        }
        Err(e) => {
            assert!(matches!(
                e,
                ProtocolError::InvalidCloseLength
                    | ProtocolError::InvalidCloseCode
                    | ProtocolError::InvalidUtf8
            ));
            if data.len() == 1 {
                assert_eq!(e, ProtocolError::InvalidCloseLength);
            }
        }
    }
});
