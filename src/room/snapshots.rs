//! A room's snapshot policy and the snapshot being written.
//!
//! A room snapshots once replaying its unsnapshotted events would take long
//! (their hooks' time, or 20× what its last snapshot took), after many
//! events, or a while after the first event not covered; also on idle stop,
//! on shutdown and at a code switch. A snapshot taken is written only once
//! every event it covers is released (acknowledged): a file never holds
//! state a crash would have to take back.

use std::io;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::journal::{Journal, join, spawn_store};
use crate::config::Config;

/// A room's share of the snapshot thresholds (`--snapshot-events`,
/// `--snapshot-replay-ms`, `--snapshot-secs`): uniform in 0.75..1, so a room
/// never waits longer than configured, and rooms started together at the
/// same rate do not all snapshot in the same millisecond. A snapshot costs
/// its room ~0.3–1 ms of JS; 100 of them back to back stalled every room on
/// the core for tens of milliseconds.
fn snapshot_jitter() -> f64 {
    0.75 + rand::random::<f64>() * 0.25
}

/// Replay work that a snapshot may wait for, in multiples of what the room's
/// last snapshot took: snapshots of a large state stay under ~5% of the time
/// the room spends in hooks.
const SNAPSHOT_COST_RATIO: u32 = 20;

/// When this room snapshots next: after this many events, once replaying
/// them would take this long (their hooks' time), or this long after the
/// first unsnapshotted one. Drawn at start and after every snapshot from
/// the configured thresholds (themselves a `SnapshotDue`).
#[derive(Clone, Copy)]
struct SnapshotDue {
    events: u64,
    replay: Duration,
    after: Duration,
}

impl SnapshotDue {
    fn configured(config: &Config) -> SnapshotDue {
        SnapshotDue {
            events: config.snapshot_every_events,
            replay: config.snapshot_replay,
            after: config.snapshot_every,
        }
    }

    fn draw(&self) -> SnapshotDue {
        let share = snapshot_jitter();
        SnapshotDue {
            events: ((self.events as f64 * share) as u64).max(1),
            replay: self.replay.mul_f64(share),
            after: self.after.mul_f64(share),
        }
    }

    /// Whether `events` unsnapshotted events whose hooks took `work` call
    /// for a snapshot, when the last one took `last_snapshot`.
    fn reached(&self, events: u64, work: Duration, last_snapshot: Duration) -> bool {
        events >= self.events
            || (events > 0 && work >= self.replay.max(last_snapshot * SNAPSHOT_COST_RATIO))
    }
}

pub(super) struct Snapshots {
    configured: SnapshotDue,
    due: SnapshotDue,
    /// Events journaled since the last snapshot...
    unsnapshotted: u64,
    /// ...what replaying them would take: their hooks' time (at start, the
    /// replay's own)...
    work: Duration,
    /// ...and since when the first of them waits.
    since: Option<Instant>,
    /// Room-thread time of the last snapshot (`snapshot()` and encoding).
    took: Duration,
    /// A snapshot taken but not yet written: its events are not released.
    pending: Option<(u64, Vec<u8>)>,
    /// The snapshot file being written.
    write: Option<JoinHandle<io::Result<()>>>,
}

impl Snapshots {
    /// The policy of a room that just replayed `replayed` events in
    /// `replay_took`.
    pub(super) fn new(config: &Config, replayed: usize, replay_took: Duration) -> Snapshots {
        let configured = SnapshotDue::configured(config);
        Snapshots {
            configured,
            due: configured.draw(),
            unsnapshotted: replayed as u64,
            work: if replayed == 0 {
                Duration::ZERO
            } else {
                replay_took
            },
            since: (replayed > 0).then(Instant::now),
            took: Duration::ZERO,
            pending: None,
            write: None,
        }
    }

    /// An event was journaled; its hook took `took`.
    pub(super) fn recorded(&mut self, took: Duration) {
        self.unsnapshotted += 1;
        self.work += took;
        self.since.get_or_insert_with(Instant::now);
    }

    /// What replaying the unsnapshotted events would take (their hooks'
    /// time since the last snapshot, or since start with the replay's own).
    pub(super) fn replay_work(&self) -> Duration {
        self.work
    }

