//! Cross-site WebSocket hijacking: with an Origin allowlist, a WebSocket upgrade from another origin (or with no
//! Origin) gets 403 before the upgrade; allowed origins, including subdomain wildcards, upgrade normally; a healthy
//! client opened before the refusals keeps its round trip within 2x its no-attack median.
#![allow(clippy::unwrap_used)]

mod security_common;

use security_common::*;

#[test]
fn disallowed_origins_get_403_before_the_upgrade() {
    let server = start(ringcast_engine::Config {
        allowed_origins: vec!["https://app.example.com".into(), "*.trusted.io".into()],
        ..config()
    });
    let addr = server.local_addr();
    let mut probe = Probe::pubsub(addr, &["Origin: https://chat.trusted.io"]);
    let base = probe.baseline();
    probe.under("cross-site upgrades", base, || {
        for origin in [
            Some("Origin: https://evil.example"),
            Some("Origin: https://app.example.com.evil.io"),
            Some("Origin: https://trusted.io"),
            Some("Origin: null"),
            None,
        ] {
            let extra: Vec<&str> = origin.into_iter().collect();
            for path in ["/ws", "/echo"] {
                let r = refused_upgrade(addr, path, &extra);
                assert_json_error(&r, 403);
                assert!(r.text().contains("origin"), "{}", r.text());
            }
        }
    });
    for origin in [
        "Origin: https://app.example.com",
        "Origin: https://a.b.trusted.io:8443",
    ] {
        let (_s, head) = upgrade(addr, "/ws", &[origin]);
        assert!(head.starts_with("HTTP/1.1 101"), "{origin}: {head}");
    }
    assert_healthy(addr, &["Origin: https://chat.trusted.io"]);
    // Plain HTTP transports are governed by CORS, not by this list.
    assert_eq!(
        http_once(
            addr,
            "GET",
            "/messages/x",
            &["Origin: https://evil.example"],
            b""
        )
        .status,
        200
    );
    stop(server);
}

#[test]
fn without_a_list_every_origin_is_allowed() {
    let server = start(config());
    let addr = server.local_addr();
    assert_healthy(addr, &["Origin: https://anything.example"]);
    assert_healthy(addr, &[]);
    stop(server);
}
