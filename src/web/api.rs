//! The admin API (`/api/...`) and health check.
//!
//! Admin routes are served to loopback peers only, unless
//! `ROOMHOST_ADMIN_TOKEN` is set; then every request needs
//! `Authorization: Bearer <token>`, from anywhere.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::WebState;
use crate::clock::now_ms;
use crate::room::{Revival, RoomError, RoomState};
use crate::store::disk::list_rooms;
use crate::topic::Topic;

/// Refuses admin requests that are neither from loopback (without a token
/// configured) nor carry the admin token.
pub(crate) async fn require_admin(
    State(web): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = match &web.config.admin_token {
        Some(token) => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback()),
    };
    if allowed {
        return next.run(request).await;
    }
    let reason = if web.config.admin_token.is_some() {
        "admin API: Authorization: Bearer <ROOMHOST_ADMIN_TOKEN> required"
    } else {
        "admin API: loopback clients only (set ROOMHOST_ADMIN_TOKEN to allow others)"
    };
    (StatusCode::FORBIDDEN, Json(json!({ "reason": reason }))).into_response()
}

/// The dashboard page holds no data (it reads the API with the token), so
/// it is served to loopback peers, and to anyone when an admin token is
/// configured (the page then asks for it). Without a token, remote peers
/// could not use it anyway.
pub(crate) async fn admin_page_access(
    State(web): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let loopback = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    if loopback || web.config.admin_token.is_some() {
        return next.run(request).await;
    }
    let reason = "dashboard: loopback clients only (set ROOMHOST_ADMIN_TOKEN to allow others)";
    (StatusCode::FORBIDDEN, Json(json!({ "reason": reason }))).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer: status code and `{"reason"}`.
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "reason": self.1 }))).into_response()
    }
}

/// A [`RoomError`] as an answer: [`ApiError`]'s status and `{"reason"}`;
/// another node's room is 421 Misdirected Request with `"error"` and
/// `"node"` too.
#[derive(Debug)]
pub(crate) enum RoomApiError {
    Plain(ApiError),
    NotOwner(Option<String>),
}

impl IntoResponse for RoomApiError {
    fn into_response(self) -> Response {
        match self {
            RoomApiError::Plain(e) => e.into_response(),
            RoomApiError::NotOwner(node) => {
                let error = match &node {
                    Some(node) => format!("room owned by node {node}"),
                    None => "room owned by another node".to_string(),
                };
                (
                    StatusCode::MISDIRECTED_REQUEST,
                    Json(json!({ "reason": "not_owner", "error": error, "node": node })),
                )
                    .into_response()
            }
        }
    }
}

impl From<ApiError> for RoomApiError {
    fn from(e: ApiError) -> Self {
        RoomApiError::Plain(e)
    }
}

