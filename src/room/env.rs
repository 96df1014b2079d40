//! What a room may touch besides its own slot: the settings, the compiled
//! kinds, the metrics, the warm contexts, the JS runtime and the shutdown
//! signal. The registry owns one and hands it to every room task; nothing
//! else of the host is reachable from a room.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::WarmPool;
use crate::metrics::Metrics;
use crate::scripts::Scripts;
use crate::store::{Backend, StoreLayer};

pub(crate) struct RoomEnv {
    pub config: Config,
    pub scripts: Scripts,
    pub metrics: Arc<Metrics>,
    /// Runtimes with a context, built ahead for rooms' cold starts.
    pub warm: WarmPool,
    /// Runtime that runs room tasks (and so all JavaScript).
    pub js: tokio::runtime::Handle,
    /// Cancelled when the host shuts down: rooms finish, snapshot and stop.
    pub shutdown: CancellationToken,
    /// Room supervisors, awaited on shutdown.
    pub tasks: TaskTracker,
    /// Wraps each room's durable store as it opens.
    pub store_layer: Option<StoreLayer>,
    /// Where stores live in cluster mode (see [`Backend`]); `None`: on
    /// this machine's disk.
    pub backend: Option<Arc<dyn Backend>>,
    /// Cluster mode: rooms served to and from other nodes (see
    /// [`super::remote`]).
    pub remote: Option<Arc<dyn super::remote::Remote>>,
}
