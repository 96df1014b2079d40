//! HTTP: the router, assembled in one place. Handlers are small functions in
//! `socket` (Phoenix WebSocket), `api` (admin API) and `assets` (the UI).

mod api;
mod assets;
mod socket;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::host::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/admin", get(assets::admin))
        .route("/api/rooms", get(api::list))
        .route("/api/kinds", get(api::kinds))
        .route("/api/rooms/{topic}", get(api::show))
        .route("/api/rooms/{topic}/console", get(api::console))
        .route("/api/rooms/{topic}/state", get(api::state))
        .route("/api/rooms/{topic}/kill", post(api::kill))
        .route("/api/rooms/{topic}/reset", post(api::reset))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            api::require_admin,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/static/{*path}", get(assets::file))
        .route("/socket/websocket", get(socket::upgrade))
        .route("/healthz", get(api::healthz))
        .merge(admin)
        .with_state(shared)
}
