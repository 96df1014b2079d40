//! A room's journal: what it has journaled, what is durable, and the group
//! commit that gets it there.
//!
//! A successful event is framed into the batch ([`Journal::record`]); after
//! a batch of commands the records are written to the store, and — with
//! durability `strict` — one fdatasync runs on a blocking thread while the
//! next events are handled; whatever arrived meanwhile is covered by the
//! next fsync (group commit). When the last fsync covered more events than
//! are waiting, the next one waits up to one fsync's time (at most
//! [`MAX_GATHER`]) for the senders of those events to send again, so a
//! group is not split in two fsyncs. `relaxed` counts a batch durable once
//! written and fsyncs every [`RELAXED_SYNC`]; `off` has nothing to sync.
//!
//! The methods that may make more events durable return whether the room
//! should release its gate now.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::Crash;
use crate::clock::now_ms;
use crate::config::Durability;
use crate::conn::Conn;
use crate::metrics::Metrics;
use crate::store::{ConnRecord, Event, EventKind, Job, Origin, Recovered, Store};

/// With durability `relaxed`, how long written records may wait for fsync.
const RELAXED_SYNC: Duration = Duration::from_millis(10);
/// Strict mode: the longest an fsync is held back to gather a group.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(1);

/// An fsync in flight, resolving to the seq it covers and its duration.
type Commit = JoinHandle<io::Result<(u64, Duration)>>;

/// What an event records besides its time and seed.
pub(super) struct Input<'a> {
    pub(super) kind: EventKind,
    pub(super) conn: &'a Conn,
    /// The event name of a message, or a timer's name.
    pub(super) event: Option<&'a str>,
    pub(super) data: &'a RawValue,
    pub(super) origin: Option<Origin>,
}

impl<'a> Input<'a> {
    pub(super) fn new(
        kind: EventKind,
        conn: &'a Conn,
        event: Option<&'a str>,
        data: &'a RawValue,
    ) -> Input<'a> {
        Input {
            kind,
            conn,
            event,
            data,
            origin: None,
        }
    }
}

/// A store operation that failed: what it was, and the error.
#[derive(Debug)]
pub(super) struct StorageError {
    pub(super) what: &'static str,
    pub(super) error: io::Error,
}

