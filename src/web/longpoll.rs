//! The Phoenix long-poll transport (`/socket/longpoll`), for clients whose
//! WebSocket cannot connect (proxies that block upgrades). It speaks what
//! `Phoenix.Transports.LongPoll` and phoenix.js's `LongPoll` speak:
//!
//! - `GET` without a token starts a session: `{"status":410,"token":T}`.
//! - `GET` with a token is a poll, held up to `longpoll_window`: `200` with
//!   `messages` (encoded frames, as strings) as soon as any are queued, or
//!   `204` when the window passes quietly.
//! - `POST` with a token carries frames (`application/x-ndjson`, one frame a
//!   line; a single frame otherwise): `{"status":200,"token":T}`. A V2 line
//!   that does not start with `[` is a binary push in base64, which is how
//!   phoenix.js's `LongPoll.send` and `Phoenix.Transports.LongPoll` carry
//!   binary. Answers are JSON text only (as in Phoenix, whose long-poll
//!   cannot send binary frames): a binary push or broadcast reaches a
//!   long-poll channel as `binary_unsupported` (see `hub`).
//! - `410`: the session is gone (expired, or the token is not ours): start a
//!   new one. `403` (also the HTTP status): the connect checks (token,
//!   origin, params) refused the client; `reason` says why.
//!
//! Protocol statuses travel in the JSON body with HTTP 200, as Phoenix sends
//! them (a fetch of an HTTP 204 would have no body), except the refusal 403,
//! which is also the HTTP status. Request errors that
//! Phoenix clients never cause — malformed frames, oversized batches, wrong
//! content types — are real HTTP 400/413/415 with `{"status", "reason"}`.
//!
//! A session is an ordinary connection to the rest of the host: a [`Peer`]
//! outbound queue that rooms deliver to, and a [`Channels`] table. A session
//! with no request in flight for `longpoll_timeout` expires and every
//! channel leaves, which is what a closed WebSocket does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::WebState;
use super::channels::{ChannelTable, Channels};
use super::connect::{AddressSlot, Transport, admit, connect, log_refusal, peer_label};
use super::session_token::{SessionId, SessionTokens};
use super::{BodyError, media_type, read_body};
use crate::hub::{Frame, Kick, Outbound, Peer};
use crate::metrics::OpenConnection;
use crate::protocol::{self, Vsn};

/// The header phoenix.js and roomhost's UI may carry the session token in;
/// the `token` query parameter works too (what phoenix.js sends).
pub(crate) const TOKEN_HEADER: &str = "x-phoenix-longpoll-token";

/// Frames one POST may carry (phoenix.js batches at most 100).
pub(crate) const MAX_BATCH_FRAMES: usize = 100;

/// Bytes one POST may carry, in frames of the WebSocket limit.
const MAX_BATCH_FRAMES_OF_LIMIT: usize = 16;

/// The live long-poll sessions of a host, and what signs their tokens.
#[derive(Default)]
pub(crate) struct Sessions {
    tokens: SessionTokens,
    /// A std mutex: held for map operations only, never across an await.
    map: Mutex<HashMap<SessionId, Arc<Session>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        // Plain inserts and removes: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live session a request's token names.
    fn resume(
        &self,
        params: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Option<Arc<Session>> {
        let token = named_session(params, headers)?;
        let id = self.tokens.verify(token)?;
        self.map().get(&id).cloned()
    }

    fn remove(&self, id: &SessionId) {
        self.map().remove(id);
    }
}

/// One long-poll client: a connection without a socket.
struct Session {
    id: SessionId,
    token: String,
    vsn: Vsn,
    peer: Arc<Peer>,
    /// The outbound queue's receiving end, held by the poll in progress.
    /// A tokio mutex: a poll holds it while it waits for messages.
    outbound: tokio::sync::Mutex<mpsc::Receiver<Outbound>>,
    /// Held by the POST in progress, so a session's frames reach rooms in
    /// the order they were sent even if a client posts concurrently.
    channels: tokio::sync::Mutex<Channels>,
    /// The same table `channels` owns, for polls to forget closed channels
    /// without waiting for a POST.
    table: ChannelTable,
    activity: Mutex<Activity>,
    /// Cancelled when the session ends; requests in flight answer at once.
    ended: CancellationToken,
    /// Counts the session against its address (`max_conns_per_ip`).
    _address: Option<AddressSlot>,
    /// Who opened it (the peer address, and `X-Forwarded-For`), for the log.
    peer_label: String,
}

/// When the client was last heard from, for expiry.
struct Activity {
    /// Requests being served now; a session with one in flight never expires.
    in_flight: usize,
    /// When the last request started or ended.
    last: Instant,
    /// The poll in progress: a newer poll supersedes it (answers 204), so a
    /// client whose previous request was lost is not kept waiting.
    poll: CancellationToken,
}

impl Session {
    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a request in flight until the guard drops.
    fn busy(self: &Arc<Self>) -> Busy {
        let mut a = self.activity();
        a.in_flight += 1;
        a.last = Instant::now();
        Busy(self.clone())
    }

