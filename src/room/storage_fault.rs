//! What a room does when its storage fails and when it comes back (see
//! `storage` for the states).
//!
//! A failed write or fsync undoes every event that is not durable: their
//! replies become `storage unavailable: <cause>` errors (never an ok), their
//! broadcasts are never sent, and the room's JavaScript is rebuilt from the
//! durable events. The journal is cut back to the last durable record and
//! reopened before it is written again: after a failed fsync the kernel may
//! have dropped the dirty pages and marked them clean, so nothing written
//! after the last good fsync is trusted (the 2018 "fsyncgate" lesson). The
//! room then probes the storage until a write and an fsync succeed; a crash
//! or a restart loop never happens for a storage error.

use std::io;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::events::JoinKind;
use super::journal::{StorageError, spawn_store};
use super::replay::{load_js, replay};
use super::storage::Healed;
use super::task::Room;
use super::{Crash, LeaveReason};
use crate::hub::{Channel, Emit, FanOut, Output};
use crate::store::Recovered;

impl Room {
    /// A write or fsync failed: undo what is not durable, rebuild, and
    /// refuse what needs the journal until a probe succeeds. Crashes the
    /// room only if not even the durable state can be read.
    pub(super) fn storage_failed(&mut self, failed: StorageError) -> Result<(), Crash> {
        if crate::store::ownership_error(&failed.error).is_some() {
            return Err(self.ownership_lost(Crash::from(failed)));
        }
        let reason = format!("storage unavailable: {failed}");
        let journaled = self.journal.discard_undurable();
        let durable = self.journal.durable();
        // On record before any client hears of it.
        self.enter_fault(&failed, journaled - durable);
        self.gate.refuse_after(durable, &reason, &self.slot.hub);
        let recovered = match self.journal.cut_to_durable() {
            Ok(recovered) => recovered,
            // The cut needs a write too; the probe retries it.
            Err(_) => self.journal.durable_state()?,
        };
        self.rebuild(&recovered)?;
        self.release();
        Ok(())
    }

    /// Another node took the room (cluster mode: an append was refused
    /// because the journal moved on, or the lease ran out). Nothing that is
    /// not durable is ever sent: replies to those events become errors,
    /// their broadcasts are dropped. Returns the crash that ends the task;
    /// the supervisor does not restart the room here.
    pub(super) fn ownership_lost(&mut self, crash: Crash) -> Crash {
        self.journal.discard_undurable();
        let durable = self.journal.durable();
        tracing::error!(
            topic = %self.slot.topic,
            generation = self.generation,
            durable,
            reason = %crash,
            "room lost to another node: it stops here, sending nothing more"
        );
        self.gate
            .refuse_after(durable, &crash.to_string(), &self.slot.hub);
        crash
    }

    /// Records the fault (the log and the channels hear of it once).
    pub(super) fn enter_fault(&mut self, failed: &StorageError, refused: u64) {
        let first = self.storage.fault(failed.to_string());
        self.slot.set_storage(self.storage.status());
        if first {
            tracing::error!(
                topic = %self.slot.topic,
                generation = self.generation,
                error = %failed,
                durable = self.journal.durable(),
                refused,
                "storage fault: events that need the journal are refused until it takes writes again"
            );
            self.env().metrics.storage_fault(failed.what);
            self.tell_storage();
        }
    }

    /// Rebuilds the room's JavaScript and members from `recovered`.
    fn rebuild(&mut self, recovered: &Recovered) -> Result<(), Crash> {
        if recovered.last_seq != self.journal.durable() {
            tracing::error!(
                topic = %self.slot.topic,
                durable = self.journal.durable(),
                found = recovered.last_seq,
                "the store does not end at the last durable event; continuing from what it holds"
            );
            self.journal.restart_at(recovered.last_seq);
        }
        let js = load_js(self.env(), &self.slot, &self.kind, self.generation)?;
        let replayed = replay(&js, recovered, &self.slot.topic)?;
        self.next_timer = js.next_timer();
        self.js = Some(js);
        self.asleep = None;
        self.inbox = replayed.inbox;
        let presence = replayed
            .presence
            .take()
            .with_typing_timeout(self.env().config.typing_timeout)
            .with_diff_interval(self.env().config.presence_interval);
        let hub = &self.slot.hub;
        self.members
            .reconcile(replayed.members, presence, |c| hub.contains(c.id));
        Ok(())
    }

