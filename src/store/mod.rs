//! Durable room state: an append-only journal of events plus snapshots.
//!
//! The room task is the only writer of its store. It appends framed event
//! records synchronously (a `write` into the page cache) and hands the slow
//! parts — fdatasync, snapshot files — to blocking jobs, so a fsync in flight
//! never stops the room from handling the next events (group commit).
//!
//! With durability `off` the same records go to a [`MemoryJournal`] owned by
//! the room's registry slot, so state still survives room crashes.

pub mod disk;
pub mod frame;
pub mod memory;
pub mod paths;

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use disk::DiskJournal;
pub use memory::MemoryJournal;

use crate::topic::Topic;

/// What kind of hook an event ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Join,
    Message,
    Leave,
    /// A leave whose `onLeave` threw: replay only drops the member.
    Drop,
}

impl EventKind {
    /// The hook's name, as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Message => "message",
            EventKind::Leave => "leave",
            EventKind::Drop => "drop",
        }
    }
}

/// The connection identity recorded with an event.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnRecord<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    #[serde(borrow)]
    pub meta: &'a RawValue,
}

/// One journal record: everything replay needs to run the hook again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event<'a> {
    pub seq: u64,
    pub kind: EventKind,
    /// Milliseconds since the epoch; what `Date.now()` returned.
    pub at: i64,
    /// Seed of `Math.random()` / `crypto.randomUUID()` for this event.
    pub seed: u64,
    #[serde(borrow)]
    pub conn: ConnRecord<'a>,
    /// The event name of a message.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub event: Option<Cow<'a, str>>,
    /// Join params, message payload, or the leave reason (a JSON string).
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl<'a> Event<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Event<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Appends this event, framed, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let json = serde_json::to_vec(self).expect("events serialize");
        frame::encode(&json, out);
    }
}

/// A snapshot: the room's JS state as of `seq`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    pub seq: u64,
    pub at: i64,
    /// Code version that produced it.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// `{"members": [...], "state": <snapshot()>}` from the room's JS.
    #[serde(borrow)]
    pub room: &'a RawValue,
}

impl<'a> Snapshot<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Snapshot<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshots serialize")
    }
}

/// What survived on the store: the newest good snapshot and the events after
/// it, in order. Payloads are unframed JSON, decoded by the caller.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Vec<u8>>,
    pub events: Vec<Vec<u8>>,
    /// Sequence number of the last event (or snapshot) recovered.
    pub last_seq: u64,
    /// Damage found and repaired, for the log.
    pub repairs: Vec<String>,
}

/// A slow store operation for a blocking thread.
pub type Job = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// One room's journal and snapshots, on disk or in memory.
pub enum Store {
    Disk(DiskJournal),
    Memory(Arc<Mutex<MemoryJournal>>),
}

impl Store {
    pub fn disk(data_dir: &Path, topic: &Topic) -> Store {
        Store::Disk(DiskJournal::new(paths::room_dir(
            data_dir,
            topic.kind(),
            topic.name(),
        )))
    }

    /// Reads what survived, repairing damage. Events after `keep_upto` are
    /// discarded: after a room crash they were never acknowledged.
    pub fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        match self {
            Store::Disk(d) => d.recover(keep_upto),
            Store::Memory(m) => Ok(lock(m).recover(keep_upto)),
        }
    }

    /// Appends framed records of consecutive events starting at `first_seq`.
    pub fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
        match self {
            Store::Disk(d) => d.append(framed, first_seq),
            Store::Memory(m) => lock(m).append(framed, first_seq),
        }
    }

    /// The fsync that makes everything appended so far durable, if any is due.
    pub fn sync_job(&mut self) -> Option<Job> {
        match self {
            Store::Disk(d) => d.sync_job(),
            Store::Memory(_) => None,
        }
    }

    /// Starts a new journal segment at the next append (after a snapshot).
    pub fn rotate(&mut self) {
        if let Store::Disk(d) = self {
            d.rotate();
        }
    }

    /// Writes a snapshot atomically, then drops what it makes obsolete.
    pub fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job {
        match self {
            Store::Disk(d) => d.snapshot_job(seq, snapshot),
            Store::Memory(m) => {
                let m = m.clone();
                Box::new(move || {
                    lock(&m).snapshot(seq, snapshot);
                    Ok(())
                })
            }
        }
    }

    /// Journal and snapshot bytes held.
    pub fn bytes(&self) -> u64 {
        match self {
            Store::Disk(d) => d.bytes(),
            Store::Memory(m) => lock(m).bytes(),
        }
    }

    pub fn is_durable(&self) -> bool {
        matches!(self, Store::Disk(_))
    }
}

fn lock(m: &Mutex<MemoryJournal>) -> std::sync::MutexGuard<'_, MemoryJournal> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
