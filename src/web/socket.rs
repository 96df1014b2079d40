//! The Phoenix Channels WebSocket transport (`/socket/websocket`).
//!
//! One connection = two tasks. The reader (this module's `Reader`) decodes
//! frames, answers heartbeats and malformed input itself, and forwards joins,
//! pushes and leaves to room mailboxes — waiting when a mailbox is full,
//! which is the back-pressure a flooding client feels. The writer drains the
//! connection's bounded outbound queue in batches (many frames, one flush)
//! and never blocks a room: rooms only `try_send`, and a client whose queue
//! overflows is kicked as a slow consumer.
//!
//! The reader owns the channel table; the writer only removes entries when a
//! room says a channel ended (`ChannelClosed`), so both share it behind a
//! std mutex that is never held across an await.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::{Conn, random_handle};
use crate::host::Shared;
use crate::hub::{Channel, Outbound, Peer};
use crate::protocol::{self, Incoming, Ref, Status, Vsn};
use crate::room::registry;
use crate::room::{Command, LeaveReason, ReplyTo};
use crate::topic::Topic;

/// Frames written per flush.
const WRITE_BATCH: usize = 64;

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let vsn = match Vsn::from_param(params.get("vsn").map(String::as_str)) {
        Ok(vsn) => vsn,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let user = match user_param(params.get("user").map(String::as_str)) {
        Ok(user) => user,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let meta = RawValue::from_string(r#"{"transport":"websocket"}"#.into()).expect("valid JSON");
    let conn = Conn::new(user, meta);
    let limit = shared.config.max_frame_bytes;
    let tasks = shared.connection_tasks.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tasks.track_future(serve(socket, shared, conn, vsn)))
}

/// The `user` connect param: 1–64 printable characters, or a random handle.
pub(crate) fn user_param(user: Option<&str>) -> Result<String, String> {
    let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(random_handle());
    };
    if user.chars().count() > 64 || user.chars().any(char::is_control) {
        return Err("invalid user: 1 to 64 printable characters".into());
    }
    Ok(user.to_string())
}

/// One joined channel, as the connection sees it.
struct Joined {
    channel: Arc<Channel>,
    mailbox: mpsc::Sender<Command>,
}

type ChannelTable = Arc<Mutex<HashMap<String, Joined>>>;

fn table(channels: &ChannelTable) -> std::sync::MutexGuard<'_, HashMap<String, Joined>> {
    channels.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(socket: WebSocket, shared: Arc<Shared>, conn: Conn, vsn: Vsn) {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn = %conn.id, user = %conn.user, "connected");
    let (sink, stream) = socket.split();
    let (peer, outbound) = Peer::new(shared.config.outbound_queue);
    let channels: ChannelTable = Arc::default();
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sink,
        outbound,
        peer.clone(),
        channels.clone(),
        done.clone(),
    ));
    let mut reader = Reader {
        shared: shared.clone(),
        conn,
        vsn,
        peer: peer.clone(),
        channels,
    };
    let close = reader.run(stream).await;
    if let Some((code, reason)) = close {
        let close = Outbound::Close {
            code,
            reason: truncate_reason(&reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), peer.send(close)).await;
    }
    done.cancel();
    reader.leave_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    shared.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(conn = %reader.conn.id, "disconnected");
}

struct Reader {
    shared: Arc<Shared>,
    conn: Conn,
    vsn: Vsn,
    peer: Arc<Peer>,
    channels: ChannelTable,
}

/// What ends a connection from our side: a close code and reason.
type Close = (u16, String);

