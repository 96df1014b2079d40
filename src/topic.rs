//! Topic names: `kind:name`, validated once at the edge.
//!
//! A [`Topic`] can only be built by [`Topic::parse`], so every topic that
//! reaches a room, the registry or the store is known to be well formed:
//! kind `[a-z][a-z0-9_-]{0,31}`, name `[A-Za-z0-9_.~-]{1,64}` without `..`.
//! Refusing `..` is defence in depth: code that turns a topic into a path
//! still must not trust it (see `store::paths`, which escapes every name).

use std::fmt;
use std::sync::Arc;

/// Longest kind, in bytes.
pub const MAX_KIND_LEN: usize = 32;
/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A validated `kind:name` topic. Cheap to clone (one `Arc`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    /// The whole topic text; `kind_len` splits it without a second allocation.
    full: Arc<str>,
    kind_len: usize,
}

/// Why a topic was refused; the `Display` text is what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic: expected kind:name")]
    MissingColon,
    #[error("invalid topic: kind must match [a-z][a-z0-9_-]{{0,31}}")]
    BadKind,
    #[error("invalid topic: name must match [A-Za-z0-9_.~-]{{1,64}} without ..")]
    BadName,
}

impl Topic {
    pub fn parse(text: &str) -> Result<Topic, TopicError> {
        let (kind, name) = text.split_once(':').ok_or(TopicError::MissingColon)?;
        if !is_valid_kind(kind) {
            return Err(TopicError::BadKind);
        }
        let name_ok = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-'))
            && !name.contains("..");
        if !name_ok {
            return Err(TopicError::BadName);
        }
        Ok(Topic {
            full: Arc::from(text),
            kind_len: kind.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn kind(&self) -> &str {
        &self.full[..self.kind_len]
    }

    pub fn name(&self) -> &str {
        &self.full[self.kind_len + 1..]
    }

    /// The shared text, for callers that keep it (frames, metrics labels).
    pub fn shared(&self) -> Arc<str> {
        self.full.clone()
    }
}

/// Whether `kind` is a valid room kind (also the file stem of its script).
pub fn is_valid_kind(kind: &str) -> bool {
    let bytes = kind.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_KIND_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.full)
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_kind_and_name() {
        let t = Topic::parse("chat:general").unwrap();
        assert_eq!((t.kind(), t.name()), ("chat", "general"));
        assert_eq!(Topic::parse("a:b:c"), Err(TopicError::BadName));
        let t = Topic::parse("my-kind_2:Room.name~x-1").unwrap();
        assert_eq!(t.name(), "Room.name~x-1");
    }

    #[test]
    fn refuses_bad_topics() {
        for bad in [
            "",
            "chat",
            ":x",
            "chat:",
            "Chat:x",
            "1chat:x",
            "chat:a/b",
            "chat:a\\b",
            "chat:a\0",
            "chat:a b",
            "chat:é",
            "chat:a:b",
            "chat:..",
            "chat:../x",
            "chat:a..b",
            "chat:..%2f",
            "chat:%2e%2e",
            "chat:a\u{202e}b",
            "chat:<script>",
            "../chat:x",
            "chat\0:x",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Topic::parse(&format!("chat:{}", "x".repeat(64))).is_ok());
        assert!(Topic::parse(&format!("chat:{}", "x".repeat(65))).is_err());
        assert!(Topic::parse(&format!("chat:{}", "x".repeat(1 << 20))).is_err());
        assert!(Topic::parse("chat:a.b").is_ok(), "a single dot is fine");
        assert!(Topic::parse(&format!("{}:x", "k".repeat(32))).is_ok());
        assert!(Topic::parse(&format!("{}:x", "k".repeat(33))).is_err());
    }
}
