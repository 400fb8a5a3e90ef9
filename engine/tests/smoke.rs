//! Smoke test: the real server answers HTTP and echoes over a real WebSocket client.

mod common;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_with_tungstenite() {
    let server = common::start(common::config());
    let (mut ws, resp) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    common::stop(server);
}

#[test]
fn healthz_answers_200_with_keep_alive() {
    let server = common::start(common::config());
    let mut s = common::raw(&server);
    for _ in 0..3 {
        let head = common::request_head(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut body = [0u8; 3];
        std::io::Read::read_exact(&mut s, &mut body).unwrap();
        assert_eq!(&body, b"ok\n");
    }
    common::stop(server);
}

#[test]
fn head_requests_get_no_body_and_keep_alive_still_works() {
    let server = common::start(common::config());
    let mut s = common::raw(&server);
    let head = common::request_head(&mut s, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 3"),
        "{head}"
    );
    // The next response on the same connection starts right after the head: no body bytes in between.
    let head = common::request_head(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    common::stop(server);
}

#[test]
fn serves_configured_assets() {
    let mut cfg = common::config();
    cfg.assets.push(ringcast_engine::Asset {
        path: "/hello.js".into(),
        content_type: "text/javascript",
        body: bytes::Bytes::from_static(b"export const x = 1;\n"),
    });
    let server = common::start(cfg);
    let mut s = common::raw(&server);
    let head = common::request_head(&mut s, b"GET /hello.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{head}"
    );
    let mut body = [0u8; 20];
    std::io::Read::read_exact(&mut s, &mut body).unwrap();
    assert_eq!(&body, b"export const x = 1;\n");
    let head = common::request_head(&mut s, b"GET /nope.js HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    common::stop(server);
}
