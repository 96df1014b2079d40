//! HTTP: the router, assembled in one place. Handlers are small functions in
//! `socket` (Phoenix WebSocket), `longpoll` (Phoenix long-poll), `sse` (SSE
//! stream + HTTP post), `api` (admin API) and `assets` (the UI); `connect`
//! (who may connect) and `channels` (a connection's channels) are web by
//! the transports.
//!
//! The top layer: it reaches the rooms through [`Rooms`] (open, kill,
//! reset, list) and their mailboxes, and everything else it uses is in its
//! own [`WebState`].

mod api;
mod assets;
mod channels;
mod connect;
mod longpoll;
mod metrics;
mod origin;
mod post;
mod proxy;
mod rate;
mod request;
mod session_token;
mod socket;
mod sse;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::middleware;
use axum::routing::{MethodRouter, get, post};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::room::Rooms;
use crate::scripts::Scripts;

/// What the HTTP side uses: the settings, the rooms, the kinds (for the
/// API), the metrics, and the connections' own state.
pub(crate) struct WebState {
    config: Config,
    rooms: Rooms,
    scripts: Scripts,
    metrics: Arc<Metrics>,
    /// Live long-poll sessions and the key that signs their tokens.
    longpoll: longpoll::Sessions,
    /// Open connections per client address (`max_conns_per_ip`).
    client_addresses: connect::ClientAddresses,
    /// Message rate limits of HTTP posts, per client address.
    post_buckets: rate::AddressBuckets,
    /// Client connection tasks, awaited (briefly) on shutdown.
    connection_tasks: TaskTracker,
    /// Cancelled after the rooms stopped: connections close.
    close_connections: CancellationToken,
    /// Ids of channels, unique in this host.
    next_channel: AtomicU64,
}

impl WebState {
    pub(crate) fn new(
        config: Config,
        rooms: Rooms,
        scripts: Scripts,
        metrics: Arc<Metrics>,
    ) -> WebState {
        WebState {
            config,
            rooms,
            scripts,
            metrics,
            longpoll: Default::default(),
            client_addresses: Default::default(),
            post_buckets: Default::default(),
            connection_tasks: TaskTracker::new(),
            close_connections: CancellationToken::new(),
            next_channel: AtomicU64::new(1),
        }
    }

    /// Closes every connection (after the rooms stopped) and waits briefly
    /// for their tasks.
    pub(crate) async fn close_connections(&self) {
        self.close_connections.cancel();
        self.connection_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.connection_tasks.wait()).await;
    }
}

/// Refuses settings the web side cannot serve with.
pub(crate) fn check_config(config: &Config) -> Result<(), String> {
    for origin in &config.allowed_origins {
        origin::validate_allowed(origin)?;
    }
    Ok(())
}

pub(crate) fn router(web: Arc<WebState>) -> Router {
    let dashboard = Router::new()
        .route("/admin", get(assets::admin))
        .route_layer(middleware::from_fn_with_state(
            web.clone(),
            api::admin_page_access,
        ));
    let admin = Router::new()
        .route("/api/rooms", get(api::list))
        .route("/api/kinds", get(api::kinds))
        .route("/api/cluster", get(api::cluster))
        .route("/api/rooms/{topic}", get(api::show))
        .route("/api/rooms/{topic}/console", get(api::console))
        .route("/api/rooms/{topic}/state", get(api::state))
        .route("/api/rooms/{topic}/kill", post(api::kill))
        .route("/api/rooms/{topic}/reset", post(api::reset))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            web.clone(),
            api::require_admin,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/static/{*path}", get(assets::file))
        .route("/socket/websocket", get(socket::upgrade))
        .route(
            "/socket/longpoll",
            get(longpoll::poll).post(longpoll::publish),
        )
        .route("/api/rooms/{topic}/events", get(sse::events))
        // Posts and requests into rooms share the per-address rate limit.
        .route(
            "/api/rooms/{topic}/messages",
            rate_limited(&web, post(post::post_message)),
        )
        .route(
            "/rooms/{topic}/http",
            rate_limited(&web, into_room(request::root)),
        )
        .route(
            "/rooms/{topic}/http/",
            rate_limited(&web, into_room(request::root)),
        )
        .route(
            "/rooms/{topic}/http/{*path}",
            rate_limited(&web, into_room(request::path)),
        )
        .route("/healthz", get(api::healthz))
        .merge(dashboard)
        .merge(admin)
        // Outermost: every handler and middleware above sees the client's
        // address, not a trusted proxy's.
        .layer(middleware::from_fn_with_state(
            web.clone(),
            proxy::forwarded_client,
        ))
        .with_state(web)
}

/// `routes` behind the per-address rate limit of HTTP posts.
fn rate_limited(
    web: &Arc<WebState>,
    routes: MethodRouter<Arc<WebState>>,
) -> MethodRouter<Arc<WebState>> {
    routes.route_layer(middleware::from_fn_with_state(
        web.clone(),
        post::limit_posts,
    ))
}

/// `handler` for the methods a room's `onRequest` answers.
fn into_room<H, T>(handler: H) -> MethodRouter<Arc<WebState>>
where
    H: axum::handler::Handler<T, Arc<WebState>> + Clone,
    T: 'static,
{
    get(handler.clone())
        .post(handler.clone())
        .put(handler.clone())
        .patch(handler.clone())
        .delete(handler)
}

/// The request's media type, lowercased, without parameters (`""` if none).
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    Unreadable(String),
}

/// Reads a body of at most `limit` bytes, stopping as soon as it is over.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(format!("reading the body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}
