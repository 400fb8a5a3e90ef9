//! The parsed request head ([`Request`]) and the incremental, limit-enforcing parser ([`parse_request`]).
//!
//! Syntax checking is delegated to `httparse` (strict mode: no obsolete line folding, no whitespace before the
//! colon); this module adds the size limits, the split-invariance guarantee, the 400-versus-505 decision for
//! unknown versions, and the accessors.

use super::tokens::{token_list, trim_ows};
use super::{HeadLimits, HttpError, MAX_HEADERS_HARD};
use httparse::{Header, Status};

/// A parsed HTTP/1.x request head, borrowing the input buffer (`'b`) and the caller's header array (`'h`).
/// Nothing is copied: every accessor returns a slice of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'b, 'h> {
    method: &'b str,
    target: &'b str,
    version_minor: u8,
    headers: &'h [Header<'b>],
    head: &'b [u8],
}

impl<'b, 'h> Request<'b, 'h> {
    /// The method token, case as sent (methods are case-sensitive: `get` is not `GET`).
    pub fn method(&self) -> &'b str {
        self.method
    }

    /// The raw request target as sent (`/chat?room=1`), not decoded.
    pub fn target(&self) -> &'b str {
        self.target
    }

    /// The raw path: the request target before the first `?`, not percent-decoded.
    pub fn path(&self) -> &'b str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    /// The raw query: everything after the first `?` (possibly empty), or `None` without a `?`.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1 (the only versions the parser accepts).
    pub fn version_minor(&self) -> u8 {
        self.version_minor
    }

    /// Bytes the head occupies at the start of the buffer, including the final empty line; any request body
    /// or pipelined data starts at this offset.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }

    /// The raw head bytes (`buf[..head_len()]`).
    pub fn raw_head(&self) -> &'b [u8] {
        self.head
    }

    /// The value of the first header named `name` (ASCII case-insensitive), surrounding whitespace removed.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.header_all(name).next()
    }

    /// Every header in order as `(name, value)`, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + use<'b, 'h> {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The number of header fields.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// The values of every header named `name` (ASCII case-insensitive), in order: use for fields that may be
    /// repeated, such as comma-separated lists split over several lines.
    pub fn header_all<'n>(
        &self,
        name: &'n str,
    ) -> impl Iterator<Item = &'b [u8]> + use<'b, 'h, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether any header named `name` contains `token` in its comma-separated list (both case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name).any(|v| super::has_token(v, token))
    }

    /// The raw `(key, value)` pairs of the query string, split on `&` then on the first `=` (a pair without `=`
    /// has an empty value); empty pairs are skipped. Nothing is decoded.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'b str, &'b str)> + use<'b> {
        self.query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
    }

    /// The raw value of the first query parameter whose raw key is exactly `name`; decode it with
    /// [`super::percent_decode_query_value`].
    pub fn query_param(&self, name: &str) -> Option<&'b str> {
        self.query_pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Whether the connection may stay open after this request (RFC 9112 §9.3): for HTTP/1.1 unless a
    /// `Connection` header lists `close`; for HTTP/1.0 only if it lists `keep-alive` and not `close`.
    pub fn keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for value in self.header_all("connection") {
            for token in token_list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        !close && (self.version_minor >= 1 || keep_alive)
    }

    /// The declared body length: `None` without `Content-Length`. Repeated fields or comma lists are accepted
    /// only when every value is the same number (RFC 9110 §8.6).
    ///
    /// # Errors
    /// [`HttpError::InvalidContentLength`] for a value that is not `1*DIGIT`, overflows `u64`, or differs from
    /// another.
    pub fn content_length(&self) -> Result<Option<u64>, HttpError> {
        let mut found = None;
        for value in self.header_all("content-length") {
            for element in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(element)).ok_or(HttpError::InvalidContentLength)?;
                match found {
                    Some(previous) if previous != n => return Err(HttpError::InvalidContentLength),
                    _ => found = Some(n),
                }
            }
        }
        Ok(found)
    }
}

