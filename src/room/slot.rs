//! A registered topic: its [`RoomSlot`] survives its task's crashes and
//! restarts. It holds what outlives a generation: the hub (the channels
//! joined), the mailbox, the lifecycle status and crash history, counters
//! the admin API reads, and the console lines.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::{
    Command, ConsoleLine, Crash, Failure, LogLevel, Revival, RoomError, RoomState, StorageStatus,
};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::scripts::ScriptError;
use crate::store::MemoryJournal;
use crate::topic::Topic;

/// The sending end of a room's mailbox. Commands travel boxed: the queue
/// allocates its slots 32 at a time and keeps its first block for the
/// room's whole life, hibernated or not, and 32 boxes take 256 bytes where
/// 32 commands took ~3.7 KiB. (One allocation per command is nothing next
/// to what a command costs the room.)
#[derive(Clone, Debug)]
pub struct MailboxSender(mpsc::Sender<Box<Command>>);

/// The mailbox is closed: its room stopped or failed.
#[derive(Debug)]
pub struct MailboxClosed;

impl MailboxSender {
    /// Queues `command`, waiting for room if the mailbox is full.
    pub async fn send(&self, command: Command) -> Result<(), MailboxClosed> {
        self.0
            .send(Box::new(command))
            .await
            .map_err(|_| MailboxClosed)
    }

    fn strong_count(&self) -> usize {
        self.0.strong_count()
    }

    /// Whether the room stopped taking commands.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A new mailbox of `capacity` commands (at least one).
pub(crate) fn mailbox(capacity: usize) -> (MailboxSender, mpsc::Receiver<Box<Command>>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (MailboxSender(tx), rx)
}

/// A room's incoming commands, owned by whichever generation runs.
pub(crate) struct Mailbox {
    pub(crate) rx: mpsc::Receiver<Box<Command>>,
    /// The batch being handled. A command that crashes the room is gone, but
    /// the ones taken with it and not yet handled stay here, ahead of `rx`,
    /// for the next generation: a join queued behind a crashing push is
    /// answered by the restarted room, not dropped.
    // Boxed as they came out of the mailbox: unboxing would copy each.
    #[allow(clippy::vec_box)]
    pub(crate) taken: Vec<Box<Command>>,
}

impl Mailbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.taken.is_empty() && self.rx.is_empty()
    }
}

/// Console lines kept per room.
pub const CONSOLE_LINES: usize = 100;

/// A registered topic: survives its task's crashes and restarts.
pub struct RoomSlot {
    pub topic: Topic,
    /// Channels joined to the room; drained by the supervisor on a crash.
    pub hub: Hub,
    status: Mutex<SlotStatus>,
    /// Generation and state, for waiters (kill answers once the room runs).
    watch: watch::Sender<(u64, RoomState)>,
    /// The mailbox's receiving end. A tokio mutex held by the running task
    /// for its whole life: when the task dies the lock is released and the
    /// next generation takes over the queued commands.
    pub(crate) mailbox_rx: Arc<tokio::sync::Mutex<Mailbox>>,
    pub stats: RoomStats,
    console: Mutex<VecDeque<ConsoleLine>>,
    /// The store of durability `off`, kept here so it outlives the task.
    pub(crate) memory: Option<Arc<Mutex<MemoryJournal>>>,
}

/// Counters the room task updates and the admin API reads.
#[derive(Default)]
pub struct RoomStats {
    pub events_in: AtomicU64,
    pub js_memory: AtomicU64,
    pub journal_bytes: AtomicU64,
    /// Highest seq whose outputs were released. After a crash, journaled
    /// events above it were never acknowledged and are discarded.
    pub released_seq: AtomicU64,
    /// Until when (ms since the epoch) the room counts as *slow*: one of its
    /// events ran long, or it exhausted its CPU budget. A slow room's JS runs
    /// under `block_in_place`, so it cannot hold other rooms up (see
    /// `task::contained`). Kept on the slot so it outlives crashes.
    pub slow_until: AtomicI64,
}

