//! The durable side of a room: writing journal batches, group-committed
//! fsyncs, releasing gated outputs, and snapshots.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::js::CallError;
use super::task::{MAX_GATHER, Room, SnapshotDue};
use crate::config::Durability;
use crate::store::Snapshot;

impl Room {
    pub(super) fn flush_batch(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store
            .append(&self.batch, self.batch_first)
            .map_err(|e| format!("journal write failed: {e}"))?;
        self.batch.clear();
        Ok(())
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
    pub(super) fn commit_or_gather(&mut self) {
        let waiting = self.seq.saturating_sub(self.durable);
        if self.commit.is_some() || waiting == 0 || waiting >= self.last_group {
            self.sync_due = None;
            self.start_commit();
        } else if self.sync_due.is_none() {
            self.sync_due = Some(Instant::now() + self.last_fsync.min(MAX_GATHER));
        }
    }

    /// Strict mode: starts an fsync if none runs and something is unsynced.
    pub(super) fn start_commit(&mut self) {
        if self.commit.is_some() {
            return;
        }
        if self.durability == Durability::Strict && self.durable >= self.seq {
            self.release(); // e.g. error replies behind durable events
            return;
        }
        if let Some(job) = self.store.sync_job() {
            let covered = self.seq;
            let events = self.seq.saturating_sub(self.synced);
            let shared = self.shared.clone();
            self.commit = Some(spawn_store(move || {
                let started = std::time::Instant::now();
                let synced = job();
                shared.metrics.fsync(started.elapsed(), events);
                synced.map(|()| (covered, started.elapsed()))
            }));
        } else if self.durability == Durability::Strict {
            self.durable = self.seq;
            self.release();
        }
    }

    /// Applies every gated output whose event is durable.
    pub(super) fn release(&mut self) {
        while self
            .gate
            .front()
            .is_some_and(|(seq, _)| *seq <= self.durable)
        {
            let Some((_, effect)) = self.gate.pop_front() else {
                break;
            };
            self.apply(effect);
        }
        self.slot
            .stats
            .released_seq
            .store(self.durable, Ordering::Relaxed);
        self.write_pending_snapshot();
    }

    /// Takes a snapshot of the current state (if the kind supports it); the
    /// file is written once every event it covers is released.
    pub(super) fn take_snapshot(&mut self) -> Result<(), String> {
        if !self.kind.has_snapshot
            || self.unsnapshotted == 0
            || self.pending_snapshot.is_some()
            || self.snapshot_write.is_some()
        {
            return Ok(());
        }
        self.flush_batch()?;
        let started = Instant::now();
        let room = match self.js.snapshot() {
            Ok(room) => room,
            Err(CallError::Fatal(f)) => return Err(f.to_string()),
            Err(CallError::Script { message, .. }) => {
                tracing::error!(topic = %self.slot.topic, error = %message, "snapshot() threw; keeping the journal");
                return Ok(());
            }
        };
        let room = RawValue::from_string(room).map_err(|e| format!("snapshot is not JSON: {e}"))?;
        let bytes = Snapshot {
            seq: self.seq,
            at: self.last_at,
            version: (&*self.kind.version).into(),
            room: &room,
        }
        .encode();
        self.snapshot_took = started.elapsed();
        self.store.rotate();
        self.pending_snapshot = Some((self.seq, bytes));
        self.unsnapshotted = 0;
        self.unsnapshotted_work = Duration::ZERO;
        self.unsnapshotted_since = None;
        self.snapshot_due = SnapshotDue::draw(&self.shared.config);
        self.write_pending_snapshot();
        Ok(())
    }

    pub(super) fn write_pending_snapshot(&mut self) {
        if self.snapshot_write.is_some() {
            return;
        }
        let released = self.slot.stats.released_seq.load(Ordering::Relaxed);
        if self
            .pending_snapshot
            .as_ref()
            .is_none_or(|(seq, _)| *seq > released)
        {
            return;
        }
        if let Some((seq, bytes)) = self.pending_snapshot.take() {
            let job = self.store.snapshot_job(seq, bytes);
            self.snapshot_write = Some(spawn_store(job));
        }
    }

    /// Makes everything durable and released, and waits for snapshot writes.
    pub(super) async fn settle(&mut self, snapshot: bool) -> Result<(), String> {
        self.flush_batch()?;
        if let Some(commit) = self.commit.take() {
            let (covered, _) = join(&mut Some(commit))
                .await
                .map_err(|e| format!("journal sync failed: {e}"))?;
            self.durable = self.durable.max(covered);
            self.synced = self.synced.max(covered);
        }
        if let Some(job) = self.store.sync_job() {
            spawn_store(job)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("journal sync failed: {e}"))?;
        }
        self.durable = self.seq;
        self.synced = self.seq;
        self.release();
        if snapshot {
            self.take_snapshot()?;
        }
        while self.snapshot_write.is_some() || self.pending_snapshot.is_some() {
            self.write_pending_snapshot();
            if let Err(e) = join(&mut self.snapshot_write).await {
                tracing::error!(topic = %self.slot.topic, error = %e, "writing a snapshot failed");
            }
            self.snapshot_write = None;
        }
        self.refresh_stats(true);
        Ok(())
    }
}

/// Runs a store job (fsync, snapshot file) on a blocking thread that
/// outranks the room threads under a real-time policy (see
/// [`super::priority`]).
fn spawn_store<T: Send + 'static>(
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> JoinHandle<io::Result<T>> {
    tokio::task::spawn_blocking(move || {
        let _raised = super::priority::above_rooms();
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
