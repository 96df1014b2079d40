//! `GET /metrics`: the host's metrics in the OpenMetrics text format, behind
//! the admin access rule (see `api::require_admin`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::host::Shared;
use crate::metrics::RoomSample;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let rooms: Vec<RoomSample> = shared
        .rooms
        .list()
        .iter()
        .map(|slot| {
            let info = slot.info();
            RoomSample {
                topic: info.topic,
                state: info.state,
                channels: info.channels,
                js_memory: info.js_memory,
            }
        })
        .collect();
    shared.metrics.set_rooms(&rooms);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        shared.metrics.encode(),
    )
        .into_response()
}