impl RoomStats {
    /// Marks the room slow for the next [`task::SLOW_FOR`].
    pub(crate) fn mark_slow(&self) {
        let until = now_ms().saturating_add(super::task::SLOW_FOR.as_millis() as i64);
        self.slow_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(crate) fn is_slow(&self) -> bool {
        now_ms() < self.slow_until.load(Ordering::Relaxed)
    }
}

struct SlotStatus {
    state: RoomState,
    generation: u64,
    restarts: u64,
    started_at: i64,
    crashes: VecDeque<Instant>,
    last_error: Option<String>,
    /// Why the room is failed; kept until it is revived, so `last_error`
    /// can then say what happened and that it is over.
    failure: Option<Failure>,
    /// Code version the running generation executes.
    version: String,
    /// Whether the kind exports snapshot/restore (journal compaction).
    compacts: bool,
    /// Set while the room's storage refuses writes.
    storage: Option<StorageStatus>,
    /// The sending end handed to channels; `None` once failed or stopped.
    mailbox: Option<MailboxSender>,
    abort: Option<tokio::task::AbortHandle>,
    /// Cluster mode: the node this slot forwards to while another runs it.
    forwarded_to: Option<String>,
}

/// A room's public description (admin API).
#[derive(Clone, Debug, Serialize)]
pub struct RoomInfo {
    pub topic: String,
    pub kind: String,
    pub state: RoomState,
    pub generation: u64,
    pub restarts: u64,
    pub channels: usize,
    pub users: usize,
    pub events_in: u64,
    pub started_at: i64,
    pub js_memory: u64,
    pub journal_bytes: u64,
    pub version: String,
    /// False when the script has no snapshot()/restore(): its journal is
    /// replayed from the start and never compacted.
    pub compacts: bool,
    pub last_error: Option<String>,
    /// The kind's newest compile error while it is unfixed (the room keeps
    /// running the previous version).
    pub script_error: Option<ScriptError>,
    /// Set while the room's storage refuses writes (a fault or a stall).
    pub storage: Option<StorageStatus>,
    /// Cluster mode: the node that runs the room (the admin API sets it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Cluster mode: the node this node forwards the room's channels to.
    #[serde(skip)]
    pub forwarded_to: Option<String>,
}

impl RoomSlot {
    pub(crate) fn new(
        topic: Topic,
        mailbox: MailboxSender,
        rx: mpsc::Receiver<Box<Command>>,
        memory: Option<Arc<Mutex<MemoryJournal>>>,
    ) -> RoomSlot {
        RoomSlot {
            hub: Hub::new(topic.clone()),
            topic,
            status: Mutex::new(SlotStatus {
                state: RoomState::Starting,
                generation: 0,
                restarts: 0,
                started_at: now_ms(),
                crashes: VecDeque::new(),
                last_error: None,
                failure: None,
                version: String::new(),
                compacts: true,
                storage: None,
                mailbox: Some(mailbox),
                abort: None,
                forwarded_to: None,
            }),
            watch: watch::channel((0, RoomState::Starting)).0,
            mailbox_rx: Arc::new(tokio::sync::Mutex::new(Mailbox {
                rx,
                taken: Vec::new(),
            })),
            stats: RoomStats::default(),
            console: Mutex::new(VecDeque::new()),
            memory,
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, SlotStatus> {
        // Never held across an await; every update is a plain field write, so
        // a poisoned lock still holds consistent data.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mailbox to send commands to, or why there is none.
    pub fn mailbox(&self) -> Result<MailboxSender, RoomError> {
        let status = self.status();
        match (&status.mailbox, status.state) {
            (Some(tx), _) => Ok(tx.clone()),
            (None, RoomState::Failed) => Err(RoomError::Failed(
                status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "crashed too often".into()),
            )),
            (None, _) => Err(RoomError::NotFound),
        }
    }

    pub fn generation(&self) -> u64 {
        self.status().generation
    }

    pub fn state(&self) -> RoomState {
        self.status().state
    }

    pub fn info(&self) -> RoomInfo {
        let s = self.status();
        RoomInfo {
            topic: self.topic.to_string(),
            kind: self.topic.kind().to_string(),
            state: s.state,
            generation: s.generation,
            restarts: s.restarts,
            channels: self.hub.len(),
            users: self.hub.users(),
            events_in: self.stats.events_in.load(Ordering::Relaxed),
            started_at: s.started_at,
            js_memory: self.stats.js_memory.load(Ordering::Relaxed),
            journal_bytes: self.stats.journal_bytes.load(Ordering::Relaxed),
            version: s.version.clone(),
            compacts: s.compacts,
            last_error: s.last_error.clone(),
            script_error: None,
            storage: s.storage.clone(),
            node: None,
            forwarded_to: s.forwarded_to.clone(),
        }
    }

    /// Cluster mode: this slot forwards to `node` (or, with `None`, no
    /// longer does).
    pub(crate) fn set_forwarded_to(&self, node: Option<String>) {
        self.status().forwarded_to = node;
    }

    pub fn console_lines(&self) -> Vec<ConsoleLine> {
        self.console
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A line from the host itself (a crash, a failure, a reset), so the
    /// console tells why a room is quiet even when its script printed nothing.
    fn push_host_line(&self, generation: u64, level: LogLevel, message: String) {
        self.push_console(ConsoleLine {
            at: now_ms(),
            generation,
            level,
            message: format!("[roomhost] {message}"),
        });
    }

    pub(crate) fn push_console(&self, line: ConsoleLine) {
        let mut lines = self.console.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == CONSOLE_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Waits until generation `after` has been replaced by a running one.
    pub async fn wait_running_after(&self, after: u64) -> Result<u64, RoomError> {
        let mut rx = self.watch.subscribe();
        let (generation, state) = *rx
            .wait_for(|(g, s)| (*g > after && *s == RoomState::Running) || *s == RoomState::Failed)
            .await
            .map_err(|_| RoomError::NotFound)?;
        if state == RoomState::Failed {
            return Err(self.mailbox().err().unwrap_or(RoomError::Crashed));
        }
        Ok(generation)
    }

    fn publish_state(&self, status: &SlotStatus) {
        self.watch.send_replace((status.generation, status.state));
    }

    /// Aborts the running task: exactly what a crash does.
    pub fn abort(&self) -> bool {
        match &self.status().abort {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }
}

impl RoomSlot {
    /// A new generation begins starting; returns its number.
    pub(crate) fn begin_generation(&self) -> u64 {
        let mut s = self.status();
        s.generation += 1;
        s.storage = None;
        s.state = if s.generation == 1 {
            RoomState::Starting
        } else {
            RoomState::Restarting
        };
        s.abort = None;
        self.publish_state(&s);
        s.generation
    }

    pub(crate) fn set_abort(&self, abort: tokio::task::AbortHandle) {
        self.status().abort = Some(abort);
    }

    pub(crate) fn set_running(&self, generation: u64, version: &str, compacts: bool) {
        let mut s = self.status();
        s.state = RoomState::Running;
        s.generation = generation;
        s.started_at = now_ms();
        s.version = version.to_string();
        s.compacts = compacts;
        self.publish_state(&s);
    }

    /// The room hibernated (`true`) or woke.
    pub(crate) fn set_hibernated(&self, hibernated: bool) {
        let mut s = self.status();
        if matches!(s.state, RoomState::Running | RoomState::Hibernated) {
            s.state = if hibernated {
                RoomState::Hibernated
            } else {
                RoomState::Running
            };
        }
    }

    /// The room's storage health, as the API shows it.
    pub(crate) fn set_storage(&self, storage: Option<StorageStatus>) {
        self.status().storage = storage;
    }

    pub(crate) fn set_last_error(&self, error: String) {
        self.status().last_error = Some(error);
    }

    pub(crate) fn mark_stopped(&self) {
        let mut s = self.status();
        s.state = RoomState::Stopped;
        s.abort = None;
        self.publish_state(&s);
    }

    /// Records a crash. Returns the backoff before the restart, or `None`
    /// when the restart intensity is exceeded and the room is now failed.
    pub(crate) fn record_crash(
        &self,
        crash: &Crash,
        max_restarts: usize,
        window: Duration,
    ) -> Option<Duration> {
        let mut s = self.status();
        let now = Instant::now();
        s.crashes.push_back(now);
        while s
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            s.crashes.pop_front();
        }
        s.last_error = Some(crash.to_string());
        s.abort = None;
        let generation = s.generation;
        if s.crashes.len() > max_restarts {
            let failure = Failure {
                crashes: s.crashes.len(),
                window,
                last: crash.clone(),
            };
            let why = failure.while_failed();
            s.state = RoomState::Failed;
            s.mailbox = None;
            s.last_error = Some(why.clone());
            s.failure = Some(failure);
            self.publish_state(&s);
            drop(s);
            let crashed = format!("generation {generation} crashed: {crash}");
            self.push_host_line(generation, LogLevel::Error, crashed);
            self.push_host_line(generation, LogLevel::Error, format!("room failed: {why}"));
            return None;
        }
        s.restarts += 1;
        s.state = RoomState::Restarting;
        self.publish_state(&s);
        // 0, 50, 100, 200 ... ms, capped at 2 s.
        let n = s.crashes.len() as u32;
        drop(s);
        let backoff = match n {
            0 | 1 => 0,
            n => (25u64 << (n - 1).min(10)).min(2000),
        };
        self.push_host_line(
            generation,
            LogLevel::Error,
            format!("generation {generation} crashed: {crash}; restarting in {backoff} ms"),
        );
        Some(Duration::from_millis(backoff))
    }

    /// Brings a failed room back: a fresh mailbox and no crash history;
    /// `last_error` says it was revived and why it had failed.
    pub(crate) async fn revive(&self, mailbox_capacity: usize, revival: Revival) -> bool {
        let (tx, rx) = mailbox(mailbox_capacity);
        {
            let mut s = self.status();
            if s.state != RoomState::Failed {
                return false;
            }
            s.crashes.clear();
            s.state = RoomState::Starting;
            s.mailbox = Some(tx);
            if let Some(failure) = s.failure.take() {
                s.last_error = Some(failure.after(revival));
            }
            self.publish_state(&s);
            let generation = s.generation;
            drop(s);
            self.push_host_line(
                generation,
                LogLevel::Info,
                format!("{revival}; starting again"),
            );
        }
        let mut mailbox = self.mailbox_rx.lock().await;
        mailbox.rx = rx;
        mailbox.taken.clear();
        true
    }

    /// Under the registry lock: whether nobody can send to this room any
    /// more, in which case it is marked stopped.
    /// Another node owns the room (cluster mode): stopped, with why, and
    /// no mailbox for new work.
    pub(crate) fn abandon(&self, crash: &Crash) {
        let mut s = self.status();
        s.mailbox = None;
        s.state = RoomState::Stopped;
        s.abort = None;
        s.last_error = Some(crash.to_string());
        self.publish_state(&s);
    }

    pub(crate) fn stop_if_unreachable(&self, mailbox: &Mailbox) -> bool {
        let mut s = self.status();
        let only_ours = s.mailbox.as_ref().is_none_or(|tx| tx.strong_count() == 1);
        if !(only_ours && mailbox.is_empty()) {
            return false;
        }
        s.mailbox = None;
        s.state = RoomState::Stopped;
        s.abort = None;
        self.publish_state(&s);
        true
    }
}