    /// Becomes the session's current poll; the previous one gives way.
    fn take_poll(&self) -> CancellationToken {
        let mut a = self.activity();
        let token = CancellationToken::new();
        std::mem::replace(&mut a.poll, token.clone()).cancel();
        token
    }

    /// When the session expires if nothing happens; `None` while busy.
    fn expires_at(&self, timeout: std::time::Duration) -> Option<Instant> {
        let a = self.activity();
        (a.in_flight == 0).then_some(a.last + timeout)
    }
}

struct Busy(Arc<Session>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.in_flight -= 1;
        a.last = Instant::now();
    }
}

/// `GET /socket/longpoll`: a new session, or a poll of an existing one.
pub(crate) async fn poll(
    State(web): State<Arc<WebState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    if named_session(&params, &headers).is_none() {
        return open(&web, &params, &headers, &extensions);
    }
    match web.longpoll.resume(&params, &headers) {
        Some(session) => listen(&web, session).await,
        None => gone(),
    }
}

/// The session token a request names: the header, else the `token` param
/// unless that is a connection token (a JWT: three dot-separated parts),
/// which the first GET of a client using `params: {token}` carries.
/// (phoenix.js appends the session token after the client's params, and
/// the last `token` param wins.)
fn named_session<'a>(
    params: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    match headers.get(TOKEN_HEADER) {
        Some(header) => header.to_str().ok(),
        None => params
            .get("token")
            .map(String::as_str)
            .filter(|t| t.matches('.').count() != 2),
    }
    .filter(|t| !t.is_empty())
}

