//! HTTP: the router, assembled in one place. Handlers are small functions in
//! `socket` (Phoenix WebSocket), `longpoll` (Phoenix long-poll), `sse` (SSE
//! stream + HTTP post), `api` (admin API) and `assets` (the UI); `connect`
//! (who may connect) and `channels` (a connection's channels) are shared by
//! the transports.

mod api;
mod assets;
mod channels;
mod connect;
mod longpoll;
mod metrics;
mod origin;
mod rate;
mod session_token;
mod socket;
mod sse;

pub(crate) use connect::ClientAddresses;
pub(crate) use longpoll::Sessions as LongPollSessions;
pub(crate) use origin::validate_allowed as validate_allowed_origin;
pub(crate) use rate::AddressBuckets;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::middleware;
use axum::routing::{get, post};
use futures_util::StreamExt;

use crate::host::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let dashboard = Router::new()
        .route("/admin", get(assets::admin))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            api::admin_page_access,
        ));
    let admin = Router::new()
        .route("/api/rooms", get(api::list))
        .route("/api/kinds", get(api::kinds))
        .route("/api/rooms/{topic}", get(api::show))
        .route("/api/rooms/{topic}/console", get(api::console))
        .route("/api/rooms/{topic}/state", get(api::state))
        .route("/api/rooms/{topic}/kill", post(api::kill))
        .route("/api/rooms/{topic}/reset", post(api::reset))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
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
        .route("/api/rooms/{topic}/messages", post(sse::post_message))
        .route("/healthz", get(api::healthz))
        .merge(dashboard)
        .merge(admin)
        .with_state(shared)
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
