//! The room task: the only owner of a room's JavaScript context and store.
//!
//! A [`Room`] is made of parts, each owning its fields: the [`Journal`]
//! (records and group commit), the [`Snapshots`] policy, the [`Members`]
//! (with presence) and the output [`Gate`]. This file is the loop that
//! drives them: it drains the mailbox in batches, runs each command (see
//! `events`), writes the batch and commits or releases it, and reacts to
//! fsyncs finishing, snapshot writes, timers and shutdown.
//!
//! A hook that throws leaves no trace: its outputs are dropped, it is not
//! journaled, and the context is rebuilt from the store (snapshot + journal).
//! CPU or memory exhaustion is fatal: the task ends with a [`Crash`] and the
//! supervisor restarts the room from its durable state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::time::sleep_until;

use super::crash::Exit;
use super::gate::Gate;
use super::hibernation::Asleep;
use super::journal::{Journal, StorageError};
use super::members::Members;
use super::outbox::{HostState, Inbox, Outbox};
use super::registry::Rooms;
use super::replay::{load_js, replay};
use super::snapshots::Snapshots;
use super::storage::StorageHealth;
use super::{Command, Crash, LeaveReason, Mailbox, RoomEnv, RoomSlot};
use crate::clock::now_ms;
use crate::engine::{CallError, Emit, Kick, NextTimer, RoomJs};
use crate::scripts::CompiledKind;
use crate::store::{Snapshot, ownership_error};

/// Commands handled per batch before outputs are released.
const BATCH: usize = 128;

/// An event that takes this long (wall time) marks its room slow.
const SLOW_EVENT: Duration = Duration::from_millis(10);
/// How long a room stays slow after its last slow event or CPU-budget crash.
pub(crate) const SLOW_FOR: Duration = Duration::from_secs(60);

/// Runs `f` (synchronous JS work of a room) on this worker, or — for a room
/// marked slow — under `block_in_place`, which hands this worker's queued
/// tasks (including its LIFO slot, which no other worker can steal) to a
/// fresh thread first. So a room that spins for its whole CPU budget delays
/// no other room: they keep running on the JS workers while the OS shares
/// the cores. Well-behaved rooms skip the hand-off and its thread wake-up.
fn contained<T>(slot: &RoomSlot, f: impl FnOnce() -> T) -> T {
    if slot.stats.is_slow() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Resolves when `token` is cancelled; never without one.
async fn cancelled(token: Option<&tokio_util::sync::CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Hands `items` to `f` in order. When `f` fails or panics, the item it was
/// given is consumed and the ones after it stay in `items`, in order (the
/// mailbox outlives a room task that panics, so the next generation gets
/// them).
fn each_in_order<T, E>(items: &mut Vec<T>, mut f: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
    /// Puts what is left back in order however the loop ends.
    struct Rest<'a, T>(&'a mut Vec<T>);
    impl<T> Drop for Rest<'_, T> {
        fn drop(&mut self) {
            self.0.reverse();
        }
    }
    items.reverse();
    let rest = Rest(items);
    while let Some(item) = rest.0.pop() {
        f(item)?;
    }
    Ok(())
}

/// What a room task waits for besides its mailbox and its store, in the
/// order it serves them when several are due at once.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// `relaxed`'s interval or `strict`'s gathering ended: fsync.
    Sync,
    Snapshot,
    /// A typing indicator expires.
    Presence,
    /// The pending `presence_diff` may go out (see `presence`).
    PresenceDiff,
    /// The script's next timer.
    Timer,
    Hibernate,
    /// An fsync has taken too long (see `storage`).
    Stall,
    /// Time to probe a faulty storage again.
    Probe,
    /// Nobody joined for `idle_timeout`: stop.
    Idle,
}