impl From<RoomError> for RoomApiError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::NotOwner { node } => RoomApiError::NotOwner(node),
            other => RoomApiError::Plain(other.into()),
        }
    }
}

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> Self {
        let status = match &e {
            RoomError::InvalidTopic(_) | RoomError::Refused(_) => StatusCode::BAD_REQUEST,
            RoomError::UnknownKind
            | RoomError::KindRemoved
            | RoomError::NotFound
            | RoomError::NoHook(_) => StatusCode::NOT_FOUND,
            RoomError::Script(_) | RoomError::Failed(_) | RoomError::Crashed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RoomError::ShuttingDown
            | RoomError::TooManyRooms
            | RoomError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RoomError::NotOwner { .. } => StatusCode::MISDIRECTED_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

impl From<super::connect::Refusal> for ApiError {
    fn from(refusal: super::connect::Refusal) -> Self {
        ApiError(refusal.status, refusal.reason)
    }
}

/// A topic from a request's path: 400 if it is not one.
pub(crate) fn parse_topic(text: &str) -> Result<Topic, ApiError> {
    Topic::parse(text).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Topics with durable state and no live room, with their journal bytes:
/// the stopped rooms, for the API and `/metrics` alike.
pub(crate) fn stopped_topics(web: &WebState) -> Vec<(String, u64)> {
    list_rooms(&web.config.data_dir)
        .into_iter()
        .filter(|(topic, _)| Topic::parse(topic).is_ok_and(|t| web.rooms.get(&t).is_none()))
        .collect()
}

/// Stopped rooms with durable state, described like live ones.
fn stopped_rooms(web: &WebState) -> Vec<serde_json::Value> {
    stopped_topics(web)
        .into_iter()
        .map(|(topic, bytes)| {
            let kind = topic.split(':').next().unwrap_or_default().to_string();
            json!({
                "topic": topic, "kind": kind, "state": RoomState::Stopped,
                "generation": 0, "restarts": 0, "channels": 0, "users": 0, "events_in": 0,
                "started_at": null, "js_memory": 0, "journal_bytes": bytes, "version": null,
                "compacts": null, "last_error": null, "script_error": null, "storage": null,
            })
        })
        .collect()
}

/// A live room's description, with its kind's pending script error.
fn room_json(web: &WebState, slot: &crate::room::RoomSlot) -> serde_json::Value {
    let mut info = slot.info();
    info.script_error = web.scripts.error(slot.topic.kind());
    // Cluster mode: which node runs it (a room this node forwards runs on
    // the owner; one it runs, here).
    if let Some(me) = web.rooms.node() {
        info.node = Some(info.forwarded_to.clone().unwrap_or_else(|| me.to_string()));
    }
    json!(info)
}

pub(crate) async fn list(State(web): State<Arc<WebState>>) -> Json<serde_json::Value> {
    let live: Vec<serde_json::Value> = web
        .rooms
        .list()
        .iter()
        .map(|slot| room_json(&web, slot))
        .collect();
    let live_rooms = live.len();
    let mut rooms = live;
    rooms.extend(stopped_rooms(&web));
    Json(json!({
        "totals": {
            // Every room the list shows (as the dashboard's table counts
            // them), and those of them with a task now.
            "rooms": rooms.len(),
            "live_rooms": live_rooms,
            "connections": web.metrics.connections_open(),
            "messages_per_sec": web.metrics.messages_per_sec(),
            "messages_in": web.metrics.messages_in_total(),
            "room_starts": web.metrics.room_starts_total(),
            "at": now_ms(),
        },
        "rooms": rooms,
    }))
}

pub(crate) async fn show(
    State(web): State<Arc<WebState>>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, RoomApiError> {
    let topic = parse_topic(&text)?;
    // Cluster mode: the room may run on another node (this node's slot of
    // it then only forwards its channels there).
    if let Some(node) = web.rooms.owner(&topic).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("looking up the room's owner: {e}"),
        )
    })? && web.rooms.node() != Some(node.as_str())
    {
        return Err(RoomError::NotOwner { node: Some(node) }.into());
    }
    if let Some(slot) = web.rooms.get(&topic) {
        let mut room = room_json(&web, &slot);
        if let Some(node) = web.rooms.node() {
            room["node"] = json!(node);
        }
        return Ok(Json(room));
    }
    stopped_rooms(&web)
        .into_iter()
        .find(|r| r["topic"] == topic.as_str())
        .map(Json)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "no such room".into()).into())
}

pub(crate) async fn console(
    State(web): State<Arc<WebState>>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic = parse_topic(&text)?;
    let slot = web.rooms.get(&topic).ok_or(RoomError::NotFound)?;
    Ok(Json(json!({ "lines": slot.console_lines() })))
}

/// The room's JS state via `snapshot()` (starts a stopped room).
pub(crate) async fn state(
    State(web): State<Arc<WebState>>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic = parse_topic(&text)?;
    let host_room = web.rooms.handle(topic)?;
    Ok(Json(host_room.state().await?))
}

pub(crate) async fn kill(
    State(web): State<Arc<WebState>>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic = parse_topic(&text)?;
    let generation =
        tokio::time::timeout(std::time::Duration::from_secs(30), web.rooms.kill(&topic))
            .await
            .map_err(|_| {
                ApiError(
                    StatusCode::GATEWAY_TIMEOUT,
                    "room did not restart within 30 s".into(),
                )
            })??;
    Ok(Json(
        json!({ "topic": topic.as_str(), "generation": generation }),
    ))
}

pub(crate) async fn reset(
    State(web): State<Arc<WebState>>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topic = parse_topic(&text)?;
    let state = web.rooms.reset(&topic, Revival::Admin).await?;
    Ok(Json(json!({ "topic": topic.as_str(), "state": state })))
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Cluster mode: this node's name and every node's record (404 outside
/// cluster mode; 503 when NATS does not answer).
pub(crate) async fn cluster(
    State(web): State<Arc<WebState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(nodes) = web.rooms.cluster_nodes().await else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "cluster mode is off (roomhost serve --cluster <nats urls>)".into(),
        ));
    };
    let nodes = nodes.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading the cluster's nodes: {e}"),
        )
    })?;
    Ok(Json(json!({ "node": web.rooms.node(), "nodes": nodes })))
}

/// Every room kind: version serving, pending script error, removed.
pub(crate) async fn kinds(State(web): State<Arc<WebState>>) -> Json<serde_json::Value> {
    Json(json!({ "kinds": web.scripts.list() }))
}
