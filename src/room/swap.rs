//! Hot reload inside a room: switching to a new version of the kind's code
//! without dropping a channel or an event.

use std::sync::Arc;

use super::Crash;
use super::replay::{load_js_checked, replay};
use super::task::Room;
use crate::engine::{CallError, Emit, RoomJs};
use crate::scripts::{CompiledKind, ScriptError};

impl Room {
    /// Switches to a new version of the kind's code in place: `snapshot()` on
    /// the old code, `restore()` on the new (or, for kinds without those, a
    /// replay of the journal with the new code). Channels stay joined and get
    /// `room_reloaded`; the journal gets a snapshot at the switch so replay
    /// never mixes versions. If the new code fails, the old one stays.
    pub(super) async fn reload(&mut self, kind: Arc<CompiledKind>) -> Result<(), Crash> {
        if kind.version == self.kind.version {
            return Ok(());
        }
        self.settle(false).await?;
        self.js()?; // a hibernated room wakes to switch
        if !self.storage.is_healthy() {
            self.pending_reload = Some(kind); // after the storage is back
            return Ok(());
        }
        let generation = self.generation + 1;
        match self.switch_to(&kind, generation) {
            Ok(js) => {
                self.next_timer = js.next_timer();
                self.js = Some(js);
                self.kind = kind;
                self.generation = generation;
                self.members.presence_changed();
                self.slot
                    .set_running(generation, &self.kind.version, self.kind.has_snapshot);
                self.snapshots.force_next();
                self.take_snapshot()?;
                let payload = serde_json::json!({
                    "version": self.kind.version,
                    "generation": generation,
                });
                self.hold_now(Emit::to_all("room_reloaded", payload.to_string()));
                tracing::info!(topic = %self.slot.topic, generation, version = %self.kind.version, "room reloaded");
            }
            Err(error) => {
                tracing::error!(topic = %self.slot.topic, error = %error, "new code refused; keeping the running version");
                self.slot.set_last_error(format!("reload failed: {error}"));
                self.report_script_error(&error);
            }
        }
        self.release();
        Ok(())
    }

    fn switch_to(
        &mut self,
        kind: &Arc<CompiledKind>,
        generation: u64,
    ) -> Result<RoomJs, ScriptError> {
        let js = load_js_checked(self.env(), &self.slot, kind, generation)?;
        let at_entry = |message: String| ScriptError::from_js(&kind.entry, &message, None);
        if self.kind.has_snapshot && kind.has_snapshot {
            let running = self.js.as_ref().ok_or_else(|| {
                ScriptError::from_js(&self.kind.entry, "the running code is not loaded", None)
            })?;
            let state = running.snapshot().map_err(|e| {
                ScriptError::from_js(
                    &self.kind.entry,
                    &format!("snapshot() in the running code threw: {e}"),
                    None,
                )
            })?;
            js.restore(&state, self.journal.last_at())
                .map_err(|e| match e {
                    CallError::Script { message, stack } => ScriptError::from_js(
                        &kind.entry,
                        &format!("restore() threw: {message}"),
                        stack.as_deref(),
                    ),
                    CallError::Fatal(f) => at_entry(format!("restore(): {f}")),
                })?;
        } else {
            let recovered = self.journal.reread().map_err(|e| at_entry(e.to_string()))?;
            replay(&js, &recovered, &self.slot.topic).map_err(|e| at_entry(e.to_string()))?;
        }
        Ok(js)
    }

    /// Tells every channel that the kind's new code was refused.
    pub(super) fn report_script_error(&mut self, error: &ScriptError) {
        let payload = serde_json::json!({
            "kind": self.slot.topic.kind(),
            "file": error.file,
            "line": error.line,
            "column": error.column,
            "message": error.message,
        });
        self.hold_now(Emit::to_all("script_error", payload.to_string()));
    }
}
