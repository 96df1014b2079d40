//! The SSE + POST transport, for clients that only speak plain HTTP (an
//! `EventSource` and a `fetch`, or `curl`):
//!
//! - `GET /api/rooms/{topic}/events` streams the room's broadcasts as SSE
//!   events named after the broadcast event, `data` being its payload.
//!   Every event has an `id`; a reconnecting `EventSource` sends the last
//!   one as `Last-Event-ID` and gets what it missed from the room's
//!   [`Feed`], or a `reset` event when that is no longer buffered. A
//!   comment every `sse_keep_alive` (15 s) keeps proxies from closing a
//!   quiet stream.
//! - `POST /api/rooms/{topic}/messages` runs `onMessage` as a connection of
//!   its own (`conn.meta.transport` is `"http"`) and answers the hook's
//!   result as JSON, or `{reason}` with a 4xx.
//!
//! A stream is not a channel: it does not join the room or appear in its
//! presence; it reads what the room broadcasts, in the same order every
//! channel sees it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::ApiError;
use super::connect::{AddressSlot, Refusal, Transport, admit, identify, limited_peer};
use super::rate::Verdict;
use super::{BodyError, media_type, read_body};
use crate::feed::{Feed, Gap, sse_event};
use crate::host::{Shared, room_handle};
use crate::room::{RoomError, registry};
use crate::topic::Topic;

/// How long a POST waits for the room's answer.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// What `EventSource` should wait before reconnecting, in ms.
const RETRY_MS: u32 = 2000;

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError(refusal.status, refusal.reason)
    }
}

fn parse_topic(text: &str) -> Result<Topic, ApiError> {
    Topic::parse(text).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

/// `GET /api/rooms/{topic}/events`.
pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    let conn = identify(&shared, &params, &headers, Transport::Http)?;
    let address = admit(&shared, &extensions)?;
    // Starts the room, so an unknown kind or a failed room is an error now
    // rather than a stream that never says anything.
    registry::open(&shared, &topic)?;
    let feed = shared.rooms.feed(&topic);
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(params.get("lastEventId").map(String::as_str))
        .map(str::trim)
        .filter(|id| !id.is_empty());
    // Subscribe before choosing the cursor, so nothing recorded in between
    // goes unnoticed.
    let wake = feed.subscribe();
    let mut pending = VecDeque::new();
    pending.push_back(Bytes::from(format!(
        ": {topic} events\nretry: {RETRY_MS}\n\n"
    )));
    let cursor = match resume_from {
        None => feed.last_id(),
        Some(asked) => {
            let resumed = asked
                .parse::<u64>()
                .ok()
                .map(|after| feed.read_after(after, &mut pending));
            match resumed {
                Some(Ok(cursor)) => cursor,
                Some(Err(Gap { last })) => {
                    pending.push_back(reset_event(last, asked));
                    last
                }
                None => {
                    let last = feed.last_id();
                    pending.push_back(reset_event(last, asked));
                    last
                }
            }
        }
    };
    tracing::debug!(topic = %topic, conn = %conn.id, user = %conn.user, "event stream opened");
    shared.connections.fetch_add(1, Ordering::Relaxed);
    shared.metrics.connection_opened(Transport::Http.label());
    let stream = Stream {
        wake,
        feed,
        cursor,
        pending,
        keep_alive: {
            let every = shared.config.sse_keep_alive.max(Duration::from_millis(10));
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        },
        closing: shared.close_connections.clone(),
        open: Open(shared.clone()),
        _address: address,
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Tells the client it missed events it cannot get back; its id moves the
/// client's `Last-Event-ID` to now.
fn reset_event(last: u64, asked: &str) -> Bytes {
    let data = json!({
        "reason": "the events after this Last-Event-ID are no longer buffered; reload the room's state",
        "last_event_id": asked,
    });
    Bytes::from(sse_event(last, "reset", &data.to_string()))
}

/// One open event stream.
struct Stream {
    feed: Arc<Feed>,
    wake: watch::Receiver<u64>,
    /// The id of the last event queued for this client.
    cursor: u64,
    /// Chunks to write before waiting again.
    pending: VecDeque<Bytes>,
    keep_alive: tokio::time::Interval,
    /// Ends the stream on shutdown (a graceful shutdown waits for bodies).
    closing: CancellationToken,
    /// Counts the stream among the connections; the host's metrics.
    open: Open,
    /// Counts the stream against its address (`max_conns_per_ip`).
    _address: Option<AddressSlot>,
}

impl Stream {
    /// The next chunk to write; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            tokio::select! {
                biased;
                _ = self.closing.cancelled() => return None,
                changed = self.wake.changed() => changed.ok()?,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
            // A stream that fell behind the buffer (a slow reader) learns
            // it with a reset rather than holding events for it.
            let queued = self.pending.len();
            let read = self.feed.read_after(self.cursor, &mut self.pending);
            self.open.0.metrics.messages_out(
                Transport::Http.label(),
                self.pending.len().saturating_sub(queued),
            );
            match read {
                Ok(cursor) => self.cursor = cursor,
                Err(Gap { last }) => {
                    let asked = self.cursor.to_string();
                    self.pending.push_back(reset_event(last, &asked));
                    self.cursor = last;
                }
            }
        }
    }
}

