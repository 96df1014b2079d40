//! `POST /api/rooms/{topic}/messages`: runs `onMessage` as a connection of
//! its own (`conn.meta.transport` is `"http"`) and answers the hook's result
//! as JSON, or `{reason}` with a 4xx — the half of the plain-HTTP transport
//! that sends (the SSE stream in `sse` is the half that listens).
//!
//! The request passes three steps before the room sees it: the per-address
//! rate limit ([`limit_posts`], a layer: a post has no connection to hold a
//! bucket, so its address does), the body's checks ([`PostedMessage`], an
//! extractor: media type, size, JSON depth, a reserved or empty event), and
//! the connect checks every transport runs (token, origin, user).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::WebState;
use super::api::{ApiError, parse_topic};
use super::connect::{Transport, identify, limited_peer};
use super::rate::Verdict;
use super::{BodyError, media_type, read_body};
use crate::protocol;
use crate::room::RoomError;

/// How long a post waits for the room's answer.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// The rate-limit layer of the post route: a token bucket per client
/// address (the same rate and burst as a connection's), `429` when empty.
pub(crate) async fn limit_posts(
    State(web): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ip) = limited_peer(&web, request.extensions()) {
        let (rate, burst) = (web.config.msg_rate, web.config.msg_burst);
        if web.post_buckets.check(ip, rate, burst, Instant::now()) != Verdict::Allow {
            web.metrics.rate_limited();
            return ApiError(StatusCode::TOO_MANY_REQUESTS, "rate_limited".into()).into_response();
        }
    }
    next.run(request).await
}

/// A message posted to a room: its event, its payload (an object) and, if
/// the body names one, the user who sends it.
pub(crate) struct PostedMessage {
    event: String,
    payload: Box<RawValue>,
    user: Option<String>,
}

/// A JSON post: the event, its payload (an object, `{}` if absent) and
/// optionally who sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPost {
    event: String,
    payload: Option<Box<RawValue>>,
    user: Option<String>,
}

impl FromRequest<Arc<WebState>> for PostedMessage {
    type Rejection = ApiError;

    async fn from_request(request: Request, web: &Arc<WebState>) -> Result<Self, ApiError> {
        let bad = |reason: String| ApiError(StatusCode::BAD_REQUEST, reason);
        let media = media_type(request.headers());
        let json = match media.as_str() {
            "application/json" => true,
            "application/x-www-form-urlencoded" => false,
            _ => {
                return Err(ApiError(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "content type {media:?}: send application/json {{event, payload}} or a form with text"
                    ),
                ));
            }
        };
        let limit = web.config.max_frame_bytes;
        let body = read_body(request.into_body(), limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("message larger than {limit} bytes"),
                ),
                BodyError::Unreadable(why) => bad(why),
            })?;
        let posted = if json {
            json_post(&body, web.config.max_json_depth)
        } else {
            form_post(&body)
        }
        .map_err(bad)?;
        posted.check_event().map_err(bad)?;
        Ok(posted)
    }
}

impl PostedMessage {
    /// The event rules of a channel push: 1–256 bytes, not one the Phoenix
    /// protocol reserves.
    fn check_event(&self) -> Result<(), String> {
        let event = &self.event;
        if event.is_empty() || event.len() > 256 {
            return Err("event must be 1 to 256 bytes".into());
        }
        if event.starts_with("phx_") || event == "presence_update" {
            return Err(format!("{event:?} is reserved for the Phoenix protocol"));
        }
        Ok(())
    }
}

/// `{"event", "payload", "user"}`, with the payload nested at most
/// `max_depth` deep.
fn json_post(body: &[u8], max_depth: usize) -> Result<PostedMessage, String> {
    // The body wraps the payload in one more object.
    if !protocol::json_depth_within(body, max_depth.saturating_add(1)) {
        return Err(format!("payload nested too deeply (limit {max_depth})"));
    }
    let post: JsonPost = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let payload = match post.payload {
        None => protocol::empty_object(),
        Some(p) if p.get().starts_with('{') => p,
        Some(_) => return Err("payload must be a JSON object".into()),
    };
    Ok(PostedMessage {
        event: post.event,
        payload,
        user: post.user,
    })
}

/// A form post: `event` (default `new_msg`) and `user` are taken out, every
/// other field becomes a string in the payload (`text=hi` → `{"text":"hi"}`).
fn form_post(body: &[u8]) -> Result<PostedMessage, String> {
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("bad form: {e}"))?;
    let mut event = None;
    let mut user = None;
    let mut payload = serde_json::Map::new();
    for (name, value) in fields {
        match name.as_str() {
            "event" => event = Some(value),
            "user" => user = Some(value),
            _ => {
                payload.insert(name, value.into());
            }
        }
    }
    let payload = serde_json::value::to_raw_value(&payload).map_err(|e| e.to_string())?;
    Ok(PostedMessage {
        event: event.unwrap_or_else(|| "new_msg".into()),
        payload,
        user,
    })
}

/// `POST /api/rooms/{topic}/messages`.
pub(crate) async fn post_message(
    State(web): State<Arc<WebState>>,
    Path(topic): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    posted: PostedMessage,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    if let Some(user) = posted.user {
        params.entry("user".into()).or_insert(user);
    }
    let conn = identify(&web, &params, &headers, Transport::Http)?;
    web.metrics.messages_in(Transport::Http.label(), 1);
    let room = web.rooms.handle(topic)?;
    let reply = room.message_raw(conn, &posted.event, posted.payload);
    let reply = tokio::time::timeout(POST_TIMEOUT, reply)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "the room did not answer within 30 s".into(),
            )
        })?;
    match reply {
        Ok(response) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            response,
        )
            .into_response()),
        // The script threw: the client's message was refused.
        Err(RoomError::Refused(reason)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reason": reason })),
        )
            .into_response()),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_the_payload() {
        let posted = form_post(b"text=hi+there&user=ann").unwrap();
        assert_eq!(
            (posted.event.as_str(), posted.payload.get()),
            ("new_msg", r#"{"text":"hi there"}"#)
        );
        assert_eq!(posted.user.as_deref(), Some("ann"));
        let posted = form_post(b"event=typing&on=1").unwrap();
        assert_eq!(
            (posted.event.as_str(), posted.payload.get(), posted.user),
            ("typing", r#"{"on":"1"}"#, None)
        );
    }
}
