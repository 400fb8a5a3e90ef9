//! Echo over real sockets: text, binary, fragmented messages with an interleaved ping, a large message, pipelined
//! messages, and ping/pong handling.

mod common;

use std::io::Write;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_of_every_length_class() {
    let server = common::start(common::config());
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    // Empty, 7-bit, 16-bit and 64-bit length encodings, around each boundary.
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70_000] {
        let text: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(text),
            "text of {len} bytes"
        );
        let bin: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        ws.send(Message::binary(bin.clone())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(bin),
            "binary of {len} bytes"
        );
    }
    // Multi-byte UTF-8 survives unchanged.
    ws.send(Message::text("héllo wörld ✓ 🦀")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("héllo wörld ✓ 🦀")
    );
    ws.close(None).await.unwrap();
    drop(ws);
    common::stop(server);
}

#[tokio::test]
async fn echoes_a_200_kib_message() {
    let server = common::start(common::config());
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    let big: Vec<u8> = (0..200 * 1024)
        .map(|i: usize| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "200 KiB echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    // And the connection is still usable afterwards.
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    drop(ws);
    common::stop(server);
}

#[test]
fn fragmented_message_with_ping_between_fragments() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    let mut bytes = common::client_frame(false, 1, b"Hel");
    bytes.extend(common::client_frame(true, 9, b"mid-ping"));
    bytes.extend(common::client_frame(false, 0, b"lo, "));
    bytes.extend(common::client_frame(true, 0, b"world"));
    s.write_all(&bytes).unwrap();
    // The ping is answered as soon as it is read, before the message it interrupts is complete.
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 10, b"mid-ping".to_vec()))
    );
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 1, b"Hello, world".to_vec()))
    );
    common::assert_raw_echo(&mut s, "next");
    drop(s);
    common::stop(server);
}

#[test]
fn fragments_sent_in_separate_writes_and_split_code_points() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    // "é" (C3 A9) and "🦀" (F0 9F A6 80) split across fragment boundaries.
    let parts: [&[u8]; 4] = [b"caf\xc3", b"\xa9 \xf0\x9f", b"\xa6", b"\x80!"];
    for (i, p) in parts.iter().enumerate() {
        let opcode = if i == 0 { 1 } else { 0 };
        s.write_all(&common::client_frame(i == parts.len() - 1, opcode, p))
            .unwrap();
        s.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 1, "café 🦀!".as_bytes().to_vec()))
    );
    // A binary message fragmented byte by byte at the TCP level: one frame written one byte at a time.
    let frame = common::client_frame(true, 2, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for b in frame {
        s.write_all(&[b]).unwrap();
    }
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 2, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]))
    );
    drop(s);
    common::stop(server);
}

#[test]
fn many_messages_pipelined_in_one_write() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    const N: usize = 500;
    let mut bytes = Vec::new();
    for i in 0..N {
        if i % 2 == 0 {
            bytes.extend(common::client_frame(
                true,
                1,
                format!("message {i}").as_bytes(),
            ));
        } else {
            bytes.extend(common::client_frame(true, 2, &(i as u32).to_be_bytes()));
        }
    }
    s.write_all(&bytes).unwrap();
    for i in 0..N {
        let f = common::read_frame(&mut s).unwrap_or_else(|| panic!("EOF at reply {i}"));
        if i % 2 == 0 {
            assert_eq!(f, (true, 1, format!("message {i}").into_bytes()));
        } else {
            assert_eq!(f, (true, 2, (i as u32).to_be_bytes().to_vec()));
        }
    }
    drop(s);
    common::stop(server);
}

#[test]
fn upgrade_request_and_first_frames_in_one_write() {
    let server = common::start(common::config());
    let mut s = common::raw(&server);
    let mut bytes = common::UPGRADE.as_bytes().to_vec();
    bytes.extend(common::client_frame(true, 1, b"early"));
    bytes.extend(common::client_frame(true, 9, b"p"));
    s.write_all(&bytes).unwrap();
    let head = common::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 1, b"early".to_vec()))
    );
    assert_eq!(common::read_frame(&mut s), Some((true, 10, b"p".to_vec())));
    drop(s);
    common::stop(server);
}

#[test]
fn client_ping_gets_pong_with_same_payload() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    let max: Vec<u8> = (0..125u8).collect();
    for payload in [&b""[..], b"hello ping", &max] {
        s.write_all(&common::client_frame(true, 9, payload))
            .unwrap();
        assert_eq!(
            common::read_frame(&mut s),
            Some((true, 10, payload.to_vec()))
        );
    }
    drop(s);
    common::stop(server);
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = common::start(common::config());
    let mut s = common::raw_ws(&server);
    // Two pongs nobody asked for, then a message: the first frame back must be the message's echo.
    let mut bytes = common::client_frame(true, 10, b"unsolicited");
    bytes.extend(common::client_frame(true, 10, b""));
    bytes.extend(common::client_frame(true, 1, b"still here"));
    s.write_all(&bytes).unwrap();
    assert_eq!(
        common::read_frame(&mut s),
        Some((true, 1, b"still here".to_vec()))
    );
    common::assert_raw_echo(&mut s, "and again");
    drop(s);
    common::stop(server);
}

#[tokio::test]
async fn tungstenite_ping_gets_pong() {
    let server = common::start(common::config());
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
    ws.send(Message::Pong(b"unasked".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
    drop(ws);
    common::stop(server);
}
