//! Close handshakes and protocol errors: the close code the server sends for each fault, that it then ends the TCP
//! connection, the message/frame size limits (also across fragments), and the per-code counters in `/metrics`.
// Helper functions outside #[test] unwrap like the tests themselves: a failed socket call fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;

use ringcast_engine::{Config, ServerHandle};

/// Sends `bytes` on a fresh upgraded connection and returns the close code the server answers with, after
/// checking that the server also ends the TCP connection.
fn close_code_for(server: &ServerHandle, bytes: &[u8]) -> Option<u16> {
    let mut s = common::raw_ws(server);
    s.write_all(bytes).unwrap();
    let code = common::read_close_code(&mut s);
    assert!(
        common::closed_by_server(&mut s),
        "server keeps the connection open after close {code:?}"
    );
    code
}

fn small_limits() -> Config {
    Config {
        max_message_size: 1024,
        max_frame_size: 512,
        ..common::config()
    }
}

#[test]
fn client_close_1000_is_echoed_then_server_closes_tcp() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    s.write_all(&common::close_frame(1000, "bye")).unwrap();
    let (fin, op, payload) = common::read_frame(&mut s).expect("close reply");
    assert!(fin);
    assert_eq!(op, 8);
    assert_eq!(payload.get(..2), Some(&1000u16.to_be_bytes()[..]));
    assert!(
        common::closed_by_server(&mut s),
        "server must close the TCP connection first"
    );
    common::wait_open(&server, 0);
    common::stop(server);
}

#[test]
fn valid_close_codes_are_echoed_and_empty_close_gets_empty_close() {
    let server = common::start(common::config());
    for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4000, 4999] {
        assert_eq!(
            close_code_for(&server, &common::close_frame(code, "")),
            Some(code),
            "code {code}"
        );
    }
    // A close without a payload is answered with a close without a payload.
    let mut s = common::raw_ws(&server);
    s.write_all(&common::client_frame(true, 8, b"")).unwrap();
    assert_eq!(common::read_frame(&mut s), Some((true, 8, Vec::new())));
    assert!(common::closed_by_server(&mut s));
    drop(s);
    common::stop(server);
}

#[test]
fn messages_queued_before_the_close_are_echoed_first() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    let mut bytes = common::client_frame(true, 1, b"one");
    bytes.extend(common::client_frame(true, 1, b"two"));
    bytes.extend(common::close_frame(1000, ""));
    bytes.extend(common::client_frame(true, 1, b"after close: ignored"));
    s.write_all(&bytes).unwrap();
    assert_eq!(common::read_frame(&mut s), Some((true, 1, b"one".to_vec())));
    assert_eq!(common::read_frame(&mut s), Some((true, 1, b"two".to_vec())));
    assert_eq!(common::read_close_code(&mut s), Some(1000));
    assert!(common::closed_by_server(&mut s));
    drop(s);
    common::stop(server);
}

#[test]
fn close_reply_arrives_although_input_is_left_unread() {
    // The server writes its close reply with MSG_MORE and ends the stream with shutdown, so the reply and the FIN
    // share a segment. A plain close() with unread input would reset the connection and discard the held reply:
    // the client sends far more after its close frame than one read takes, so input is still unread then.
    let server = common::start(Config {
        read_buffer_size: 4096,
        ..common::config()
    });
    for _ in 0..20 {
        let mut s = common::raw_ws(&server);
        let mut bytes = common::close_frame(1000, "bye");
        bytes.extend(std::iter::repeat_n(0u8, 256 * 1024));
        let mut w = s.try_clone().unwrap();
        // The server stops reading after the close frame: the rest may never be taken, so write from a thread
        // and let it fail once the connection is gone.
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&bytes);
        });
        assert_eq!(common::read_close_code(&mut s), Some(1000));
        assert!(common::closed_by_server(&mut s));
        drop(s);
        writer.join().unwrap();
    }
    common::wait_open(&server, 0);
    common::stop(server);
}

#[test]
fn reserved_bits_close_1002() {
    let server = common::start(common::config());
    for rsv in [0x40u8, 0x20, 0x10] {
        let frame = common::frame_with(0x80 | rsv | 1, true, None, b"rsv");
        assert_eq!(
            close_code_for(&server, &frame),
            Some(1002),
            "rsv bit {rsv:#x}"
        );
    }
    common::stop(server);
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let server = common::start(common::config());
    let frame = common::frame_with(0x81, false, None, b"not masked");
    assert_eq!(close_code_for(&server, &frame), Some(1002));
    common::stop(server);
}

