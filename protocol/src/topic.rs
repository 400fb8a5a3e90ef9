//! Topic names: the validation rule every transport applies before a topic is subscribed to or published on, and
//! the stable hash that picks a topic's owner core.
//!
//! A topic name is 1 to [`MAX_TOPIC_LEN`] bytes, each one of `A-Z`, `a-z`, `0-9`, `.`, `_`, `:` or `-`. The set
//! is deliberately small: a valid name needs no escaping in JSON, in a URL path segment, in an SSE field or in a
//! log line, so every writer can copy it verbatim and every reader can borrow it from the input.
//!
//! ```
//! use ringcast_protocol::topic::{topic_hash, validate_topic, TopicError};
//! assert_eq!(validate_topic("prices:EUR-USD.v1_a"), Ok(()));
//! assert_eq!(validate_topic("a b"), Err(TopicError::InvalidChar));
//! let cores = 4;
//! let owner = topic_hash("prices:EUR-USD") % cores;
//! assert!(owner < cores);
//! ```

use core::fmt;

/// The longest valid topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// Why a topic name was refused. In every case the fault is the client's (subscriber or publisher) that sent the
/// name; answer `400 Bad Request` on HTTP, an `invalid_topic` error reply on WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty. Fault: the client.
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`] bytes. Fault: the client.
    TooLong,
    /// The name contains a byte outside `[A-Za-z0-9._:-]` (this includes every non-ASCII character, and a
    /// malformed percent-encoding in a URL path). Fault: the client.
    InvalidChar,
}

impl TopicError {
    /// The HTTP status to answer with: always `400 Bad Request`.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::Empty | Self::TooLong | Self::InvalidChar => 400,
        }
    }

    /// A short human-readable explanation that states the rule; static, so the error path never allocates.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::Empty => "topic is empty: a topic is 1-128 bytes of [A-Za-z0-9._:-]",
            Self::TooLong => "topic is too long: a topic is 1-128 bytes of [A-Za-z0-9._:-]",
            Self::InvalidChar => {
                "topic has an invalid character: a topic is 1-128 bytes of [A-Za-z0-9._:-]"
            }
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TopicError {}

/// `ALLOWED[b]` is true when byte `b` may appear in a topic name.
const ALLOWED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
        b += 1;
    }
    t
};

/// Whether `b` may appear in a topic name (`[A-Za-z0-9._:-]`).
#[inline]
#[must_use]
pub fn is_topic_byte(b: u8) -> bool {
    ALLOWED[usize::from(b)]
}

/// Checks that `name` is a valid topic name: 1 to [`MAX_TOPIC_LEN`] bytes of `[A-Za-z0-9._:-]`.
///
/// # Errors
/// [`TopicError::Empty`], [`TopicError::TooLong`] (checked before the characters) or
/// [`TopicError::InvalidChar`].
pub fn validate_topic(name: &str) -> Result<(), TopicError> {
    let b = name.as_bytes();
    if b.is_empty() {
        Err(TopicError::Empty)
    } else if b.len() > MAX_TOPIC_LEN {
        Err(TopicError::TooLong)
    } else if b.iter().all(|&c| is_topic_byte(c)) {
        Ok(())
    } else {
        Err(TopicError::InvalidChar)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable 64-bit hash of a topic name: FNV-1a (64-bit offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`) over the name's bytes. A topic's owner core is `topic_hash(name) % cores`.
///
/// **Stability guarantee**: this function is specified, not an implementation detail. It gives the same value on
/// every platform, build and release (no random seed, no `std` hasher), so every core, every process and every
/// external tool agrees on a topic's owner. Changing it is a breaking change of the deployment.
///
/// ```
/// assert_eq!(ringcast_protocol::topic::topic_hash("a"), 0xaf63_dc4c_8601_ec8c);
/// ```
#[must_use]
pub fn topic_hash(name: &str) -> u64 {
    name.as_bytes().iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation_table() {
        let long128 = "a".repeat(128);
        let long129 = "a".repeat(129);
        let table: &[(&str, Result<(), TopicError>)] = &[
            ("", Err(TopicError::Empty)),
            ("a", Ok(())),
            ("Z", Ok(())),
            ("0", Ok(())),
            (".", Ok(())),
            ("_", Ok(())),
            (":", Ok(())),
            ("-", Ok(())),
            ("AZaz09._:-", Ok(())),
            (&long128, Ok(())),
            (&long129, Err(TopicError::TooLong)),
            ("a b", Err(TopicError::InvalidChar)),
            ("a/b", Err(TopicError::InvalidChar)),
            ("é", Err(TopicError::InvalidChar)),
            ("a\0", Err(TopicError::InvalidChar)),
        ];
        for (name, want) in table {
            assert_eq!(validate_topic(name), *want, "{name:?}");
        }
        // 129 bytes with a bad character: the length is reported.
        assert_eq!(
            validate_topic(&format!("{}/", "a".repeat(128))),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn every_byte_classified() {
        for b in 0u8..=255 {
            let ok = b.is_ascii_alphanumeric() || b".:_-".contains(&b);
            assert_eq!(is_topic_byte(b), ok, "byte {b:#x}");
            if b.is_ascii() {
                let s = format!("ab{}cd", char::from(b));
                let want = if ok {
                    Ok(())
                } else {
                    Err(TopicError::InvalidChar)
                };
                assert_eq!(validate_topic(&s), want, "byte {b:#x}");
            }
        }
    }

    #[test]
    fn error_surface() {
        for e in [
            TopicError::Empty,
            TopicError::TooLong,
            TopicError::InvalidChar,
        ] {
            assert_eq!(e.http_status(), 400);
            assert!(e.to_string().contains("1-128 bytes of [A-Za-z0-9._:-]"));
        }
    }

    #[test]
    fn hash_is_fnv1a_64() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(topic_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(topic_hash("foobar"), 0x8594_4171_f739_67e8);
        // Pinned so an accidental change is caught.
        assert_eq!(topic_hash("chat"), 0xf2a3_8d91_0b5b_348b);
    }

    proptest! {
        #[test]
        fn generated_topics_are_valid(name in "[A-Za-z0-9._:-]{1,128}") {
            prop_assert_eq!(validate_topic(&name), Ok(()));
        }

        #[test]
        fn validity_matches_reference(name in any::<String>()) {
            let ok = !name.is_empty()
                && name.len() <= MAX_TOPIC_LEN
                && name.chars().all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c));
            prop_assert_eq!(validate_topic(&name).is_ok(), ok);
        }
    }
}