impl Reader {
    async fn run(&mut self, mut stream: SplitStream<WebSocket>) -> Option<Close> {
        let timeout = self.shared.config.heartbeat_timeout;
        let kicked = self.peer.kicked().clone();
        let closing = self.shared.close_connections.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = kicked.cancelled() => return None, // the writer says why
                _ = closing.cancelled() => return Some((1001, "server shutting down".into())),
                next = tokio::time::timeout(timeout, stream.next()) => next,
            };
            let message = match next {
                Err(_) => return Some((1000, "heartbeat timeout".into())),
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    // tungstenite reports an oversized message as a capacity
                    // error ("Message too long: N > max").
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        return Some((
                            1009,
                            format!(
                                "frame too large (limit {} bytes)",
                                self.shared.config.max_frame_bytes
                            ),
                        ));
                    }
                    return None;
                }
                Ok(Some(Ok(message))) => message,
            };
            let close = match message {
                Message::Text(text) => {
                    self.shared.messages_in.fetch_add(1, Ordering::Relaxed);
                    self.on_text(text.as_str()).await
                }
                Message::Binary(bytes) => {
                    let bad = protocol::decode_binary(&bytes);
                    self.refuse(bad).await
                }
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) => None,
            };
            if close.is_some() {
                return close;
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<Close> {
        let message = match protocol::decode_text(self.vsn, text) {
            Ok(message) => message,
            Err(bad) => return self.refuse(bad).await,
        };
        match (message.topic.as_str(), message.event.as_str()) {
            ("phoenix", "heartbeat") => {
                self.reply(&message, Status::Ok, "{}").await;
            }
            (_, "phx_join") => self.join(message).await,
            (_, "phx_leave") => self.leave(message).await,
            _ => self.push(message).await,
        }
        None
    }

    /// Answers a bad frame when we know its ref, or closes the connection.
    async fn refuse(&mut self, bad: protocol::BadFrame) -> Option<Close> {
        match bad.reply_to {
            Some((join_ref, msg_ref, topic)) => {
                let frame = protocol::encode_error_reply(
                    self.vsn,
                    join_ref.as_ref(),
                    msg_ref.as_ref(),
                    &topic,
                    &bad.reason,
                );
                self.send(frame).await;
                None
            }
            None => {
                let code = if bad.reason.starts_with("binary") {
                    1003
                } else {
                    1007
                };
                Some((code, bad.reason))
            }
        }
    }

    async fn join(&mut self, message: Incoming) {
        let topic = match Topic::parse(&message.topic) {
            Ok(topic) => topic,
            Err(e) => return self.reply_error(&message, &e.to_string()).await,
        };
        let previous = table(&self.channels).remove(topic.as_str());
        if let Some(old) = previous {
            // A second join of the same topic replaces the first (Phoenix).
            old.channel
                .peer
                .deliver(Outbound::Frame(close_frame(&old.channel)));
            let _ = old
                .mailbox
                .send(Command::Leave {
                    channel: old.channel.id,
                    conn_id: self.conn.id.clone(),
                    reason: LeaveReason::Rejoin,
                    reply: None,
                })
                .await;
        }
        if table(&self.channels).len() >= self.shared.config.max_channels_per_conn {
            return self.reply_error(&message, "too many channels joined").await;
        }
        let (_, mailbox) = match registry::open(&self.shared, &topic) {
            Ok(room) => room,
            Err(e) => return self.reply_error(&message, &e.to_string()).await,
        };
        let channel = Arc::new(Channel {
            id: self.shared.next_channel.fetch_add(1, Ordering::Relaxed),
            topic: topic.clone(),
            conn: self.conn.clone(),
            join_ref: message.join_ref.clone().or_else(|| message.msg_ref.clone()),
            vsn: self.vsn,
            peer: self.peer.clone(),
        });
        table(&self.channels).insert(
            topic.as_str().to_string(),
            Joined {
                channel: channel.clone(),
                mailbox: mailbox.clone(),
            },
        );
        let join = Command::Join {
            channel,
            params: message.payload,
            msg_ref: message.msg_ref.clone(),
        };
        if mailbox.send(join).await.is_err() {
            table(&self.channels).remove(topic.as_str());
            let frame = protocol::encode_error_reply(
                self.vsn,
                message.join_ref.as_ref(),
                message.msg_ref.as_ref(),
                topic.as_str(),
                "room unavailable",
            );
            self.send(frame).await;
        }
    }

    async fn leave(&mut self, message: Incoming) {
        let joined = {
            let mut channels = table(&self.channels);
            match channels.get(&message.topic) {
                Some(j) if is_current(&j.channel, message.join_ref.as_ref()) => {
                    channels.remove(&message.topic)
                }
                _ => None,
            }
        };
        let Some(joined) = joined else {
            // Phoenix answers a leave of a topic it does not know with ok.
            return self.reply(&message, Status::Ok, "{}").await;
        };
        let leave = Command::Leave {
            channel: joined.channel.id,
            conn_id: self.conn.id.clone(),
            reason: LeaveReason::Left,
            reply: message.msg_ref.clone(),
        };
        if joined.mailbox.send(leave).await.is_err() {
            self.reply(&message, Status::Ok, "{}").await;
        }
    }

    async fn push(&mut self, message: Incoming) {
        let target = {
            let channels = table(&self.channels);
            channels.get(&message.topic).map(|j| {
                (
                    is_current(&j.channel, message.join_ref.as_ref()),
                    j.channel.clone(),
                    j.mailbox.clone(),
                )
            })
        };
        let Some((current, channel, mailbox)) = target else {
            return self.reply_error(&message, "unmatched topic").await;
        };
        if !current {
            return; // a message of an earlier join: dropped, as Phoenix does
        }
        let command = Command::Message {
            conn: self.conn.clone(),
            event: message.event,
            payload: message.payload,
            reply: ReplyTo::Channel {
                channel,
                msg_ref: message.msg_ref.clone(),
            },
        };
        if mailbox.send(command).await.is_err() {
            let frame = protocol::encode_error_reply(
                self.vsn,
                message.join_ref.as_ref(),
                message.msg_ref.as_ref(),
                &message.topic,
                "room unavailable",
            );
            self.send(frame).await;
        }
    }

    async fn reply(&self, message: &Incoming, status: Status, response: &str) {
        let frame = protocol::encode_reply(
            self.vsn,
            message.join_ref.as_ref(),
            message.msg_ref.as_ref(),
            &message.topic,
            status,
            response,
        );
        self.send(frame).await;
    }

    async fn reply_error(&self, message: &Incoming, reason: &str) {
        let frame = protocol::encode_error_reply(
            self.vsn,
            message.join_ref.as_ref(),
            message.msg_ref.as_ref(),
            &message.topic,
            reason,
        );
        self.send(frame).await;
    }

    async fn send(&self, frame: String) {
        self.peer.send(Outbound::Frame(frame.into())).await;
    }

    /// The connection is gone: every channel leaves its room.
    async fn leave_all(&mut self) {
        let joined: Vec<Joined> = table(&self.channels).drain().map(|(_, j)| j).collect();
        for j in joined {
            let leave = Command::Leave {
                channel: j.channel.id,
                conn_id: self.conn.id.clone(),
                reason: LeaveReason::Disconnect,
                reply: None,
            };
            let _ = j.mailbox.send(leave).await;
        }
    }
}