pub(super) struct Room {
    /// The registry: what the room may touch, and its idle stop.
    pub(super) rooms: Rooms,
    pub(super) slot: Arc<RoomSlot>,
    pub(super) generation: u64,
    pub(super) kind: Arc<CompiledKind>,
    /// `None` while hibernated (see `hibernation`).
    pub(super) js: Option<RoomJs>,
    /// What a hibernated room keeps to wake.
    pub(super) asleep: Option<Asleep>,
    pub(super) journal: Journal,
    pub(super) snapshots: Snapshots,
    pub(super) members: Members,
    pub(super) gate: Gate,
    /// Whether the journal takes writes (see `storage`).
    pub(super) storage: StorageHealth,
    /// The script's next timer due (its timers live in its JS state).
    pub(super) next_timer: Option<NextTimer>,
    /// Connections hooks closed, to leave after the command at hand.
    pub(super) kicks: Vec<Kick>,
    /// Messages to other rooms not yet acknowledged.
    pub(super) outbox: Outbox,
    /// Messages from other rooms handled.
    pub(super) inbox: Inbox,
    /// What the room's `wakeup` file says, as far as this generation wrote
    /// it: it is only ever written earlier while the room runs.
    wakeup_written: Option<i64>,
    last_activity: Instant,
    stats_at: Instant,
    /// A new version of the code to switch to after the current batch.
    pub(super) pending_reload: Option<Arc<CompiledKind>>,
    /// Cluster mode: other nodes' channels are served while this is held
    /// (see `remote`); dropped with the generation.
    _serving: Option<Box<dyn Send + Sync>>,
}

/// Runs generation `generation` of the room in `slot` until it stops or dies.
pub(super) async fn run(
    rooms: Rooms,
    slot: Arc<RoomSlot>,
    generation: u64,
    keep_upto: Option<u64>,
) -> Exit {
    let mut mailbox = slot.mailbox_rx.clone().lock_owned().await;
    rooms.env().metrics.room_started();
    // In one expression: a `Result<Room, _>` kept in a local would take a
    // second Room's space in this task's future for its whole life.
    let mut room = match contained(&slot.clone(), || {
        Room::start(rooms, slot, generation, keep_upto)
    }) {
        Ok(room) => room,
        Err(crash) => return Exit::Crashed(crash),
    };
    match room.serve(&mut mailbox).await {
        Ok(exit) => exit,
        Err(crash) => Exit::Crashed(crash),
    }
}

impl Room {
    pub(super) fn env(&self) -> &RoomEnv {
        self.rooms.env()
    }

    /// Loads the kind, recovers the store and replays it: the room as it
    /// was at its last durable event, its dead channels leaving.
    fn start(
        rooms: Rooms,
        slot: Arc<RoomSlot>,
        generation: u64,
        keep_upto: Option<u64>,
    ) -> Result<Room, Crash> {
        let env = rooms.env();
        let topic = slot.topic.clone();
        let kind = env.scripts.kind(topic.kind()).map_err(Crash::script)?;
        let mut store = crate::store::open(
            &env.config.data_dir,
            &topic,
            slot.memory.as_ref(),
            env.backend.as_ref(),
        );
        if let (Some(layer), None) = (&env.store_layer, &slot.memory) {
            store = layer(&topic, store);
        }
        // A recovery repairs (truncates a torn tail); if the storage refuses
        // that, the room starts from what it can read, in a storage fault.
        let (recovered, refused_repair) = match store.recover(keep_upto) {
            Ok(recovered) => (recovered, None),
            // Another node owns the room (cluster mode): nothing to serve.
            Err(error) if ownership_error(&error).is_some() => {
                return Err(Crash::ownership(&error));
            }
            Err(error) => match store.read(keep_upto) {
                Ok(recovered) => (
                    recovered,
                    Some(StorageError {
                        what: "repairing the journal",
                        error,
                    }),
                ),
                Err(_) => return Err(Crash::storage("reading the journal", error)),
            },
        };
        // The store holds the room's lease now: other nodes' channels may
        // come (their commands queue behind the replay).
        let serving = env.remote.as_ref().map(|remote| remote.serve(&slot));
        for repair in &recovered.repairs {
            tracing::warn!(topic = %topic, generation, repair = %repair, "journal repaired");
        }
        let js = load_js(env, &slot, &kind, generation)?;
        let replay_started = Instant::now();
        let replayed = replay(&js, &recovered, &topic)?;
        let replay_took = replay_started.elapsed();
        let next_timer = js.next_timer();
        let now = Instant::now();
        let journal = Journal::new(
            store,
            env.config.durability,
            env.metrics.clone(),
            recovered.last_seq,
            replayed.last_at,
        );
        let snapshots = Snapshots::new(&env.config, recovered.events.len(), replay_took);
        let presence = replayed
            .presence
            .take()
            .with_typing_timeout(env.config.typing_timeout)
            .with_diff_interval(env.config.presence_interval);
        let mut outbox = Outbox::new(topic.clone(), rooms.clone());
        for (to, message) in replayed.sends {
            outbox.push(to, message);
        }
        let mut room = Room {
            generation,
            kind,
            js: Some(js),
            asleep: None,
            journal,
            snapshots,
            members: Members::rebuilt(replayed.members, presence),
            gate: Gate::default(),
            storage: StorageHealth::new(env.config.fsync_stall),
            next_timer,
            kicks: Vec::new(),
            outbox,
            inbox: replayed.inbox,
            wakeup_written: None,
            last_activity: now,
            stats_at: now,
            pending_reload: None,
            _serving: serving,
            rooms,
            slot,
        };
        room.slot
            .stats
            .released_seq
            .store(room.journal.seq(), Ordering::Relaxed);
        if let Some(failed) = &refused_repair {
            room.enter_fault(failed, 0);
        }
        // Members whose channels died with the previous generation leave now
        // (or, in a storage fault, once it is over), so the script's own
        // bookkeeping sees them go.
        if room.storage.is_healthy() {
            for id in room.members.ids() {
                room.leave(&id, None, LeaveReason::Crash, None)?;
            }
        }
        room.after_batch()?;
        // The dashboard and /metrics see the room's memory from the start.
        room.refresh_stats(true);
        room.slot
            .set_running(generation, &room.kind.version, room.kind.has_snapshot);
        tracing::info!(
            topic = %room.slot.topic,
            generation,
            seq = room.journal.seq(),
            replayed = recovered.events.len(),
            replay_ms = %format_args!("{:.2}", replay_took.as_secs_f64() * 1e3),
            version = %room.kind.version,
            "room running"
        );
        Ok(room)
    }

