//! Token authentication and per-topic authorization: verifying a client's JWT and reading its permissions.
//!
//! A [`Verifier`] is built once from the configured [`AuthKey`] (an HS256 secret, or an Ed25519 / RS256 public key
//! in PEM) and checks a token's signature with the `jsonwebtoken` crate. Time claims are checked here, against a
//! `now` the caller passes in (Unix seconds), so that the rules are pure and testable: `exp` is required and the
//! token is refused from that second on; `nbf`, when present, refuses it before that second. There is no leeway.
//!
//! The claims the server reads:
//! ```json
//! {"sub": "alice", "exp": 1700000000, "nbf": 1690000000,
//!  "ringcast": {"subscribe": ["prices.*", "news"], "publish": ["chat.room1"], "direct": ["*"]}}
//! ```
//! Every pattern is an exact name, a prefix ending in `.*`, or `*` ([`crate::config::topic_matches`]). `direct`
//! lists the users (their `sub`) the holder may send direct messages to. A missing list allows nothing.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::topic_matches;

/// The key material tokens are verified with.
#[derive(Clone)]
pub enum AuthKey {
    /// An HMAC secret: tokens are signed with HS256.
    Secret(Vec<u8>),
    /// A public key in PEM (`-----BEGIN PUBLIC KEY-----`): Ed25519 (tokens signed with EdDSA) or RSA (RS256).
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            AuthKey::Secret(_) => f.write_str("AuthKey::Secret(..)"),
            AuthKey::PublicKeyPem(_) => f.write_str("AuthKey::PublicKeyPem(..)"),
        }
    }
}

/// Why a token was refused. Every variant is the client's fault and answers `401` with `WWW-Authenticate: Bearer`
/// (before any upgrade), or closes a long-lived connection with 1008 ([`AuthError::Expired`] at expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header and no `token` query parameter. Fault: the client.
    Missing,
    /// The token is not a well-formed JWT, or its claims lack `sub`/`exp` or have the wrong types. Fault: the
    /// client.
    Malformed,
    /// The signature does not verify with the server's key, or the token uses another algorithm. Fault: the
    /// client (or a forger).
    BadSignature,
    /// `exp` is reached. Fault: the client (refresh the token and reconnect).
    Expired,
    /// `nbf` is in the future. Fault: the client.
    NotYetValid,
}

impl AuthError {
    /// The HTTP status to answer with: always 401.
    #[must_use]
    pub fn http_status(self) -> u16 {
        401
    }

    /// The WebSocket close code when this ends an open connection: 1008 (policy violation).
    #[must_use]
    pub fn close_code(self) -> u16 {
        1008
    }

    /// A short explanation for the error body (static, no allocation).
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "a bearer token is required (Authorization header or ?token=)",
            AuthError::Malformed => "the token is not a valid JWT with sub and exp claims",
            AuthError::BadSignature => "the token's signature does not verify",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet (nbf)",
        }
    }

    /// The RFC 6750 `error` attribute for the `WWW-Authenticate` header.
    #[must_use]
    pub fn www_authenticate(self) -> &'static str {
        match self {
            AuthError::Missing => "Bearer realm=\"ringcast\"",
            _ => "Bearer realm=\"ringcast\", error=\"invalid_token\"",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// What a token allows, as patterns (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Permissions {
    /// Topics the holder may subscribe to (WebSocket `sub`, SSE, polling).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topics the holder may publish on (WebSocket `pub`, HTTP publish).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Users the holder may send direct messages to.
    #[serde(default)]
    pub direct: Vec<String>,
}

/// A verified token: who the client is, until when, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub user: Arc<str>,
    /// The `exp` claim, Unix seconds.
    pub expires: u64,
    /// The `ringcast` claim.
    pub permissions: Permissions,
}

impl Identity {
    /// May the holder subscribe to `topic`?
    #[must_use]
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.permissions
            .subscribe
            .iter()
            .any(|p| topic_matches(p, topic))
    }

    /// May the holder publish on `topic`?
    #[must_use]
    pub fn may_publish(&self, topic: &str) -> bool {
        self.permissions
            .publish
            .iter()
            .any(|p| topic_matches(p, topic))
    }

    /// May the holder send a direct message to `user`?
    #[must_use]
    pub fn may_direct(&self, user: &str) -> bool {
        self.permissions
            .direct
            .iter()
            .any(|p| topic_matches(p, user))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    ringcast: Permissions,
}