/// Parses `1*DIGIT` into a `u64`, `None` when empty, non-digit or overflowing.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses an HTTP/1.x request head from the start of `buf`.
///
/// Incremental: returns `Ok(None)` while the head is incomplete; the caller appends more bytes and calls again
/// with the whole accumulated buffer. The outcome depends only on the bytes, not on how they were split.
/// `headers` is caller storage, e.g. `[EMPTY_HEADER; 64]` on the stack; the accepted header count is the
/// smallest of `limits.max_headers`, [`MAX_HEADERS_HARD`] and `headers.len()`. Only the first
/// `limits.max_head_bytes` bytes of `buf` are inspected. HTTP/1.0 and HTTP/1.1 are accepted; checks specific
/// to a use (such as "upgrades need 1.1") belong to the caller.
///
/// # Errors
/// - [`HttpError::HeadTooLarge`] once `buf.len() > max_head_bytes` without a complete head within the first
///   `max_head_bytes` bytes;
/// - [`HttpError::TooManyHeaders`] when the head has more header fields than allowed;
/// - [`HttpError::UnsupportedVersion`] for a well-formed `HTTP/d.d` version other than 1.0/1.1;
/// - [`HttpError::Malformed`] for any other syntax error.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    limits: &HeadLimits,
) -> Result<Option<Request<'b, 'h>>, HttpError> {
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let over_limit = buf.len() > limits.max_head_bytes;
    let incomplete = if over_limit {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(None)
    };
    let max_headers = limits.max_headers.min(MAX_HEADERS_HARD).min(headers.len());
    let storage = headers.get_mut(..max_headers).unwrap_or_default();
    let mut parsed = httparse::Request::new(storage);
    match parsed.parse(window) {
        Ok(Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version_minor), Some(head)) = (
                parsed.method,
                parsed.path,
                parsed.version,
                window.get(..len),
            ) else {
                // httparse fills every field on Complete; treat a violation as malformed, never panic.
                return Err(HttpError::Malformed);
            };
            Ok(Some(Request {
                method,
                target,
                version_minor,
                headers: parsed.headers,
                head,
            }))
        }
        Ok(Status::Partial) => incomplete,
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => match version_shape(window) {
            VersionShape::Supported => Err(HttpError::UnsupportedVersion),
            VersionShape::Incomplete => incomplete,
            VersionShape::Invalid => Err(HttpError::Malformed),
        },
        Err(_) => Err(HttpError::Malformed),
    }
}

/// How the version field of a request line that httparse refused looks.
#[derive(Debug, PartialEq, Eq)]
enum VersionShape {
    /// `HTTP/d.d` followed by the line end: well-formed, just not 1.0/1.1 → 505.
    Supported,
    /// A strict prefix of `HTTP/d.d<CRLF>`: httparse rejects early (e.g. at `HTTP/2`), but whether this is a
    /// 505 or a 400 depends on bytes not yet received. Reported as incomplete so the answer does not depend on
    /// how the head was split.
    Incomplete,
    /// Anything else → 400.
    Invalid,
}

