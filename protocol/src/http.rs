//! HTTP/1.1 request heads: incremental, zero-copy parsing with size limits, header and query accessors,
//! percent-decoding, and the plain (non-upgrade) response writer.
//!
//! This module owns everything the server needs to read a request head off the wire and to answer it with a
//! complete response head, without owning any buffer or socket:
//! - [`parse_request`] parses the head at the start of an accumulating buffer and returns a [`Request`] that
//!   borrows that buffer (no copies), or `Ok(None)` while the head is incomplete;
//! - [`percent_decode`], [`percent_decode_query_value`] and [`path_segments`] interpret the request target;
//! - [`token_list`] and [`has_token`] read comma-separated header token lists (`Connection`, `Upgrade`, ...);
//! - [`write_response`] and [`reason_phrase`] write responses into a caller-supplied [`bytes::BufMut`].
//!
//! The WebSocket-specific checks and responses live in [`crate::handshake`].
//!
//! ## Incremental parsing contract
//! The caller appends received bytes to one buffer and calls [`parse_request`] with the whole accumulated buffer
//! each time. The outcome depends only on the bytes, never on where reads split them: a head split at any byte
//! boundary yields `Ok(None)` for every incomplete prefix and then the same [`Request`] (or the same error) as
//! parsing it whole. Only the first [`HeadLimits::max_head_bytes`] bytes are ever inspected, so a peer cannot
//! make the parser do more work than the limit allows.
//!
//! ```
//! use ringcast_protocol::http::{EMPTY_HEADER, HeadLimits, parse_request};
//!
//! let wire = b"GET /rooms/7/poll?since=41 HTTP/1.1\r\nHost: h\r\n\r\n";
//! let limits = HeadLimits::default();
//! // The first read brought half the head: keep reading.
//! let mut headers = [EMPTY_HEADER; 64];
//! assert!(matches!(parse_request(&wire[..20], &mut headers, &limits), Ok(None)));
//! // The rest arrived: parse the whole accumulated buffer again.
//! let mut headers = [EMPTY_HEADER; 64];
//! let req = parse_request(wire, &mut headers, &limits)?.expect("complete");
//! assert_eq!(req.path(), "/rooms/7/poll");
//! assert_eq!(req.query_param("since"), Some("41"));
//! assert_eq!(req.head_len(), wire.len());
//! # Ok::<(), ringcast_protocol::http::HttpError>(())
//! ```

use std::fmt;

mod percent;
mod request;
mod response;
mod tokens;

pub use httparse::{EMPTY_HEADER, Header};
pub use percent::{path_segments, percent_decode, percent_decode_query_value};
pub use request::{Request, parse_request};
pub use response::{reason_phrase, write_response};
pub use tokens::{has_token, is_token, token_list};

pub(crate) use response::{write_full, write_header, write_status_line};
pub(crate) use tokens::trim_ows;

/// Upper bound on the number of headers [`parse_request`] will ever accept, whatever
/// [`HeadLimits::max_headers`] says: the size of the largest header array a caller should put on its stack.
pub const MAX_HEADERS_HARD: usize = 256;

/// Size limits applied while parsing a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest request head accepted, in bytes, including the request line and the final empty line.
    /// Default 8192.
    pub max_head_bytes: usize,
    /// Largest number of header fields accepted. Default 64; values above [`MAX_HEADERS_HARD`] act as
    /// [`MAX_HEADERS_HARD`], and a caller header array shorter than this limit lowers it to the array's length.
    pub max_headers: usize,
}

impl HeadLimits {
    /// The default limits: 8 KiB of head, 64 header fields.
    pub const DEFAULT: Self = Self {
        max_head_bytes: 8192,
        max_headers: 64,
    };
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a request head (or a value inside it) was refused. Every variant is the peer's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// Peer's fault: the head is longer than [`HeadLimits::max_head_bytes`] (or the buffer grew past it without
    /// containing a complete head). Answer 431.
    HeadTooLarge,
    /// Peer's fault: the head has more header fields than [`HeadLimits::max_headers`]. Answer 431.
    TooManyHeaders,
    /// Peer's fault: the head is not valid HTTP/1.x syntax (bad method token, request target, header name or
    /// value, or line ending). Answer 400.
    Malformed,
    /// Peer's fault: a well-formed `HTTP/x.y` version other than 1.0 or 1.1. Answer 505.
    UnsupportedVersion,
    /// Peer's fault: a `%` not followed by two hexadecimal digits in a percent-encoded value. Answer 400.
    InvalidPercentEncoding,
    /// Peer's fault: a percent-decoded value is not valid UTF-8. Answer 400.
    InvalidUtf8,
    /// Peer's fault: a `Content-Length` that is not a decimal number, overflows `u64`, or disagrees with another
    /// `Content-Length` of the same request. Answer 400.
    InvalidContentLength,
}

impl HttpError {
    /// The HTTP status code to answer with.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::UnsupportedVersion => 505,
            Self::Malformed
            | Self::InvalidPercentEncoding
            | Self::InvalidUtf8
            | Self::InvalidContentLength => 400,
        }
    }

    /// A short, static, human-readable description (also used as the body of the error response).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "request head too large",
            Self::TooManyHeaders => "too many header fields",
            Self::Malformed => "malformed request head",
            Self::UnsupportedVersion => "unsupported HTTP version",
            Self::InvalidPercentEncoding => "invalid percent-encoding",
            Self::InvalidUtf8 => "percent-decoded value is not UTF-8",
            Self::InvalidContentLength => "invalid Content-Length",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses() {
        let table = [
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::Malformed, 400),
            (HttpError::UnsupportedVersion, 505),
            (HttpError::InvalidPercentEncoding, 400),
            (HttpError::InvalidUtf8, 400),
            (HttpError::InvalidContentLength, 400),
        ];
        for (err, status) in table {
            assert_eq!(err.http_status(), status, "{err:?}");
            assert_eq!(err.to_string(), err.as_str());
            assert!(!err.as_str().is_empty());
        }
    }

    #[test]
    fn default_limits() {
        let l = HeadLimits::default();
        assert_eq!(l.max_head_bytes, 8192);
        assert_eq!(l.max_headers, 64);
        assert!(l.max_headers <= MAX_HEADERS_HARD);
    }
}