/// Verifies tokens against one key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier; fails (with a message for the operator) when the key is unusable.
    pub fn new(key: &AuthKey) -> Result<Self, String> {
        let (key, alg) = match key {
            AuthKey::Secret(s) if s.len() < 16 => {
                return Err("the auth secret must be at least 16 bytes".into());
            }
            AuthKey::Secret(s) => (
                DecodingKey::from_secret(s).map_err(|e| format!("auth secret: {e}"))?,
                Algorithm::HS256,
            ),
            AuthKey::PublicKeyPem(pem) => match DecodingKey::from_ed_pem(pem) {
                Ok(k) => (k, Algorithm::EdDSA),
                Err(_) => match DecodingKey::from_rsa_pem(pem) {
                    Ok(k) => (k, Algorithm::RS256),
                    Err(e) => {
                        return Err(format!(
                            "the auth public key is neither an Ed25519 nor an RSA public key in PEM: {e}"
                        ));
                    }
                },
            },
        };
        let mut validation = Validation::new(alg);
        // Time claims are checked by `verify` against the caller's clock; audience and issuer are not used.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        Ok(Verifier { key, validation })
    }

    /// Checks `token`'s signature and claims at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    AuthError::BadSignature
                }
                _ => AuthError::Malformed,
            },
        )?;
        let c = data.claims;
        if c.sub.is_empty() {
            return Err(AuthError::Malformed);
        }
        if now >= c.exp {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| now < nbf) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Identity {
            user: Arc::from(c.sub),
            expires: c.exp,
            permissions: c.ringcast,
        })
    }
}

/// The token a request carries: the `Authorization: Bearer` header first, else the `token` query parameter (for
/// EventSource and browsers' WebSocket, which cannot set headers). The scheme name is case-insensitive.
#[must_use]
pub fn request_token<'a>(
    authorization: Option<&'a [u8]>,
    query: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(h) = authorization {
        let h = std::str::from_utf8(h).ok()?.trim();
        let (scheme, token) = h.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        return (!token.is_empty()).then_some(token);
    }
    query.filter(|t| !t.is_empty())
}

