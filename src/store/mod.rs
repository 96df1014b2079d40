//! Durable room state: an append-only journal of events plus snapshots.
//!
//! The room task is the only writer of its store. It appends framed event
//! records synchronously (a `write` into the page cache) and hands the slow
//! parts — fdatasync, snapshot files — to blocking jobs, so a fsync in flight
//! never stops the room from handling the next events (group commit).
//!
//! With durability `off` the same records go to a [`MemoryJournal`] owned by
//! the room's registry slot, so state still survives room crashes.
//!
//! [`Store`] is the narrow interface the room uses (recover, append, sync,
//! snapshot): a second backend implements it without touching the room.

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
    /// A timer fired (`event` is its name, `data` `{"late_ms"}`).
    Timer,
    /// A message from another room (with its `origin`): runs `onMessage`.
    RoomMessage,
    /// A message from another room that kept failing, dropped: replay only
    /// notes it as handled.
    RoomMessageDrop,
    /// A firing whose `onTimer` threw: replay only drops the timer.
    TimerDrop,
    /// An HTTP request (`data` is its description).
    Request,
    /// A message with a binary payload: `data` is a JSON string holding
    /// the bytes in standard base64, decoded byte for byte on replay.
    BinaryMessage,
}

impl EventKind {
    /// The hook's name, as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Message => "message",
            EventKind::Leave => "leave",
            EventKind::Drop => "drop",
            EventKind::Timer => "timer",
            EventKind::RoomMessage => "room_message",
            EventKind::RoomMessageDrop => "room_message_drop",
            EventKind::TimerDrop => "timer_drop",
            EventKind::Request => "request",
            EventKind::BinaryMessage => "binary_message",
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
    /// For a message from another room (whose topic is the conn's `user`):
    /// which of the sender's sends it is, so the target handles each once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The `data` of a [`EventKind::BinaryMessage`]: the bytes as a JSON string
/// in standard base64 (a journal record is JSON).
pub fn binary_data(bytes: &[u8]) -> Box<RawValue> {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    // Base64 has no character JSON escapes, so quoting it is the literal.
    RawValue::from_string(format!("\"{text}\"")).expect("a base64 string is a JSON string")
}

/// The bytes [`binary_data`] recorded.
pub fn binary_from_data(data: &RawValue) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let text: &str = serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())
}

/// Which send of a sending room a message is: the seq of the sender's event
/// and its index among that event's sends. Ordered as the sender sent them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub seq: u64,
    pub idx: u32,
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
    /// The host's own state of the room, kept with it: messages to other
    /// rooms not yet acknowledged, and which messages from others it has
    /// handled (absent in snapshots of versions without them).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a RawValue>,
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

/// One room's journal and snapshots: the seam a second backend implements.
/// The room task is its only user; it calls the fast operations inline and
/// runs the [`Job`]s it is handed (fsyncs, snapshot files) on a blocking
/// thread, so a slow store never stops the room from handling events.
pub trait Store: Send {
    /// Reads what survived, repairing damage. Events after `keep_upto` are
    /// discarded: after a room crash they were never acknowledged.
    fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered>;

    /// What [`Store::recover`] would return, read without changing anything:
    /// for rebuilding a room while its storage refuses writes.
    fn read(&self, keep_upto: Option<u64>) -> io::Result<Recovered>;

    /// A job that writes and syncs a small probe where the journal lives:
    /// whether the storage takes writes again after a fault.
    fn probe_job(&mut self) -> Job;

    /// Appends framed records of consecutive events starting at `first_seq`.
    fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()>;

    /// The job that makes everything appended so far durable, if any is due.
    fn sync_job(&mut self) -> Option<Job>;

    /// Starts a new journal segment at the next append (after a snapshot).
    fn rotate(&mut self) {}

    /// Writes a snapshot of the state as of `seq` atomically, then drops
    /// what it makes obsolete.
    fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job;

    /// Journal and snapshot bytes held.
    fn bytes(&self) -> u64;

    /// Records when the room must run again although nobody joins it (a
    /// timer, messages to send), for a restarted server to start it then;
    /// made durable by the next sync job. `None` clears it.
    fn set_wakeup(&mut self, _at: Option<i64>) -> io::Result<()> {
        Ok(())
    }