/// Whether a frame's join_ref addresses the channel's current join. V1
/// clients may send none, which Phoenix accepts.
fn is_current(channel: &Channel, join_ref: Option<&Ref>) -> bool {
    join_ref.is_none_or(|r| channel.join_ref.as_ref() == Some(r))
}

fn close_frame(channel: &Channel) -> Utf8Bytes {
    protocol::encode(
        channel.vsn,
        channel.join_ref.as_ref(),
        channel.join_ref.as_ref(),
        channel.topic.as_str(),
        "phx_close",
        "{}",
    )
    .into()
}

/// WebSocket close reasons are limited to 123 bytes.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: mpsc::Receiver<Outbound>,
    peer: Arc<Peer>,
    channels: ChannelTable,
    done: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            _ = peer.kicked().cancelled() => break,
            n = outbound.recv_many(&mut batch, WRITE_BATCH) => n,
            _ = done.cancelled() => {
                // The reader ended; write what is already queued, then stop.
                outbound.close();
                let n = outbound.recv_many(&mut batch, WRITE_BATCH).await;
                if n == 0 {
                    return;
                }
                n
            }
        };
        if received == 0 {
            return;
        }
        let written = tokio::select! {
            biased;
            _ = peer.kicked().cancelled() => break,
            written = write_batch(&mut sink, &mut batch, &channels) => written,
        };
        match written {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
    // Kicked: say why if the socket still takes it (a slow consumer's
    // usually does not), then drop the connection.
    if let Some(kick) = peer.kick_reason() {
        let frame = CloseFrame {
            code: 1008,
            reason: kick.reason().into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_millis(250),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

/// Feeds a batch and flushes once. `Ok(false)` after a close frame.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Outbound>,
    channels: &ChannelTable,
) -> Result<bool, axum::Error> {
    for item in batch.drain(..) {
        match item {
            Outbound::Frame(frame) => sink.feed(Message::Text(frame)).await?,
            Outbound::ChannelClosed(id) => {
                table(channels).retain(|_, j| j.channel.id != id);
            }
            Outbound::Close { code, reason } => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                sink.send(Message::Close(Some(frame))).await?;
                return Ok(false);
            }
        }
    }
    sink.flush().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_param_rules() {
        assert_eq!(user_param(Some(" alice ")).unwrap(), "alice");
        assert!(user_param(None).unwrap().contains('-'));
        assert!(user_param(Some("")).unwrap().contains('-'));
        assert!(user_param(Some("a\u{7}b")).is_err());
        assert!(user_param(Some(&"x".repeat(65))).is_err());
    }

    #[test]
    fn close_reasons_fit_the_limit() {
        assert_eq!(truncate_reason(&"é".repeat(100)).len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
