//! Connection tokens: JSON Web Tokens signed with HMAC-SHA256 (`HS256`).
//!
//! With a secret configured (`ROOMHOST_SECRET`), every client must present
//! one; its `sub` claim is the connection's user. Only what roomhost needs
//! of RFC 7519 is implemented: the header must say `"alg":"HS256"` (any
//! other algorithm, `none` included, is refused before the signature is
//! looked at), `exp` is required, `nbf` is honoured when present, other
//! claims are ignored. The signature is compared in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The secret that signs connection tokens. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes; `None` if empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Secret> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(Secret(bytes))
    }

    /// A secret read from a file, without a trailing newline.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Secret> {
        let text = std::fs::read(path)?;
        let end = text
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        Secret::new(&text[..end]).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is empty", path.display()),
            )
        })
    }

    /// Shorter than SHA-256's block-sized recommendation (32 bytes): easier
    /// to guess offline from any token.
    pub fn is_weak(&self) -> bool {
        self.0.len() < 32
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a token was refused. The `Display` text is what the client reads in
/// the 403 body; [`AuthError::label`] is the metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: pass a token as the `token` connect param, the `base64url.bearer.phx.<token>` subprotocol or an `Authorization: Bearer` header"
    )]
    Missing,
    #[error("invalid token: {0}")]
    Malformed(&'static str),
    #[error("invalid token: algorithm {0:?} is not accepted (only HS256)")]
    Algorithm(String),
    #[error("invalid token: bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("invalid token: `sub` must be 1 to 64 printable characters")]
    Subject,
}

