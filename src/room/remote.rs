//! Cluster mode's seam in the room layer: a room that runs on another node,
//! and a room here that other nodes' channels use. `crate::cluster`
//! implements [`Remote`]; rooms never import it.
//!
//! - On the owner, each room generation that holds the room's lease calls
//!   [`Remote::serve`]: until the guard it returns is dropped, other nodes'
//!   joins, pushes and leaves arrive in the room's mailbox as commands of
//!   remote channels (their frames go back over the hub's `Backplane`).
//! - On any other node, a room whose lease another node holds does not
//!   run: its supervisor hands the slot to [`Remote::proxy`], which forwards
//!   what the mailbox gets to the owner and delivers the owner's frames and
//!   broadcasts to this node's channels, until the owner is gone or the
//!   room stops being used here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use super::{RoomSlot, registry::Rooms};

/// How a proxy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Proxied {
    /// Nothing uses the room here any more (or the host shuts down): the
    /// slot is unregistered or stopped.
    Stopped,
    /// The owner is gone, moved or unreachable: this node's channels of the
    /// room got `phx_error`; what waits in the mailbox goes to whoever runs
    /// the room next (maybe this node).
    OwnerGone,
}

/// One node of the cluster as `GET /api/cluster` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    /// Its HTTP base URL (`--advertise-url`).
    pub url: String,
    /// Heard from within the liveness window.
    pub alive: bool,
    /// Rooms it owns.
    pub rooms: usize,
    /// Its open client connections.
    pub connections: u64,
    /// When it last wrote its record, in ms since the epoch.
    pub last_seen: i64,
    pub started_at: i64,
    /// Its roomhost version.
    pub version: String,
}

/// Cluster mode's reach beyond this node (see the module doc).
pub trait Remote: Send + Sync {
    /// Every node of the cluster, this one included.
    fn nodes(&self) -> Pin<Box<dyn Future<Output = io::Result<Vec<NodeView>>> + Send + '_>>;

    /// This node runs `slot`'s room: serve other nodes' channels of it
    /// until the returned guard is dropped.
    fn serve(&self, slot: &Arc<RoomSlot>) -> Box<dyn Send + Sync>;

    /// Node `owner` runs `slot`'s room: forward its mailbox there.
    fn proxy(
        &self,
        rooms: Rooms,
        slot: Arc<RoomSlot>,
        owner: String,
    ) -> Pin<Box<dyn Future<Output = Proxied> + Send>>;
}