/// Starts a session after the same connect checks as a WebSocket.
fn open(
    web: &Arc<WebState>,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Response {
    let (conn, vsn) = match connect(web, params, headers, Transport::LongPoll) {
        Ok(connected) => connected,
        Err(refusal) => {
            log_refusal(&refusal, Transport::LongPoll, extensions, headers);
            return Answer::status(403).reason(&refusal.reason).into_response();
        }
    };
    let address = match admit(web, extensions) {
        Ok(address) => address,
        Err(refusal) => {
            log_refusal(&refusal, Transport::LongPoll, extensions, headers);
            return Answer::status(refusal.status.as_u16())
                .reason(&refusal.reason)
                .into_response();
        }
    };
    let (conn_id, user) = (conn.id.clone(), conn.user.clone());
    let (peer, outbound) = Peer::new(web.config.outbound_queue);
    // Long-poll answers JSON text: its channels get no binary frames.
    let channels = Channels::new(web.clone(), conn, vsn, false, peer.clone());
    let id: SessionId = rand::random();
    let session = Arc::new(Session {
        id,
        token: web.longpoll.tokens.sign(&id),
        vsn,
        peer,
        outbound: tokio::sync::Mutex::new(outbound),
        table: channels.table(),
        channels: tokio::sync::Mutex::new(channels),
        activity: Mutex::new(Activity {
            in_flight: 0,
            last: Instant::now(),
            poll: CancellationToken::new(),
        }),
        ended: CancellationToken::new(),
        _address: address,
        peer_label: peer_label(extensions, headers),
    });
    tracing::debug!(
        conn = %conn_id,
        user = %user,
        peer = %session.peer_label,
        transport = Transport::LongPoll.label(),
        "connected"
    );
    web.longpoll.map().insert(id, session.clone());
    let open = web.metrics.connection_opened(Transport::LongPoll.label());
    let token = session.token.clone();
    web.connection_tasks
        .spawn(supervise(web.clone(), session, open));
    Answer::status(410)
        .token(&token)
        .messages(&[])
        .into_response()
}

/// Holds a poll until messages are queued, the window passes, a newer poll
/// takes over or the session ends.
async fn listen(web: &WebState, session: Arc<Session>) -> Response {
    let _busy = session.busy();
    let superseded = session.take_poll();
    let deadline = tokio::time::Instant::now() + web.config.longpoll_window;
    let mut outbound = tokio::select! {
        outbound = session.outbound.lock() => outbound,
        _ = superseded.cancelled() => return quiet(&session),
        _ = session.ended.cancelled() => return gone(),
        _ = tokio::time::sleep_until(deadline) => return quiet(&session),
    };
    let mut items = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    while frames.is_empty() {
        // recv_many is cancel-safe: a branch that loses takes nothing.
        let received = tokio::select! {
            biased;
            _ = superseded.cancelled() => break,
            n = outbound.recv_many(&mut items, web.config.outbound_queue.max(1)) => n,
            _ = session.ended.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        if received == 0 {
            break; // closed: the session ended
        }
        for item in items.drain(..) {
            match item {
                Outbound::Frame(frame) => frames.push(frame),
                Outbound::ChannelClosed(id) => session.table.forget(id),
                Outbound::Close { .. } => session.ended.cancel(),
            }
        }
    }
    drop(outbound);
    if !frames.is_empty() {
        web.metrics
            .messages_out(Transport::LongPoll.label(), frames.len());
        // Only text is queued for long-poll channels (`Channel::binary`).
        let messages: Vec<&str> = frames.iter().filter_map(Frame::as_text).collect();
        return Answer::status(200)
            .token(&session.token)
            .messages(&messages)
            .into_response();
    }
    if session.ended.is_cancelled() {
        return gone();
    }
    quiet(&session)
}

/// `POST /socket/longpoll`: a batch of frames from the client.
pub(crate) async fn publish(
    State(web): State<Arc<WebState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(session) = web.longpoll.resume(&params, &headers) else {
        return gone();
    };
    let _busy = session.busy();
    let ndjson = match media_type(&headers).as_str() {
        "application/x-ndjson" => true,
        // One frame a request: what phoenix.js sent before it batched.
        "application/json" | "text/plain" | "" => false,
        other => {
            return Answer::status(415)
                .reason(&format!(
                    "content type {other:?}: send application/x-ndjson (one frame a line)"
                ))
                .into_response();
        }
    };
    let frame_limit = web.config.max_frame_bytes;
    let limit = frame_limit.saturating_mul(MAX_BATCH_FRAMES_OF_LIMIT);
    let body = match read_body(body, limit).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Answer::status(413)
                .reason(&format!("batch larger than {limit} bytes"))
                .into_response();
        }
        Err(BodyError::Unreadable(why)) => return Answer::status(400).reason(&why).into_response(),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return Answer::status(400)
            .reason("the body is not UTF-8")
            .into_response();
    };
    let lines = match split_batch(text, ndjson, frame_limit) {
        Ok(lines) => lines,
        Err((status, reason)) => return Answer::status(status).reason(&reason).into_response(),
    };
    // Decode the whole batch first: a batch with a frame nothing could be
    // answered for is refused whole, so no half of it reaches a room.
    let mut frames = Vec::with_capacity(lines.len());
    let max_depth = web.config.max_json_depth;
    for (n, line) in lines.iter().enumerate() {
        let decoded = match decode_binary_line(session.vsn, line, frame_limit) {
            Some(Ok(binary)) => protocol::decode_binary(&binary),
            Some(Err(reason)) => {
                let reason = format!("frame {}: {reason}", n + 1);
                return Answer::status(400).reason(&reason).into_response();
            }
            None => protocol::decode_text_within(session.vsn, line, max_depth),
        };
        match decoded {
            Err(bad) if bad.reply_to.is_none() => {
                let reason = format!("frame {}: {}", n + 1, bad.reason);
                return Answer::status(400).reason(&reason).into_response();
            }
            decoded => frames.push(decoded),
        }
    }
    web.metrics
        .messages_in(Transport::LongPoll.label(), frames.len());
    let dispatch = async {
        let mut channels = session.channels.lock().await;
        for frame in frames {
            match frame {
                Ok(message) => channels.handle(message).await?,
                // Answerable by construction (checked above).
                Err(bad) => {
                    let _ = channels.refuse(bad).await;
                }
            }
        }
        Ok::<(), super::channels::Disconnect>(())
    };
    tokio::select! {
        dispatched = dispatch => match dispatched {
            Ok(()) => Answer::status(200).token(&session.token).into_response(),
            Err((_, reason)) => {
                // Flooding past the rate limit ends the session, as it
                // closes a WebSocket.
                session.ended.cancel();
                Answer::status(429).reason(&reason).into_response()
            }
        },
        _ = session.ended.cancelled() => gone(),
    }
}