impl AuthError {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Algorithm(_) => "algorithm",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Subject => "subject",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`).
    pub user: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Payload {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// Longest token accepted, in bytes (far above any real one).
const MAX_TOKEN_BYTES: usize = 4096;

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A token for `user`, valid for `ttl` from now.
pub fn mint(secret: &Secret, user: &str, ttl: Duration) -> String {
    mint_at(secret, user, now_secs(), ttl)
}

fn mint_at(secret: &Secret, user: &str, now: i64, ttl: Duration) -> String {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = serde_json::json!({ "sub": user, "iat": now, "exp": now.saturating_add(ttl) });
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = secret.mac();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Checks a token's algorithm, signature and times; returns its claims.
pub fn verify(secret: &Secret, token: &str) -> Result<Claims, AuthError> {
    verify_at(secret, token, now_secs())
}

pub(crate) fn verify_at(secret: &Secret, token: &str, now: i64) -> Result<Claims, AuthError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not a JWT (header.payload.signature)"));
    };
    let header: Header = decode_json(header, "header")?;
    if header.alg != "HS256" {
        return Err(AuthError::Algorithm(header.alg.chars().take(32).collect()));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    let mut mac = secret.mac();
    mac.update(&token.as_bytes()[..header_payload_len(token)]);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::Signature)?;
    let claims: Payload = decode_json(payload, "payload")?;
    let exp = claims
        .exp
        .as_ref()
        .and_then(numeric_date)
        .ok_or(AuthError::Malformed("`exp` (a NumericDate) is required"))?;
    if now >= exp {
        return Err(AuthError::Expired);
    }
    if let Some(nbf) = &claims.nbf {
        let nbf = numeric_date(nbf).ok_or(AuthError::Malformed("`nbf` is not a NumericDate"))?;
        if now < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    let user = match claims.sub {
        Some(serde_json::Value::String(sub)) => sub,
        _ => return Err(AuthError::Subject),
    };
    let user = user.trim();
    if user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
        return Err(AuthError::Subject);
    }
    Ok(Claims {
        user: user.to_string(),
        exp,
    })
}

/// Bytes of `header.payload` (the signing input) in a three-part token.
fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// A NumericDate: seconds since the epoch, integer or not (fractions are
/// truncated).
fn numeric_date(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    what: &'static str,
) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        AuthError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "payload is not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        AuthError::Malformed(if what == "header" {
            "header is not a JSON object with `alg`"
        } else {
            "payload is not a JSON object"
        })
    })
}

/// The prefix of Phoenix's auth-token WebSocket subprotocol.
pub const SUBPROTOCOL_PREFIX: &str = "base64url.bearer.phx.";

/// The token carried in a `Sec-WebSocket-Protocol` value list, if any.
/// phoenix.js encodes it with `btoa` minus padding; both base64 alphabets
/// are accepted.
pub fn from_subprotocols(header: &str) -> Option<String> {
    header
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(SUBPROTOCOL_PREFIX))
        .map(|encoded| encoded.trim_end_matches('='))
        .and_then(|encoded| {
            URL_SAFE_NO_PAD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Parses a duration such as `90`, `90s`, `15m`, `1h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unknown unit (s, m, h or d)")),
    };
    let secs = n
        .checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{text:?}: must be positive and not absurdly long"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("s3cret").unwrap()
    }

    fn sign(header: &str, payload: &str, key: &Secret) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = key.mac();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let token = mint_at(&secret(), "alice", 1000, Duration::from_secs(60));
        let claims = verify_at(&secret(), &token, 1000).unwrap();
        assert_eq!(
            claims,
            Claims {
                user: "alice".into(),
                exp: 1060
            }
        );
        assert_eq!(verify_at(&secret(), &token, 1059).unwrap().user, "alice");
        assert_eq!(verify_at(&secret(), &token, 1060), Err(AuthError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = Secret::new("other").unwrap();
        let token = mint_at(&other, "alice", 1000, Duration::from_secs(60));
        assert_eq!(
            verify_at(&secret(), &token, 1000),
            Err(AuthError::Signature)
        );
        // A payload swapped under a valid signature.
        let good = mint_at(&secret(), "alice", 1000, Duration::from_secs(60));
        let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"root","exp":99999}"#);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            verify_at(&secret(), &forged, 1000),
            Err(AuthError::Signature)
        );
    }

    #[test]
    fn only_hs256_is_accepted() {
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":2000}"#)
        );
        assert_eq!(
            verify_at(&secret(), &none, 1000),
            Err(AuthError::Algorithm("none".into()))
        );
        let hs512 = sign(r#"{"alg":"HS512"}"#, r#"{"sub":"a","exp":2000}"#, &secret());
        assert_eq!(
            verify_at(&secret(), &hs512, 1000),
            Err(AuthError::Algorithm("HS512".into()))
        );
    }

    #[test]
    fn claims_are_checked() {
        let s = secret();
        let h = r#"{"alg":"HS256"}"#;
        let no_exp = sign(h, r#"{"sub":"a"}"#, &s);
        assert!(matches!(
            verify_at(&s, &no_exp, 1000),
            Err(AuthError::Malformed(_))
        ));
        let nbf = sign(h, r#"{"sub":"a","exp":2000,"nbf":1500}"#, &s);
        assert_eq!(verify_at(&s, &nbf, 1000), Err(AuthError::NotYetValid));
        assert_eq!(verify_at(&s, &nbf, 1500).unwrap().user, "a");
        let float_exp = sign(h, r#"{"sub":"a","exp":2000.5}"#, &s);
        assert_eq!(verify_at(&s, &float_exp, 1000).unwrap().exp, 2000);
        for sub in [
            r#"{"exp":2000}"#,
            r#"{"sub":"","exp":2000}"#,
            r#"{"sub":42,"exp":2000}"#,
            r#"{"sub":"a\u0007b","exp":2000}"#,
        ] {
            let token = sign(h, sub, &s);
            assert_eq!(
                verify_at(&s, &token, 1000),
                Err(AuthError::Subject),
                "{sub}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for garbage in [
            "x",
            "a.b",
            "a.b.c.d",
            "...",
            "é.é.é",
            "e30.e30.e30",
            "!!!.???.###",
        ] {
            let err = verify_at(&secret(), garbage, 1000).unwrap_err();
            assert!(
                matches!(err, AuthError::Malformed(_) | AuthError::Algorithm(_)),
                "{garbage:?}: {err:?}"
            );
        }
        assert_eq!(verify_at(&secret(), " ", 1000), Err(AuthError::Missing));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify_at(&secret(), &long, 1000),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn subprotocol_tokens_decode_from_either_alphabet() {
        let token = mint_at(&secret(), "bob", 1000, Duration::from_secs(60));
        let urlsafe = format!(
            "phoenix, {SUBPROTOCOL_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&token)
        );
        assert_eq!(from_subprotocols(&urlsafe).as_deref(), Some(token.as_str()));
        let standard = base64::engine::general_purpose::STANDARD.encode("a?>~b");
        let header = format!("{SUBPROTOCOL_PREFIX}{standard}");
        assert_eq!(from_subprotocols(&header).as_deref(), Some("a?>~b"));
        assert_eq!(from_subprotocols("phoenix"), None);
        assert_eq!(from_subprotocols(&format!("{SUBPROTOCOL_PREFIX}@@")), None);
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "h", "0", "1y", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
        assert!(Secret::new("").is_none());
        assert!(secret().is_weak());
        assert!(!Secret::new([7u8; 32]).unwrap().is_weak());
    }
}
