//! `Config::disabled_transports` (a testing aid that plays a proxy blocking a transport): a disabled transport's
//! routes answer `403` before any upgrade or stream starts, the connection stays usable, the other transports and
//! HTTP publish keep working.
#![allow(clippy::unwrap_used)]

mod pubsub_common;

use pubsub_common as pc;
use ringcast_engine::Config;

const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

#[test]
fn disabled_transports_answer_403_and_the_rest_still_works() {
    let server = pc::start(Config {
        disabled_transports: vec!["ws".into(), "poll".into()],
        ..pc::config()
    });
    let addr = server.local_addr();
    let mut http = pc::Http::new(addr);
    let r = http.request("GET", "/ws", &UPGRADE, b"");
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(r.text().contains("transport disabled"), "{}", r.text());
    // Same keep-alive connection: both polling routes are refused, publish is not.
    for path in ["/poll/t?timeout=1", "/messages/t"] {
        let r = http.get(path);
        assert_eq!(r.status, 403, "{path}: {}", r.head);
    }
    assert_eq!(http.publish("t", r#"{"n":1}"#), 1);
    // SSE is enabled: it streams, and resumes from since=0 with the message just published.
    let mut sse = pc::Sse::open(addr, "/sse/t?since=0", &[]);
    let (seq, data) = sse.message();
    assert_eq!((seq, data.as_str()), (1, r#"{"n":1}"#));
    // The echo endpoint is not a pub/sub transport and stays open.
    let r = pc::http_once(addr, "GET", "/echo", &UPGRADE, b"");
    assert_eq!(r.status, 101, "{}", r.head);
    pc::stop(server);
}

#[test]
fn nothing_is_disabled_by_default() {
    let config = Config::default();
    assert!(config.disabled_transports.is_empty());
    for t in ["ws", "sse", "poll"] {
        assert!(!config.transport_disabled(t));
    }
    let config = Config {
        disabled_transports: vec!["sse".into()],
        ..Config::default()
    };
    assert!(config.transport_disabled("sse"));
    assert!(!config.transport_disabled("ws"));
}
