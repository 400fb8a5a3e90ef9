//! Fuzzes the HTTP request-head parser and the WebSocket handshake on top of it.
//!
//! The first two input bytes choose the limits and a split point; the rest is the request buffer. The target
//! checks that
//! - parsing never panics, whole or split;
//! - parsing a prefix, then (if it was incomplete) the whole accumulated buffer, gives exactly the outcome of
//!   parsing the whole buffer at once;
//! - a parsed request's accessors, `validate_upgrade` on it, protocol selection and every response writer
//!   never panic, and produce well-formed response heads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_protocol::handshake;
use ringcast_protocol::http::{self, EMPTY_HEADER, HeadLimits, HttpError};

/// A parse outcome reduced to owned, comparable data.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Failed(HttpError),
    Parsed {
        method: String,
        target: String,
        minor: u8,
        head_len: usize,
        headers: Vec<(String, Vec<u8>)>,
    },
}

fn parse(buf: &[u8], limits: &HeadLimits) -> Outcome {
    let mut headers = [EMPTY_HEADER; 32];
    match http::parse_request(buf, &mut headers, limits) {
        Ok(None) => Outcome::Incomplete,
        Err(e) => Outcome::Failed(e),
        Ok(Some(req)) => Outcome::Parsed {
            method: req.method().to_owned(),
            target: req.target().to_owned(),
            minor: req.version_minor(),
            head_len: req.head_len(),
            headers: req
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
        },
    }
}

fn exercise(buf: &[u8], limits: &HeadLimits) {
    let mut headers = [EMPTY_HEADER; 32];
    let mut out = Vec::new();
    let req = match http::parse_request(buf, &mut headers, limits) {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(e) => {
            handshake::write_http_error(&mut out, e);
            assert!(out.starts_with(b"HTTP/1.1 4") || out.starts_with(b"HTTP/1.1 5"));
            return;
        }
    };
    assert!(req.head_len() <= buf.len() && req.head_len() <= limits.max_head_bytes);
    assert!(req.header_count() <= limits.max_headers);
    assert!(req.path().len() <= req.target().len());
    let _ = (
        req.keep_alive(),
        req.content_length(),
        req.query_param("token"),
    );
    let mut scratch = Vec::new();
    for segment in http::path_segments(req.path()) {
        let _ = http::percent_decode(segment, &mut scratch);
    }
    for (_, value) in req.query_pairs() {
        let _ = http::percent_decode_query_value(value, &mut scratch);
    }
    match handshake::validate_upgrade(&req) {
        Ok(up) => {
            assert_eq!(up.key().len(), 24);
            let offered: Vec<&str> = up.offered_protocols().collect();
            for p in &offered {
                assert!(http::is_token(p.as_bytes()));
            }
            let chosen = up.select_protocol(&["chat", "superchat"]);
            assert!(chosen.is_none() || offered.contains(&chosen.unwrap_or_default()));
            let _ = up.origin();
            handshake::write_switching_protocols(&mut out, up.key(), chosen);
            assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(out.ends_with(b"\r\n\r\n"));
        }
        Err(e) => {
            handshake::write_handshake_error(&mut out, e);
            assert!(out.starts_with(format!("HTTP/1.1 {} ", e.http_status()).as_bytes()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit_byte, cut_byte, buf @ ..] = data else {
        return;
    };
    // Mostly default limits; sometimes tight ones so the limit paths are reached with short inputs.
    let limits = if limit_byte & 0x80 == 0 {
        HeadLimits::default()
    } else {
        HeadLimits {
            max_head_bytes: usize::from(limit_byte & 0x3f) * 8,
            max_headers: usize::from((limit_byte >> 6) & 1) * 4,
        }
    };
    let cut = if buf.is_empty() {
        0
    } else {
        usize::from(*cut_byte) * buf.len() / 255
    };
    let whole = parse(buf, &limits);
    let prefix = buf.get(..cut).unwrap_or(buf);
    let split = match parse(prefix, &limits) {
        Outcome::Incomplete => parse(buf, &limits),
        other => other,
    };
    assert_eq!(split, whole, "cut at {cut}");
    exercise(buf, &limits);
});
