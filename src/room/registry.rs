//! The registry of live rooms: topic → [`RoomSlot`], lazy start, kill and
//! reset.
//!
//! A topic's first use registers a slot and spawns its supervisor, under one
//! lock, so concurrent first joins can never start two tasks for a topic.
//! [`Rooms`] is a cheap handle (the mini-redis `Db` pattern): the map, the
//! parked in-memory journals and the SSE feeds are private to this file, and
//! the `RoomEnv` it owns is what every room task may touch.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::handle::RoomHandle;
use super::{
    Crash, Mailbox, MailboxSender, Revival, RoomEnv, RoomError, RoomSlot, RoomState, supervisor,
};
use crate::config::Durability;
use crate::feed::Feed;
use crate::scripts::KindError;
use crate::store::MemoryJournal;
use crate::topic::Topic;

/// The host's rooms. Cheap to clone.
#[derive(Clone)]
pub struct Rooms(Arc<Registry>);

struct Registry {
    env: RoomEnv,
    /// A std mutex: held only for map operations and a slot status check,
    /// never across an await.
    map: Mutex<HashMap<Topic, Arc<RoomSlot>>>,
    /// The in-memory journals of stopped rooms (durability `off`).
    parked: Mutex<HashMap<Topic, Arc<Mutex<MemoryJournal>>>>,
    /// Topic → its feed while anything holds it (a slot's hub or a stream).
    /// Always locked after `map`, so a feed and a new slot of its topic can
    /// never miss each other.
    feeds: Mutex<HashMap<Topic, Weak<Feed>>>,
    /// Stopped rooms that must run again by a time (ms since the epoch): a
    /// timer falls due, or messages wait to be sent.
    wakeups: Mutex<BTreeSet<(i64, Topic)>>,
    /// Wakes the task that starts them when an earlier one is added.
    wakeup_added: Arc<Notify>,
    /// A room freed its JavaScript since the heap was last trimmed.
    freed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one insert or remove: a panic
    // elsewhere cannot leave a map half-updated, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rooms {
    pub(crate) fn new(env: RoomEnv) -> Rooms {
        Rooms(Arc::new(Registry {
            env,
            map: Mutex::default(),
            parked: Mutex::default(),
            feeds: Mutex::default(),
            wakeups: Mutex::default(),
            wakeup_added: Arc::default(),
            freed: AtomicBool::new(false),
        }))
    }

    /// Starts stopped room `topic` at `at` (ms since the epoch).
    pub(crate) fn wake_at(&self, topic: Topic, at: i64) {
        lock(&self.0.wakeups).insert((at, topic));
        self.0.wakeup_added.notify_one();
    }

    /// Starts the task that wakes stopped rooms, with those whose `wakeup`
    /// files on disk say they must run (after a restart).
    pub(crate) fn start_waking(&self) {
        let env = self.env();
        if env.config.durability != Durability::Off {
            for (topic, at) in crate::store::disk::list_wakeups(&env.config.data_dir) {
                if let Ok(topic) = Topic::parse(&topic) {
                    self.wake_at(topic, at);
                }
            }
        }
        env.js.spawn(wake_rooms(Arc::downgrade(&self.0)));
        env.js.spawn(trim_freed_heaps(Arc::downgrade(&self.0)));
    }

    /// A room hibernated: its freed heap is given back to the system soon.
    pub(crate) fn heap_freed(&self) {
        self.0.freed.store(true, Ordering::Relaxed);
    }

    /// What the rooms run with.
    pub(crate) fn env(&self) -> &RoomEnv {
        &self.0.env
    }

    pub fn get(&self, topic: &Topic) -> Option<Arc<RoomSlot>> {
        lock(&self.0.map).get(topic).cloned()
    }

    /// Every registered room, by topic.
    pub fn list(&self) -> Vec<Arc<RoomSlot>> {
        let mut rooms: Vec<_> = lock(&self.0.map).values().cloned().collect();
        rooms.sort_by(|a, b| a.topic.cmp(&b.topic));
        rooms
    }

    /// A handle to one room, started on first use.
    pub fn handle(&self, topic: Topic) -> Result<RoomHandle, RoomError> {
        self.open(&topic)?;
        Ok(RoomHandle::new(self.clone(), topic))
    }

    /// The topic's feed, created if needed and attached to its room's hub
    /// (now, or when the room next starts).
    pub(crate) fn feed(&self, topic: &Topic) -> Arc<Feed> {
        let map = lock(&self.0.map);
        let mut feeds = lock(&self.0.feeds);
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
        lock(&self.0.feeds).get(topic).and_then(Weak::upgrade)
    }

    /// Called by an idle room task: unregisters the room if nothing can send
    /// to it any more. Holding the map lock means no new sender appears.
    pub(crate) fn remove_if_unreachable(&self, slot: &Arc<RoomSlot>, mailbox: &Mailbox) -> bool {
        let mut map = lock(&self.0.map);
        if !slot.stop_if_unreachable(mailbox) {
            return false;
        }
        map.remove(&slot.topic);
        if let Some(memory) = &slot.memory {
            lock(&self.0.parked).insert(slot.topic.clone(), memory.clone());
        }
        true
    }