/// A V2 line that is not JSON text (`[`…) is a base64 binary frame (what
/// `Phoenix.Transports.LongPoll` decodes with `Base.decode64!`): its bytes,
/// at most `frame_limit` of them. `None` for a text frame; a line starting
/// with `{` is one too (never base64), so a V1-shaped frame gets the JSON
/// decoder's reason.
fn decode_binary_line(
    vsn: Vsn,
    line: &str,
    frame_limit: usize,
) -> Option<Result<bytes::Bytes, String>> {
    use base64::Engine as _;
    if vsn != Vsn::V2 || line.starts_with('[') || line.starts_with('{') {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|e| format!("neither a JSON array nor base64 (a binary frame): {e}"))
        .and_then(|bytes| {
            if bytes.len() > frame_limit {
                Err(format!("binary frame larger than {frame_limit} bytes"))
            } else {
                Ok(bytes.into())
            }
        });
    Some(decoded)
}

/// The frames of a POST body: ndjson lines (blank ones skipped) or the body
/// as one frame. Errors are (HTTP status, reason).
fn split_batch(text: &str, ndjson: bool, frame_limit: usize) -> Result<Vec<&str>, (u16, String)> {
    let lines: Vec<&str> = if ndjson {
        text.split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.trim().is_empty())
            .collect()
    } else {
        vec![text]
    };
    if lines.len() > MAX_BATCH_FRAMES {
        return Err((
            413,
            format!(
                "{} frames in one batch; at most {MAX_BATCH_FRAMES}",
                lines.len()
            ),
        ));
    }
    // A base64 line (a binary frame) is 4/3 the size of its bytes.
    let too_long = |l: &&str| {
        let limit = if l.starts_with('[') || l.starts_with('{') {
            frame_limit
        } else {
            frame_limit.div_ceil(3) * 4
        };
        l.len() > limit
    };
    if let Some(n) = lines.iter().position(too_long) {
        return Err((
            413,
            format!("frame {}: larger than {frame_limit} bytes", n + 1),
        ));
    }
    Ok(lines)
}

/// Expires the session when no request arrives in time, and ends it when
/// it is kicked (slow consumer) or the server shuts down.
async fn supervise(web: Arc<WebState>, session: Arc<Session>, open: OpenConnection) {
    let timeout = web.config.longpoll_timeout;
    let why = loop {
        let check_at = session
            .expires_at(timeout)
            .unwrap_or_else(|| Instant::now() + timeout);
        tokio::select! {
            _ = tokio::time::sleep_until(check_at.into()) => {
                if session.expires_at(timeout).is_some_and(|at| at <= Instant::now()) {
                    break "timeout";
                }
            }
            _ = session.peer.kicked().cancelled() => break "kicked",
            _ = web.close_connections.cancelled() => break "server shutting down",
            _ = session.ended.cancelled() => break "closed",
        }
    };
    session.ended.cancel();
    web.longpoll.remove(&session.id);
    // Requests in flight answer on `ended` and let go of both locks.
    session.outbound.lock().await.close();
    let mut channels = session.channels.lock().await;
    tracing::debug!(
        conn = %channels.conn().id,
        peer = %session.peer_label,
        transport = Transport::LongPoll.label(),
        reason = why,
        "disconnected"
    );
    channels.leave_all().await;
    drop(open);
    if session.peer.kick_reason() == Some(Kick::SlowConsumer) {
        web.metrics.slow_consumer();
    }
}