    /// Cancelled when the room must stop at once because this node lost it
    /// (a store of a [`Backend`] whose lease ran out); `None` for stores
    /// that are never taken away.
    fn lost(&self) -> Option<tokio_util::sync::CancellationToken> {
        None
    }
}

/// Where rooms' stores live when they are not on this machine's disk
/// (cluster mode, see `crate::cluster`): it opens a room's store, and says
/// which node owns a room. A store it opens may refuse with an
/// [`OwnershipError`] (inside an `io::Error`, see [`ownership_error`]).
pub trait Backend: Send + Sync {
    /// The store of `topic` for a room about to start on this node.
    fn open(&self, topic: &Topic) -> Box<dyn Store>;
    /// This node's name.
    fn node(&self) -> &str;
    /// The node that owns `topic` now, if any (a lookup over the network).
    fn owner<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> std::pin::Pin<Box<dyn Future<Output = io::Result<Option<String>>> + Send + 'a>>;
}

/// Why a store of a [`Backend`] refuses to serve its room: another node
/// owns it. Carried inside an `io::Error` (see [`ownership_error`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// Another live node holds the room's lease.
    #[error("room owned by node {node}")]
    NotOwner { node: String },
    /// This node owned the room and does no longer: an append was refused
    /// because the journal moved on (another node appended), or the lease
    /// could not be renewed in time.
    #[error("ownership lost: {0}")]
    Lost(String),
}

impl OwnershipError {
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// The ownership refusal inside `error`, if it is one.
pub fn ownership_error(error: &io::Error) -> Option<&OwnershipError> {
    error.get_ref()?.downcast_ref::<OwnershipError>()
}

/// Wraps each room's durable store as it opens (see
/// [`crate::HostBuilder::wrap_store`]): instrumentation, or a test's faults.
pub type StoreLayer = Arc<dyn Fn(&Topic, Box<dyn Store>) -> Box<dyn Store> + Send + Sync>;

/// The store of one room: the backend's (cluster mode), on disk under
/// `data_dir`, or (durability `off`) the in-memory journal its registry
/// slot keeps across crashes.
pub fn open(
    data_dir: &Path,
    topic: &Topic,
    memory: Option<&Arc<Mutex<MemoryJournal>>>,
    backend: Option<&Arc<dyn Backend>>,
) -> Box<dyn Store> {
    if let Some(backend) = backend {
        return backend.open(topic);
    }
    match memory {
        Some(memory) => Box::new(SharedMemory(memory.clone())),
        None => Box::new(DiskJournal::new(paths::room_dir(
            data_dir,
            topic.kind(),
            topic.name(),
        ))),
    }
}

impl Store for DiskJournal {
    fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        DiskJournal::recover(self, keep_upto)
    }

    fn read(&self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        DiskJournal::read_only(self.dir().to_path_buf()).recover(keep_upto)
    }

    fn probe_job(&mut self) -> Job {
        DiskJournal::probe_job(self)
    }

    fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
        DiskJournal::append(self, framed, first_seq)
    }

    fn sync_job(&mut self) -> Option<Job> {
        DiskJournal::sync_job(self)
    }

    fn rotate(&mut self) {
        DiskJournal::rotate(self);
    }

    fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job {
        DiskJournal::snapshot_job(self, seq, snapshot)
    }

    fn bytes(&self) -> u64 {
        DiskJournal::bytes(self)
    }

    fn set_wakeup(&mut self, at: Option<i64>) -> io::Result<()> {
        DiskJournal::set_wakeup(self, at)
    }
}

/// A [`MemoryJournal`] shared with the registry slot that outlives the room
/// task: nothing to sync, snapshots are a swap in memory.
struct SharedMemory(Arc<Mutex<MemoryJournal>>);

impl SharedMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryJournal> {
        // Every operation completes under the lock: a poisoned journal is
        // still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SharedMemory {
    fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        Ok(self.lock().recover(keep_upto))
    }

    fn read(&self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        Ok(self.lock().read(keep_upto))
    }

    fn probe_job(&mut self) -> Job {
        Box::new(|| Ok(()))
    }

    fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
        self.lock().append(framed, first_seq)
    }

    fn sync_job(&mut self) -> Option<Job> {
        None
    }

    fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job {
        let memory = self.0.clone();
        Box::new(move || {
            memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot(seq, snapshot);
            Ok(())
        })
    }

    fn bytes(&self) -> u64 {
        self.lock().bytes()
    }
}