    /// Unregisters `slot`, which another node owns (cluster mode): the
    /// next use of its topic asks for the room's lease again.
    pub(crate) fn forget(&self, slot: &Arc<RoomSlot>, crash: &Crash) {
        let mut map = lock(&self.0.map);
        slot.abandon(crash);
        if map.get(&slot.topic).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            map.remove(&slot.topic);
        }
    }

    /// This node's name in cluster mode.
    pub fn node(&self) -> Option<&str> {
        self.env().backend.as_ref().map(|b| b.node())
    }

    /// Cluster mode: the node that owns `topic` now, if any (`None` also
    /// outside cluster mode).
    pub async fn owner(&self, topic: &Topic) -> std::io::Result<Option<String>> {
        match &self.env().backend {
            Some(backend) => backend.owner(topic).await,
            None => Ok(None),
        }
    }

    /// Cluster mode: every node of the cluster (`None` outside it).
    pub async fn cluster_nodes(&self) -> Option<std::io::Result<Vec<super::remote::NodeView>>> {
        match &self.env().remote {
            Some(remote) => Some(remote.nodes().await),
            None => None,
        }
    }

    /// The room for `topic`, started if needed, and its mailbox.
    pub(crate) fn open(&self, topic: &Topic) -> Result<(Arc<RoomSlot>, MailboxSender), RoomError> {
        let env = self.env();
        if env.shutdown.is_cancelled() {
            return Err(RoomError::ShuttingDown);
        }
        if let Some(slot) = self.get(topic) {
            let mailbox = slot.mailbox()?;
            return Ok((slot, mailbox));
        }
        // Compile outside the registry lock; it is cached per kind.
        env.scripts
            .kind_for_new_room(topic.kind())
            .map_err(|e| match e {
                KindError::Unknown => RoomError::UnknownKind,
                KindError::Removed => RoomError::KindRemoved,
                KindError::Script(e) => RoomError::Script(e),
            })?;
        let mut map = lock(&self.0.map);
        if let Some(slot) = map.get(topic) {
            let mailbox = slot.mailbox()?;
            return Ok((slot.clone(), mailbox));
        }
        // Checked under the lock that inserts, so concurrent first joins of
        // different topics cannot overshoot the limit.
        let max = env.config.max_rooms;
        if max > 0 && map.len() >= max {
            tracing::warn!(topic = %topic, max, "room refused: too many rooms");
            env.metrics.refused("max_rooms");
            return Err(RoomError::TooManyRooms);
        }
        let memory = (env.config.durability == Durability::Off)
            .then(|| lock(&self.0.parked).remove(topic).unwrap_or_default());
        let (tx, rx) = super::slot::mailbox(env.config.mailbox_capacity);
        let slot = Arc::new(RoomSlot::new(topic.clone(), tx.clone(), rx, memory));
        if let Some(feed) = self.live_feed(topic) {
            slot.hub.attach_feed(feed);
        }
        map.insert(topic.clone(), slot.clone());
        drop(map);
        self.supervise(slot.clone());
        Ok((slot, tx))
    }

    fn supervise(&self, slot: Arc<RoomSlot>) {
        let env = self.env();
        env.tasks
            .spawn_on(supervisor::supervise(self.clone(), slot), &env.js);
    }

    /// Brings a failed room back (admin reset or a changed script).
    pub(crate) async fn reset(
        &self,
        topic: &Topic,
        revival: Revival,
    ) -> Result<RoomState, RoomError> {
        let slot = self.get(topic).ok_or(RoomError::NotFound)?;
        if slot
            .revive(self.env().config.mailbox_capacity, revival)
            .await
        {
            self.supervise(slot.clone());
        }
        Ok(slot.state())
    }

    /// Aborts the room's task (a simulated crash) and returns the generation
    /// that runs after the restart.
    pub(crate) async fn kill(&self, topic: &Topic) -> Result<u64, RoomError> {
        let slot = self.get(topic).ok_or(RoomError::NotFound)?;
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

    /// Stops accepting work and lets every room finish the event in hand,
    /// leave its channels, flush its journal and snapshot.
    pub(crate) async fn shut_down(&self) {
        let env = self.env();
        env.shutdown.cancel();
        env.tasks.close();
        if tokio::time::timeout(Duration::from_secs(30), env.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("rooms did not stop within 30 s");
        }
    }
}

/// Starts each stopped room when its wakeup is due, until the host shuts
/// down or is dropped.
async fn wake_rooms(registry: Weak<Registry>) {
    loop {
        let Some(rooms) = registry.upgrade().map(Rooms) else {
            return;
        };
        let shutdown = rooms.env().shutdown.clone();
        // notify_one keeps a permit when nobody waits: nothing added
        // between here and the wait below is missed.
        let added = rooms.0.wakeup_added.clone();
        let now = crate::clock::now_ms();
        let (due, next): (Vec<Topic>, Option<i64>) = {
            let mut wakeups = lock(&rooms.0.wakeups);
            let mut due = Vec::new();
            while wakeups.first().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, topic)) = wakeups.pop_first() {
                    due.push(topic);
                }
            }
            (due, wakeups.first().map(|(at, _)| *at))
        };
        for topic in due {
            if let Err(e) = rooms.open(&topic) {
                tracing::warn!(topic = %topic, error = %e, "a stopped room due to wake could not start");
            }
        }
        // Hold no strong handle while waiting: a dropped host ends the task.
        drop(rooms);
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis(at.saturating_sub(crate::clock::now_ms()).max(0) as u64)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = added.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How often the heap is trimmed while rooms hibernate.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Gives the memory of hibernated rooms back to the system, at most every
/// [`TRIM_EVERY`] and only after a room hibernated (a trim holds the
/// allocator's lock for a few milliseconds).
async fn trim_freed_heaps(registry: Weak<Registry>) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if registry.env.shutdown.is_cancelled() {
            return;
        }
        if registry.freed.swap(false, Ordering::Relaxed) {
            let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
        }
    }
}
