//! Room directories and file names. The topic is never trusted as a path:
//! every byte outside `[a-z0-9_-]` is escaped as `~xx`, so names like `..`,
//! `a/b` or `Room` vs `room` map to distinct, harmless directory names even
//! on case-insensitive file systems, and even if topic validation were
//! bypassed.

use std::path::{Path, PathBuf};

/// Escapes one path component.
pub fn escape(text: &str) -> String {
    if text.is_empty() {
        return "~".to_string();
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    out
}

/// Reverses [`escape`]; `None` for names it cannot have produced.
pub fn unescape(name: &str) -> Option<String> {
    if name == "~" {
        return Some(String::new());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `<data>/rooms/<kind>/<name>`, both escaped.
pub fn room_dir(data_dir: &Path, kind: &str, name: &str) -> PathBuf {
    data_dir.join("rooms").join(escape(kind)).join(escape(name))
}

pub fn segment_name(start_seq: u64) -> String {
    format!("journal-{start_seq:020}.log")
}

pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:020}.snap")
}

/// Parses `journal-<seq>.log` or `snapshot-<seq>.snap`.
pub fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix("journal-") {
        (FileKind::Segment, rest.strip_suffix(".log")?)
    } else if let Some(rest) = name.strip_prefix("snapshot-") {
        (FileKind::Snapshot, rest.strip_suffix(".snap")?)
    } else {
        return None;
    };
    (rest.len() == 20)
        .then(|| rest.parse().ok())
        .flatten()
        .map(|seq| (kind, seq))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Segment,
    Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_safe_and_reversible() {
        for name in [
            "general", "..", ".", "a/b", "a\\b", "Room", "room", "x~2e", "", "é\0",
        ] {
            let e = escape(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
                "{e}"
            );
            assert!(!e.is_empty() && e != "." && e != "..");
            assert_eq!(unescape(&e).as_deref(), Some(name));
        }
        assert_ne!(escape("Room"), escape("room"));
        let dir = room_dir(Path::new("/d"), "chat", "../../x");
        assert!(dir.starts_with("/d/rooms/chat/"));
        assert_eq!(dir.components().count(), 5);
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_name(&segment_name(42)), Some((FileKind::Segment, 42)));
        assert_eq!(parse_name(&snapshot_name(7)), Some((FileKind::Snapshot, 7)));
        assert_eq!(parse_name("journal-1.log"), None);
        assert_eq!(
            parse_name("snapshot-00000000000000000007.snap.corrupt"),
            None
        );
    }
}
