//! Hibernation: a room whose channels are joined but quiet for
//! `--hibernate-after` frees its JavaScript runtime (most of a resident
//! room's memory) and its journal's file handle, while its channels, their
//! presence and subscriptions, its timers and its messages to other rooms
//! stay with the room task. The next event that needs JavaScript — a push, a
//! join, a leave, a timer, a request, a room message — loads it again first,
//! and the client sees nothing but the reply.
//!
//! A kind with `snapshot()`/`restore()` keeps its snapshot in memory while it
//! sleeps (the state as of its last durable event) and restores it on wake.
//! A kind without them replays its journal on wake; it hibernates only while
//! that replay would take at most [`MAX_WAKE_REPLAY`] (its hooks' measured
//! time since the room started), and otherwise stays resident.

use std::time::{Duration, Instant};

use super::Crash;
use super::replay::{load_js, replay};
use super::task::Room;
use crate::engine::{CallError, RoomJs};

/// The most replay work a kind without `snapshot()` may need to wake.
pub(super) const MAX_WAKE_REPLAY: Duration = Duration::from_millis(2);

/// What a hibernated room keeps to wake.
pub(super) struct Asleep {
    /// `snapshot()`'s state (with members and timers), or `None` to replay.
    state: Option<String>,
}

impl Asleep {
    /// The state the room would snapshot, if it keeps one.
    pub(super) fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }
}

impl Room {
    /// Whether the room may hibernate now, as far as its own state goes.
    pub(super) fn may_hibernate(&self) -> bool {
        self.js.is_some()
            && !self.members.is_empty()
            && self.storage.is_healthy()
            && self.outbox.is_empty()
            && !self.gate.holds_sends()
            && self.pending_reload.is_none()
            && self.kicks.is_empty()
            && (self.kind.has_snapshot || self.snapshots.replay_work() <= MAX_WAKE_REPLAY)
    }

    /// Frees the room's JavaScript until its next event. Everything is made
    /// durable and released first; a room that cannot (storage) stays awake.
    pub(super) async fn hibernate(&mut self) -> Result<(), Crash> {
        self.settle(false).await?;
        if !self.may_hibernate() || self.journal.committing() || self.snapshots.unwritten() {
            return Ok(());
        }
        let Some(js) = &self.js else {
            return Ok(());
        };
        let state = if self.kind.has_snapshot {
            match js.snapshot() {
                Ok(state) => Some(state),
                Err(CallError::Script { message, .. }) => {
                    tracing::debug!(topic = %self.slot.topic, error = %message, "snapshot() threw; the room stays awake");
                    return Ok(());
                }
                Err(CallError::Fatal(fatal)) => return Err(fatal.into()),
            }
        } else {
            None
        };
        self.js = None;
        self.asleep = Some(Asleep { state });
        // A sleeping room holds no file open: the next write starts a segment.
        self.journal.rotate();
        self.journal.shrink();
        self.gate.shrink();
        self.slot.set_hibernated(true);
        self.env().metrics.room_hibernated();
        self.rooms.heap_freed();
        self.refresh_stats(true);
        tracing::debug!(topic = %self.slot.topic, generation = self.generation, "room hibernated");
        Ok(())
    }

    /// The room's JavaScript, loaded again first if it hibernated.
    pub(super) fn js(&mut self) -> Result<&RoomJs, Crash> {
        if self.js.is_none() {
            let js = self.wake()?;
            self.js = Some(js);
        }
        self.js
            .as_ref()
            .ok_or_else(|| Crash::script("the room's JavaScript is not loaded"))
    }

    /// Loads the JavaScript of a hibernated room: restores its snapshot, or
    /// replays its journal.
    fn wake(&mut self) -> Result<RoomJs, Crash> {
        let started = Instant::now();
        let asleep = self.asleep.take();
        let js = load_js(self.env(), &self.slot, &self.kind, self.generation)?;
        match asleep.and_then(|a| a.state) {
            Some(state) => js
                .restore(&state, self.journal.last_at())
                .map_err(|e| match e {
                    CallError::Fatal(fatal) => Crash::Js {
                        fatal,
                        context: Some("restore() after hibernation".into()),
                    },
                    CallError::Script { message, .. } => {
                        Crash::script(format!("restore() after hibernation failed: {message}"))
                    }
                })?,
            None => {
                let recovered = self.journal.reread()?;
                replay(&js, &recovered, &self.slot.topic)?;
            }
        }
        self.members.presence_changed();
        self.slot.set_hibernated(false);
        let took = started.elapsed();
        self.env().metrics.room_woke(took);
        tracing::debug!(topic = %self.slot.topic, took_us = took.as_micros() as u64, "room woke");
        Ok(js)
    }
}
