//! Comma-separated header token lists (RFC 9110 §5.6.1) and the `token` grammar (RFC 9110 §5.6.2).
//!
//! Header fields such as `Connection`, `Upgrade` and `Sec-WebSocket-Protocol` carry lists like
//! `keep-alive, Upgrade`; a list may also be split across repeated header lines, which callers handle by
//! iterating [`super::Request::header_all`] and applying these helpers to each value.

/// Trims optional whitespace (SP and HTAB, RFC 9110 `OWS`) from both ends of `s`.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The non-empty elements of a comma-separated list, each trimmed of surrounding SP/HTAB. Empty elements
/// (`a,,b`, a leading or trailing comma) are skipped, as RFC 9110 §5.6.1 requires recipients to do.
pub fn token_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Whether the comma-separated list `value` contains `token`, compared ASCII case-insensitively.
pub fn has_token(value: &[u8], token: &str) -> bool {
    token_list(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `s` is a non-empty RFC 9110 `token` (only `tchar`s: ASCII letters, digits and
/// ``!#$%&'*+-.^_`|~``).
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"   ", b""),
            (b"\t a \t", b"a"),
            (b"a b", b"a b"),
            (b" x", b"x"),
            (b"x ", b"x"),
        ];
        for (input, want) in table {
            assert_eq!(
                trim_ows(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn token_list_table() {
        let table: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b",", &[]),
            (b" , ,", &[]),
            (b"Upgrade", &[b"Upgrade"]),
            (b"keep-alive, Upgrade", &[b"keep-alive", b"Upgrade"]),
            (b"keep-alive,Upgrade", &[b"keep-alive", b"Upgrade"]),
            (b",a,,b,", &[b"a", b"b"]),
            (b"\ta\t,\tb c ", &[b"a", b"b c"]),
        ];
        for (input, want) in table {
            let got: Vec<&[u8]> = token_list(input).collect();
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn has_token_table() {
        let table: &[(&[u8], &str, bool)] = &[
            (b"Upgrade", "upgrade", true),
            (b"UPGRADE", "upgrade", true),
            (b"keep-alive, Upgrade", "upgrade", true),
            (b"keep-alive,upgrade ", "upgrade", true),
            (b"keep-alive", "upgrade", false),
            (b"upgrade2", "upgrade", false),
            (b"upgrad", "upgrade", false),
            (b"up grade", "upgrade", false),
            (b"", "upgrade", false),
            (b"websocket", "websocket", true),
            (b"WebSocket", "websocket", true),
            (b"h2c, websocket", "websocket", true),
            (b"websocket/13", "websocket", false),
        ];
        for (input, token, want) in table {
            assert_eq!(
                has_token(input, token),
                *want,
                "{:?} ∋ {token}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn is_token_table() {
        let table: &[(&[u8], bool)] = &[
            (b"chat", true),
            (b"v1.chat.example", true),
            (b"a!#$%&'*+-.^_`|~9Z", true),
            (b"", false),
            (b"a b", false),
            (b"a,b", false),
            (b"a/b", false),
            (b"a\"", false),
            (b"caf\xc3\xa9", false),
        ];
        for (input, want) in table {
            assert_eq!(
                is_token(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
