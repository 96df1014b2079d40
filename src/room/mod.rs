//! Rooms: one task per live topic that owns the topic's JavaScript context.
//!
//! The layer above the engine and the scripts, below the web. Its pieces:
//!
//! - [`registry`]: topic → [`RoomSlot`], lazy start (one task per topic),
//!   kill and reset; it owns the `RoomEnv` every room task gets.
//! - `supervisor`: runs one room task per generation and restarts it after a
//!   [`Crash`], with backoff and a restart intensity.
//! - `task`: the room task's loop (mailbox, batches) over the parts of a
//!   `Room`: the `journal` (records, group commit), the `snapshots`
//!   policy, the `members` (with presence) and the output `gate`.
//! - `events`: what one join, message or leave does; `replay` builds a
//!   room's JS from its store; `swap` moves a room to new code.
//! - `reload`: the scripts watcher that sends new code to the rooms.
//! - [`remote`]: cluster mode's seam (a room served to, or from, another
//!   node).
//! - [`handle`]: [`RoomHandle`], the embedder's view of one room.
//! - [`inspect`]: `roomhost inspect`, a room's state read from disk.
//!
//! Everything outside talks to a room through its mailbox ([`Command`]) and
//! reads its [`RoomSlot`] (state, counters, console lines, hub).

mod crash;
mod env;
mod events;
mod gate;
pub mod handle;
mod hibernation;
pub mod inspect;
mod journal;
mod members;
pub mod outbox;
pub mod registry;
pub(crate) mod reload;
pub mod remote;
mod replay;
mod slot;
mod snapshots;
mod storage;
mod storage_fault;
mod supervisor;
mod swap;
mod task;

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::conn::Conn;
pub use crate::engine::LogLevel;
use crate::hub::{Channel, ChannelId};
use crate::protocol::{Payload, Ref};
use crate::scripts::{CompiledKind, ScriptError};
use crate::topic::{Topic, TopicError};
pub use crash::{Crash, Failure, Revival};
pub(crate) use env::RoomEnv;
pub use handle::RoomHandle;
pub use registry::Rooms;
pub(crate) use slot::Mailbox;
pub use slot::{CONSOLE_LINES, RoomInfo, RoomSlot, RoomStats};
pub use slot::{MailboxClosed, MailboxSender};
pub use storage::StorageStatus;

/// Why a room could not do what was asked. The `Display` text is the
/// `reason` clients see.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RoomError {
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    #[error("unknown room kind")]
    UnknownKind,
    /// The kind's script was deleted; rooms already running keep going.
    #[error("room kind removed")]
    KindRemoved,
    #[error("script error: {0}")]
    Script(ScriptError),
    /// Restart intensity exceeded; an admin must reset the room.
    #[error("room failed: {0}")]
    Failed(String),
    /// The room died while handling the request.
    #[error("room crashed")]
    Crashed,
    /// The script refused (threw); the text is its message.
    #[error("{0}")]
    Refused(String),
    /// The room's storage refuses writes (a fault or a stalled disk); the
    /// text is `storage unavailable: <cause>`.
    #[error("{0}")]
    StorageUnavailable(String),
    #[error("server shutting down")]
    ShuttingDown,
    /// Starting the room would exceed `max_rooms`.
    #[error("too many rooms")]
    TooManyRooms,
    #[error("no such room")]
    NotFound,
    /// Cluster mode: another node owns the room (its name, when known).
    /// Clients get `{"reason": "not_owner", "node": ...}`.
    #[error("not_owner")]
    NotOwner { node: Option<String> },
    /// The kind does not export the hook a request needs.
    #[error("this room kind has no {0}")]
    NoHook(&'static str),
}

impl RoomError {
    /// The JSON object an error reply carries: `{"reason": <Display>}`,
    /// plus `"node"` for [`RoomError::NotOwner`].
    pub fn response_json(&self) -> serde_json::Value {
        match self {
            RoomError::NotOwner { node } => {
                serde_json::json!({ "reason": self.to_string(), "node": node })
            }
            other => serde_json::json!({ "reason": other.to_string() }),
        }
    }
}

/// Where the answer to a command goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A Phoenix channel: a `phx_reply` with this ref, queued behind the
    /// broadcasts the command caused.
    Channel {
        channel: Arc<Channel>,
        msg_ref: Option<Ref>,
    },
    /// A Rust caller (library API, HTTP): the response JSON or the error.
    Caller(oneshot::Sender<Result<String, RoomError>>),
}

/// Why a channel left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// `phx_leave` from the client.
    Left,
    /// The connection closed.
    Disconnect,
    /// The same connection joined the topic again.
    Rejoin,
    /// The member's channel died with the previous room generation.
    Crash,
    /// The server is shutting down.
    Shutdown,
    /// The room closed it (`room.kick`).
    Kicked,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "leave",
            LeaveReason::Disconnect => "disconnect",
            LeaveReason::Rejoin => "rejoin",
            LeaveReason::Crash => "crash",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::Kicked => "kicked",
        }
    }
}

/// What a room's mailbox carries.
#[derive(Debug)]
pub enum Command {
    /// A channel asks to join; answered with the `onJoin` result.
    Join {
        channel: Arc<Channel>,
        params: Box<RawValue>,
        msg_ref: Option<Ref>,
    },
    Message {
        conn: Conn,
        event: String,
        /// JSON, or bytes from a V2 binary push.
        payload: Payload,
        reply: ReplyTo,
    },
    /// A channel leaves; `reply` is the `phx_leave` ref if the client asked.
    Leave {
        channel: ChannelId,
        conn_id: Arc<str>,
        reason: LeaveReason,
        reply: Option<Ref>,
    },
    /// The room's state as `snapshot()` returns it (for admin and tests).
    Inspect(oneshot::Sender<Result<String, RoomError>>),
    /// Messages from room `from` (`room.send`), in its send order; answered
    /// once the handled ones are journaled.
    Deliver {
        from: Topic,
        messages: Vec<outbox::Message>,
        reply: oneshot::Sender<Result<outbox::Delivered, RoomError>>,
    },
    /// An HTTP request for `onRequest`: `req` is its JSON description; the
    /// answer is the hook's result as JSON.
    Request {
        conn: Conn,
        req: Box<RawValue>,
        reply: oneshot::Sender<Result<String, RoomError>>,
    },
    /// Switch to a new version of the kind's code, keeping the state.
    Reload(Arc<CompiledKind>),
    /// A new version of the kind's code failed its checks: tell the channels.
    ScriptError(ScriptError),
}

/// Lifecycle state, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomState {
    Starting,
    Running,
    Restarting,
    Stopped,
    Failed,
    /// Running with its channels joined, its JavaScript freed until the
    /// next event (see `hibernation`).
    Hibernated,
}

impl RoomState {
    /// The state's name, as the API and the metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            RoomState::Starting => "starting",
            RoomState::Running => "running",
            RoomState::Restarting => "restarting",
            RoomState::Stopped => "stopped",
            RoomState::Failed => "failed",
            RoomState::Hibernated => "hibernated",
        }
    }
}

/// One `console.*` line kept for the dashboard.
#[derive(Clone, Debug, Serialize)]
pub struct ConsoleLine {
    pub at: i64,
    pub generation: u64,
    pub level: LogLevel,
    pub message: String,
}