#[test]
fn invalid_utf8_text_closes_1007() {
    let server = common::start(common::config());
    // Invalid in one frame.
    assert_eq!(
        close_code_for(&server, &common::client_frame(true, 1, b"ok \xff\xfe")),
        Some(1007)
    );
    // A code point left unfinished at the end of a message.
    assert_eq!(
        close_code_for(&server, &common::client_frame(true, 1, b"cut \xe2\x82")),
        Some(1007)
    );
    // Invalid across fragments.
    let mut bytes = common::client_frame(false, 1, b"\xf0\x9f");
    bytes.extend(common::client_frame(true, 0, b"\x41\x41"));
    assert_eq!(close_code_for(&server, &bytes), Some(1007));
    // Invalid UTF-8 in a close reason.
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"\xc3\x28");
    assert_eq!(
        close_code_for(&server, &common::client_frame(true, 8, &p)),
        Some(1007)
    );
    common::stop(server);
}

#[test]
fn message_over_max_message_size_closes_1009_from_the_header() {
    let server = common::start(Config {
        max_message_size: 1024,
        ..common::config()
    });
    // Only the header of a 1 MiB frame: the close must arrive without the payload ever being sent.
    let mut s = common::raw_ws(&server);
    s.write_all(&common::frame_with(0x82, true, Some(1 << 20), b""))
        .unwrap();
    assert_eq!(common::read_close_code(&mut s), Some(1009));
    assert!(common::closed_by_server(&mut s));
    drop(s);
    // Exactly at the limit is fine.
    let mut s = common::raw_ws(&server);
    s.write_all(&common::client_frame(true, 2, &[7u8; 1024]))
        .unwrap();
    assert_eq!(common::read_frame(&mut s), Some((true, 2, vec![7u8; 1024])));
    drop(s);
    common::stop(server);
}

#[test]
fn frame_over_max_frame_size_closes_1009_from_the_header() {
    let server = common::start(small_limits());
    let mut s = common::raw_ws(&server);
    // A 513-byte first fragment (message limit 1024 would allow it, frame limit 512 does not); header only.
    s.write_all(&common::frame_with(0x02, true, Some(513), b""))
        .unwrap();
    assert_eq!(common::read_close_code(&mut s), Some(1009));
    assert!(common::closed_by_server(&mut s));
    drop(s);
    common::stop(server);
}

#[test]
fn message_over_limit_across_fragments_closes_1009() {
    let server = common::start(small_limits());
    // 400 + 400 fit; the third fragment's header takes the message to 1200 > 1024.
    let mut s = common::raw_ws(&server);
    let mut bytes = common::client_frame(false, 2, &[1u8; 400]);
    bytes.extend(common::client_frame(false, 0, &[2u8; 400]));
    bytes.extend(common::frame_with(0x80, true, Some(400), b""));
    s.write_all(&bytes).unwrap();
    assert_eq!(common::read_close_code(&mut s), Some(1009));
    assert!(common::closed_by_server(&mut s));
    drop(s);
    // Four fragments of 256 make exactly 1024: accepted and echoed as one message.
    let mut s = common::raw_ws(&server);
    let mut bytes = Vec::new();
    for i in 0..4u8 {
        bytes.extend(common::client_frame(
            i == 3,
            if i == 0 { 2 } else { 0 },
            &[i; 256],
        ));
    }
    s.write_all(&bytes).unwrap();
    let expected: Vec<u8> = (0..4u8).flat_map(|i| [i; 256]).collect();
    assert_eq!(common::read_frame(&mut s), Some((true, 2, expected)));
    drop(s);
    common::stop(server);
}

#[test]
fn many_tiny_fragments_are_accepted_up_to_the_limit() {
    let server = common::start(small_limits());
    let tiny = |n: usize| {
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.extend(common::client_frame(
                i == n - 1,
                if i == 0 { 1 } else { 0 },
                b"x",
            ));
        }
        bytes
    };
    // 1024 one-byte fragments (with a ping in the middle): one 1024-byte message.
    let mut s = common::raw_ws(&server);
    let mut bytes = tiny(1024);
    let ping = common::client_frame(true, 9, b"mid");
    let at = bytes.len() / 2 / 7 * 7; // each one-byte masked fragment is 7 bytes
    bytes.splice(at..at, ping);
    s.write_all(&bytes).unwrap();
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 10, b"mid".to_vec()))
    );
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 1, vec![b'x'; 1024]))
    );
    common::assert_raw_echo(&mut s, "usable");
    drop(s);
    // One more fragment is over the limit.
    assert_eq!(close_code_for(&server, &tiny(1025)), Some(1009));
    common::stop(server);
}

