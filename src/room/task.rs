//! The room task: the only owner of a room's JavaScript context and store.
//! (Split by concern: `commit` writes and fsyncs the journal and snapshots,
//! `gate` delivers released outputs, `replay` builds the JS from the store,
//! `swap` moves the room to new code.)
//!
//! It drains its mailbox in batches. Each event runs its hook; a successful
//! event is framed into the journal batch and its outputs (reply, broadcasts,
//! pushes) wait in the *output gate* until the event is durable. After a
//! batch the records are written, and — with durability `strict` — one
//! fdatasync runs on a blocking thread while the next events are handled;
//! whatever arrived meanwhile is covered by the next fsync (group commit).
//! When the last fsync covered more events than are waiting, the next one
//! waits up to one fsync's time (at most [`MAX_GATHER`]) for the senders of
//! those events to send again, so a group is not split in two fsyncs.
//!
//! A hook that throws leaves no trace: its outputs are dropped, it is not
//! journaled, and the context is rebuilt from the store (snapshot + journal).
//! CPU or memory exhaustion is fatal: the task ends and the supervisor
//! restarts the room from its durable state.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use super::commit::join;
use super::gate::Effect;
use super::js::{CallError, Hook, JsEffect, RoomJs};
use super::replay::{load_js, replay};
use super::{Command, ConsoleLine, LeaveReason, Mailbox, ReplyTo, RoomError, RoomSlot, now_ms};
use crate::config::Durability;
use crate::conn::Conn;
use crate::host::Shared;
use crate::hub::{Channel, ChannelId};
use crate::presence::Presence;
use crate::protocol::{self, Ref};
use crate::scripts::CompiledKind;
use crate::store::{ConnRecord, Event, EventKind, Store};

/// Commands handled per batch before outputs are released.
const BATCH: usize = 128;
/// With durability `relaxed`, how long written records may wait for fsync.
const RELAXED_SYNC: Duration = Duration::from_millis(10);
/// Strict mode: the longest an fsync is held back to gather a group.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(1);
/// A rollback this far behind the last snapshot takes a new one, so later
/// rollbacks replay little.
const ROLLBACK_SNAPSHOT_AFTER: u64 = 64;

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
/// first unsnapshotted one. Drawn at start and after every snapshot.
#[derive(Clone, Copy)]
pub(super) struct SnapshotDue {
    pub events: u64,
    pub replay: Duration,
    pub after: Duration,
}

impl SnapshotDue {
    pub(super) fn draw(config: &crate::Config) -> SnapshotDue {
        let share = snapshot_jitter();
        SnapshotDue {
            events: ((config.snapshot_every_events as f64 * share) as u64).max(1),
            replay: config.snapshot_replay.mul_f64(share),
            after: config.snapshot_every.mul_f64(share),
        }
    }

    /// Whether `events` unsnapshotted events whose hooks took `work` call
    /// for a snapshot, when the last one took `last_snapshot`.
    pub(super) fn reached(&self, events: u64, work: Duration, last_snapshot: Duration) -> bool {
        events >= self.events
            || (events > 0 && work >= self.replay.max(last_snapshot * SNAPSHOT_COST_RATIO))
    }
}

/// How a room task ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Idle stop or shutdown; the slot is already updated.
    Stopped,
    /// The room must be restarted from its durable state.
    Crashed(String),
}

pub(super) struct Member {
    conn: Conn,
    /// `None` for members rebuilt by replay whose channel died with an
    /// earlier generation.
    channel: Option<Arc<Channel>>,
}

