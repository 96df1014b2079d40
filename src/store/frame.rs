//! Self-delimiting, checksummed records: `[len: u32 LE][crc32c: u32 LE][payload]`.
//!
//! The same framing holds journal records and snapshot files, so a torn write
//! (crash mid-append) or flipped bits are always detected by one reader.
//! Payloads are never empty, so a header of zeroes is no record: journal
//! segments are zero-filled ahead of their records, and reading stops there.

/// Bytes of header before each payload.
pub const HEADER: usize = 8;
/// Larger lengths are treated as corruption, not as a reason to allocate.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Appends one framed payload (never empty) to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty(), "an empty payload frames as zeroes");
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Where and why reading stopped before the end of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first byte not covered by a good frame.
    pub offset: usize,
    pub reason: &'static str,
}

/// Splits `buf` into frames, up to the end or to zeroed space that runs to
/// the end. Stops at the first damaged frame; everything from
/// `Damage::offset` on must be discarded.
pub fn decode_all(buf: &[u8]) -> (Vec<(usize, &[u8])>, Option<Damage>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if buf[at..].iter().take(HEADER).all(|&b| b == 0) {
            if buf[at..].iter().all(|&b| b == 0) {
                break;
            }
            return (
                frames,
                Some(Damage {
                    offset: at,
                    reason: "zeroes before the last record",
                }),
            );
        }
        match decode_one(&buf[at..]) {
            Ok((payload, used)) => {
                frames.push((at, payload));
                at += used;
            }
            Err(reason) => return (frames, Some(Damage { offset: at, reason })),
        }
    }
    (frames, None)
}

/// Decodes the frame at the start of `buf`: its payload and total length.
pub fn decode_one(buf: &[u8]) -> Result<(&[u8], usize), &'static str> {
    if buf.len() < HEADER {
        return Err("torn record header");
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Err("empty record");
    }
    if len > MAX_PAYLOAD {
        return Err("record length out of range");
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Err("torn record");
    };
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch");
    }
    Ok((payload, HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        for p in [&b"one"[..], b"2", b"three"] {
            encode(p, &mut buf);
        }
        let (frames, damage) = decode_all(&buf);
        assert_eq!(
            frames.iter().map(|f| f.1).collect::<Vec<_>>(),
            [&b"one"[..], b"2", b"three"]
        );
        assert!(damage.is_none());

        let torn = &buf[..buf.len() - 2];
        let (frames, damage) = decode_all(torn);
        assert_eq!(frames.len(), 2);
        assert_eq!(damage.unwrap().offset, frames[1].0 + HEADER + 1);

        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let (frames, damage) = decode_all(&flipped);
        assert_eq!(frames.len(), 2);
        assert_eq!(damage.unwrap().reason, "checksum mismatch");

        // Zeroed space after the records is where they end...
        let mut ahead = buf.clone();
        ahead.resize(buf.len() + 4096, 0);
        let (frames, damage) = decode_all(&ahead);
        assert_eq!(frames.len(), 3);
        assert!(damage.is_none());
        // ...but zeroes with a record after them are damage (a lost write).
        let mut hole = vec![0; 16];
        hole.extend_from_slice(&buf);
        assert_eq!(decode_all(&hole).1.unwrap().offset, 0);
        let mut short = buf.clone();
        short.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode_all(&short).0.len(), 3);
        let mut empty_with_crc = buf.clone();
        empty_with_crc.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            decode_all(&empty_with_crc).1.unwrap().reason,
            "empty record"
        );

        let mut huge = vec![0xff; 8];
        huge.extend_from_slice(b"x");
        assert_eq!(
            decode_all(&huge).1.unwrap().reason,
            "record length out of range"
        );
    }
}