impl StorageError {
    fn of(what: &'static str) -> impl FnOnce(io::Error) -> StorageError {
        move |error| StorageError { what, error }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

impl From<StorageError> for Crash {
    fn from(e: StorageError) -> Crash {
        if crate::store::ownership_error(&e.error).is_some() {
            return Crash::ownership(&e.error);
        }
        Crash::storage(e.what, e.error)
    }
}

pub(super) struct Journal {
    store: Box<dyn Store>,
    durability: Durability,
    metrics: Arc<Metrics>,
    /// Seq of the last journaled event.
    seq: u64,
    /// Seq of the last event known durable (outputs up to it are released).
    durable: u64,
    /// Seq of the last event a finished fsync covered (`relaxed` releases
    /// before that, so it can be behind `durable`).
    synced: u64,
    /// Time of the last event; event times never go backwards.
    last_at: i64,
    /// Framed records not yet written, and the seq of the first.
    batch: Vec<u8>,
    batch_first: u64,
    commit: Option<Commit>,
    /// When the fsync in flight started (a stalled disk shows here).
    commit_started: Option<Instant>,
    /// When written records must be fsynced: relaxed mode's interval, or the
    /// end of strict mode's gathering.
    sync_due: Option<Instant>,
    /// Strict mode: events the last fsync covered, and how long it took.
    last_group: u64,
    last_fsync: Duration,
}

impl Journal {
    /// A journal continuing after `last_seq` (what recovery found), whose
    /// last event happened at `last_at`.
    pub(super) fn new(
        store: Box<dyn Store>,
        durability: Durability,
        metrics: Arc<Metrics>,
        last_seq: u64,
        last_at: i64,
    ) -> Journal {
        Journal {
            store,
            durability,
            metrics,
            seq: last_seq,
            durable: last_seq,
            synced: last_seq,
            last_at,
            batch: Vec::new(),
            batch_first: 0,
            commit: None,
            commit_started: None,
            sync_due: None,
            last_group: 0,
            last_fsync: Duration::ZERO,
        }
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Seq of the last event whose outputs may be released.
    pub(super) fn durable(&self) -> u64 {
        self.durable
    }

    pub(super) fn last_at(&self) -> i64 {
        self.last_at
    }

    /// The time of the next event: now, but never before the last one.
    pub(super) fn next_at(&self) -> i64 {
        now_ms().max(self.last_at)
    }

    /// Frames an event whose hook succeeded into the batch; returns its seq.
    pub(super) fn record(&mut self, at: i64, seed: u64, input: &Input) -> u64 {
        let conn = input.conn;
        self.last_at = at;
        self.seq += 1;
        if self.batch.is_empty() {
            self.batch_first = self.seq;
        }
        Event {
            seq: self.seq,
            kind: input.kind,
            at,
            seed,
            conn: ConnRecord {
                id: (&*conn.id).into(),
                user: (&*conn.user).into(),
                meta: &conn.meta,
            },
            event: input.event.map(Into::into),
            data: input.data,
            origin: input.origin,
        }
        .encode_into(&mut self.batch);
        self.seq
    }

    /// Writes the batch to the store (a write into the page cache).
    pub(super) fn flush(&mut self) -> Result<(), StorageError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store
            .append(&self.batch, self.batch_first)
            .map_err(StorageError::of("journal write failed"))?;
        self.batch.clear();
        Ok(())
    }

    /// After a batch was written: strict gathers or starts an fsync;
    /// relaxed and off count it durable (relaxed fsyncs within its
    /// interval). Returns whether to release.
    pub(super) fn batch_written(&mut self) -> bool {
        match self.durability {
            Durability::Strict => self.commit_or_gather(),
            Durability::Relaxed | Durability::Off => {
                self.durable = self.seq;
                if self.durability == Durability::Relaxed && self.sync_due.is_none() {
                    self.sync_due = Some(Instant::now() + RELAXED_SYNC);
                }
                true
            }
        }
    }

    /// Strict mode, after a batch or an fsync: starts the fsync now, or
    /// gathers first.
    ///
    /// When the last fsync covered more events than are waiting now, the
    /// senders of those events are probably answering their replies this
    /// very moment: starting at once would cover one or two of them and make
    /// the rest wait for a second fsync. So the fsync waits until as many
    /// events as last time are waiting, or for as long as the last fsync
    /// took (at most [`MAX_GATHER`]) — never more than the fsync it saves.
    /// A lone sender (groups of one) never waits.
    fn commit_or_gather(&mut self) -> bool {
        let waiting = self.seq.saturating_sub(self.durable);
        if self.commit.is_some() || waiting == 0 || waiting >= self.last_group {
            self.sync_due = None;
            self.start_commit()
        } else {
            if self.sync_due.is_none() {
                self.sync_due = Some(Instant::now() + self.last_fsync.min(MAX_GATHER));
            }
            false
        }
    }

    /// Starts an fsync if none runs and something is unsynced. Returns
    /// whether to release (strict, with nothing left to sync).
    fn start_commit(&mut self) -> bool {
        if self.commit.is_some() {
            return false;
        }
        if self.durability == Durability::Strict && self.durable >= self.seq {
            return true; // e.g. error replies behind durable events
        }
        if let Some(job) = self.store.sync_job() {
            let covered = self.seq;
            let events = self.seq.saturating_sub(self.synced);
            let metrics = self.metrics.clone();
            self.commit_started = Some(Instant::now());
            self.commit = Some(spawn_store(move || {
                let started = Instant::now();
                let synced = job();
                metrics.fsync(started.elapsed(), events);
                synced.map(|()| (covered, started.elapsed()))
            }));
            false
        } else if self.durability == Durability::Strict {
            self.durable = self.seq;
            true
        } else {
            false
        }
    }

    /// When the room's loop must call [`Journal::sync_due_passed`]: set while
    /// records wait for an fsync and none runs.
    pub(super) fn sync_due(&self) -> Option<Instant> {
        self.sync_due.filter(|_| self.commit.is_none())
    }

    /// The gathering or the relaxed interval ran out. Returns whether to
    /// release.
    pub(super) fn sync_due_passed(&mut self) -> bool {
        self.sync_due = None;
        self.start_commit()
    }

    pub(super) fn committing(&self) -> bool {
        self.commit.is_some()
    }

    /// When the fsync in flight started, if one is.
    pub(super) fn commit_started(&self) -> Option<Instant> {
        self.commit.as_ref().and(self.commit_started)
    }

    /// Waits for the fsync in flight (pending forever when there is none:
    /// the loop polls it only while [`Journal::committing`]). Cancel-safe.
    pub(super) async fn commit_done(&mut self) -> io::Result<(u64, Duration)> {
        join(&mut self.commit).await
    }

    /// The fsync in flight finished with `done`: the events it covered are
    /// durable (the room releases them, then calls
    /// [`Journal::next_after_commit`]). A failed fsync crashes the room.
    pub(super) fn committed(
        &mut self,
        done: io::Result<(u64, Duration)>,
    ) -> Result<(), StorageError> {
        self.commit = None;
        let (covered, took) = done.map_err(StorageError::of("journal sync failed"))?;
        self.last_group = covered.saturating_sub(self.durable);
        self.last_fsync = took;
        self.durable = self.durable.max(covered);
        self.synced = self.synced.max(covered);
        Ok(())
    }

    /// After an fsync's events were released: the next fsync, now or after
    /// gathering. Returns whether to release.
    pub(super) fn next_after_commit(&mut self) -> bool {
        // Strict gathers the next group as after a batch: the senders just
        // released are answering now, and starting at once with what came in
        // during this fsync split each round into two groups, each fsynced
        // and fanned out on its own (see `commit_or_gather`). Relaxed syncs
        // only if its interval ran out while this fsync was in flight.
        if self.durability == Durability::Strict {
            self.commit_or_gather()
        } else if self.sync_due.is_some_and(|due| due <= Instant::now()) {
            self.sync_due = None;
            self.start_commit()
        } else {
            false
        }
    }

    /// Makes everything journaled durable: writes the batch, waits for the
    /// fsync in flight and syncs what came after it.
    pub(super) async fn settle(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        if let Some(commit) = self.commit.take() {
            let (covered, _) = join(&mut Some(commit))
                .await
                .map_err(StorageError::of("journal sync failed"))?;
            self.durable = self.durable.max(covered);
            self.synced = self.synced.max(covered);
        }
        if let Some(job) = self.store.sync_job() {
            spawn_store(job)
                .await
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|synced| synced)
                .map_err(StorageError::of("journal sync failed"))?;
        }
        self.durable = self.seq;
        self.synced = self.seq;
        Ok(())
    }

    /// Everything the store holds (snapshot + journal), after writing the
    /// batch: the state to rebuild a room from.
    pub(super) fn reread(&mut self) -> Result<Recovered, StorageError> {
        self.flush()?;
        self.store
            .recover(None)
            .map_err(StorageError::of("reading the journal"))
    }

    /// Gives up every event that is not durable: the batch, the records
    /// written but not synced, and the fsync in flight (it finishes
    /// unobserved: what it covers is cut by [`Journal::cut_to_durable`]).
    /// Returns the seq journaled before, so `durable+1..=that` were refused.
    pub(super) fn discard_undurable(&mut self) -> u64 {
        let before = self.seq;
        self.batch.clear();
        self.commit = None;
        self.commit_started = None;
        self.sync_due = None;
        self.seq = self.durable;
        self.synced = self.synced.min(self.durable);
        before
    }

    /// Cuts the store back to the durable events and reopens it (a new
    /// file handle on the last segment, its tail truncated), so the next
    /// write starts from what is known to be on disk.
    pub(super) fn cut_to_durable(&mut self) -> Result<Recovered, StorageError> {
        self.store
            .recover(Some(self.durable))
            .map_err(StorageError::of("cutting the journal back"))
    }

    /// The durable events, read without writing anything.
    pub(super) fn durable_state(&self) -> Result<Recovered, StorageError> {
        self.store
            .read(Some(self.durable))
            .map_err(StorageError::of("reading the journal"))
    }

    /// Continues after `seq` when a recovery found the store ends there.
    pub(super) fn restart_at(&mut self, seq: u64) {
        self.seq = seq;
        self.durable = seq;
        self.synced = seq;
    }

    /// Records when the room must run again without clients (see
    /// [`Store::set_wakeup`]); durable with the next sync.
    pub(super) fn set_wakeup(&mut self, at: Option<i64>) -> Result<(), StorageError> {
        self.store
            .set_wakeup(at)
            .map_err(StorageError::of("writing the wakeup file"))
    }

    /// Cancelled when this node lost the room (see [`Store::lost`]).
    pub(super) fn lost(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.store.lost()
    }

    /// A job that shows whether the store takes writes again.
    pub(super) fn probe_job(&mut self) -> Job {
        self.store.probe_job()
    }

    /// Gives back the batch buffer's memory (a hibernating room).
    pub(super) fn shrink(&mut self) {
        self.batch = Vec::new();
    }

    /// Starts a new segment at the next append (a snapshot was taken).
    pub(super) fn rotate(&mut self) {
        self.store.rotate();
    }

    /// The job that writes the snapshot of the state as of `seq`.
    pub(super) fn snapshot_job(&mut self, seq: u64, bytes: Vec<u8>) -> Job {
        self.store.snapshot_job(seq, bytes)
    }

    /// Journal and snapshot bytes held.
    pub(super) fn bytes(&self) -> u64 {
        self.store.bytes()
    }
}

/// Runs a store job (fsync, snapshot file) on a blocking thread that
/// outranks the room threads under a real-time policy (see
/// [`crate::priority`]).
pub(super) fn spawn_store<T: Send + 'static>(
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> JoinHandle<io::Result<T>> {
    tokio::task::spawn_blocking(move || {
        let _raised = crate::priority::above_rooms();
        job()
    })
}

/// Awaits an optional blocking job; pending forever when there is none (the
/// `select!` guards make sure it is only polled when set).
pub(super) async fn join<T>(job: &mut Option<JoinHandle<io::Result<T>>>) -> io::Result<T> {
    match job {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e.to_string())),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::empty_object;
    use crate::store::frame;