pub(crate) struct Room {
    pub(super) shared: Arc<Shared>,
    pub(super) slot: Arc<RoomSlot>,
    pub(super) generation: u64,
    pub(super) kind: Arc<CompiledKind>,
    pub(super) js: RoomJs,
    pub(super) store: Store,
    pub(super) durability: Durability,
    pub(super) members: HashMap<Arc<str>, Member>,
    pub(super) presence: Presence,
    /// The JS side's copy of the presence (`room.presence()`) is stale.
    pub(super) presence_dirty: bool,
    /// Seq of the last journaled event.
    pub(super) seq: u64,
    /// Seq of the last event known durable (outputs up to it are released).
    pub(super) durable: u64,
    /// Seq of the last event a finished fsync covered (`relaxed` releases
    /// before that, so it can be behind `durable`).
    pub(super) synced: u64,
    /// Time of the last event; event times never go backwards.
    pub(super) last_at: i64,
    /// Framed records not yet written, and the seq of the first.
    pub(super) batch: Vec<u8>,
    pub(super) batch_first: u64,
    pub(super) gate: VecDeque<(u64, Effect)>,
    /// The fsync in flight, resolving to the seq it covers and its duration.
    pub(super) commit: Option<JoinHandle<io::Result<(u64, Duration)>>>,
    /// When written records must be fsynced: relaxed mode's interval, or the
    /// end of strict mode's gathering.
    pub(super) sync_due: Option<Instant>,
    /// Strict mode: events the last fsync covered, and how long it took.
    pub(super) last_group: u64,
    pub(super) last_fsync: Duration,
    pub(super) snapshot_write: Option<JoinHandle<io::Result<()>>>,
    /// A snapshot taken but not yet written: its events are not released.
    pub(super) pending_snapshot: Option<(u64, Vec<u8>)>,
    pub(super) unsnapshotted: u64,
    /// What replaying the unsnapshotted events would take: their hooks'
    /// time (at start, the replay's own).
    pub(super) unsnapshotted_work: Duration,
    pub(super) unsnapshotted_since: Option<Instant>,
    /// Room-thread time of the last snapshot (`snapshot()` and encoding).
    pub(super) snapshot_took: Duration,
    pub(super) snapshot_due: SnapshotDue,
    pub(super) last_activity: Instant,
    pub(super) stats_at: Instant,
    /// A new version of the code to switch to after the current batch.
    pub(super) pending_reload: Option<Arc<CompiledKind>>,
}

/// Runs generation `generation` of the room in `slot` until it stops or dies.
pub(crate) async fn run(
    shared: Arc<Shared>,
    slot: Arc<RoomSlot>,
    generation: u64,
    keep_upto: Option<u64>,
) -> Exit {
    let mut mailbox = slot.mailbox_rx.clone().lock_owned().await;
    shared.room_starts.fetch_add(1, Ordering::Relaxed);
    shared.metrics.room_started();
    let starting = slot.clone();
    let started = contained(&starting, || {
        Room::start(shared, slot, generation, keep_upto)
    });
    let mut room = match started {
        Ok(room) => room,
        Err(why) => return Exit::Crashed(why),
    };
    match room.serve(&mut mailbox).await {
        Ok(exit) => exit,
        Err(why) => Exit::Crashed(why),
    }
}

impl Room {
    fn start(
        shared: Arc<Shared>,
        slot: Arc<RoomSlot>,
        generation: u64,
        keep_upto: Option<u64>,
    ) -> Result<Room, String> {
        let topic = slot.topic.clone();
        let kind = shared
            .scripts
            .kind(topic.kind())
            .map_err(|e| e.to_string())?;
        let durability = shared.config.durability;
        let mut store = match (&slot.memory, durability) {
            (Some(memory), Durability::Off) => Store::Memory(memory.clone()),
            _ => Store::disk(&shared.config.data_dir, &topic),
        };
        let recovered = store
            .recover(keep_upto)
            .map_err(|e| format!("reading the journal: {e}"))?;
        for repair in &recovered.repairs {
            tracing::warn!(topic = %topic, generation, repair = %repair, "journal repaired");
        }
        let js = load_js(&shared, &slot, &kind, generation)?;
        let replay_started = Instant::now();
        let replayed = replay(&js, &recovered, &topic)?;
        let replayed_events = recovered.events.len();
        let now = Instant::now();
        let replay_took = now - replay_started;
        let mut room = Room {
            generation,
            kind,
            js,
            durability,
            members: replayed
                .members
                .into_iter()
                .map(|conn| {
                    (
                        conn.id.clone(),
                        Member {
                            conn,
                            channel: None,
                        },
                    )
                })
                .collect(),
            presence: replayed
                .presence
                .with_typing_timeout(shared.config.typing_timeout),
            presence_dirty: true,
            seq: recovered.last_seq,
            durable: recovered.last_seq,
            synced: recovered.last_seq,
            last_at: replayed.last_at,
            batch: Vec::new(),
            batch_first: 0,
            gate: VecDeque::new(),
            commit: None,
            sync_due: None,
            last_group: 0,
            last_fsync: Duration::ZERO,
            snapshot_write: None,
            pending_snapshot: None,
            unsnapshotted: replayed_events as u64,
            unsnapshotted_work: if replayed_events == 0 {
                Duration::ZERO
            } else {
                replay_took
            },
            snapshot_took: Duration::ZERO,
            unsnapshotted_since: (!recovered.events.is_empty()).then_some(now),
            snapshot_due: SnapshotDue::draw(&shared.config),
            last_activity: now,
            stats_at: now,
            pending_reload: None,
            store,
            shared,
            slot,
        };
        room.slot
            .stats
            .released_seq
            .store(room.seq, Ordering::Relaxed);
        // Members whose channels died with the previous generation leave now,
        // so the script's own bookkeeping sees them go.
        let ghosts: Vec<Arc<str>> = room.members.keys().cloned().collect();
        for id in ghosts {
            room.leave(&id, None, LeaveReason::Crash, None)
                .map_err(|f| f.to_string())?;
        }
        room.after_batch()?;
        // The dashboard and /metrics see the room's memory from the start.
        room.refresh_stats(true);
        room.slot
            .set_running(generation, &room.kind.version, room.kind.has_snapshot);
        tracing::info!(
            topic = %room.slot.topic,
            generation,
            seq = room.seq,
            replayed = replayed_events,
            replay_ms = %format_args!("{:.2}", replay_took.as_secs_f64() * 1e3),
            version = %room.kind.version,
            "room running"
        );
        Ok(room)
    }