/// Seconds since the Unix epoch, from the system clock (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn hs(claims: &serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(&AuthKey::Secret(SECRET.to_vec())).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": NOW + 60,
               "ringcast": {"subscribe": ["prices.*", "news"], "publish": ["chat.room1"], "direct": ["bob"]}})
    }

    #[test]
    fn valid_hs256_token() {
        let id = verifier().verify(&hs(&claims(), SECRET), NOW).unwrap();
        assert_eq!(&*id.user, "alice");
        assert_eq!(id.expires, NOW + 60);
        assert!(id.may_subscribe("prices.eur"));
        assert!(id.may_subscribe("news"));
        assert!(!id.may_subscribe("prices"));
        assert!(!id.may_subscribe("newsx"));
        assert!(id.may_publish("chat.room1"));
        assert!(!id.may_publish("chat.room2"));
        assert!(!id.may_publish("news"));
        assert!(id.may_direct("bob"));
        assert!(!id.may_direct("carol"));
    }

    #[test]
    fn time_claims() {
        let v = verifier();
        let table: &[(serde_json::Value, u64, Result<(), AuthError>)] = &[
            (
                json!({"sub": "a", "exp": NOW}),
                NOW,
                Err(AuthError::Expired),
            ),
            (json!({"sub": "a", "exp": NOW + 1}), NOW, Ok(())),
            (
                json!({"sub": "a", "exp": NOW + 1}),
                NOW + 1,
                Err(AuthError::Expired),
            ),
            (
                json!({"sub": "a", "exp": NOW + 9, "nbf": NOW + 1}),
                NOW,
                Err(AuthError::NotYetValid),
            ),
            (json!({"sub": "a", "exp": NOW + 9, "nbf": NOW}), NOW, Ok(())),
            (json!({"sub": "a"}), NOW, Err(AuthError::Malformed)),
            (json!({"exp": NOW + 9}), NOW, Err(AuthError::Malformed)),
            (
                json!({"sub": "", "exp": NOW + 9}),
                NOW,
                Err(AuthError::Malformed),
            ),
            (
                json!({"sub": 5, "exp": NOW + 9}),
                NOW,
                Err(AuthError::Malformed),
            ),
            (
                json!({"sub": "a", "exp": "soon"}),
                NOW,
                Err(AuthError::Malformed),
            ),
            (
                json!({"sub": "a", "exp": NOW + 9, "ringcast": {"subscribe": "x"}}),
                NOW,
                Err(AuthError::Malformed),
            ),
        ];
        for (c, now, want) in table {
            let got = v.verify(&hs(c, SECRET), *now).map(|_| ());
            assert_eq!(&got, want, "{c} at {now}");
        }
    }

    #[test]
    fn missing_permissions_allow_nothing() {
        let id = verifier()
            .verify(&hs(&json!({"sub": "a", "exp": NOW + 9}), SECRET), NOW)
            .unwrap();
        assert!(!id.may_subscribe("x"));
        assert!(!id.may_publish("x"));
        assert!(!id.may_direct("x"));
    }

    #[test]
    fn forged_and_garbage_tokens() {
        let v = verifier();
        let other = hs(&claims(), b"another-secret-of-32-bytes......");
        assert_eq!(v.verify(&other, NOW), Err(AuthError::BadSignature));
        let good = hs(&claims(), SECRET);
        // Tamper with the payload: the signature no longer matches.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_payload = base64_url(br#"{"sub":"root","exp":99999999999}"#);
        parts[1] = &forged_payload;
        assert_eq!(
            v.verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
        // alg "none" is never accepted.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            base64_url(br#"{"sub":"a","exp":99999999999}"#)
        );
        assert!(v.verify(&none, NOW).is_err());
        for junk in ["", "a", "a.b", "a.b.c", "....", "\u{0}.\u{0}.\u{0}"] {
            assert!(v.verify(junk, NOW).is_err(), "{junk:?}");
        }
    }

    fn base64_url(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn ed25519_and_rs256_public_keys() {
        let cases = [
            (
                include_str!("../tests/keys/ed25519_public.pem"),
                EncodingKey::from_ed_pem(include_bytes!("../tests/keys/ed25519_private.pem"))
                    .unwrap(),
                Algorithm::EdDSA,
            ),
            (
                include_str!("../tests/keys/rsa_public.pem"),
                EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rsa_private.pem")).unwrap(),
                Algorithm::RS256,
            ),
        ];
        for (public, private, alg) in cases {
            let v = Verifier::new(&AuthKey::PublicKeyPem(public.as_bytes().to_vec())).unwrap();
            let token = encode(&Header::new(alg), &claims(), &private).unwrap();
            assert_eq!(&*v.verify(&token, NOW).unwrap().user, "alice");
            // An HS256 token made with the public key as the secret (algorithm confusion) is refused.
            let confused = hs(&claims(), public.as_bytes());
            assert_eq!(v.verify(&confused, NOW), Err(AuthError::BadSignature));
        }
        assert!(Verifier::new(&AuthKey::PublicKeyPem(b"not a key".to_vec())).is_err());
        assert!(Verifier::new(&AuthKey::Secret(b"short".to_vec())).is_err());
    }

    #[test]
    fn token_sources() {
        type Case<'a> = (Option<&'a [u8]>, Option<&'a str>, Option<&'a str>);
        let table: &[Case<'_>] = &[
            (Some(b"Bearer abc"), None, Some("abc")),
            (Some(b"bearer  abc "), Some("q"), Some("abc")),
            (Some(b"Basic abc"), Some("q"), None),
            (Some(b"Bearer "), None, None),
            (Some(b"Bearer"), None, None),
            (None, Some("q"), Some("q")),
            (None, Some(""), None),
            (None, None, None),
            (Some(b"Bearer \xff"), None, None),
        ];
        for (h, q, want) in table {
            assert_eq!(request_token(*h, *q), *want, "{h:?} {q:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = AuthKey::Secret(b"super-secret-value".to_vec());
        assert!(!format!("{k:?}").contains("super"));
    }
}