/// Classifies the version field of `window`, whose method and request target httparse has already accepted
/// (so neither contains a space and the version starts after the second space of the first non-empty line).
fn version_shape(window: &[u8]) -> VersionShape {
    let line = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .and_then(|start| window.get(start..))
        .unwrap_or_default();
    let mut fields = line.splitn(3, |&b| b == b' ');
    let version = match (fields.next(), fields.next(), fields.next()) {
        (Some(_), Some(_), Some(version)) => version,
        _ => return VersionShape::Invalid,
    };
    // Expected byte classes, position by position: "HTTP/" DIGIT "." DIGIT, then CRLF or LF.
    for (i, &b) in version.iter().enumerate() {
        let ok = match i {
            0..=4 => b == b"HTTP/".get(i).copied().unwrap_or_default(),
            5 | 7 => b.is_ascii_digit(),
            6 => b == b'.',
            8 if b == b'\n' => return VersionShape::Supported,
            8 => b == b'\r',
            _ if b == b'\n' => return VersionShape::Supported,
            _ => false,
        };
        if !ok {
            return VersionShape::Invalid;
        }
    }
    VersionShape::Incomplete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::EMPTY_HEADER;
    use proptest::prelude::*;

    const BROWSER: &[u8] = b"GET /chat?room=lobby&token=a%20b HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: */*\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: https://example.com\r\n\
        Sec-WebSocket-Extensions: permessage-deflate\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Upgrade: websocket\r\n\
        \r\n";

    fn parse(buf: &[u8]) -> Result<Option<usize>, HttpError> {
        let mut h = [EMPTY_HEADER; 64];
        parse_request(buf, &mut h, &HeadLimits::default()).map(|r| r.map(|r| r.head_len()))
    }

    fn parse_with(buf: &[u8], limits: HeadLimits) -> Result<Option<usize>, HttpError> {
        let mut h = [EMPTY_HEADER; MAX_HEADERS_HARD];
        parse_request(buf, &mut h, &limits).map(|r| r.map(|r| r.head_len()))
    }

    #[test]
    fn browser_request_accessors() {
        let mut buf = BROWSER.to_vec();
        buf.extend_from_slice(b"trailing pipelined bytes");
        let mut h = [EMPTY_HEADER; 64];
        let req = parse_request(&buf, &mut h, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(req.method(), "GET");
        assert_eq!(req.target(), "/chat?room=lobby&token=a%20b");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=lobby&token=a%20b"));
        assert_eq!(req.version_minor(), 1);
        assert_eq!(req.head_len(), BROWSER.len());
        assert_eq!(req.raw_head(), BROWSER);
        assert_eq!(req.header_count(), 11);
        assert_eq!(req.header("host"), Some(&b"example.com:8080"[..]));
        assert_eq!(req.header("HOST"), Some(&b"example.com:8080"[..]));
        assert_eq!(req.header("x-missing"), None);
        assert_eq!(req.query_param("room"), Some("lobby"));
        assert_eq!(req.query_param("token"), Some("a%20b"));
        assert_eq!(req.query_param("Room"), None);
        assert!(req.has_token("connection", "upgrade"));
        assert!(!req.has_token("connection", "close"));
        assert!(req.keep_alive());
        assert_eq!(req.content_length(), Ok(None));
        let names: Vec<&str> = req.headers().map(|(n, _)| n).collect();
        assert_eq!(names.first(), Some(&"Host"));
        assert_eq!(names.last(), Some(&"Upgrade"));
    }

    #[test]
    fn header_all_and_first_match() {
        let buf = b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nX-A:4 \r\n\r\n";
        let mut h = [EMPTY_HEADER; 8];
        let req = parse_request(buf, &mut h, &HeadLimits::default())
            .unwrap()
            .unwrap();
        let all: Vec<&[u8]> = req.header_all("X-a").collect();
        assert_eq!(all, [&b"1"[..], b"2", b"4"]);
        assert_eq!(req.header("x-A"), Some(&b"1"[..]));
    }

    #[test]
    fn target_and_query_table() {
        // (target, path, query)
        let table: &[(&str, &str, Option<&str>)] = &[
            ("/", "/", None),
            ("/a/b", "/a/b", None),
            ("/a?", "/a", Some("")),
            ("/a?x=1", "/a", Some("x=1")),
            ("/a?x=1?y=2", "/a", Some("x=1?y=2")),
            ("*", "*", None),
            ("http://h/p?q", "http://h/p", Some("q")),
        ];
        for (target, path, query) in table {
            let buf = format!("OPTIONS {target} HTTP/1.1\r\n\r\n");
            let mut h = [EMPTY_HEADER; 4];
            let req = parse_request(buf.as_bytes(), &mut h, &HeadLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(req.path(), *path, "{target}");
            assert_eq!(req.query(), *query, "{target}");
        }
    }

    #[test]
    fn query_param_table() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("/?a=1&b=2", "b", Some("2")),
            ("/?a=1&a=2", "a", Some("1")),
            ("/?a&b=2", "a", Some("")),
            ("/?a=&b=2", "a", Some("")),
            ("/?&&a=x=y", "a", Some("x=y")),
            ("/?a+b=1", "a b", None),
            ("/?ab=1", "a", None),
            ("/", "a", None),
            ("/?", "a", None),
        ];
        for (target, name, want) in table {
            let buf = format!("GET {target} HTTP/1.1\r\n\r\n");
            let mut h = [EMPTY_HEADER; 4];
            let req = parse_request(buf.as_bytes(), &mut h, &HeadLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(req.query_param(name), *want, "{target} {name}");
        }
    }

    #[test]
    fn keep_alive_table() {
        let table: &[(&str, &str, bool)] = &[
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: Close\r\n", false),
            ("1.1", "Connection: keep-alive, close\r\n", false),
            ("1.1", "Connection: upgrade\r\nConnection: close\r\n", false),
            ("1.1", "Connection: keep-alive\r\n", true),
            ("1.1", "Connection: closed\r\n", true),
            ("1.0", "", false),
            ("1.0", "Connection: keep-alive\r\n", true),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
        ];
        for (version, headers, want) in table {
            let buf = format!("GET / HTTP/{version}\r\n{headers}\r\n");
            let mut h = [EMPTY_HEADER; 4];
            let req = parse_request(buf.as_bytes(), &mut h, &HeadLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(req.keep_alive(), *want, "{version} {headers:?}");
        }
    }

    #[test]
    fn content_length_table() {
        let bad = Err(HttpError::InvalidContentLength);
        let table: &[(&str, Result<Option<u64>, HttpError>)] = &[
            ("", Ok(None)),
            ("Content-Length: 0\r\n", Ok(Some(0))),
            ("Content-Length: 42\r\n", Ok(Some(42))),
            ("content-length: 007\r\n", Ok(Some(7))),
            (
                "Content-Length: 18446744073709551615\r\n",
                Ok(Some(u64::MAX)),
            ),
            ("Content-Length: 18446744073709551616\r\n", bad),
            ("Content-Length: 5\r\nContent-Length: 5\r\n", Ok(Some(5))),
            ("Content-Length: 5, 5\r\n", Ok(Some(5))),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", bad),
            ("Content-Length: 5, 6\r\n", bad),
            ("Content-Length: 5,\r\n", bad),
            ("Content-Length:\r\n", bad),
            ("Content-Length: -1\r\n", bad),
            ("Content-Length: +1\r\n", bad),
            ("Content-Length: 1 2\r\n", bad),
            ("Content-Length: 0x10\r\n", bad),
        ];
        for (headers, want) in table {
            let buf = format!("POST / HTTP/1.1\r\n{headers}\r\n");
            let mut h = [EMPTY_HEADER; 4];
            let req = parse_request(buf.as_bytes(), &mut h, &HeadLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(req.content_length(), *want, "{headers:?}");
        }
    }

    #[test]
    fn outcome_table() {
        type Row = (&'static [u8], Result<Option<usize>, HttpError>);
        let table: &[Row] = &[
            (b"", Ok(None)),
            (b"G", Ok(None)),
            (b"GET / HTTP/1.1\r\n", Ok(None)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Ok(None)),
            (b"GET / HTTP/1.1\r\n\r\n", Ok(Some(18))),
            (b"GET / HTTP/1.1\n\n", Ok(Some(16))),
            (b"GET / HTTP/1.0\r\n\r\nbody", Ok(Some(18))),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", Ok(Some(20))),
            (
                b"GET / HTTP/2.0\r\n\r\n",
                Err(HttpError::UnsupportedVersion),
            ),
            (
                b"GET / HTTP/1.2\r\n\r\n",
                Err(HttpError::UnsupportedVersion),
            ),
            (b"GET / HTTP/0.9\n\n", Err(HttpError::UnsupportedVersion)),
            (b"GET / HTTP/2", Ok(None)),
            (b"GET / HTTP/2.0\r", Ok(None)),
            (b"GET / HTTP/2.0\r\n", Err(HttpError::UnsupportedVersion)),
            (b"GET / HTTP/2.0x", Err(HttpError::Malformed)),
            (b"GET / HTTP/2.0\rx", Err(HttpError::Malformed)),
            (b"GET / HTTP/10.0\r\n\r\n", Err(HttpError::Malformed)),
            (b"GET / HTTX/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (b"GET / http/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (b"GET / HTTP/1.1x\r\n\r\n", Err(HttpError::Malformed)),
            (b"GET  / HTTP/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (b"G(T / HTTP/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\nName : x\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\n folded\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (b"GET / HTTP/1.1\r\r\n", Err(HttpError::Malformed)),
        ];
        for (input, want) in table {
            assert_eq!(parse(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn head_size_limit() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"; // 27 bytes
        let limits = |max_head_bytes| HeadLimits {
            max_head_bytes,
            max_headers: 64,
        };
        assert_eq!(parse_with(head, limits(27)), Ok(Some(27)));
        assert_eq!(parse_with(head, limits(26)), Err(HttpError::HeadTooLarge));
        // Incomplete and at the limit: still waiting; one byte past it: too large.
        assert_eq!(parse_with(&head[..26], limits(26)), Ok(None));
        assert_eq!(
            parse_with(&head[..26], limits(25)),
            Err(HttpError::HeadTooLarge)
        );
        // A complete head within the limit followed by more data is fine.
        let mut more = head.to_vec();
        more.extend_from_slice(&[b'x'; 100]);
        assert_eq!(parse_with(&more, limits(27)), Ok(Some(27)));
        // Garbage after the limit is never looked at.
        let mut garbage = b"GET / HTTP/1.1\r\nHost: a".to_vec();
        garbage.extend_from_slice(b"\x00\x00\x00");
        assert_eq!(
            parse_with(&garbage, limits(23)),
            Err(HttpError::HeadTooLarge)
        );
        assert_eq!(parse_with(&garbage, limits(24)), Err(HttpError::Malformed));
        assert_eq!(parse_with(b"", limits(0)), Ok(None));
        assert_eq!(parse_with(b"G", limits(0)), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn header_count_limit() {
        let head = |n: usize| {
            let mut s = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                s.push_str(&format!("X-{i}: v\r\n"));
            }
            s.push_str("\r\n");
            s
        };
        let limits = |max_headers| HeadLimits {
            max_head_bytes: 1 << 20,
            max_headers,
        };
        assert!(parse_with(head(3).as_bytes(), limits(3)).unwrap().is_some());
        assert_eq!(
            parse_with(head(4).as_bytes(), limits(3)),
            Err(HttpError::TooManyHeaders)
        );
        assert!(parse_with(head(0).as_bytes(), limits(0)).unwrap().is_some());
        assert_eq!(
            parse_with(head(1).as_bytes(), limits(0)),
            Err(HttpError::TooManyHeaders)
        );
        // The hard cap applies whatever the configured limit.
        let hard = MAX_HEADERS_HARD;
        assert!(
            parse_with(head(hard).as_bytes(), limits(usize::MAX))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            parse_with(head(hard + 1).as_bytes(), limits(usize::MAX)),
            Err(HttpError::TooManyHeaders)
        );
        // A short caller array lowers the limit to its length.
        let mut small = [EMPTY_HEADER; 2];
        assert_eq!(
            parse_request(head(3).as_bytes(), &mut small, &limits(64)).map(|r| r.is_some()),
            Err(HttpError::TooManyHeaders)
        );
        // Reported as soon as the (max + 1)-th header line is complete, before the head is.
        let partial = head(4);
        let cut = partial.len() - 2;
        assert_eq!(
            parse_with(&partial.as_bytes()[..cut], limits(3)),
            Err(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn version_shape_table() {
        use VersionShape::*;
        let table: &[(&[u8], VersionShape)] = &[
            (b"GET / HTTP/2.0\r\n", Supported),
            (b"GET / HTTP/2.0\n", Supported),
            (b"\r\n\nGET / HTTP/3.0\n", Supported),
            (b"GET / HTTP/2.0\r", Incomplete),
            (b"GET / HTTP/2.", Incomplete),
            (b"GET / H", Incomplete),
            (b"GET / ", Incomplete),
            (b"GET / HTTP/2.0 ", Invalid),
            (b"GET / HTTP/2.0\rx", Invalid),
            (b"GET / HTTP/a", Invalid),
            (b"GET / XTTP", Invalid),
            (b"GET /", Invalid),
        ];
        for (input, want) in table {
            assert_eq!(
                version_shape(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Parses `data` whole, then as accumulating prefixes cut at `cuts`, and returns both outcomes as
    /// comparable values (the request rendered to owned data).
    type Outcome = Result<Option<(String, String, u8, usize, Vec<(String, Vec<u8>)>)>, HttpError>;

    fn outcome(buf: &[u8]) -> Outcome {
        let mut h = [EMPTY_HEADER; 64];
        parse_request(buf, &mut h, &HeadLimits::default()).map(|r| {
            r.map(|r| {
                (
                    r.method().to_owned(),
                    r.target().to_owned(),
                    r.version_minor(),
                    r.head_len(),
                    r.headers()
                        .map(|(n, v)| (n.to_owned(), v.to_vec()))
                        .collect(),
                )
            })
        })
    }

    fn header_strategy() -> impl Strategy<Value = (String, String)> {
        ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}").prop_map(|(n, v)| (n, v.trim().to_owned()))
    }

    fn head_strategy() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec!["GET", "POST", "OPTIONS", "DELETE"]),
            "/[a-zA-Z0-9/._~%=&?-]{0,40}",
            prop::sample::select(vec!["1.0", "1.1"]),
            prop::collection::vec(header_strategy(), 0..12),
            any::<bool>(),
        )
            .prop_map(|(method, target, version, headers, bare_lf)| {
                let eol = if bare_lf { "\n" } else { "\r\n" };
                let mut s = format!("{method} {target} HTTP/{version}{eol}");
                for (n, v) in headers {
                    s.push_str(&format!("{n}: {v}{eol}"));
                }
                s.push_str(eol);
                s.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn split_anywhere_equals_whole(head in head_strategy(), tail in prop::collection::vec(any::<u8>(), 0..16)) {
            let mut input = head.clone();
            input.extend_from_slice(&tail);
            let whole = outcome(&input);
            prop_assert!(matches!(whole, Ok(Some(_))), "{:?}", whole);
            if let Ok(Some(ref r)) = whole {
                prop_assert_eq!(r.3, head.len());
            }
            // Feed one byte at a time: every strict prefix of the head is incomplete, then the same request.
            for end in 0..head.len() {
                prop_assert_eq!(outcome(&input[..end]), Ok(None), "prefix {}", end);
            }
            for end in head.len()..=input.len() {
                prop_assert_eq!(&outcome(&input[..end]), &whole);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_consistently(
            data in prop::collection::vec(any::<u8>(), 0..256),
            cut in any::<prop::sample::Index>(),
            max_head_bytes in 0usize..300,
            max_headers in 0usize..8,
        ) {
            let limits = HeadLimits { max_head_bytes, max_headers };
            let run = |buf: &[u8]| {
                let mut h = [EMPTY_HEADER; 8];
                parse_request(buf, &mut h, &limits).map(|r| r.map(|r| (r.head_len(), r.header_count())))
            };
            let whole = run(&data);
            let cut = cut.index(data.len() + 1);
            let split = match run(&data[..cut]) {
                Ok(None) => run(&data),
                other => other,
            };
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn mutated_heads_split_consistently(
            head in head_strategy(),
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut data = head;
            let at = pos.index(data.len());
            data[at] = byte;
            let whole = outcome(&data);
            let cut = cut.index(data.len() + 1);
            let split = match outcome(&data[..cut]) {
                Ok(None) => outcome(&data),
                other => other,
            };
            prop_assert_eq!(split, whole);
        }
    }
}