    /// Whether enough has happened since the last snapshot to take one.
    pub(super) fn due(&self) -> bool {
        self.due.reached(self.unsnapshotted, self.work, self.took)
    }

    /// When the time threshold passes, if anything is unsnapshotted.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + self.due.after)
    }

    /// The time threshold passed (a snapshot was tried): wait for the next
    /// unsnapshotted event before counting again.
    pub(super) fn deadline_passed(&mut self) {
        self.since = None;
    }

    /// Makes the next snapshot happen even with nothing new (a code switch
    /// snapshots, so replay never mixes versions).
    pub(super) fn force_next(&mut self) {
        self.unsnapshotted = self.unsnapshotted.max(1);
    }

    /// Whether a snapshot may be taken now: something is unsnapshotted and
    /// none is waiting to be written.
    pub(super) fn wanted(&self) -> bool {
        self.unsnapshotted > 0 && self.pending.is_none() && self.write.is_none()
    }

    /// A snapshot of the state as of `seq` was taken, in `took` of room time.
    pub(super) fn taken(&mut self, seq: u64, bytes: Vec<u8>, took: Duration) {
        self.took = took;
        self.pending = Some((seq, bytes));
        self.unsnapshotted = 0;
        self.work = Duration::ZERO;
        self.since = None;
        self.due = self.configured.draw();
    }

    /// Starts writing the pending snapshot once every event it covers is
    /// released (`released` is the highest seq released).
    pub(super) fn write_pending(&mut self, released: u64, journal: &mut Journal) {
        if self.write.is_some() || self.pending.as_ref().is_none_or(|(seq, _)| *seq > released) {
            return;
        }
        if let Some((seq, bytes)) = self.pending.take() {
            self.write = Some(spawn_store(journal.snapshot_job(seq, bytes)));
        }
    }

    pub(super) fn writing(&self) -> bool {
        self.write.is_some()
    }

    /// Whether a snapshot is taken and not yet written, or being written.
    pub(super) fn unwritten(&self) -> bool {
        self.write.is_some() || self.pending.is_some()
    }

    /// Waits for the snapshot being written (pending forever when there is
    /// none: the loop polls it only while [`Snapshots::writing`]).
    /// Cancel-safe; call [`Snapshots::written`] with the result.
    pub(super) async fn write_done(&mut self) -> io::Result<()> {
        join(&mut self.write).await
    }

    /// The snapshot write finished.
    pub(super) fn written(&mut self) {
        self.write = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SnapshotDue, snapshot_jitter};

    #[test]
    fn a_snapshot_is_due_by_events_or_by_replay_work_scaled_by_its_own_cost() {
        let ms = Duration::from_millis;
        let due = SnapshotDue {
            events: 100,
            replay: ms(10),
            after: Duration::from_secs(60),
        };
        assert!(
            !due.reached(0, ms(50), Duration::ZERO),
            "nothing to snapshot"
        );
        assert!(!due.reached(99, ms(9), Duration::ZERO));
        assert!(due.reached(100, Duration::ZERO, Duration::ZERO));
        assert!(due.reached(5, ms(10), Duration::ZERO));
        // A snapshot that took 2 ms waits for 40 ms of replay work...
        assert!(!due.reached(5, ms(39), ms(2)));
        assert!(due.reached(5, ms(40), ms(2)));
        // ...but not past the event threshold.
        assert!(due.reached(100, ms(1), ms(2)));
    }

    #[test]
    fn snapshot_thresholds_spread_below_the_configured_ones() {
        let draws: Vec<f64> = (0..2000).map(|_| snapshot_jitter()).collect();
        assert!(
            draws.iter().all(|j| (0.75..1.0).contains(j)),
            "never later than configured"
        );
        let lowest = draws.iter().copied().fold(f64::MAX, f64::min);
        let highest = draws.iter().copied().fold(f64::MIN, f64::max);
        assert!(
            lowest < 0.78 && highest > 0.97,
            "spread over the range: {lowest}..{highest}"
        );
    }
}
