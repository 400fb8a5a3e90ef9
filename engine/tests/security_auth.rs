//! Hostile clients against token authentication and per-topic authorization: every refusal has its exact status
//! or close code, and a healthy client on the same server keeps working: one opened before the refusals keeps its
//! round trip within 2x its no-attack median ([`security_common::latency`]), and a new one still connects.
#![allow(clippy::unwrap_used)]

mod security_common;

use std::time::{Duration, Instant};

use security_common::*;

#[test]
fn upgrades_without_a_token_get_401_before_the_upgrade() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let good = root_token("alice");
    let mut probe = Probe::pubsub(addr, &[&bearer(&good)]);
    let base = probe.baseline();
    probe.under("upgrades without a token", base, || {
        for path in ["/ws", "/echo"] {
            let r = refused_upgrade(addr, path, &[]);
            assert_json_error(&r, 401);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"ringcast\"")
            );
            // Another scheme is not a bearer token.
            let r = refused_upgrade(
                addr,
                path,
                &["Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l"],
            );
            assert_json_error(&r, 401);
        }
    });
    assert_healthy(addr, &[&bearer(&good)]);
    stop(server);
}

#[test]
fn bad_tokens_get_401_on_every_transport() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let now = unix_now();
    let perms = serde_json::json!({"subscribe": ["*"], "publish": ["*"]});
    let bad = [
        (
            "forged",
            token_from(
                &serde_json::json!({"sub": "mallory", "exp": now + 60, "ringcast": perms}),
                b"not-the-server-secret-0123456789",
            ),
        ),
        (
            "expired",
            token_from(
                &serde_json::json!({"sub": "a", "exp": now - 1, "ringcast": perms}),
                SECRET,
            ),
        ),
        (
            "not yet valid",
            token_from(
                &serde_json::json!({"sub": "a", "exp": now + 60, "nbf": now + 30, "ringcast": perms}),
                SECRET,
            ),
        ),
        (
            "no exp",
            token_from(&serde_json::json!({"sub": "a", "ringcast": perms}), SECRET),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    let good = root_token("alice");
    let mut probe = Probe::pubsub(addr, &[&bearer(&good)]);
    let base = probe.baseline();
    probe.under("bad tokens on every transport", base, || {
        for (what, t) in &bad {
            let auth = bearer(t);
            let r = refused_upgrade(addr, "/ws", &[&auth]);
            assert_json_error(&r, 401);
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .contains("invalid_token"),
                "{what}: {}",
                r.head
            );
            for (method, path) in [
                ("GET", "/sse/news".to_string()),
                ("GET", "/poll/news?timeout=1".to_string()),
                ("GET", "/messages/news".to_string()),
                ("POST", "/publish/news".to_string()),
                ("GET", format!("/sse/news?token={t}")),
            ] {
                let extra: Vec<&str> = if path.contains("token=") {
                    vec!["Content-Type: application/json"]
                } else {
                    vec![&auth, "Content-Type: application/json"]
                };
                let r = http_once(addr, method, &path, &extra, b"{}");
                assert_json_error(&r, 401);
                assert!(r.header("www-authenticate").is_some(), "{what} {path}");
            }
        }
    });
    // Nothing was published by the refused requests.
    let r = http_once(
        addr,
        "GET",
        "/messages/news?since=0",
        &[&bearer(&good)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(poll_body(r.text()).messages.is_empty(), "{}", r.text());
    assert_healthy(addr, &[&bearer(&good)]);
    // Health and metrics stay open (no token needed).
    assert_eq!(http_once(addr, "GET", "/healthz", &[], b"").status, 200);
    assert!(metric_sum(addr, "ringcast_auth_failures_total") >= 30);
    stop(server);
}

#[test]
fn query_token_works_for_browsers() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let t = token("bob", 3600, &["news"], &["news"], &[]);
    let (stream, head) = upgrade(addr, &format!("/ws?token={t}"), &[]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut c = RawWs { stream };
    c.sub("news", None, 1);
    // `since=0`: the stream's subscription reaches the topic's owner core on its own path, possibly after the
    // publish below; a replay from the start delivers the message exactly once either way.
    let mut sse = Sse::open(addr, &format!("/sse/news?since=0&token={t}"), &[]);
    let mut h = Http::new(addr);
    let r = h.request(
        "POST",
        "/publish/news",
        &[&bearer(&t), "Content-Type: application/json"],
        b"{\"n\":1}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.msg().data.as_deref(), Some("{\"n\":1}"));
    assert_eq!(sse.message().1, "{\"n\":1}");
    stop(server);
}

#[test]
fn operations_outside_the_token_are_forbidden_and_have_no_effect() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let limited = token("carol", 3600, &["prices.*"], &["chat.room1"], &[]);
    let admin = root_token("admin");
    let mut watcher = ws(addr, &[&bearer(&admin)]);
    watcher.sub("secret", None, 1);
    watcher.sub("chat.room2", None, 2);
    let mut probe = Probe::pubsub(addr, &[&bearer(&admin)]);
    let base = probe.baseline();
    probe.during("operations outside the token", base, || {
        let mut c = ws(addr, &[&bearer(&limited)]);
        // Subscribe outside the permissions: error reply, connection stays open.
        c.send(r#"{"op":"sub","topic":"secret","id":7}"#);
        let m = c.msg();
        assert_eq!(
            (m.kind.as_str(), m.code.as_deref(), m.id.as_deref()),
            ("error", Some("forbidden"), Some("7"))
        );
        // Publish outside: error, and the watcher gets nothing.
        c.send(r#"{"op":"pub","topic":"chat.room2","data":1,"id":8}"#);
        let m = c.msg();
        assert_eq!(
            (m.kind.as_str(), m.code.as_deref(), m.id.as_deref()),
            ("error", Some("forbidden"), Some("8"))
        );
        // Allowed operations work on the same connection.
        c.sub("prices.eur", None, 9);
        c.send(r#"{"op":"pub","topic":"chat.room1","data":2,"id":10}"#);
        let m = c.msg();
        assert_eq!((m.kind.as_str(), m.id.as_deref()), ("ack", Some("10")));
        // The admin publishes on "secret": the limited client, refused earlier, receives nothing.
        let mut h = Http::new(addr);
        let r = h.request(
            "POST",
            "/publish/secret",
            &[&bearer(&admin), "Content-Type: application/json"],
            b"3",
        );
        assert_eq!(r.status, 200);
        assert_eq!(watcher.msg().topic.as_deref(), Some("secret"));
        c.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(
            c.next(),
            Frame::Timeout,
            "nothing delivered to a forbidden subscription"
        );
        watcher
            .stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(
            watcher.next(),
            Frame::Timeout,
            "the forbidden publish was not delivered"
        );

        // HTTP: 403 for subscribe-side and publish-side routes outside the permissions.
        let auth = bearer(&limited);
        for (method, path) in [
            ("GET", "/sse/secret"),
            ("GET", "/poll/secret?timeout=1"),
            ("GET", "/messages/secret"),
            ("POST", "/publish/prices.eur"),
        ] {
            let r = http_once(
                addr,
                method,
                path,
                &[&auth, "Content-Type: application/json"],
                b"{}",
            );
            assert_json_error(&r, 403);
        }
    });
    let r = http_once(
        addr,
        "GET",
        "/messages/chat.room2?since=0",
        &[&bearer(&admin)],
        b"",
    );
    assert!(poll_body(r.text()).messages.is_empty(), "{}", r.text());
    assert!(metric_sum(addr, "ringcast_forbidden_total") >= 6);
    assert_healthy(addr, &[&bearer(&admin)]);
    stop(server);
}

#[test]
fn a_token_expiring_during_a_connection_closes_it_with_1008() {
    let server = start(auth_config());
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &[&bearer(&root_token("erin"))]);
    let base = probe.baseline();
    let short = token("dave", 2, &["*"], &["*"], &[]);
    let mut c = ws(addr, &[&bearer(&short)]);
    c.sub("news", None, 1);
    let mut sse = {
        let auth = bearer(&short);
        Sse::open(addr, "/sse/news", &[&auth])
    };
    let started = Instant::now();
    probe.during("tokens expiring", base, || {
        assert_eq!(c.next(), Frame::Close(Some(1008)));
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(3500), "closed after {took:?}");
        // The SSE stream ends too.
        assert!(sse.event().is_none());
    });
    // A client with a longer token is unaffected.
    assert_healthy(addr, &[&bearer(&root_token("erin"))]);
    assert_eq!(metric_sum(addr, "ringcast_auth_expired_total"), 2);
    stop(server);
}

#[test]
fn public_keys_verify_ed25519_and_rs256_tokens() {
    for (public, private, alg) in [
        (
            &include_bytes!("keys/ed25519_public.pem")[..],
            jsonwebtoken::EncodingKey::from_ed_pem(include_bytes!("keys/ed25519_private.pem"))
                .unwrap(),
            jsonwebtoken::Algorithm::EdDSA,
        ),
        (
            &include_bytes!("keys/rsa_public.pem")[..],
            jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("keys/rsa_private.pem"))
                .unwrap(),
            jsonwebtoken::Algorithm::RS256,
        ),
    ] {
        let server = start(ringcast_engine::Config {
            auth: Some(ringcast_engine::AuthKey::PublicKeyPem(public.to_vec())),
            ..config()
        });
        let addr = server.local_addr();
        let claims = serde_json::json!({"sub": "f", "exp": unix_now() + 60, "ringcast": {"subscribe": ["*"], "publish": ["*"]}});
        let t = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &private).unwrap();
        assert_healthy(addr, &[&bearer(&t)]);
        let mut probe = Probe::pubsub(addr, &[&bearer(&t)]);
        let base = probe.baseline();
        probe.under(&format!("HMAC tokens against a {alg:?} key"), base, || {
            // An HMAC token is refused by a public-key server, even one using the server's secret.
            let r = refused_upgrade(addr, "/ws", &[&bearer(&root_token("f"))]);
            assert_json_error(&r, 401);
        });
        stop(server);
    }
}
