//! Pub/sub smoke test: a WebSocket subscriber, an SSE stream, short and long polls and an HTTP publisher on a
//! two-core server see the same numbered messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringcast_engine::CoreSet;
use tokio_tungstenite::tungstenite::Message;

fn http(addr: std::net::SocketAddr, req: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn publish(addr: std::net::SocketAddr, topic: &str, json: &str) -> String {
    let req = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let (head, body) = http(addr, &req);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_sse_and_polls_see_the_same_messages() {
    let mut cfg = common::config();
    cfg.cores = CoreSet::Count(2);
    let server = common::start(cfg);
    let addr = server.local_addr();
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/ws"))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"op":"sub","topic":"prices.eur","id":1}"#))
        .await
        .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert_eq!(ack, Message::text(r#"{"type":"ack","id":1}"#));

    let body = tokio::task::spawn_blocking(move || publish(addr, "prices.eur", r#"{"px":1.5}"#))
        .await
        .unwrap();
    assert_eq!(body, r#"{"topic":"prices.eur","seq":1}"#);
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(
        msg,
        Message::text(r#"{"type":"msg","topic":"prices.eur","seq":1,"data":{"px":1.5}}"#)
    );

    // Publish over WebSocket with an id: ack carries the seq, and the subscriber gets it too.
    ws.send(Message::text(
        r#"{"op":"pub","topic":"prices.eur","data":[1,2],"id":7}"#,
    ))
    .await
    .unwrap();
    let mut got = vec![
        ws.next().await.unwrap().unwrap(),
        ws.next().await.unwrap().unwrap(),
    ];
    got.sort_by_key(|m| m.to_string());
    assert_eq!(
        got,
        vec![
            Message::text(r#"{"type":"ack","id":7,"seq":2}"#),
            Message::text(r#"{"type":"msg","topic":"prices.eur","seq":2,"data":[1,2]}"#)
        ]
    );

    // Short poll from the start, and SSE resuming after seq 1.
    let (head, body) = tokio::task::spawn_blocking(move || {
        http(
            addr,
            "GET /messages/prices.eur?since=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(head.contains("no-store"), "{head}");
    assert_eq!(
        body,
        r#"{"topic":"prices.eur","messages":[{"seq":1,"data":{"px":1.5}},{"seq":2,"data":[1,2]}],"next":2,"reset":false}"#
    );
    let sse = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /sse/prices.eur HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("id: 2") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8(got).unwrap()
    })
    .await
    .unwrap();
    assert!(sse.contains("text/event-stream"), "{sse}");
    assert!(sse.contains("id: 2\ndata: [1,2]\n\n"), "{sse}");
    assert!(!sse.contains("id: 1\n"), "{sse}");

    // A long poll waits for the next message.
    let poll = tokio::task::spawn_blocking(move || {
        http(
            addr,
            "GET /poll/prices.eur?since=2&timeout=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .publisher()
        .publish_json("prices.eur", &b"{\"px\":2}"[..])
        .unwrap();
    let (_, body) = poll.await.unwrap();
    assert_eq!(
        body,
        r#"{"topic":"prices.eur","messages":[{"seq":3,"data":{"px":2}}],"next":3,"reset":false}"#
    );
    let msg = ws.next().await.unwrap().unwrap();
    assert_eq!(
        msg,
        Message::text(r#"{"type":"msg","topic":"prices.eur","seq":3,"data":{"px":2}}"#)
    );
    common::stop(server);
}

#[test]
fn publish_needs_content_length_and_the_limit_applies_to_the_body() {
    let mut cfg = common::config();
    cfg.max_message_size = 64;
    let server = common::start(cfg);
    let addr = server.local_addr();
    let (head, _) = http(
        addr,
        "POST /publish/t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 411"), "{head}");
    // The limit is on the body (the issue's rule: max body = max message size), not on its JSON-escaped form.
    let body = "\"".repeat(64);
    let req = format!(
        "POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nConnection: close\r\n\r\n{body}"
    );
    let (head, _) = http(addr, &req);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let req = "POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 65\r\nConnection: close\r\n\r\n";
    let (head, _) = http(addr, req);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A cursor ahead of the topic (as after a restart) is reset to where the topic is.
    let (_, body) = http(
        addr,
        "GET /messages/t?since=99 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(body, r#"{"topic":"t","messages":[],"next":1,"reset":true}"#);
    common::stop(server);
}

#[tokio::test]
async fn a_pubsub_client_over_its_rate_is_closed_with_1008() {
    let mut cfg = common::config();
    cfg.ws_rate_limit = 20;
    let server = common::start(cfg);
    let (mut ws, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/ws"))
        .await
        .unwrap();
    for i in 0..100 {
        let op = format!(r#"{{"op":"pub","topic":"flood","data":{i}}}"#);
        if ws.send(Message::text(op)).await.is_err() {
            break;
        }
    }
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(Some(f)) = m {
            code = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1008));
    // The echo route is not rate limited.
    let (mut echo, _) = tokio_tungstenite::connect_async(common::ws_url(&server, "/echo"))
        .await
        .unwrap();
    for i in 0..100 {
        echo.send(Message::text(format!("{i}"))).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            echo.next().await.unwrap().unwrap(),
            Message::text(format!("{i}"))
        );
    }
    let mut metrics = String::new();
    let mut s = common::raw(&server);
    let head = common::request_head(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"));
    std::io::Read::read_to_string(&mut s, &mut metrics).unwrap();
    assert!(
        metrics.contains("ringcast_ws_rate_limited_total{core=\"0\"} 1"),
        "{metrics}"
    );
    common::stop(server);
}
