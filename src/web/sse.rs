//! The SSE transport, for clients that only speak plain HTTP (an
//! `EventSource` and a `fetch`, or `curl`):
//!
//! - `GET /api/rooms/{topic}/events` streams the room's broadcasts as SSE
//!   events named after the broadcast event, `data` being its payload.
//!   Every event has an `id`; a reconnecting `EventSource` sends the last
//!   one as `Last-Event-ID` and gets what it missed from the room's
//!   [`Feed`], or a `reset` event when that is no longer buffered. A
//!   comment every `sse_keep_alive` (15 s) keeps proxies from closing a
//!   quiet stream.
//!
//! Its other half, `POST /api/rooms/{topic}/messages`, is in `post`.
//!
//! A stream is not a channel: it does not join the room or appear in its
//! presence; it reads what the room broadcasts, in the same order every
//! channel sees it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::WebState;
use super::api::{ApiError, parse_topic};
use super::connect::{AddressSlot, Transport, admit, identify, log_refusal, peer_label};
use crate::feed::{Feed, Gap, sse_event};
use crate::metrics::{Metrics, OpenConnection};

/// What `EventSource` should wait before reconnecting, in ms.
const RETRY_MS: u32 = 2000;

/// `GET /api/rooms/{topic}/events`.
pub(crate) async fn events(
    State(web): State<Arc<WebState>>,
    Path(topic): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    let (conn, address) = identify(&web, &params, &headers, Transport::Http)
        .and_then(|conn| Ok((conn, admit(&web, &extensions)?)))
        .inspect_err(|refusal| log_refusal(refusal, Transport::Http, &extensions, &headers))?;
    // Starts the room, so an unknown kind or a failed room is an error now
    // rather than a stream that never says anything.
    web.rooms.open(&topic)?;
    let feed = web.rooms.feed(&topic);
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
    let peer = peer_label(&extensions, &headers);
    tracing::debug!(
        topic = %topic,
        conn = %conn.id,
        user = %conn.user,
        peer = %peer,
        transport = "sse",
        "connected"
    );
    let stream = Stream {
        ended: Ended {
            topic: topic.to_string(),
            conn: conn.id.to_string(),
            peer,
            reason: "client closed",
        },
        wake,
        feed,
        cursor,
        pending,
        keep_alive: {
            let every = web.config.sse_keep_alive.max(Duration::from_millis(10));
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        },
        closing: web.close_connections.clone(),
        metrics: web.metrics.clone(),
        _open: web.metrics.connection_opened(Transport::Http.label()),
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
    metrics: Arc<Metrics>,
    /// Counts the stream among the connections while it lives.
    _open: OpenConnection,
    /// Counts the stream against its address (`max_conns_per_ip`).
    _address: Option<AddressSlot>,
    /// Logs the end of the stream when the body is dropped.
    ended: Ended,
}

/// What the log says when a stream ends: the body is dropped when the
/// client goes away (the common case) or after the server ended it.
struct Ended {
    topic: String,
    conn: String,
    peer: String,
    reason: &'static str,
}

impl Drop for Ended {
    fn drop(&mut self) {
        tracing::debug!(
            topic = %self.topic,
            conn = %self.conn,
            peer = %self.peer,
            transport = "sse",
            reason = self.reason,
            "disconnected"
        );
    }
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
                _ = self.closing.cancelled() => {
                    self.ended.reason = "server shutting down";
                    return None;
                }
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        self.ended.reason = "the room's feed ended";
                        return None;
                    }
                }
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
            // A stream that fell behind the buffer (a slow reader) learns
            // it with a reset rather than holding events for it.
            let queued = self.pending.len();
            let read = self.feed.read_after(self.cursor, &mut self.pending);
            self.metrics.messages_out(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_events_carry_the_newest_id() {
        let reset = reset_event(42, "7");
        let text = std::str::from_utf8(&reset).unwrap();
        assert!(text.starts_with("id: 42\nevent: reset\ndata: {"));
        assert!(text.contains(r#""last_event_id":"7""#));
    }
}