    /// A store that keeps the records it is given and counts its fsyncs;
    /// `fail_sync` makes every fsync fail.
    #[derive(Clone, Default)]
    struct Probe {
        records: Arc<Mutex<Vec<u64>>>,
        syncs: Arc<Mutex<u32>>,
        fail_sync: bool,
        dirty: bool,
    }

    impl Store for Probe {
        fn recover(&mut self, _keep_upto: Option<u64>) -> io::Result<Recovered> {
            Ok(Recovered::default())
        }

        fn read(&self, _keep_upto: Option<u64>) -> io::Result<Recovered> {
            Ok(Recovered::default())
        }

        fn probe_job(&mut self) -> Job {
            Box::new(|| Ok(()))
        }

        fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
            let (frames, damage) = frame::decode_all(framed);
            assert!(damage.is_none());
            let mut records = self.records.lock().unwrap();
            for (i, (_, payload)) in frames.iter().enumerate() {
                let event = Event::decode(payload).unwrap();
                assert_eq!(event.seq, first_seq + i as u64, "consecutive seqs");
                records.push(event.seq);
            }
            self.dirty = true;
            Ok(())
        }

        fn sync_job(&mut self) -> Option<Job> {
            if !std::mem::take(&mut self.dirty) {
                return None;
            }
            let syncs = self.syncs.clone();
            let fail = self.fail_sync;
            Some(Box::new(move || {
                *syncs.lock().unwrap() += 1;
                if fail {
                    Err(io::Error::other("injected EIO"))
                } else {
                    Ok(())
                }
            }))
        }