    /// Rebuilds the room's JavaScript from the durable events only (after a
    /// read-only join ran `onJoin` without journaling it).
    pub(super) fn undo_to_durable(&mut self) -> Result<(), Crash> {
        let recovered = self.journal.durable_state()?;
        let js = load_js(self.env(), &self.slot, &self.kind, self.generation)?;
        replay(&js, &recovered, &self.slot.topic)?;
        self.js = Some(js);
        self.asleep = None;
        Ok(())
    }

    /// The next probe is due: a write and an fsync where the journal lives.
    pub(super) fn start_probe(&mut self) {
        let probe = spawn_store(self.journal.probe_job());
        self.storage.start_probe(probe);
    }

    /// A probe finished. On success the journal is cut back to the durable
    /// events and reopened, and the room resumes.
    pub(super) async fn probed(&mut self, done: io::Result<()>) -> Result<(), Crash> {
        let reopened = done
            .map_err(|error| StorageError {
                what: "probing the storage",
                error,
            })
            .and_then(|()| self.journal.cut_to_durable());
        let recovered = match reopened {
            Ok(recovered) => recovered,
            // Cluster mode: another node took the room meanwhile.
            Err(failed) if crate::store::ownership_error(&failed.error).is_some() => {
                return Err(self.ownership_lost(Crash::from(failed)));
            }
            Err(failed) => {
                tracing::debug!(topic = %self.slot.topic, error = %failed, "storage still unavailable");
                self.storage.probe_failed();
                return Ok(());
            }
        };
        if recovered.last_seq != self.journal.durable() {
            self.rebuild(&recovered)?;
        }
        if let Some(healed) = self.storage.heal() {
            self.storage_healthy(healed).await?;
        }
        Ok(())
    }

    /// The fsync in flight passed the stall threshold.
    pub(super) fn fsync_stalled(&mut self) {
        self.storage.stalled();
        self.slot.set_storage(self.storage.status());
        tracing::warn!(
            topic = %self.slot.topic,
            generation = self.generation,
            reason = self.storage.refusal().unwrap_or_default(),
            "storage stalled: new events are refused until the fsync finishes"
        );
        self.env().metrics.storage_stall();
        self.tell_storage();
    }

    /// The storage is healthy again: tell the channels, then journal what
    /// waited for it (deferred leaves, read-only joins) and apply a reload
    /// that waited too.
    pub(super) async fn storage_healthy(&mut self, healed: Healed) -> Result<(), Crash> {
        self.slot.set_storage(None);
        tracing::info!(
            topic = %self.slot.topic,
            generation = self.generation,
            was = healed.state,
            lasted_ms = healed.lasted.as_millis() as u64,
            "storage available again"
        );
        self.env()
            .metrics
            .storage_recovered(healed.state, healed.lasted);
        self.tell_storage();
        for id in self.members.without_channel() {
            self.leave(&id, None, LeaveReason::Disconnect, None)?;
        }
        for (viewer, params) in self.members.take_viewers() {
            if !self.slot.hub.contains(viewer.id) {
                continue; // left meanwhile
            }
            self.join_for_real(viewer, &params)?;
        }
        self.after_batch()?;
        if self.storage.is_healthy()
            && let Some(kind) = self.pending_reload.take()
        {
            self.reload(kind).await?;
        }
        Ok(())
    }

    /// A viewer's join is journaled now: it becomes a member (its client
    /// already has its join reply). If `onJoin` refuses it now, the channel
    /// gets `phx_error`, so the client joins again and hears why.
    fn join_for_real(&mut self, viewer: Arc<Channel>, params: &RawValue) -> Result<(), Crash> {
        let joined = self.join_member(viewer.clone(), params, None, JoinKind::Promoted)?;
        if !joined {
            self.slot.hub.unsubscribe(viewer.id);
            viewer.close_with("phx_error");
        }
        Ok(())
    }

    /// Tells every channel the storage's state, at once (not behind the
    /// gate: during a stall the gate waits for the very fsync that stalls).
    pub(super) fn tell_storage(&self) {
        let payload = match self.storage.status() {
            Some(status) => serde_json::json!({
                "available": false,
                "state": status.state,
                "cause": status.cause,
                "since": status.since,
            }),
            None => serde_json::json!({ "available": true }),
        };
        self.slot
            .hub
            .deliver(Output::Emit(Emit::to_all("storage", payload.to_string())));
    }
}
