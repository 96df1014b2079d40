//! Supervision: one room task per generation, restarted after a [`Crash`]
//! with backoff (0, 50, 100 … ms, capped at 2 s). More than `max_restarts`
//! crashes within `restart_window` mark the room failed until an admin
//! resets it or its script changes (the OTP restart intensity).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Duration;

use super::crash::Exit;
use super::registry::Rooms;
use super::remote::Proxied;
use super::{Command, Crash, Mailbox, ReplyTo, RoomError, RoomSlot, task};
use crate::hub::Outbound;
use crate::store::OwnershipError;

/// How long a room whose owner went away waits before asking for its
/// lease again (its channels rejoin meanwhile).
const OWNER_GONE_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn supervise(rooms: Rooms, slot: Arc<RoomSlot>) {
    let env = rooms.env();
    let topic = slot.topic.clone();
    let mut keep_upto = None;
    loop {
        let generation = slot.begin_generation();
        let task = env.js.spawn(task::run(
            rooms.clone(),
            slot.clone(),
            generation,
            keep_upto,
        ));
        slot.set_abort(task.abort_handle());
        let crash = match task.await {
            Ok(Exit::Stopped) => return,
            Ok(Exit::Crashed(crash)) => crash,
            Err(e) if e.is_cancelled() => Crash::Killed,
            Err(e) => Crash::Panic(match e.try_into_panic() {
                Ok(panic) => panic_message(&*panic),
                Err(e) => e.to_string(),
            }),
        };
        if let (Crash::Ownership(OwnershipError::NotOwner { node }), Some(remote)) =
            (&crash, &env.remote)
        {
            // Cluster mode: another node runs the room. This slot forwards
            // to it until that fails, then asks for the lease again.
            tracing::debug!(topic = %topic, owner = %node, "room runs on another node: forwarding to it");
            if let Some(backplane) = slot.hub.backplane() {
                // Served from here until now: broadcasts stop going out.
                slot.hub.detach_backplane(&backplane);
            }
            slot.mark_stopped();
            slot.set_forwarded_to(Some(node.clone()));
            let proxied = remote
                .proxy(rooms.clone(), slot.clone(), node.clone())
                .await;
            slot.set_forwarded_to(None);
            match proxied {
                Proxied::Stopped => return,
                Proxied::OwnerGone => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(OWNER_GONE_BACKOFF) => {}
                _ = env.shutdown.cancelled() => {
                    slot.mark_stopped();
                    return;
                }
            }
            continue;
        }
        if let Crash::Ownership(why) = &crash {
            // Cluster mode: another node owns the room. It does not run
            // here: its channels rejoin (and hear which node owns it), what
            // waited is refused, and the next use asks for the lease again.
            tracing::info!(topic = %topic, generation, reason = %crash, "room not served here: another node owns it");
            env.metrics.room_crashed(crash.label());
            let node = match why {
                OwnershipError::NotOwner { node } => Some(node.clone()),
                OwnershipError::Lost(_) => None,
            };
            rooms.forget(&slot, &crash);
            for channel in slot.hub.drain() {
                channel.close_with("phx_error");
            }
            refuse_queued(&slot, RoomError::NotOwner { node }, true).await;
            return;
        }
        tracing::warn!(topic = %topic, generation, reason = %crash, cause = crash.label(), "room crashed");
        env.metrics.room_crashed(crash.label());
        // Events journaled but never released were never acknowledged.
        keep_upto = Some(slot.stats.released_seq.load(Ordering::Relaxed));
        // The crash is on record before any channel hears of it, so a client
        // that reacts to its `phx_error` already sees it in the admin API.
        let restart = if env.shutdown.is_cancelled() {
            slot.mark_stopped();
            None
        } else {
            Some(slot.record_crash(&crash, env.config.max_restarts, env.config.restart_window))
        };
        for channel in slot.hub.drain() {
            channel.close_with("phx_error");
        }
        let Some(restart) = restart else { return };
        let Some(backoff) = restart else {
            tracing::error!(topic = %topic, "room failed: restart intensity exceeded");
            let error = slot.mailbox().err().unwrap_or(RoomError::Crashed);
            refuse_queued(&slot, error, false).await;
            return;
        };
        env.metrics.room_restarted(crash.label());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = env.shutdown.cancelled() => {
                slot.mark_stopped();
                return;
            }
        }
    }
}

/// Answers what waited in a failed (or, with `close`, abandoned) room's
/// mailbox with `error`; `close` also refuses every later send.
async fn refuse_queued(slot: &RoomSlot, error: RoomError, close: bool) {
    let response = error.response_json().to_string();
    let mut mailbox = slot.mailbox_rx.lock().await;
    let Mailbox { rx, taken } = &mut *mailbox;
    if close {
        rx.close();
    }
    let queued = std::iter::from_fn(|| rx.try_recv().ok());
    for command in taken.drain(..).chain(queued) {
        match *command {
            Command::Join {
                channel, msg_ref, ..
            } => {
                channel.deliver_error_response(msg_ref.as_ref(), &response);
                channel.peer.deliver(Outbound::ChannelClosed(channel.id));
            }
            Command::Message { reply, .. } => match reply {
                ReplyTo::Channel { channel, msg_ref } => {
                    channel.deliver_error_response(msg_ref.as_ref(), &response);
                }
                ReplyTo::Caller(tx) => {
                    let _ = tx.send(Err(error.clone()));
                }
            },
            Command::Inspect(tx) | Command::Request { reply: tx, .. } => {
                let _ = tx.send(Err(error.clone()));
            }
            Command::Deliver { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Leave { .. } | Command::Reload(_) | Command::ScriptError(_) => {}
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