    async fn serve(&mut self, mailbox: &mut Mailbox) -> Result<Exit, Crash> {
        // What the previous generation took from the mailbox but did not
        // handle (the commands behind the one that crashed it) comes first.
        if !mailbox.taken.is_empty() {
            self.handle_taken(&mut mailbox.taken).await?;
        }
        let shutdown = self.env().shutdown.clone();
        // Cluster mode: cancelled when this node loses the room.
        let lost = self.journal.lost();
        let idle_timeout = self.env().config.idle_timeout;
        let hibernate_after = self.env().config.hibernate_after;
        loop {
            let idle_at = self.last_activity + idle_timeout;
            let healthy = self.storage.is_healthy();
            // One timer for all the deadlines, the earliest (a quiet room's
            // task holds one `Sleep`, not one per deadline); when it fires,
            // the first due in this order is served, as a biased `select!`
            // over one sleep each would.
            let deadlines = [
                (Due::Sync, self.journal.sync_due()),
                (Due::Snapshot, self.snapshots.deadline().filter(|_| healthy)),
                (Due::Presence, self.members.presence_deadline()),
                (Due::PresenceDiff, self.members.presence_diff_due()),
                // A timer waits while the journal cannot record its firing.
                (
                    Due::Timer,
                    self.next_timer
                        .as_ref()
                        .filter(|_| healthy)
                        .map(|t| crate::clock::instant_of(t.at)),
                ),
                (
                    Due::Hibernate,
                    (!hibernate_after.is_zero() && self.may_hibernate())
                        .then(|| self.last_activity + hibernate_after),
                ),
                (
                    Due::Stall,
                    self.storage.stall_at(self.journal.commit_started()),
                ),
                (Due::Probe, self.storage.probe_at()),
                (
                    Due::Idle,
                    (self.members.is_empty() && healthy && self.outbox.is_empty())
                        .then_some(idle_at),
                ),
            ];
            let next_at = deadlines.iter().filter_map(|(_, at)| *at).min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Boxed, as every rare await here: the task's future is
                    // as large as its largest await, and a hibernated room
                    // keeps it.
                    Box::pin(self.shut_down()).await?;
                    return Ok(Exit::Stopped);
                }
                _ = cancelled(lost.as_ref()) => {
                    return Err(self.ownership_lost(Crash::Ownership(
                        crate::store::OwnershipError::Lost(
                            "the lease could not be renewed in time".into(),
                        ),
                    )));
                }
                done = self.journal.commit_done(), if self.journal.committing() => {
                    match self.journal.committed(done) {
                        Ok(()) => {
                            self.release();
                            if self.journal.next_after_commit() {
                                self.release();
                            }
                            if let Some(healed) = self.storage.unstall() {
                                Box::pin(self.storage_healthy(healed)).await?;
                            }
                        }
                        Err(failed) => self.storage_failed(failed)?,
                    }
                }
                done = self.storage.probe_done(), if self.storage.probing() => {
                    Box::pin(self.probed(done)).await?;
                }
                done = self.snapshots.write_done(), if self.snapshots.writing() => {
                    self.snapshots.written();
                    if let Err(e) = done {
                        tracing::error!(topic = %self.slot.topic, error = %e, "writing a snapshot failed; the journal still holds every event");
                    }
                    self.refresh_stats(true);
                }
                // `taken` grows to the largest batch this room has seen (at
                // most BATCH): a quiet room holds a few slots, not 128
                // commands (~14 KiB).
                n = mailbox.rx.recv_many(&mut mailbox.taken, BATCH) => {
                    if n == 0 {
                        return Ok(Exit::Stopped);
                    }
                    self.handle_taken(&mut mailbox.taken).await?;
                }
                _ = sleep_until(next_at.unwrap_or(idle_at).into()), if next_at.is_some() => {
                    let now = Instant::now();
                    let due = deadlines
                        .iter()
                        .find(|(_, at)| at.is_some_and(|at| at <= now))
                        .map(|(due, _)| *due);
                    if let Some(due) = due
                        && self.serve_due(due, mailbox).await?
                    {
                        return Ok(Exit::Stopped);
                    }
                }
            }
        }
    }

    /// Serves a deadline that passed; returns whether the room stopped.
    async fn serve_due(&mut self, due: Due, mailbox: &mut Mailbox) -> Result<bool, Crash> {
        match due {
            Due::Sync => {
                if self.journal.sync_due_passed() {
                    self.release();
                }
            }
            Due::Snapshot => {
                self.take_snapshot()?;
                self.snapshots.deadline_passed();
            }
            Due::Presence => {
                self.members.expire_typing(Instant::now());
                self.flush_presence();
                self.release();
            }
            Due::PresenceDiff => {
                self.flush_presence();
                self.release();
            }
            Due::Timer => {
                self.last_activity = Instant::now();
                let slot = self.slot.clone();
                contained(&slot, || self.fire_timer())?;
                self.after_batch()?;
            }
            Due::Hibernate => {
                Box::pin(self.hibernate()).await?;
                // A quiet room holds a few mailbox slots, not a batch's.
                mailbox.taken.shrink_to_fit();
                self.last_activity = Instant::now();
            }
            Due::Stall => self.fsync_stalled(),
            Due::Probe => self.start_probe(),
            Due::Idle => {
                if Box::pin(self.try_idle_stop(mailbox)).await? {
                    return Ok(true);
                }
                self.last_activity = Instant::now();
            }
        }
        Ok(false)
    }

    /// Handles a batch taken from the mailbox, writes it, and commits or
    /// releases it (and reloads the code if the batch asked for it).
    // Boxed as they came out of the mailbox: unboxing would copy each.
    #[allow(clippy::vec_box)]
    async fn handle_taken(&mut self, commands: &mut Vec<Box<Command>>) -> Result<(), Crash> {
        self.last_activity = Instant::now();
        let slot = self.slot.clone();
        contained(&slot, || self.handle_batch(commands))?;
        self.after_batch()?;
        // A reload needs the journal settled: it waits for healthy storage.
        if self.storage.is_healthy()
            && let Some(kind) = self.pending_reload.take()
        {
            Box::pin(self.reload(kind)).await?;
        }
        Ok(())
    }

    /// Writes the batch, then starts an fsync (strict) or releases at once,
    /// and snapshots if one is due.
    pub(super) fn after_batch(&mut self) -> Result<(), Crash> {
        self.flush_presence();
        if let Some(at) = self.wakeup_wanted()
            && self.wakeup_written.is_none_or(|written| at < written)
        {
            // Synced with the batch that needs it: after a crash or a
            // restart, the room runs again by then although nobody joins.
            if let Err(failed) = self.journal.set_wakeup(Some(at)) {
                return self.storage_failed(failed);
            }
            self.wakeup_written = Some(at);
        }
        if let Err(failed) = self.journal.flush() {
            return self.storage_failed(failed);
        }
        if self.journal.batch_written() {
            self.release();
        }
        if self.snapshots.due() {
            self.take_snapshot()?;
        }
        self.refresh_stats(false);
        Ok(())
    }

    /// Handles a batch of commands; an event that runs long marks the room
    /// slow, so its next batches are [`contained`].
    ///
    /// A command that crashes the room, by a fatal error or a panic, is
    /// consumed (a restart does not run it again); the ones after it are left
    /// in `commands` for the next generation.
    // Boxed as they came out of the mailbox: unboxing would copy each.
    #[allow(clippy::vec_box)]
    fn handle_batch(&mut self, commands: &mut Vec<Box<Command>>) -> Result<(), Crash> {
        each_in_order(commands, |command| {
            let started = Instant::now();
            let handled = self.handle(*command);
            if started.elapsed() >= SLOW_EVENT {
                self.slot.stats.mark_slow();
            }
            handled
        })
    }

    /// Queues the presence changes since the last diff as one broadcast,
    /// unless the last went out less than the presence interval ago (then
    /// the `PresenceDiff` deadline sends them).
    pub(super) fn flush_presence(&mut self) {
        if let Some(diff) = self.members.take_presence_diff(Instant::now()) {
            self.hold_now(Emit::to_all("presence_diff", diff));
        }
    }

    /// Holds an output behind every event journaled so far.
    pub(super) fn hold_now(&mut self, effect: impl Into<super::gate::Effect>) {
        self.gate.hold(self.journal.seq(), effect);
    }

    /// Delivers every output whose event is durable, then writes a snapshot
    /// that waited for them.
    pub(super) fn release(&mut self) {
        let durable = self.journal.durable();
        let outbox = &mut self.outbox;
        self.gate.release(
            durable,
            &self.slot.hub,
            &self.rooms.env().metrics,
            &mut |to, message| outbox.push(to, message),
        );
        self.slot
            .stats
            .released_seq
            .store(durable, Ordering::Relaxed);
        self.snapshots.write_pending(durable, &mut self.journal);
    }

    /// Takes a snapshot of the current state (if the kind supports it); the
    /// file is written once every event it covers is released.
    pub(super) fn take_snapshot(&mut self) -> Result<(), Crash> {
        if !self.kind.has_snapshot || !self.snapshots.wanted() || !self.storage.is_healthy() {
            return Ok(());
        }
        if let Err(failed) = self.journal.flush() {
            return self.storage_failed(failed);
        }
        let started = Instant::now();
        let snapshot = match &self.asleep {
            Some(asleep) => asleep.state().map(|s| Ok(s.to_string())),
            None => self.js.as_ref().map(RoomJs::snapshot),
        };
        let room = match snapshot.unwrap_or_else(|| Ok("{}".into())) {
            Ok(room) => room,
            Err(CallError::Fatal(f)) => return Err(f.into()),
            Err(CallError::Script { message, .. }) => {
                tracing::error!(topic = %self.slot.topic, error = %message, "snapshot() threw; keeping the journal");
                return Ok(());
            }
        };
        let room =
            RawValue::from_string(room).map_err(|e| Crash::storage("snapshot is not JSON", e))?;
        let seq = self.journal.seq();
        let host = HostState::of(&self.outbox, self.gate.held_sends(), &self.inbox);
        let host = if host.is_empty() {
            None
        } else {
            let json = serde_json::to_string(&host).map_err(|e| Crash::storage("snapshot", e))?;
            Some(RawValue::from_string(json).map_err(|e| Crash::storage("snapshot", e))?)
        };
        let bytes = Snapshot {
            seq,
            at: self.journal.last_at(),
            version: (&*self.kind.version).into(),
            room: &room,
            host: host.as_deref(),
        }
        .encode();
        self.snapshots.taken(seq, bytes, started.elapsed());
        self.journal.rotate();
        let released = self.slot.stats.released_seq.load(Ordering::Relaxed);
        self.snapshots.write_pending(released, &mut self.journal);
        Ok(())
    }

    /// Makes everything durable and released, and waits for snapshot writes.
    /// With a storage fault, what is not durable is refused instead (see
    /// `storage_fault`) and no snapshot is taken.
    pub(super) async fn settle(&mut self, snapshot: bool) -> Result<(), Crash> {
        if self.storage.is_healthy()
            && let Err(failed) = self.journal.settle().await
        {
            self.storage_failed(failed)?;
        }
        if !self.storage.is_healthy() {
            return Ok(());
        }
        self.release();
        if snapshot {
            self.take_snapshot()?;
        }
        while self.snapshots.unwritten() {
            let released = self.slot.stats.released_seq.load(Ordering::Relaxed);
            self.snapshots.write_pending(released, &mut self.journal);
            if let Err(e) = self.snapshots.write_done().await {
                tracing::error!(topic = %self.slot.topic, error = %e, "writing a snapshot failed");
            }
            self.snapshots.written();
        }
        self.refresh_stats(true);
        Ok(())
    }

    async fn try_idle_stop(&mut self, mailbox: &Mailbox) -> Result<bool, Crash> {
        let wakeup = self.write_exact_wakeup()?;
        self.settle(true).await?;
        if !self.storage.is_healthy() {
            return Ok(false);
        }
        let stopped = self.rooms.remove_if_unreachable(&self.slot, mailbox);
        if stopped {
            if let Some(at) = wakeup {
                self.rooms.wake_at(self.slot.topic.clone(), at);
            }
            tracing::info!(topic = %self.slot.topic, generation = self.generation, wakeup = ?wakeup, "idle room stopped");
        }
        Ok(stopped)
    }

    /// When the room must run again although nobody joins it: its next
    /// timer, or now while it has messages to send.
    fn wakeup_wanted(&self) -> Option<i64> {
        let sending = (!self.outbox.is_empty() || self.gate.holds_sends()).then(now_ms);
        let timer = self.next_timer.as_ref().map(|t| t.at);
        match (sending, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Before a stop: the `wakeup` file says exactly when the room must run
    /// (or is removed); returns that time.
    fn write_exact_wakeup(&mut self) -> Result<Option<i64>, Crash> {
        let wakeup = self.wakeup_wanted();
        if let Err(failed) = self.journal.set_wakeup(wakeup) {
            self.storage_failed(failed)?;
            return Ok(wakeup);
        }
        self.wakeup_written = wakeup;
        Ok(wakeup)
    }

    async fn shut_down(&mut self) -> Result<(), Crash> {
        // Cluster mode: other nodes' connections stay up; their channels
        // rejoin, wherever the room runs next.
        for channel in self.slot.hub.remote_channels() {
            channel.close_with("phx_error");
        }
        for id in self.members.joined_ids() {
            self.leave(&id, None, LeaveReason::Shutdown, None)?;
        }
        self.write_exact_wakeup()?;
        self.settle(true).await?;
        self.slot.mark_stopped();
        Ok(())
    }

    pub(super) fn refresh_stats(&mut self, force: bool) {
        if !force && self.stats_at.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.stats_at = Instant::now();
        let stats = &self.slot.stats;
        stats.js_memory.store(
            self.js.as_ref().map_or(0, RoomJs::memory_used),
            Ordering::Relaxed,
        );
        stats
            .journal_bytes
            .store(self.journal.bytes(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::each_in_order;

    #[test]
    fn the_items_behind_a_failing_or_panicking_one_stay_in_order() {
        let mut seen = Vec::new();
        let mut items = vec![1, 2, 3, 4];
        let all = each_in_order(&mut items, |n| {
            seen.push(n);
            Ok::<(), ()>(())
        });
        assert_eq!((all, seen, items.len()), (Ok(()), vec![1, 2, 3, 4], 0));

        let mut items = vec![1, 2, 3, 4];
        let failed = each_in_order(&mut items, |n| if n == 2 { Err(n) } else { Ok(()) });
        assert_eq!((failed, items), (Err(2), vec![3, 4]));

        let mut items = vec![1, 2, 3, 4];
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            each_in_order(&mut items, |n| {
                assert_ne!(n, 2, "a bug in a handler");
                Ok::<(), ()>(())
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(items, vec![3, 4]);
    }
}
