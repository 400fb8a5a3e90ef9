//! Percent-decoding (RFC 3986 §2.1) of request-target components, and splitting a path into raw segments.
//!
//! Decoding borrows the input when there is nothing to decode and otherwise writes into a caller-owned `Vec`,
//! so a connection can reuse one scratch buffer for every value it decodes.

use super::HttpError;

/// Percent-decodes `s` (`%XX` → the byte `0xXX`) and checks that the result is UTF-8.
///
/// Returns `s` itself when it contains no `%`; otherwise clears `out`, decodes into it and returns a view of it.
/// `+` is left as is (use [`percent_decode_query_value`] for `application/x-www-form-urlencoded` values).
///
/// # Errors
/// [`HttpError::InvalidPercentEncoding`] for a `%` not followed by two hex digits; [`HttpError::InvalidUtf8`]
/// when the decoded bytes are not UTF-8.
pub fn percent_decode<'a>(s: &'a str, out: &'a mut Vec<u8>) -> Result<&'a str, HttpError> {
    decode(s, out, false)
}

/// Like [`percent_decode`], but also decodes `+` as a space, as query-string values
/// (`application/x-www-form-urlencoded`) require. A literal `+` is sent as `%2B`.
///
/// # Errors
/// As [`percent_decode`].
pub fn percent_decode_query_value<'a>(
    s: &'a str,
    out: &'a mut Vec<u8>,
) -> Result<&'a str, HttpError> {
    decode(s, out, true)
}

fn decode<'a>(s: &'a str, out: &'a mut Vec<u8>, plus_is_space: bool) -> Result<&'a str, HttpError> {
    let bytes = s.as_bytes();
    let next_special = |b: &[u8]| {
        if plus_is_space {
            memchr::memchr2(b'%', b'+', b)
        } else {
            memchr::memchr(b'%', b)
        }
    };
    if next_special(bytes).is_none() {
        return Ok(s);
    }
    out.clear();
    out.reserve(bytes.len());
    let mut rest = bytes;
    while let Some(at) = next_special(rest) {
        let (run, special) = rest.split_at(at.min(rest.len()));
        out.extend_from_slice(run);
        rest = match special {
            [b'%', hi, lo, tail @ ..] => {
                let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo)) else {
                    return Err(HttpError::InvalidPercentEncoding);
                };
                out.push((hi << 4) | lo);
                tail
            }
            [b'%', ..] => return Err(HttpError::InvalidPercentEncoding),
            [_plus, tail @ ..] => {
                out.push(b' ');
                tail
            }
            [] => break,
        };
    }
    out.extend_from_slice(rest);
    let out: &'a Vec<u8> = out;
    simdutf8::basic::from_utf8(out).map_err(|_| HttpError::InvalidUtf8)
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The raw (still percent-encoded) segments of a request path, in order, with empty segments skipped:
/// `/a//b/` yields `a`, `b`; `/` yields nothing. Decode each segment with [`percent_decode`] *after*
/// splitting, so an encoded `%2F` stays inside its segment. `.` and `..` are yielded as they are: callers
/// must not use segments to address files.
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decode_table() {
        let table: &[(&str, Result<&str, HttpError>)] = &[
            ("", Ok("")),
            ("plain", Ok("plain")),
            ("a+b", Ok("a+b")),
            ("%20", Ok(" ")),
            ("a%2Fb", Ok("a/b")),
            ("a%2fb", Ok("a/b")),
            ("%41%42%43", Ok("ABC")),
            ("caf%C3%A9", Ok("café")),
            ("café", Ok("café")),
            ("100%25", Ok("100%")),
            ("%", Err(HttpError::InvalidPercentEncoding)),
            ("%4", Err(HttpError::InvalidPercentEncoding)),
            ("a%", Err(HttpError::InvalidPercentEncoding)),
            ("%G0", Err(HttpError::InvalidPercentEncoding)),
            ("%0G", Err(HttpError::InvalidPercentEncoding)),
            ("%%41", Err(HttpError::InvalidPercentEncoding)),
            ("%é", Err(HttpError::InvalidPercentEncoding)),
            ("%FF", Err(HttpError::InvalidUtf8)),
            ("%C3", Err(HttpError::InvalidUtf8)),
            ("%C3%28", Err(HttpError::InvalidUtf8)),
            ("%ED%A0%80", Err(HttpError::InvalidUtf8)),
        ];
        let mut out = Vec::new();
        for (input, want) in table {
            assert_eq!(percent_decode(input, &mut out), *want, "{input:?}");
        }
    }

    #[test]
    fn decode_query_value_table() {
        let table: &[(&str, Result<&str, HttpError>)] = &[
            ("a+b", Ok("a b")),
            ("+", Ok(" ")),
            ("a%2Bb", Ok("a+b")),
            ("a%20b+c", Ok("a b c")),
            ("x", Ok("x")),
            ("+%", Err(HttpError::InvalidPercentEncoding)),
            ("+%80", Err(HttpError::InvalidUtf8)),
        ];
        let mut out = Vec::new();
        for (input, want) in table {
            assert_eq!(
                percent_decode_query_value(input, &mut out),
                *want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn borrows_when_nothing_to_decode() {
        let s = "nothing-to-do";
        let mut out = vec![1, 2, 3];
        let got = percent_decode(s, &mut out).unwrap();
        assert!(std::ptr::eq(got, s));
        let got = percent_decode_query_value(s, &mut out).unwrap();
        assert!(std::ptr::eq(got, s));
    }

    #[test]
    fn reuses_scratch_buffer() {
        let mut out = b"stale bytes from before".to_vec();
        assert_eq!(percent_decode("%41", &mut out), Ok("A"));
    }

    #[test]
    fn segments_table() {
        let table: &[(&str, &[&str])] = &[
            ("/", &[]),
            ("", &[]),
            ("/ws", &["ws"]),
            ("/ws/", &["ws"]),
            ("/a//b/", &["a", "b"]),
            ("/rooms/42/poll", &["rooms", "42", "poll"]),
            ("/a%2Fb/c", &["a%2Fb", "c"]),
            ("/./../x", &[".", "..", "x"]),
            ("noslash/y", &["noslash", "y"]),
        ];
        for (input, want) in table {
            let got: Vec<&str> = path_segments(input).collect();
            assert_eq!(got, *want, "{input:?}");
        }
    }

    /// An independent encoder: escapes every byte outside the unreserved set, in random-case hex; with
    /// `plus`, spaces become `+`.
    fn encode(s: &str, upper: bool, plus: bool) -> String {
        let mut out = String::new();
        for &b in s.as_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else if plus && b == b' ' {
                out.push('+');
            } else if upper {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn roundtrip(s in any::<String>(), upper in any::<bool>()) {
            let encoded = encode(&s, upper, false);
            let mut out = Vec::new();
            prop_assert_eq!(percent_decode(&encoded, &mut out), Ok(s.as_str()));
        }

        #[test]
        fn roundtrip_query(s in any::<String>(), upper in any::<bool>()) {
            let encoded = encode(&s, upper, true);
            let mut out = Vec::new();
            prop_assert_eq!(percent_decode_query_value(&encoded, &mut out), Ok(s.as_str()));
        }

        #[test]
        fn unescaped_text_is_identity(s in "[^%]*") {
            let mut out = Vec::new();
            prop_assert_eq!(percent_decode(&s, &mut out), Ok(s.as_str()));
        }

        #[test]
        fn arbitrary_input_never_panics(s in any::<String>()) {
            let mut out = Vec::new();
            let _ = percent_decode(&s, &mut out);
            let _ = percent_decode_query_value(&s, &mut out);
        }
    }
}
