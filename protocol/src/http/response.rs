//! Writing HTTP/1.1 response heads (and small bodies) into caller-supplied buffers.
//!
//! Everything here is infallible and allocation-free apart from the growth of the caller's buffer. Header
//! values are sanitised on the way out (CR, LF and NUL become spaces) so a value reflected from a request can
//! never split the response; header names that are not RFC 9110 tokens are dropped.

use super::tokens::is_token;
use bytes::BufMut;

/// The standard reason phrase for `status` (RFC 9110 §15), or `""` for codes this server never sends
/// (an empty reason phrase is valid on the wire).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a complete response into `buf`: status line, `Content-Length` (from `body.len()`), `Connection:
/// keep-alive` or `Connection: close`, the extra `headers` in order, the empty line, then `body`.
///
/// A status outside `100..=999` is written as 500. For 1xx, 204 and 304 responses, which cannot carry content
/// (RFC 9110 §8.6, §15.3.5, §15.4.5), `Content-Length` and `body` are omitted. `buf` must be able to grow
/// (`Vec<u8>`, `BytesMut`): a fixed-size `BufMut` that runs out of room panics inside `bytes`.
pub fn write_response<B: BufMut>(
    buf: &mut B,
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) {
    let connection: &[u8] = if keep_alive { b"keep-alive" } else { b"close" };
    write_full(buf, status, connection, headers, body);
}

/// [`write_response`] with an arbitrary `Connection` value (e.g. `Upgrade, close` for 426).
pub(crate) fn write_full<B: BufMut>(
    buf: &mut B,
    status: u16,
    connection: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) {
    let status = write_status_line(buf, status);
    let has_content = !matches!(status, 100..=199 | 204 | 304);
    if has_content {
        let mut n = itoa::Buffer::new();
        write_header(buf, "Content-Length", n.format(body.len()).as_bytes());
    }
    write_header(buf, "Connection", connection);
    for (name, value) in headers {
        write_header(buf, name, value);
    }
    buf.put_slice(b"\r\n");
    if has_content {
        buf.put_slice(body);
    }
}

/// Writes `HTTP/1.1 <status> <reason>\r\n` and returns the status actually written (500 replaces codes that
/// are not three digits).
pub(crate) fn write_status_line<B: BufMut>(buf: &mut B, status: u16) -> u16 {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let mut n = itoa::Buffer::new();
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(n.format(status).as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(reason_phrase(status).as_bytes());
    buf.put_slice(b"\r\n");
    status
}

/// Writes `name: value\r\n`, dropping the field if `name` is not a token and replacing CR, LF and NUL in
/// `value` with spaces.
pub(crate) fn write_header<B: BufMut>(buf: &mut B, name: &str, value: &[u8]) {
    if !is_token(name.as_bytes()) {
        debug_assert!(false, "invalid response header name {name:?}");
        return;
    }
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    let mut rest = value;
    while let Some(at) = memchr::memchr3(b'\r', b'\n', 0, rest) {
        let (clean, tail) = rest.split_at(at.min(rest.len()));
        buf.put_slice(clean);
        buf.put_u8(b' ');
        rest = tail.get(1..).unwrap_or_default();
    }
    buf.put_slice(rest);
    buf.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(status: u16, headers: &[(&str, &[u8])], body: &[u8], keep_alive: bool) -> String {
        let mut buf = Vec::new();
        write_response(&mut buf, status, headers, body, keep_alive);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn exact_bytes_table() {
        type Headers = &'static [(&'static str, &'static [u8])];
        let table: &[(u16, Headers, &[u8], bool, &str)] = &[
            (
                200,
                &[],
                b"ok",
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
            ),
            (
                404,
                &[("Content-Type", b"text/plain")],
                b"",
                false,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\
                 Content-Type: text/plain\r\n\r\n",
            ),
            (
                204,
                &[("X-A", b"1")],
                b"ignored",
                true,
                "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n",
            ),
            (
                304,
                &[],
                b"",
                true,
                "HTTP/1.1 304 Not Modified\r\nConnection: keep-alive\r\n\r\n",
            ),
            (
                599,
                &[],
                b"",
                false,
                "HTTP/1.1 599 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
            (
                42,
                &[],
                b"x",
                false,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
            ),
            (
                200,
                &[
                    ("X-Evil", b"a\r\nSet-Cookie: x\0"),
                    ("Bad Name", b"v"),
                    ("", b"v"),
                ],
                b"",
                true,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\
                 X-Evil: a  Set-Cookie: x \r\n\r\n",
            ),
        ];
        for (status, headers, body, keep_alive, want) in table {
            // Invalid names trip a debug assertion by design; render without them in debug builds.
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .copied()
                .filter(|(n, _)| cfg!(not(debug_assertions)) || is_token(n.as_bytes()))
                .collect();
            assert_eq!(
                render(*status, &headers, body, *keep_alive),
                *want,
                "{status}"
            );
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "invalid response header name")]
    fn invalid_header_name_is_a_debug_assertion() {
        render(200, &[("Bad Name", b"v")], b"", true);
    }

    #[test]
    fn reason_phrases() {
        let table = [
            (101, "Switching Protocols"),
            (400, "Bad Request"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (426, "Upgrade Required"),
            (431, "Request Header Fields Too Large"),
            (503, "Service Unavailable"),
            (505, "HTTP Version Not Supported"),
            (299, ""),
            (0, ""),
        ];
        for (status, want) in table {
            assert_eq!(reason_phrase(status), want, "{status}");
        }
    }

    #[test]
    fn writes_into_bytes_mut() {
        let mut buf = bytes::BytesMut::new();
        write_response(&mut buf, 200, &[], b"hi", false);
        assert_eq!(
            &buf[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
    }
}
