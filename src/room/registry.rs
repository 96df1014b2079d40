//! The registry of live rooms and their supervisors.
//!
//! A topic's first use registers a [`RoomSlot`] and spawns its supervisor,
//! under one lock, so concurrent first joins can never start two tasks for a
//! topic. The supervisor runs one room task per generation and restarts it
//! after a crash with backoff; more than `max_restarts` crashes within
//! `restart_window` mark the room failed until an admin resets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::task::{self, Exit};
use super::{Command, Mailbox, ReplyTo, RoomError, RoomSlot, RoomState};
use crate::config::Durability;
use crate::feed::Feed;
use crate::host::Shared;
use crate::hub::Outbound;
use crate::scripts::KindError;
use crate::store::MemoryJournal;
use crate::topic::Topic;

/// Topic → slot, plus the in-memory journals of stopped rooms (durability
/// `off`) and the feeds SSE streams listen to.
#[derive(Default)]
pub struct Rooms {
    /// A std mutex: held only for map operations and a slot status check,
    /// never across an await.
    map: Mutex<HashMap<Topic, Arc<RoomSlot>>>,
    parked: Mutex<HashMap<Topic, Arc<Mutex<MemoryJournal>>>>,
    /// Topic → its feed while anything holds it (a slot's hub or a stream).
    /// Always locked after `map`, so a feed and a new slot of its topic can
    /// never miss each other.
    feeds: Mutex<HashMap<Topic, Weak<Feed>>>,
}

impl Rooms {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Arc<RoomSlot>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, topic: &Topic) -> Option<Arc<RoomSlot>> {
        self.map().get(topic).cloned()
    }

    /// The topic's feed, created if needed and attached to its room's hub
    /// (now, or when the room next starts).
    pub(crate) fn feed(&self, topic: &Topic) -> Arc<Feed> {
        let map = self.map();
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(topic).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let feed = Arc::new(Feed::default());
        feeds.insert(topic.clone(), Arc::downgrade(&feed));
        if let Some(slot) = map.get(topic) {
            slot.hub.attach_feed(feed.clone());
        }
        feed
    }

    /// The topic's feed if something still holds it. Call with `map` locked.
    fn live_feed(&self, topic: &Topic) -> Option<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.get(topic).and_then(Weak::upgrade)
    }

    /// Every registered room, by topic.
    pub fn list(&self) -> Vec<Arc<RoomSlot>> {
        let mut rooms: Vec<_> = self.map().values().cloned().collect();
        rooms.sort_by(|a, b| a.topic.cmp(&b.topic));
        rooms
    }

    /// Called by an idle room task: unregisters the room if nothing can send
    /// to it any more. Holding the map lock means no new sender appears.
    pub(crate) fn remove_if_unreachable(&self, slot: &Arc<RoomSlot>, mailbox: &Mailbox) -> bool {
        let mut map = self.map();
        if !slot.stop_if_unreachable(mailbox) {
            return false;
        }
        map.remove(&slot.topic);
        if let Some(memory) = &slot.memory {
            self.parked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(slot.topic.clone(), memory.clone());
        }
        true
    }
}

/// The room for `topic`, started if needed, and its mailbox.
pub(crate) fn open(
    shared: &Arc<Shared>,
    topic: &Topic,
) -> Result<(Arc<RoomSlot>, mpsc::Sender<Command>), RoomError> {
    if shared.shutdown.is_cancelled() {
        return Err(RoomError::ShuttingDown);
    }
    if let Some(slot) = shared.rooms.get(topic) {
        let mailbox = slot.mailbox()?;
        return Ok((slot, mailbox));
    }
    // Compile outside the registry lock; it is cached per kind.
    shared
        .scripts
        .kind_for_new_room(topic.kind())
        .map_err(|e| match e {
            KindError::Unknown => RoomError::UnknownKind,
            KindError::Removed => RoomError::KindRemoved,
            KindError::Script(e) => RoomError::Script(e),
        })?;
    let mut map = shared.rooms.map();
    if let Some(slot) = map.get(topic) {
        let mailbox = slot.mailbox()?;
        return Ok((slot.clone(), mailbox));
    }
    // Checked under the lock that inserts, so concurrent first joins of
    // different topics cannot overshoot the limit.
    let max = shared.config.max_rooms;
    if max > 0 && map.len() >= max {
        tracing::warn!(topic = %topic, max, "room refused: too many rooms");
        shared.metrics.refused("max_rooms");
        return Err(RoomError::TooManyRooms);
    }
    let memory = (shared.config.durability == Durability::Off).then(|| {
        shared
            .rooms
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic)
            .unwrap_or_default()
    });
    let (tx, rx) = mpsc::channel(shared.config.mailbox_capacity.max(1));
    let slot = Arc::new(RoomSlot::new(topic.clone(), tx.clone(), rx, memory));
    if let Some(feed) = shared.rooms.live_feed(topic) {
        slot.hub.attach_feed(feed);
    }
    map.insert(topic.clone(), slot.clone());
    drop(map);
    spawn_supervisor(shared, slot.clone());
    Ok((slot, tx))
}