/// A poll that found nothing: 204, or 410 if the session ended meanwhile.
fn quiet(session: &Session) -> Response {
    if session.ended.is_cancelled() {
        return gone();
    }
    Answer::status(204)
        .token(&session.token)
        .messages(&[])
        .into_response()
}

fn gone() -> Response {
    Answer::status(410)
        .reason("long-poll session expired or unknown: GET without a token for a new one")
        .into_response()
}

/// A long-poll answer: `{status, token, messages}` (and `reason` on errors).
#[derive(Serialize)]
struct Answer<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    /// Polls only (`200`, `204`, and `410` opening a session).
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> Answer<'a> {
    fn status(status: u16) -> Answer<'a> {
        Answer {
            status,
            token: None,
            messages: None,
            reason: None,
        }
    }

    fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    fn messages(mut self, messages: &'a [&'a str]) -> Self {
        self.messages = Some(messages);
        self
    }

    fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }
}

impl IntoResponse for Answer<'_> {
    fn into_response(self) -> Response {
        // Phoenix's statuses ride in the body of an HTTP 200; request errors
        // are HTTP errors as well. A refused connect is an HTTP 403 like on
        // every other transport (phoenix.js reads the body's status either
        // way).
        let http = match self.status {
            200 | 204 | 410 => StatusCode::OK,
            other => StatusCode::from_u16(other).unwrap_or(StatusCode::BAD_REQUEST),
        };
        let token = self.token.and_then(|t| HeaderValue::from_str(t).ok());
        let mut response = (http, Json(&self)).into_response();
        if let Some(token) = token {
            response.headers_mut().insert(TOKEN_HEADER, token);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_are_binary_frames_within_the_limit() {
        // phoenix.js `LongPoll.send`: `btoa` of the binary frame's bytes.
        let line = "AAEBAXQAZWQ="; // <<0, 1, 1, 1, "t", 0, "ed">> as base64
        let bytes = decode_binary_line(Vsn::V2, line, 64).unwrap().unwrap();
        assert_eq!(&bytes[..], b"\x00\x01\x01\x01t\x00ed");
        // Text frames, V1 sessions and object-shaped lines are not binary.
        for (vsn, line) in [
            (Vsn::V2, r#"["1","2","t","e",{}]"#),
            (Vsn::V2, "{not json"),
            (Vsn::V1, "AAEBAXQAZWQ="),
        ] {
            assert!(decode_binary_line(vsn, line, 64).is_none(), "{line}");
        }
        let err = decode_binary_line(Vsn::V2, "not base64!", 64)
            .unwrap()
            .unwrap_err();
        assert!(err.contains("neither a JSON array nor base64"), "{err}");
        // The limit applies to the decoded bytes; the line may be 4/3 longer.
        assert!(decode_binary_line(Vsn::V2, line, 7).unwrap().is_err());
        assert_eq!(split_batch(line, true, 9).unwrap(), [line]);
        assert_eq!(split_batch(line, true, 6).unwrap_err().0, 413);
    }

    #[test]
    fn batches_split_into_frames_within_limits() {
        let ok = split_batch("[1]\r\n\n[2]\n", true, 10).unwrap();
        assert_eq!(ok, ["[1]", "[2]"]);
        assert_eq!(split_batch("a\nb", false, 10).unwrap(), ["a\nb"]);
        let many = "[]\n".repeat(MAX_BATCH_FRAMES + 1);
        assert_eq!(split_batch(&many, true, 10).unwrap_err().0, 413);
        let (status, reason) = split_batch("[1]\n[12345678901]", true, 10).unwrap_err();
        assert_eq!((status, reason.starts_with("frame 2")), (413, true));
    }

    #[test]
    fn answers_put_phoenix_statuses_in_the_body() {
        let response = Answer::status(204).token("t").into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[TOKEN_HEADER], "t");
        let response = Answer::status(415).reason("no").into_response();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
