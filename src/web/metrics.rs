//! `GET /metrics`: the host's metrics in the OpenMetrics text format, behind
//! the admin access rule (see `api::require_admin`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::WebState;
use crate::metrics::RoomSample;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) async fn metrics(State(web): State<Arc<WebState>>) -> Response {
    let rooms: Vec<RoomSample> = web
        .rooms
        .list()
        .iter()
        .map(|slot| {
            let info = slot.info();
            RoomSample {
                topic: info.topic,
                state: info.state.label(),
                channels: info.channels,
                js_memory: info.js_memory,
                storage_unavailable: info.storage.is_some(),
            }
        })
        .chain(
            super::api::stopped_topics(&web)
                .into_iter()
                .map(|(topic, _)| RoomSample {
                    topic,
                    state: "stopped",
                    channels: 0,
                    js_memory: 0,
                    storage_unavailable: false,
                }),
        )
        .collect();
    web.metrics.set_rooms(&rooms);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        web.metrics.encode(),
    )
        .into_response()
}