/// Counts an open stream among the host's connections while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.connection_closed(Transport::Http.label());
    }
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

/// `POST /api/rooms/{topic}/messages`.
pub(crate) async fn post_message(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    Query(mut params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    // A post has no connection to hold a bucket: its address does.
    if let Some(ip) = limited_peer(&shared, &extensions) {
        let (rate, burst) = (shared.config.msg_rate, shared.config.msg_burst);
        if shared
            .post_buckets
            .check(ip, rate, burst, std::time::Instant::now())
            != Verdict::Allow
        {
            shared.metrics.rate_limited();
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited".into(),
            ));
        }
    }
    let bad = |reason: String| ApiError(StatusCode::BAD_REQUEST, reason);
    let media = media_type(&headers);
    if media != "application/json" && media != "application/x-www-form-urlencoded" {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {media:?}: send application/json {{event, payload}} or a form with text"
            ),
        ));
    }
    let limit = shared.config.max_frame_bytes;
    let body = read_body(body, limit).await.map_err(|e| match e {
        BodyError::TooLarge => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("message larger than {limit} bytes"),
        ),
        BodyError::Unreadable(why) => bad(why),
    })?;
    let (event, payload, user) = if media == "application/json" {
        // The body wraps the payload in one more object.
        let max_depth = shared.config.max_json_depth;
        if !crate::protocol::json_depth_within(&body, max_depth.saturating_add(1)) {
            return Err(bad(format!(
                "payload nested too deeply (limit {max_depth})"
            )));
        }
        let post: JsonPost =
            serde_json::from_slice(&body).map_err(|e| bad(format!("bad JSON: {e}")))?;
        let payload = match post.payload {
            None => crate::protocol::empty_object(),
            Some(p) if p.get().starts_with('{') => p,
            Some(_) => return Err(bad("payload must be a JSON object".into())),
        };
        (post.event, payload, post.user)
    } else {
        form_post(&body).map_err(bad)?
    };
    if event.is_empty() || event.len() > 256 {
        return Err(bad("event must be 1 to 256 bytes".into()));
    }
    if event.starts_with("phx_") || event == "presence_update" {
        return Err(bad(format!(
            "{event:?} is reserved for the Phoenix protocol"
        )));
    }
    if let Some(user) = user {
        params.entry("user".into()).or_insert(user);
    }
    let conn = identify(&shared, &params, &headers, Transport::Http)?;
    shared.messages_in.fetch_add(1, Ordering::Relaxed);
    shared.metrics.messages_in(Transport::Http.label(), 1);
    let room = room_handle(&shared, topic)?;
    let reply = tokio::time::timeout(POST_TIMEOUT, room.message_raw(conn, &event, payload))
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

/// A form post: `event` (default `new_msg`) and `user` are taken out, every
/// other field becomes a string in the payload (`text=hi` → `{"text":"hi"}`).
fn form_post(body: &[u8]) -> Result<(String, Box<RawValue>, Option<String>), String> {
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
    Ok((event.unwrap_or_else(|| "new_msg".into()), payload, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_the_payload() {
        let (event, payload, user) = form_post(b"text=hi+there&user=ann").unwrap();
        assert_eq!(
            (event.as_str(), payload.get()),
            ("new_msg", r#"{"text":"hi there"}"#)
        );
        assert_eq!(user.as_deref(), Some("ann"));
        let (event, payload, user) = form_post(b"event=typing&on=1").unwrap();
        assert_eq!(
            (event.as_str(), payload.get(), user),
            ("typing", r#"{"on":"1"}"#, None)
        );
    }

    #[test]
    fn reset_events_carry_the_newest_id() {
        let reset = reset_event(42, "7");
        let text = std::str::from_utf8(&reset).unwrap();
        assert!(text.starts_with("id: 42\nevent: reset\ndata: {"));
        assert!(text.contains(r#""last_event_id":"7""#));
    }
}
