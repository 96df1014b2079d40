//! The embeddable host: wires the parts together and owns what must outlive
//! them (the JS runtime, the scripts watcher). It holds no logic of its own:
//! rooms live in [`crate::room`], the HTTP side in `web`.
//!
//! Room JavaScript runs on its own multi-threaded tokio runtime (one worker
//! per CPU by default), not on the runtime that serves sockets. A hook call
//! is synchronous and may use its whole CPU budget (100 ms by default); on a
//! separate pool, a spinning room can only occupy a JS worker, never the
//! threads that read, write and heartbeat connections, and work stealing
//! moves other rooms to the remaining JS workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, ClusterConfig};
use crate::config::{Config, Durability};
use crate::engine::WarmPool;
use crate::metrics::Metrics;
use crate::room::reload;
use crate::room::{RoomEnv, RoomError, RoomHandle, RoomInfo, Rooms};
use crate::scripts::Scripts;
use crate::store::{Backend, Store, StoreLayer};
use crate::topic::Topic;
use crate::web::WebState;

/// Owns the JS runtime; shut down in the background when the last host
/// handle drops (dropping a runtime inside async code would panic).
struct JsRuntime(Option<tokio::runtime::Runtime>);

impl Drop for JsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A running roomhost. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    config: Arc<Config>,
    rooms: Rooms,
    web: Arc<WebState>,
    _js_runtime: Arc<JsRuntime>,
    /// The scripts watcher (hot reload), if enabled.
    _watcher: Option<Arc<reload::Watcher>>,
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    // Transparent: the io error's message is the whole message (a "{0}"
    // with #[from] printed it twice in an error chain).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("watching scripts: {0}")]
    Watch(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Cluster(String),
}

/// Builds a [`Host`]; every setting has the default of [`Config`].
#[derive(Default)]
pub struct HostBuilder {
    config: Config,
    store_layer: Option<StoreLayer>,
    cluster: Option<ClusterConfig>,
}

impl HostBuilder {
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn scripts_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.scripts_dir = dir.into();
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Wraps every room's durable store as it opens: `layer` gets the
    /// room's topic and its store and returns the store the room uses (one
    /// that counts, traces, or — in tests — fails on purpose).
    pub fn wrap_store(
        mut self,
        layer: impl Fn(&Topic, Box<dyn Store>) -> Box<dyn Store> + Send + Sync + 'static,
    ) -> Self {
        self.store_layer = Some(Arc::new(layer));
        self
    }

    /// Cluster mode: rooms' journals and leases live in NATS JetStream
    /// (see `docs/cluster.md`); each room runs on one node of the cluster.
    /// `build` connects, and fails if JetStream does not answer.
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    pub async fn build(self) -> Result<Host, BuildError> {
        let config = self.config;
        if self.cluster.is_some() && config.durability == Durability::Off {
            // Off never syncs: nothing would reach the cluster's journal.
            return Err(BuildError::Config(
                "cluster mode needs durability strict or relaxed".into(),
            ));
        }
        let cluster = match self.cluster {
            Some(cluster) => Some(
                Cluster::connect(cluster)
                    .await
                    .map_err(|e| BuildError::Cluster(e.to_string()))?,
            ),
            None => None,
        };
        let backend = cluster.clone().map(|c| c as Arc<dyn Backend>);
        let remote = cluster
            .clone()
            .map(|c| c as Arc<dyn crate::room::remote::Remote>);
        crate::web::check_config(&config).map_err(BuildError::Config)?;
        let scripts = Scripts::with_kind_limits(
            &config.scripts_dir,
            config.script_limits.clone(),
            config.kind_limits.clone(),
        )?;
        if config.durability != Durability::Off {
            std::fs::create_dir_all(&config.data_dir)?;
        }
        let threads = match config.js_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("roomhost-js")
            .enable_all()
            .build()?;
        let mut metrics = Metrics::new();
        if cluster.is_some() {
            metrics.register_cluster();
        }
        let metrics = Arc::new(metrics);
        let shutdown = CancellationToken::new();
        if let Some(cluster) = &cluster {
            cluster.beat(metrics.clone(), shutdown.clone());
        }
        let rooms = Rooms::new(RoomEnv {
            warm: WarmPool::new(
                config.warm_contexts,
                config.warm_heap.min(crate::heap::MAX_WARM_HEAP),
            ),
            js: runtime.handle().clone(),
            shutdown,
            tasks: TaskTracker::new(),
            store_layer: self.store_layer,
            backend,
            remote,
            config: config.clone(),
            scripts: scripts.clone(),
            metrics: metrics.clone(),
        });
        rooms.start_waking();
        runtime.spawn(measure_rates(Arc::downgrade(&metrics)));
        let watcher = if config.watch_scripts {
            Some(Arc::new(reload::watch(&rooms).map_err(BuildError::Watch)?))
        } else {
            None
        };
        let web = Arc::new(WebState::new(
            config.clone(),
            rooms.clone(),
            scripts,
            metrics,
        ));
        Ok(Host {
            config: Arc::new(config),
            rooms,
            web,
            _js_runtime: Arc::new(JsRuntime(Some(runtime))),
            _watcher: watcher,
        })
    }
}

/// Updates the messages-per-second rate once a second while the host lives.
async fn measure_rates(metrics: std::sync::Weak<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(metrics) = metrics.upgrade() else {
            return;
        };
        metrics.tick_message_rate();
    }
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The HTTP routes: chat UI, dashboard, WebSocket, admin API. Serve it
    /// with `into_make_service_with_connect_info::<SocketAddr>()` so the
    /// admin API can tell loopback peers apart.
    pub fn router(&self) -> axum::Router {
        crate::web::router(self.web.clone())
    }

    /// A handle to one room, started on first use.
    pub fn room(&self, topic: &str) -> Result<RoomHandle, RoomError> {
        self.rooms.handle(Topic::parse(topic)?)
    }

    /// Every registered room.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.rooms.list().iter().map(|s| s.info()).collect()
    }

    /// Stops accepting work, lets every room finish the event in hand, leave
    /// its channels, flush its journal and snapshot; then closes connections.
    pub async fn shutdown(&self) {
        self.rooms.shut_down().await;
        self.web.close_connections().await;
    }

    /// Serves the router on `listener` until `shutdown` resolves, then shuts
    /// the host down gracefully.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let host = self.clone();
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        // Frames are small and latency matters: no Nagle delay. The writer
        // batches frames itself (many frames, one flush).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let rooms = host.rooms.list().len();
                tracing::info!(
                    rooms,
                    "shutting down: rooms snapshot, connections get phx_close"
                );
                let started = std::time::Instant::now();
                host.shutdown().await;
                tracing::info!(
                    rooms,
                    took_ms = started.elapsed().as_millis() as u64,
                    "shut down: rooms stopped, connections closed"
                );
            })
            .await
    }
}