    async fn serve(&mut self, mailbox: &mut Mailbox) -> Result<Exit, String> {
        // What the previous generation took from the mailbox but did not
        // handle (the commands behind the one that crashed it) comes first.
        if !mailbox.taken.is_empty() {
            self.handle_taken(&mut mailbox.taken).await?;
        }
        let shutdown = self.shared.shutdown.clone();
        loop {
            let idle_at = self.last_activity + self.shared.config.idle_timeout;
            let snapshot_at = self
                .unsnapshotted_since
                .map(|t| t + self.snapshot_due.after);
            let presence_at = self.presence.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.shut_down().await?;
                    return Ok(Exit::Stopped);
                }
                done = join(&mut self.commit), if self.commit.is_some() => {
                    self.commit = None;
                    let (covered, took) = done.map_err(|e| format!("journal sync failed: {e}"))?;
                    self.last_group = covered.saturating_sub(self.durable);
                    self.last_fsync = took;
                    self.durable = self.durable.max(covered);
                    self.synced = self.synced.max(covered);
                    self.release();
                    // Strict gathers the next group as after a batch: the
                    // senders just released are answering now, and starting
                    // at once with what came in during this fsync split each
                    // round into two groups, each fsynced and fanned out on
                    // its own (see `commit_or_gather`). Relaxed syncs only
                    // if its interval ran out while this fsync was in flight.
                    if self.durability == Durability::Strict {
                        self.commit_or_gather();
                    } else if self.sync_due.is_some_and(|due| due <= Instant::now()) {
                        self.sync_due = None;
                        self.start_commit();
                    }
                }
                done = join(&mut self.snapshot_write), if self.snapshot_write.is_some() => {
                    self.snapshot_write = None;
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
                _ = sleep_until(self.sync_due.unwrap_or(idle_at).into()), if self.sync_due.is_some() && self.commit.is_none() => {
                    self.sync_due = None;
                    self.start_commit();
                }
                _ = sleep_until(snapshot_at.unwrap_or(idle_at).into()), if snapshot_at.is_some() => {
                    self.take_snapshot()?;
                    self.unsnapshotted_since = None;
                }
                _ = sleep_until(presence_at.unwrap_or(idle_at).into()), if presence_at.is_some() => {
                    self.presence.expire_typing(Instant::now());
                    self.presence_changed();
                    self.flush_presence();
                    self.release();
                }
                _ = sleep_until(idle_at.into()), if self.members.is_empty() => {
                    if self.try_idle_stop(mailbox).await? {
                        return Ok(Exit::Stopped);
                    }
                    self.last_activity = Instant::now();
                }
            }
        }
    }

    /// Handles a batch taken from the mailbox, writes it, and commits or
    /// releases it (and reloads the code if the batch asked for it).
    async fn handle_taken(&mut self, commands: &mut Vec<Command>) -> Result<(), String> {
        self.last_activity = Instant::now();
        let slot = self.slot.clone();
        contained(&slot, || self.handle_batch(commands)).map_err(|f| f.to_string())?;
        self.after_batch()?;
        if let Some(kind) = self.pending_reload.take() {
            self.reload(kind).await?;
        }
        Ok(())
    }

    /// Writes the batch, then starts an fsync (strict) or releases at once.
    fn after_batch(&mut self) -> Result<(), String> {
        self.flush_presence();
        self.flush_batch()?;
        match self.durability {
            Durability::Strict => self.commit_or_gather(),
            Durability::Relaxed | Durability::Off => {
                self.durable = self.seq;
                self.release();
                if self.durability == Durability::Relaxed && self.sync_due.is_none() {
                    self.sync_due = Some(Instant::now() + RELAXED_SYNC);
                }
            }
        }
        if self.snapshot_due.reached(
            self.unsnapshotted,
            self.unsnapshotted_work,
            self.snapshot_took,
        ) {
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
    fn handle_batch(&mut self, commands: &mut Vec<Command>) -> Result<(), CallFatal> {
        each_in_order(commands, |command| {
            let started = Instant::now();
            let handled = self.handle(command);
            if started.elapsed() >= SLOW_EVENT {
                self.slot.stats.mark_slow();
            }
            handled
        })
    }

    fn handle(&mut self, command: Command) -> Result<(), CallFatal> {
        self.slot.stats.events_in.fetch_add(1, Ordering::Relaxed);
        match command {
            Command::Join {
                channel,
                params,
                msg_ref,
            } => self.join(channel, &params, msg_ref),
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } => {
                if event == "presence_update" {
                    let result = match &reply {
                        ReplyTo::Channel { channel, .. } if self.is_member(channel) => self
                            .presence
                            .update(&conn, payload.get(), Instant::now())
                            .map(|()| "{}".to_string())
                            .map_err(|e| e.to_string()),
                        _ => Err("presence_update needs a joined channel".to_string()),
                    };
                    if result.is_ok() {
                        self.presence_changed();
                    }
                    self.gate_now(Effect::Reply { to: reply, result });
                    return Ok(());
                }
                if let ReplyTo::Channel { channel, .. } = &reply {
                    let member = self.members.get(&channel.conn.id);
                    if member.is_none_or(|m| m.channel.as_ref().is_none_or(|c| c.id != channel.id))
                    {
                        self.gate_now(Effect::Reply {
                            to: reply,
                            result: Err("unmatched topic".into()),
                        });
                        return Ok(());
                    }
                }
                let hook = Hook::Message {
                    event: &event,
                    payload: payload.get(),
                };
                let at = self.next_at();
                let result =
                    self.run_event(at, EventKind::Message, &conn, Some(&event), &payload, hook)?;
                self.gate_now(Effect::Reply { to: reply, result });
                Ok(())
            }
            Command::Leave {
                channel,
                conn_id,
                reason,
                reply,
            } => self.leave(&conn_id, Some(channel), reason, reply),
            Command::Reload(kind) => {
                self.pending_reload = Some(kind);
                Ok(())
            }
            Command::ScriptError(error) => {
                self.report_script_error(&error);
                Ok(())
            }
            Command::Inspect(reply) => {
                let state = match self.js.snapshot() {
                    Ok(state) => Ok(state),
                    Err(CallError::Script { message, .. }) => {
                        Err(RoomError::Refused(format!("snapshot() threw: {message}")))
                    }
                    Err(CallError::Fatal(f)) => {
                        let _ = reply.send(Err(RoomError::Crashed));
                        return Err(CallFatal(f.to_string()));
                    }
                };
                let _ = reply.send(state);
                Ok(())
            }
        }
    }

    fn join(
        &mut self,
        channel: Arc<Channel>,
        params: &RawValue,
        msg_ref: Option<Ref>,
    ) -> Result<(), CallFatal> {
        let conn = channel.conn.clone();
        if self.members.contains_key(&conn.id) {
            self.leave(&conn.id, None, LeaveReason::Rejoin, None)?;
        }
        let max = self.shared.config.max_conns_per_room;
        if max > 0 && self.members.len() >= max {
            tracing::debug!(topic = %self.slot.topic, conn = %conn.id, max, "join refused: room is full");
            self.shared.metrics.refused("conns_per_room");
            let to = ReplyTo::Channel {
                channel: channel.clone(),
                msg_ref,
            };
            self.gate_now(Effect::Reply {
                to,
                result: Err("room is full".into()),
            });
            self.gate_now(Effect::Refused(channel));
            return Ok(());
        }
        let at = self.next_at();
        self.presence.join(&conn, (self.seq + 1).to_string(), at);
        self.presence_changed();
        let hook = Hook::Join {
            params: params.get(),
        };
        let result = self.run_event(at, EventKind::Join, &conn, None, params, hook)?;
        let joined = result.is_ok();
        if !joined {
            self.presence.leave(&conn);
        }
        let to = ReplyTo::Channel {
            channel: channel.clone(),
            msg_ref,
        };
        if !joined {
            self.gate_now(Effect::Reply { to, result });
            self.gate_now(Effect::Refused(channel));
            return Ok(());
        }
        self.members.insert(
            conn.id.clone(),
            Member {
                conn,
                channel: Some(channel.clone()),
            },
        );
        // Subscribed before the reply goes out, so a client that has its ok
        // is counted and receives every later broadcast; the same release
        // pass delivers both, so nothing can come in between.
        self.gate_now(Effect::Subscribe(channel.clone()));
        self.gate_now(Effect::Reply { to, result });
        let info = serde_json::json!({
            "topic": self.slot.topic.as_str(),
            "kind": self.slot.topic.kind(),
            "generation": self.generation,
            "version": self.kind.version,
        });
        self.gate_now(Effect::ChannelPush {
            channel: channel.clone(),
            event: "room_info",
            payload: info.to_string(),
        });
        self.gate_now(Effect::ChannelPush {
            channel,
            event: "presence_state",
            payload: self.presence.state_json(),
        });
        Ok(())
    }

    /// Removes a member: `onLeave` runs and is journaled; if it throws, the
    /// membership change is journaled alone (a `drop` event).
    fn leave(
        &mut self,
        conn_id: &str,
        channel: Option<ChannelId>,
        reason: LeaveReason,
        reply: Option<Ref>,
    ) -> Result<(), CallFatal> {
        let Some(member) = self.members.get(conn_id) else {
            return Ok(()); // already gone (e.g. a leave racing a crash)
        };
        let member_channel = member.channel.as_ref().map(|c| c.id);
        if channel.is_some() && channel != member_channel {
            return Ok(()); // a leave for an older channel of this connection
        }
        let Some(member) = self.members.remove(conn_id) else {
            return Ok(());
        };
        self.presence.leave(&member.conn);
        self.presence_changed();
        let data =
            RawValue::from_string(protocol::json_string(reason.as_str())).expect("a JSON string");
        let hook = Hook::Leave {
            reason: reason.as_str(),
        };
        let at = self.next_at();
        if self
            .run_event(at, EventKind::Leave, &member.conn, None, &data, hook)?
            .is_err()
        {
            let empty = protocol::empty_object();
            let at = self.next_at();
            self.run_event(at, EventKind::Drop, &member.conn, None, &empty, Hook::Drop)?
                .map_err(|e| CallFatal(format!("dropping a member failed: {e}")))?;
        }
        if let Some(channel) = member.channel {
            if let Some(msg_ref) = reply {
                let to = ReplyTo::Channel {
                    channel: channel.clone(),
                    msg_ref: Some(msg_ref),
                };
                self.gate_now(Effect::Reply {
                    to,
                    result: Ok("{}".into()),
                });
            }
            let close = matches!(reason, LeaveReason::Left | LeaveReason::Shutdown);
            self.gate_now(Effect::Unsubscribe {
                channel: channel.id,
                close,
            });
        }
        Ok(())
    }

    /// Runs a hook as a journaled event. `Ok(Err(reason))` is a script error
    /// (already rolled back); `Err` is fatal for the room.
    fn run_event(
        &mut self,
        at: i64,
        kind: EventKind,
        conn: &Conn,
        event: Option<&str>,
        data: &RawValue,
        hook: Hook,
    ) -> Result<Result<String, String>, CallFatal> {
        let seed: u64 = rand::random();
        if self.presence_dirty {
            self.js.set_presence(self.presence.state_json());
            self.presence_dirty = false;
        }
        let started = Instant::now();
        let called = self.js.call(conn, hook, at, seed);
        let took = started.elapsed();
        self.shared
            .metrics
            .hook(self.slot.topic.kind(), kind.label(), took);
        match called {
            Ok(called) => {
                self.last_at = at;
                self.seq += 1;
                if self.batch.is_empty() {
                    self.batch_first = self.seq;
                }
                Event {
                    seq: self.seq,
                    kind,
                    at,
                    seed,
                    conn: ConnRecord {
                        id: (&*conn.id).into(),
                        user: (&*conn.user).into(),
                        meta: &conn.meta,
                    },
                    event: event.map(Into::into),
                    data,
                }
                .encode_into(&mut self.batch);
                for effect in called.effects {
                    let effect = match effect {
                        JsEffect::Broadcast {
                            event,
                            payload,
                            except,
                        } => Effect::Broadcast {
                            event,
                            payload,
                            except,
                        },
                        JsEffect::Push {
                            conn_id,
                            event,
                            payload,
                        } => Effect::Push {
                            conn_id,
                            event,
                            payload,
                        },
                    };
                    self.gate.push_back((self.seq, effect));
                }
                self.unsnapshotted += 1;
                self.unsnapshotted_work += took;
                self.unsnapshotted_since.get_or_insert_with(Instant::now);
                Ok(Ok(called.response))
            }
            Err(CallError::Script { message, stack }) => {
                tracing::warn!(
                    topic = %self.slot.topic,
                    generation = self.generation,
                    hook = ?kind,
                    error = %message,
                    stack = stack.as_deref().unwrap_or(""),
                    "hook threw; rolling back"
                );
                self.slot.push_console(ConsoleLine {
                    at: now_ms(),
                    generation: self.generation,
                    level: super::LogLevel::Error,
                    message: format!(
                        "{:?} threw: {message}{}",
                        kind,
                        stack.map(|s| format!("\n{s}")).unwrap_or_default()
                    ),
                });
                self.rollback()?;
                Ok(Err(message))
            }
            Err(CallError::Fatal(fatal)) => Err(CallFatal(fatal.to_string())),
        }
    }

    /// Rebuilds the context from the store: the state before the failed call.
    fn rollback(&mut self) -> Result<(), CallFatal> {
        self.flush_batch().map_err(CallFatal)?;
        let recovered = self
            .store
            .recover(None)
            .map_err(|e| CallFatal(format!("reading the journal: {e}")))?;
        let js =
            load_js(&self.shared, &self.slot, &self.kind, self.generation).map_err(CallFatal)?;
        replay(&js, &recovered, &self.slot.topic).map_err(CallFatal)?;
        self.js = js;
        if recovered.events.len() as u64 > ROLLBACK_SNAPSHOT_AFTER {
            self.take_snapshot().map_err(CallFatal)?;
        }
        Ok(())
    }

    /// The time of the next event: now, but never before the last one.
    fn next_at(&self) -> i64 {
        now_ms().max(self.last_at)
    }

    fn is_member(&self, channel: &Channel) -> bool {
        self.members
            .get(&channel.conn.id)
            .and_then(|m| m.channel.as_ref())
            .is_some_and(|c| c.id == channel.id)
    }

    fn presence_changed(&mut self) {
        self.presence_dirty = true;
    }

    /// Queues the presence changes since the last diff as one broadcast.
    fn flush_presence(&mut self) {
        if let Some(diff) = self.presence.take_diff() {
            self.gate_now(Effect::Broadcast {
                event: "presence_diff".into(),
                payload: diff,
                except: None,
            });
        }
    }

    /// Queues an output behind every event journaled so far.
    pub(super) fn gate_now(&mut self, effect: Effect) {
        self.gate.push_back((self.seq, effect));
    }

    async fn try_idle_stop(&mut self, mailbox: &Mailbox) -> Result<bool, String> {
        self.settle(true).await?;
        let stopped = self.shared.rooms.remove_if_unreachable(&self.slot, mailbox);
        if stopped {
            tracing::info!(topic = %self.slot.topic, generation = self.generation, "idle room stopped");
        }
        Ok(stopped)
    }

    async fn shut_down(&mut self) -> Result<(), String> {
        let members: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| m.channel.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in members {
            self.leave(&id, None, LeaveReason::Shutdown, None)
                .map_err(|f| f.to_string())?;
        }
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
        stats
            .js_memory
            .store(self.js.memory_used(), Ordering::Relaxed);
        stats
            .journal_bytes
            .store(self.store.bytes(), Ordering::Relaxed);
    }
}

/// A fatal error inside event handling, with its description.
#[derive(Debug)]
pub(super) struct CallFatal(pub(super) String);

impl std::fmt::Display for CallFatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SnapshotDue, each_in_order, snapshot_jitter};

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