fn spawn_supervisor(shared: &Arc<Shared>, slot: Arc<RoomSlot>) {
    let supervisor = supervise(shared.clone(), slot);
    shared.tasks.spawn_on(supervisor, &shared.js);
}

/// Brings a failed room back (admin reset or a changed script).
pub(crate) async fn reset(shared: &Arc<Shared>, topic: &Topic) -> Result<RoomState, RoomError> {
    let slot = shared.rooms.get(topic).ok_or(RoomError::NotFound)?;
    if slot.revive(shared.config.mailbox_capacity).await {
        spawn_supervisor(shared, slot.clone());
    }
    Ok(slot.state())
}

/// Aborts the room's task (a simulated crash) and returns the generation
/// that runs after the restart.
pub(crate) async fn kill(shared: &Arc<Shared>, topic: &Topic) -> Result<u64, RoomError> {
    let slot = shared.rooms.get(topic).ok_or(RoomError::NotFound)?;
    if slot.state() == RoomState::Failed {
        return Err(slot.mailbox().err().unwrap_or(RoomError::Crashed));
    }
    let before = slot.generation();
    if !slot.abort() {
        // Starting or restarting: the running generation comes next anyway.
        tracing::info!(topic = %topic, "kill: room is not running yet");
    }
    slot.wait_running_after(before).await
}

async fn supervise(shared: Arc<Shared>, slot: Arc<RoomSlot>) {
    let topic = slot.topic.clone();
    let mut keep_upto = None;
    loop {
        let generation = slot.begin_generation();
        let task = shared.js.spawn(task::run(
            shared.clone(),
            slot.clone(),
            generation,
            keep_upto,
        ));
        slot.set_abort(task.abort_handle());
        let reason = match task.await {
            Ok(Exit::Stopped) => return,
            Ok(Exit::Crashed(reason)) => reason,
            Err(e) if e.is_cancelled() => "killed".to_string(),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => format!("panic: {}", panic_message(&*panic)),
                Err(e) => e.to_string(),
            },
        };
        tracing::warn!(topic = %topic, generation, reason = %reason, "room crashed");
        shared.metrics.room_crashed(&reason);
        // Events journaled but never released were never acknowledged.
        keep_upto = Some(
            slot.stats
                .released_seq
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        // The crash is on record before any channel hears of it, so a client
        // that reacts to its `phx_error` already sees it in the admin API.
        let restart = if shared.shutdown.is_cancelled() {
            slot.mark_stopped();
            None
        } else {
            Some(slot.record_crash(
                &reason,
                shared.config.max_restarts,
                shared.config.restart_window,
            ))
        };
        for channel in slot.hub.drain() {
            channel.close_with("phx_error");
        }
        let Some(restart) = restart else { return };
        let Some(backoff) = restart else {
            tracing::error!(topic = %topic, "room failed: restart intensity exceeded");
            refuse_queued(&slot).await;
            return;
        };
        shared.metrics.room_restarted(&reason);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.shutdown.cancelled() => {
                slot.mark_stopped();
                return;
            }
        }
    }
}

/// Answers what waited in a failed room's mailbox.
async fn refuse_queued(slot: &RoomSlot) {
    let error = slot.mailbox().err().unwrap_or(RoomError::Crashed);
    let reason = error.to_string();
    let mut mailbox = slot.mailbox_rx.lock().await;
    let Mailbox { rx, taken } = &mut *mailbox;
    let queued = std::iter::from_fn(|| rx.try_recv().ok());
    for command in taken.drain(..).chain(queued) {
        match command {
            Command::Join {
                channel, msg_ref, ..
            } => {
                channel.deliver_error_reply(msg_ref.as_ref(), &reason);
                channel.peer.deliver(Outbound::ChannelClosed(channel.id));
            }
            Command::Message { reply, .. } => match reply {
                ReplyTo::Channel { channel, msg_ref } => {
                    channel.deliver_error_reply(msg_ref.as_ref(), &reason);
                }
                ReplyTo::Caller(tx) => {
                    let _ = tx.send(Err(error.clone()));
                }
            },
            Command::Inspect(tx) => {
                let _ = tx.send(Err(error.clone()));
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
