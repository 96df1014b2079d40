//! The store of durability `off`: the same records, kept in process memory.
//! Owned by the room's registry slot (and parked by the registry while the
//! room is stopped), so a room crash or idle stop loses nothing; a process
//! exit loses everything.

use super::{Recovered, frame};

#[derive(Debug, Default)]
pub struct MemoryJournal {
    snapshot: Option<(u64, Vec<u8>)>,
    /// Unframed event payloads after the snapshot, with their seq.
    events: Vec<(u64, Vec<u8>)>,
    bytes: u64,
}

impl MemoryJournal {
    /// What survived, without dropping anything.
    pub fn read(&self, keep_upto: Option<u64>) -> Recovered {
        let snapshot_seq = self.snapshot.as_ref().map_or(0, |s| s.0);
        let events: Vec<&(u64, Vec<u8>)> = self
            .events
            .iter()
            .filter(|(seq, _)| keep_upto.is_none_or(|limit| *seq <= limit))
            .collect();
        Recovered {
            snapshot: self.snapshot.as_ref().map(|s| s.1.clone()),
            last_seq: events.last().map_or(snapshot_seq, |e| e.0),
            events: events.into_iter().map(|e| e.1.clone()).collect(),
            repairs: Vec::new(),
        }
    }

    pub fn recover(&mut self, keep_upto: Option<u64>) -> Recovered {
        let mut repairs = Vec::new();
        if let Some(limit) = keep_upto {
            let before = self.events.len();
            self.events.retain(|(seq, _)| *seq <= limit);
            let dropped = before - self.events.len();
            if dropped > 0 {
                repairs.push(format!(
                    "dropped {dropped} unacknowledged events after seq {limit}"
                ));
            }
        }
        let snapshot_seq = self.snapshot.as_ref().map_or(0, |s| s.0);
        Recovered {
            snapshot: self.snapshot.as_ref().map(|s| s.1.clone()),
            events: self.events.iter().map(|e| e.1.clone()).collect(),
            last_seq: self.events.last().map_or(snapshot_seq, |e| e.0),
            repairs,
        }
    }

    /// Takes framed records of consecutive events starting at `first_seq`
    /// (what the disk journal would write) and keeps their payloads.
    pub fn append(&mut self, framed: &[u8], first_seq: u64) -> std::io::Result<()> {
        let (frames, damage) = frame::decode_all(framed);
        if let Some(d) = damage {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                d.reason,
            ));
        }
        for (seq, (_, payload)) in (first_seq..).zip(frames) {
            self.bytes += payload.len() as u64;
            self.events.push((seq, payload.to_vec()));
        }
        Ok(())
    }

    pub fn snapshot(&mut self, seq: u64, snapshot: Vec<u8>) {
        self.events.retain(|(s, _)| *s > seq);
        self.bytes =
            snapshot.len() as u64 + self.events.iter().map(|e| e.1.len() as u64).sum::<u64>();
        self.snapshot = Some((seq, snapshot));
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
