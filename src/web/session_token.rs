//! Long-poll session tokens: a session id and its HMAC-SHA256 tag, so a
//! client can only name sessions this process handed out.
//!
//! The key is random per process: tokens do not outlive the process, and
//! neither do the sessions they name. Verification is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A long-poll session's id (random).
pub(crate) type SessionId = [u8; 16];

/// Bytes of the HMAC tag kept in a token (128 bits).
const TAG_BYTES: usize = 16;

pub(crate) struct SessionTokens {
    key: [u8; 32],
}

impl Default for SessionTokens {
    fn default() -> Self {
        SessionTokens {
            key: rand::random(),
        }
    }
}

impl SessionTokens {
    fn mac(&self, id: &SessionId) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(id);
        mac
    }

    /// `hex(id) "." hex(tag)`.
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        format!("{}.{}", hex(id), hex(&tag[..TAG_BYTES]))
    }

    /// The session id a token names, if this process signed it.
    pub fn verify(&self, token: &str) -> Option<SessionId> {
        let (id, tag) = token.split_once('.')?;
        let id: SessionId = unhex(id)?.try_into().ok()?;
        let tag = unhex(tag)?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.mac(&id).verify_truncated_left(&tag).ok()?;
        Some(id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_when_signed_by_us() {
        let tokens = SessionTokens::default();
        let id: SessionId = rand::random();
        let token = tokens.sign(&id);
        assert_eq!(tokens.verify(&token), Some(id));
        let other = SessionTokens::default();
        assert_eq!(other.verify(&token), None, "another process's key");
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(tokens.verify(&forged), None);
        for garbage in ["", ".", "abc", "zz.zz", "é.é", &token[..token.len() - 2]] {
            assert_eq!(tokens.verify(garbage), None, "{garbage:?}");
        }
    }
}
