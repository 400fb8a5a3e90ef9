//! The HTTP side of pub/sub over real sockets: publish errors (400 for invalid JSON, non-UTF-8 text and invalid
//! topics, 413 over the message size) publish nothing; CORS preflight and response headers for allowed origins
//! only; a long poll with nothing to say answers at its timeout with no messages and the current seq as `next`.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use std::io::Write;
use std::time::{Duration, Instant};

use pubsub_common as pc;
use ringcast_engine::{Config, ServerHandle};

fn published(server: &ServerHandle) -> u64 {
    server.stats().iter().map(|s| s.messages_published()).sum()
}

fn post(h: &mut pc::Http, topic: &str, content_type: &str, body: &[u8]) -> pc::Response {
    let ct = format!("Content-Type: {content_type}");
    h.request("POST", &format!("/publish/{topic}"), &[&ct], body)
}

fn assert_error(r: &pc::Response, status: u16) {
    assert_eq!(r.status, status, "{}{}", r.head, r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let o = pc::object(r.text());
    assert!(!pc::string(pc::field(&o, "message")).is_empty());
}

#[test]
fn invalid_publishes_are_refused_and_publish_nothing() {
    let server = pc::start(Config {
        max_message_size: 1024,
        ..pc::config()
    });
    let addr = server.local_addr();
    let long = "a".repeat(129);
    for topic in pc::topics_by_owner("httperr", 1) {
        let mut h = pc::Http::new(addr);
        let before = published(&server);
        for body in [&b"{\"a\":"[..], b"", b"1 2", b"{\"a\":1}x", b"nope"] {
            let r = post(&mut h, &topic, "application/json", body);
            assert_error(&r, 400);
        }
        let r = post(&mut h, &topic, "text/plain", b"\xff\xfe not utf-8");
        assert_error(&r, 400);
        for bad in ["a%20b", "a%2Fb", "a!b", "", long.as_str()] {
            let r = post(&mut h, bad, "application/json", b"1");
            assert_error(&r, 400);
        }
        // Refused on the head alone, before the body arrives; the server then closes.
        let mut s = pc::connect(addr);
        s.write_all(
            format!(
                "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1025\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_error(&pc::read_response(&mut s), 413);
        // Exactly the limit is fine, and it is seq 1: nothing before it was numbered.
        let body = vec![b'x'; 1024];
        let r = post(&mut h, &topic, "text/plain", &body);
        assert_eq!(r.status, 200, "{}{}", r.head, r.text());
        assert_eq!(r.text(), format!(r#"{{"topic":"{topic}","seq":1}}"#));
        assert_eq!(published(&server), before + 1);
        // Text bodies become JSON strings.
        let r = post(
            &mut h,
            &topic,
            "text/plain; charset=utf-8",
            "say \"hi\"\n\u{e9}".as_bytes(),
        );
        assert_eq!(r.status, 200);
        let b = pc::poll_body(h.get(&format!("/messages/{topic}?since=1")).text());
        assert_eq!(b.messages.len(), 1);
        assert_eq!(pc::string(&b.messages[0].1), "say \"hi\"\n\u{e9}");
    }
    pc::stop(server);
}

fn cors_server() -> ServerHandle {
    pc::start(Config {
        cors_origins: vec!["https://app.example".to_string()],
        ..pc::config()
    })
}

#[test]
fn cors_headers_only_for_allowed_origins() {
    let server = cors_server();
    let addr = server.local_addr();
    let ok = "Origin: https://app.example";
    let evil = "Origin: https://evil.example";
    let mut h = pc::Http::new(addr);

    let r = h.request(
        "OPTIONS",
        "/publish/t",
        &[
            ok,
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type",
        ],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = r.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("content-type"), "{headers}");
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));

    let r = h.request(
        "OPTIONS",
        "/publish/t",
        &[evil, "Access-Control-Request-Method: POST"],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.head);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Simple requests: the allowed origin is echoed, another is not.
    let r = h.request(
        "POST",
        "/publish/t",
        &[ok, "Content-Type: application/json"],
        b"1",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = h.request("GET", "/messages/t?since=0", &[ok], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = h.request("GET", "/poll/t?since=0", &[ok], b"");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = h.request("GET", "/messages/t?since=0", &[evil], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = h.request("GET", "/messages/t?since=0", &[], b"");
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Error answers carry it too, so the browser can read them.
    let r = h.request("GET", "/messages/a%20b", &[ok], b"");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    let sse = pc::Sse::open(addr, "/sse/t?since=0", &[ok]);
    assert!(
        sse.head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{}",
        sse.head
    );
    let sse2 = pc::Sse::open(addr, "/sse/t?since=0", &[evil]);
    assert!(
        !sse2
            .head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{}",
        sse2.head
    );
    drop((sse, sse2, h));
    pc::stop(server);
}

#[test]
fn cors_is_off_without_configured_origins() {
    let server = pc::start(pc::config());
    let r = pc::http_once(
        server.local_addr(),
        "OPTIONS",
        "/publish/t",
        &[
            "Origin: https://app.example",
            "Access-Control-Request-Method: POST",
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    let r = pc::http_once(
        server.local_addr(),
        "GET",
        "/messages/t",
        &["Origin: https://app.example"],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    pc::stop(server);
}

#[test]
fn a_long_poll_with_nothing_new_answers_empty_at_its_timeout() {
    let server = pc::start(pc::config());
    let addr = server.local_addr();
    let p = server.publisher();
    let topics = pc::topics_by_owner("lpt", 1);
    for t in &topics {
        for n in 1..=3 {
            p.publish_json(t, n.to_string()).unwrap();
        }
        assert!(pc::wait_until(Duration::from_secs(5), || {
            pc::poll_body(pc::http_once(addr, "GET", &format!("/messages/{t}"), &[], b"").text())
                .next
                == 3
        }));
    }
    // Both topics (one per owner), with and without since, in parallel.
    let mut waits = Vec::new();
    for t in &topics {
        for path in [
            format!("/poll/{t}?timeout=1"),
            format!("/poll/{t}?since=3&timeout=1"),
        ] {
            let t = t.clone();
            waits.push(std::thread::spawn(move || {
                let start = Instant::now();
                let r = pc::http_once(addr, "GET", &path, &[], b"");
                let took = start.elapsed();
                assert_eq!(r.status, 200, "{path}: {}", r.head);
                assert_eq!(r.header("cache-control"), Some("no-store"));
                let b = pc::poll_body(r.text());
                assert_eq!(
                    (b.topic.as_str(), b.messages.len(), b.next, b.reset),
                    (t.as_str(), 0, 3, false),
                    "{path}"
                );
                assert!(
                    took >= Duration::from_millis(900) && took <= Duration::from_secs(3),
                    "{path} answered after {took:?}"
                );
            }));
        }
    }
    for w in waits {
        w.join().unwrap();
    }
    // A short poll with no since answers at once, with the current seq.
    let r = pc::http_once(addr, "GET", &format!("/messages/{}", topics[0]), &[], b"");
    let b = pc::poll_body(r.text());
    assert_eq!((b.messages.len(), b.next), (0, 3));
    pc::stop(server);
}
