//! Hot reload: watch the scripts directory and move running rooms to new
//! code without a restart. It belongs to the rooms: the scripts layer only
//! compiles and reports what changed.
//!
//! The watcher (notify) only says "something changed" (access events, such
//! as the refresh's own reads, are ignored); after a short quiet period
//! [`Scripts::refresh`](crate::scripts::Scripts::refresh) re-reads every
//! known kind's sources, compiles what changed in a scratch runtime, and
//! reports the outcome. Editors that save through a temp file and a rename
//! need no special casing, because the refresh reads the files themselves.
//! A good new version is sent to every live room of the kind (each switches
//! in place, see `room::task`), and failed rooms of the kind are reset; a
//! broken one is reported to the log, the API and every channel of the kind
//! while the old version keeps serving.

use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::{Command, Revival, RoomState, Rooms};
use crate::scripts::KindChange;

/// How long the directory must stay quiet before a refresh, so the several
/// events of one save (temp file, write, rename) make one refresh.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the file watcher alive; dropping it stops watching.
pub(crate) struct Watcher {
    _watcher: RecommendedWatcher,
}

/// Watches the rooms' scripts directory until the watcher is dropped.
pub(crate) fn watch(rooms: &Rooms) -> Result<Watcher, String> {
    let env = rooms.env();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!(error = %e, "watching the scripts directory"),
        })
        .map_err(|e| e.to_string())?;
    watcher
        .watch(env.scripts.root(), RecursiveMode::Recursive)
        .map_err(|e| format!("watching {}: {e}", env.scripts.root().display()))?;
    env.js.spawn(refresh_on_change(rooms.clone(), rx));
    Ok(Watcher { _watcher: watcher })
}

/// Ends when the watcher is dropped (its sender with it).
async fn refresh_on_change(rooms: Rooms, mut changed: mpsc::UnboundedReceiver<()>) {
    while changed.recv().await.is_some() {
        // Wait until the directory is quiet for DEBOUNCE.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
        let scripts = rooms.env().scripts.clone();
        let changes = tokio::task::spawn_blocking(move || scripts.refresh())
            .await
            .unwrap_or_default();
        for change in changes {
            apply(&rooms, change).await;
        }
    }
}

/// Hands one kind's change to its rooms.
async fn apply(rooms: &Rooms, change: KindChange) {
    let rooms_of = |kind: &str| {
        rooms
            .list()
            .into_iter()
            .filter(|slot| slot.topic.kind() == kind)
            .collect::<Vec<_>>()
    };
    match change {
        KindChange::Reloaded(compiled) => {
            tracing::info!(kind = %compiled.kind, version = %compiled.version, "new code compiled");
            for slot in rooms_of(&compiled.kind) {
                if slot.state() == RoomState::Failed {
                    // The code changed: a failed room gets another chance.
                    let _ = rooms.reset(&slot.topic, Revival::CodeChanged).await;
                } else if let Ok(mailbox) = slot.mailbox() {
                    let _ = mailbox.send(Command::Reload(compiled.clone())).await;
                }
            }
        }
        KindChange::Failed { kind, error } => {
            tracing::error!(
                kind = %kind,
                file = %error.file,
                line = error.line,
                column = error.column,
                message = %error.message,
                "script error; the previous version keeps serving"
            );
            for slot in rooms_of(&kind) {
                if let Ok(mailbox) = slot.mailbox() {
                    let _ = mailbox.send(Command::ScriptError(error.clone())).await;
                }
            }
        }
        KindChange::Removed { kind } => {
            tracing::warn!(kind = %kind, "room kind removed: running rooms keep their code, new rooms are refused");
        }
    }
}
