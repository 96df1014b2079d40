//! The embeddable host: configuration, the room registry, the thread pool
//! that runs room JavaScript, and the shutdown signal.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Durability};
use crate::conn::Conn;
use crate::room::registry::{self, Rooms};
use crate::room::{Command, ReplyTo, RoomError, RoomInfo};
use crate::scripts::Scripts;
use crate::topic::Topic;

/// State shared by every part of a host (the mini-redis `Shared` pattern).
pub(crate) struct Shared {
    pub config: Config,
    pub scripts: Scripts,
    pub rooms: Rooms,
    /// Runtime that runs room tasks (and so all JavaScript).
    pub js: tokio::runtime::Handle,
    /// Cancelled when the host shuts down: rooms finish, snapshot and stop.
    pub shutdown: CancellationToken,
    /// Cancelled after the rooms stopped: connections close.
    pub close_connections: CancellationToken,
    /// Room supervisors, awaited on shutdown.
    pub tasks: TaskTracker,
    /// Client connection tasks, awaited (briefly) on shutdown.
    pub connection_tasks: TaskTracker,
    pub connections: AtomicUsize,
    /// Room tasks started (first starts and restarts).
    pub room_starts: AtomicU64,
    pub next_channel: AtomicU64,
    /// Messages received from clients, and the rate of the last second.
    pub messages_in: AtomicU64,
    pub messages_per_sec: AtomicU64,
    /// Live long-poll sessions and the key that signs their tokens.
    pub longpoll: crate::web::LongPollSessions,
    /// This host's metrics registry (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Open connections per client address (`max_conns_per_ip`).
    pub client_addresses: crate::web::ClientAddresses,
    /// Message rate limits of HTTP posts, per client address.
    pub post_buckets: crate::web::AddressBuckets,
    /// Runtimes with a context, built ahead for rooms' cold starts.
    pub warm: crate::room::warm::WarmPool,
}

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
    pub(crate) shared: Arc<Shared>,
    _js_runtime: Arc<JsRuntime>,
    /// The scripts watcher (hot reload), if enabled.
    _watcher: Option<Arc<crate::reload::Watcher>>,
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("watching scripts: {0}")]
    Watch(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Builds a [`Host`]; every setting has the default of [`Config`].
#[derive(Default)]
pub struct HostBuilder {
    config: Config,
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

    pub async fn build(self) -> Result<Host, BuildError> {
        let config = self.config;
        for origin in &config.allowed_origins {
            crate::web::validate_allowed_origin(origin).map_err(BuildError::Config)?;
        }
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
        let warm = crate::room::warm::WarmPool::new(
            config.warm_contexts,
            config.warm_heap.min(crate::heap::MAX_WARM_HEAP),
        );
        let shared = Arc::new(Shared {
            js: runtime.handle().clone(),
            config,
            scripts,
            rooms: Rooms::default(),
            shutdown: CancellationToken::new(),
            close_connections: CancellationToken::new(),
            tasks: TaskTracker::new(),
            connection_tasks: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            room_starts: AtomicU64::new(0),
            next_channel: AtomicU64::new(1),
            messages_in: AtomicU64::new(0),
            messages_per_sec: AtomicU64::new(0),
            longpoll: Default::default(),
            metrics: crate::metrics::Metrics::new(),
            client_addresses: Default::default(),
            post_buckets: Default::default(),
            warm,
        });
        runtime.spawn(measure_rates(Arc::downgrade(&shared)));
        let watcher = if shared.config.watch_scripts {
            Some(Arc::new(
                crate::reload::watch(&shared).map_err(BuildError::Watch)?,
            ))
        } else {
            None
        };
        Ok(Host {
            shared,
            _js_runtime: Arc::new(JsRuntime(Some(runtime))),
            _watcher: watcher,
        })
    }
}

/// Updates `messages_per_sec` once a second while the host lives.
async fn measure_rates(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = shared.messages_in.load(Ordering::Relaxed);
        shared
            .messages_per_sec
            .store(now.saturating_sub(last), Ordering::Relaxed);
        last = now;
    }
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The HTTP routes: chat UI, dashboard, WebSocket, admin API. Serve it
    /// with `into_make_service_with_connect_info::<SocketAddr>()` so the
    /// admin API can tell loopback peers apart.
    pub fn router(&self) -> axum::Router {
        crate::web::router(self.shared.clone())
    }

    /// A handle to one room, started on first use.
    pub fn room(&self, topic: &str) -> Result<RoomHandle, RoomError> {
        room_handle(&self.shared, Topic::parse(topic)?)
    }

    /// Every registered room.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.shared.rooms.list().iter().map(|s| s.info()).collect()
    }

    /// Stops accepting work, lets every room finish the event in hand, leave
    /// its channels, flush its journal and snapshot; then closes connections.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(30), shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!("rooms did not stop within 30 s");
        }
        shared.close_connections.cancel();
        shared.connection_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.connection_tasks.wait()).await;
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
                tracing::info!("shutting down");
                host.shutdown().await;
            })
            .await
    }
}

/// Starts the room if needed and returns a handle to it.
pub(crate) fn room_handle(shared: &Arc<Shared>, topic: Topic) -> Result<RoomHandle, RoomError> {
    registry::open(shared, &topic)?;
    Ok(RoomHandle {
        shared: shared.clone(),
        topic,
    })
}

/// One room, for embedders: send messages, read its state, kill it.
/// Holds the topic, not the room: the room may stop when idle and start
/// again on the next call.
#[derive(Clone)]
pub struct RoomHandle {
    shared: Arc<Shared>,
    topic: Topic,
}

impl RoomHandle {
    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The room's description, if it is registered.
    pub fn info(&self) -> Option<RoomInfo> {
        self.shared.rooms.get(&self.topic).map(|slot| slot.info())
    }

    /// Runs `onMessage(conn, event, payload)`; returns the hook's result.
    pub async fn message(
        &self,
        conn: Conn,
        event: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, RoomError> {
        let payload = RawValue::from_string(payload.to_string())
            .map_err(|e| RoomError::Refused(e.to_string()))?;
        let raw = self.message_raw(conn, event, payload).await?;
        serde_json::from_str(&raw).map_err(|e| RoomError::Refused(e.to_string()))
    }

    /// Like [`RoomHandle::message`] with JSON text in and out.
    pub async fn message_raw(
        &self,
        conn: Conn,
        event: &str,
        payload: Box<RawValue>,
    ) -> Result<String, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Message {
            conn,
            event: event.to_string(),
            payload,
            reply: ReplyTo::Caller(tx),
        })
        .await?;
        rx.await.map_err(|_| RoomError::Crashed)?
    }

    /// The room's JS state as `snapshot()` returns it, with its members:
    /// `{"members": [[id, user, meta], ...], "state": ...}`.
    pub async fn state(&self) -> Result<serde_json::Value, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Inspect(tx)).await?;
        let raw = rx.await.map_err(|_| RoomError::Crashed)??;
        serde_json::from_str(&raw).map_err(|e| RoomError::Refused(e.to_string()))
    }

    /// Aborts the room (as a crash would) and waits for the next generation.
    pub async fn kill(&self) -> Result<u64, RoomError> {
        registry::kill(&self.shared, &self.topic).await
    }

    async fn send(&self, command: Command) -> Result<(), RoomError> {
        let (_, mailbox) = registry::open(&self.shared, &self.topic)?;
        mailbox.send(command).await.map_err(|_| RoomError::Crashed)
    }
}