        fn snapshot_job(&mut self, _seq: u64, _snapshot: Vec<u8>) -> Job {
            Box::new(|| Ok(()))
        }

        fn bytes(&self) -> u64 {
            0
        }
    }

    fn journal(durability: Durability, store: &Probe) -> Journal {
        Journal::new(
            Box::new(store.clone()),
            durability,
            Arc::new(Metrics::new()),
            0,
            0,
        )
    }

    fn record(journal: &mut Journal) -> u64 {
        let conn = Conn::new("alice", empty_object());
        let at = journal.next_at();
        let data = empty_object();
        let input = Input::new(EventKind::Message, &conn, Some("e"), &data);
        journal.record(at, 7, &input)
    }

    #[tokio::test]
    async fn strict_releases_only_what_an_fsync_covered_and_gathers_the_next_group() {
        let store = Probe::default();
        let mut j = journal(Durability::Strict, &store);
        assert_eq!((record(&mut j), record(&mut j)), (1, 2));
        j.flush().unwrap();
        assert!(!j.batch_written(), "nothing is durable before its fsync");
        assert!(j.committing());
        // An event journaled while the fsync runs waits for the next one.
        record(&mut j);
        j.flush().unwrap();
        assert!(!j.batch_written());
        let done = j.commit_done().await;
        j.committed(done).unwrap();
        assert_eq!((j.durable(), j.seq()), (2, 3));
        // The last group was 2 events and 1 waits: gather, do not fsync yet.
        assert!(!j.next_after_commit());
        assert!(!j.committing() && j.sync_due().is_some());
        assert!(!j.sync_due_passed());
        let done = j.commit_done().await;
        j.committed(done).unwrap();
        assert_eq!(j.durable(), 3);
        assert_eq!(*store.syncs.lock().unwrap(), 2);
        assert_eq!(*store.records.lock().unwrap(), [1, 2, 3]);
        // With nothing new (a batch of refused pushes), release at once.
        j.flush().unwrap();
        assert!(j.batch_written());
    }

    #[tokio::test]
    async fn relaxed_and_off_release_once_written() {
        let store = Probe::default();
        let mut relaxed = journal(Durability::Relaxed, &store);
        record(&mut relaxed);
        relaxed.flush().unwrap();
        assert!(relaxed.batch_written());
        assert_eq!(relaxed.durable(), 1);
        assert!(relaxed.sync_due().is_some(), "fsynced within its interval");
        let mut off = journal(Durability::Off, &Probe::default());
        record(&mut off);
        off.flush().unwrap();
        assert!(off.batch_written());
        assert_eq!(off.durable(), 1);
    }

    #[tokio::test]
    async fn a_failed_fsync_releases_nothing() {
        let store = Probe {
            fail_sync: true,
            ..Probe::default()
        };
        let mut j = journal(Durability::Strict, &store);
        record(&mut j);
        j.flush().unwrap();
        assert!(!j.batch_written());
        let done = j.commit_done().await;
        let failed = j.committed(done).unwrap_err();
        assert_eq!(failed.what, "journal sync failed");
        assert_eq!(j.durable(), 0, "the event is not acknowledged");
        assert_eq!(j.discard_undurable(), 1, "event 1 was journaled...");
        assert_eq!(j.seq(), 0, "...and is given up");
        assert_eq!(record(&mut j), 1, "the next event takes its seq");
    }

    #[test]
    fn event_times_never_go_backwards() {
        let mut j = Journal::new(
            Box::new(Probe::default()),
            Durability::Off,
            Arc::new(Metrics::new()),
            5,
            i64::MAX - 1,
        );
        assert_eq!(j.next_at(), i64::MAX - 1);
        assert_eq!(record(&mut j), 6);
        assert_eq!(j.last_at(), i64::MAX - 1);
    }
}