#[test]
fn invalid_close_codes_close_1002() {
    let server = common::start(common::config());
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        assert_eq!(
            close_code_for(&server, &common::close_frame(code, "")),
            Some(1002),
            "code {code}"
        );
    }
    // A one-byte close payload.
    assert_eq!(
        close_code_for(&server, &common::client_frame(true, 8, &[3])),
        Some(1002)
    );
    common::stop(server);
}

#[test]
fn other_protocol_errors_close_1002() {
    let server = common::start(common::config());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved opcode 3", common::client_frame(true, 3, b"x")),
        ("reserved opcode 0xB", common::client_frame(true, 0xB, b"x")),
        (
            "control frame of 126 bytes",
            common::client_frame(true, 9, &[0u8; 126]),
        ),
        ("fragmented ping", common::client_frame(false, 9, b"x")),
        (
            "continuation without a message",
            common::client_frame(true, 0, b"x"),
        ),
        ("new message inside a fragmented one", {
            let mut b = common::client_frame(false, 1, b"a");
            b.extend(common::client_frame(true, 1, b"b"));
            b
        }),
        (
            "64-bit length with the top bit set",
            common::frame_with(0x82, true, Some(1 << 63), b""),
        ),
    ];
    for (what, bytes) in cases {
        assert_eq!(close_code_for(&server, &bytes), Some(1002), "{what}");
    }
    common::stop(server);
}

#[test]
fn metrics_count_protocol_errors_by_code() {
    let server = common::start(small_limits());
    let before = common::metrics(&server);
    for code in ["1002", "1007", "1009"] {
        let label = format!("code=\"{code}\"");
        assert_eq!(
            common::metric(&before, "ringcast_ws_protocol_errors_total", &label),
            0
        );
    }
    let faults: [(u16, Vec<u8>); 6] = [
        (1002, common::frame_with(0xC1, true, None, b"rsv")),
        (1002, common::frame_with(0x81, false, None, b"unmasked")),
        (1002, common::close_frame(999, "")),
        (1002, common::close_frame(1005, "")),
        (1007, common::client_frame(true, 1, b"\xff")),
        (1009, common::frame_with(0x82, true, Some(4096), b"")),
    ];
    for (code, bytes) in &faults {
        assert_eq!(close_code_for(&server, bytes), Some(*code));
    }
    // A clean close is not a protocol error.
    assert_eq!(
        close_code_for(&server, &common::close_frame(1000, "")),
        Some(1000)
    );
    let after = common::metrics(&server);
    let count = |code: &str| {
        common::metric(
            &after,
            "ringcast_ws_protocol_errors_total",
            &format!("code=\"{code}\""),
        )
    };
    assert_eq!(count("1002"), 4, "{after}");
    assert_eq!(count("1007"), 1, "{after}");
    assert_eq!(count("1009"), 1, "{after}");
    assert_eq!(count("1008"), 0, "{after}");
    assert_eq!(
        common::metric(&after, "ringcast_ws_protocol_errors_other_total", ""),
        0
    );
    assert_eq!(
        common::metric(&after, "ringcast_ws_handshakes_total", ""),
        7
    );
    common::wait_open(&server, 0);
    common::stop(server);
}

#[test]
fn data_after_an_error_close_is_discarded_until_eof() {
    let server = common::start(common::config());
    let mut s: TcpStream = common::raw_ws(&server);
    let mut bytes = common::frame_with(0x81, false, None, b"unmasked");
    bytes.extend(common::client_frame(true, 1, b"never echoed"));
    s.write_all(&bytes).unwrap();
    assert_eq!(common::read_close_code(&mut s), Some(1002));
    // Nothing but EOF follows the close frame.
    assert_eq!(common::read_frame(&mut s), None);
    drop(s);
    common::wait_open(&server, 0);
    common::stop(server);
}
