//! The Phoenix Channels WebSocket transport (`/socket/websocket`).
//!
//! One connection = two tasks. The reader decodes WebSocket messages (text
//! frames, and V2 binary pushes whose payload is bytes) and hands them to
//! the connection's [`Channels`] (which answers
//! heartbeats and malformed frames and forwards joins, pushes and leaves to
//! room mailboxes). The writer drains the connection's bounded outbound
//! queue in batches (many frames, one flush; text or binary as the hub
//! encoded them) and never blocks a room: rooms
//! only `try_send`, and a client whose queue overflows is kicked as a slow
//! consumer.
//!
//! This module owns only the WebSocket I/O: reading, the idle (heartbeat)
//! timeout, close codes and writing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::WebState;
use super::channels::{ChannelTable, Channels};
use super::connect::{Transport, admit, connect, log_refusal, peer_label};
use crate::hub::{Frame, Kick, Outbound, Peer};
use crate::protocol::{self, Vsn};

/// Frames written per flush.
const WRITE_BATCH: usize = 64;
/// Bytes read from the socket at a time. tungstenite's default (128 KiB) is
/// allocated up front for every connection, most of an idle connection's
/// memory; chat frames are small, and a larger message is still read whole
/// (the buffer is refilled until the message is complete).
const READ_BUFFER: usize = 1 << 10;

pub(crate) async fn upgrade(
    State(web): State<Arc<WebState>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    extensions: Extensions,
    ws: WebSocketUpgrade,
) -> Response {
    let admitted = connect(&web, &params, &headers, Transport::WebSocket)
        .and_then(|connected| Ok((connected, admit(&web, &extensions)?)));
    let ((conn, vsn), address) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            log_refusal(&refusal, Transport::WebSocket, &extensions, &headers);
            return (refusal.status, refusal.reason).into_response();
        }
    };
    let peer_label = peer_label(&extensions, &headers);
    let limit = web.config.max_frame_bytes;
    let tasks = web.connection_tasks.clone();
    // phoenix.js with `authToken` offers ["phoenix", "base64url.bearer.phx.…"];
    // browsers fail the handshake unless one of them is answered.
    ws.protocols(["phoenix"])
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            let peer = Peer::new(web.config.outbound_queue);
            // Binary frames are V2's alone.
            let binary = vsn == Vsn::V2;
            let channels = Channels::new(web.clone(), conn, vsn, binary, peer.0.clone());
            tasks.track_future(async move {
                serve(socket, web, channels, peer, peer_label).await;
                drop(address);
            })
        })
}

async fn serve(
    socket: WebSocket,
    web: Arc<WebState>,
    mut channels: Channels,
    (peer, outbound): (Arc<Peer>, mpsc::Receiver<Outbound>),
    peer_label: String,
) {
    let open = web.metrics.connection_opened(Transport::WebSocket.label());
    let conn_id = channels.conn().id.clone();
    tracing::debug!(conn = %conn_id, user = %channels.conn().user, peer = %peer_label, transport = "websocket", "connected");
    let (sink, stream) = socket.split();
    let done = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        sink,
        outbound,
        peer.clone(),
        channels.table(),
        done.clone(),
        web.clone(),
    ));
    let close = read_loop(&web, &peer, &mut channels, stream).await;
    if peer.kick_reason() == Some(Kick::SlowConsumer) {
        web.metrics.slow_consumer();
    }
    let why = close.as_ref().map_or_else(
        || "client closed".to_string(),
        |(_, reason)| reason.to_string(),
    );
    if let Some((code, reason)) = close {
        let close = Outbound::Close {
            code,
            reason: truncate_reason(&reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), peer.send(close)).await;
    }
    done.cancel();
    channels.leave_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    drop(open);
    tracing::debug!(conn = %conn_id, peer = %peer_label, transport = "websocket", reason = %why, "disconnected");
}

/// What ends a connection from our side: a close code and reason.
type Close = (u16, String);

/// Reads until the client goes away or we close; returns our close frame.
async fn read_loop(
    web: &WebState,
    peer: &Peer,
    channels: &mut Channels,
    mut stream: SplitStream<WebSocket>,
) -> Option<Close> {
    let timeout = web.config.heartbeat_timeout;
    let kicked = peer.kicked().clone();
    let closing = web.close_connections.clone();
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
                if text.contains("UTF-8") {
                    // RFC 6455 §8.1: invalid UTF-8 in a text frame fails
                    // the connection with 1007.
                    return Some((1007, "text frame is not valid UTF-8".into()));
                }
                if text.contains("too long") || text.contains("Space limit") {
                    return Some((
                        1009,
                        format!(
                            "frame too large (limit {} bytes)",
                            web.config.max_frame_bytes
                        ),
                    ));
                }
                return None;
            }
            Ok(Some(Ok(message))) => message,
        };
        let handled = match message {
            // tungstenite queues the echo of the client's Close (its code,
            // RFC 6455 §5.5.1); the writer flushes it when it ends.
            Message::Close(_) => return None,
            // Boxed: handling a message (decoding, the rate limit, a room's
            // mailbox) is most of this loop's state, which an idle
            // connection's task would otherwise carry between messages
            // (~1.3 KiB of every connection).
            message => Box::pin(on_message(web, channels, message)).await,
        };
        if let Err(close) = handled {
            return Some(close);
        }
    }
}

/// Hands one message from the client to its channels; `Err` closes the
/// connection.
async fn on_message(
    web: &WebState,
    channels: &mut Channels,
    message: Message,
) -> Result<(), Close> {
    match message {
        Message::Text(text) => {
            web.metrics.messages_in(Transport::WebSocket.label(), 1);
            channels.on_text(text.as_str()).await
        }
        // Phoenix's V1 serializer ignores the opcode: JSON in a binary
        // frame is a frame like any other (phx-events sends them).
        Message::Binary(bytes) if channels.vsn() == Vsn::V1 => {
            web.metrics.messages_in(Transport::WebSocket.label(), 1);
            match std::str::from_utf8(&bytes) {
                Ok(text) => channels.on_text(text).await,
                Err(_) => Err((1007, "binary frame is not UTF-8 JSON".into())),
            }
        }
        // V2: a binary push (kind 0) whose payload is bytes.
        Message::Binary(bytes) => {
            web.metrics.messages_in(Transport::WebSocket.label(), 1);
            match protocol::decode_binary(&bytes) {
                Ok(message) => channels.handle(message).await,
                Err(bad) => channels.refuse(bad).await.map_err(|r| (1003, r)),
            }
        }
        Message::Close(_) | Message::Ping(_) | Message::Pong(_) => Ok(()),
    }
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
    web: Arc<WebState>,
) {
    // Grows to the largest batch seen (at most WRITE_BATCH): an idle or
    // quiet connection holds a few slots, not 64.
    let mut batch = Vec::new();
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
                    finish(&mut sink).await;
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
            Ok((frames, open)) => {
                web.metrics
                    .messages_out(Transport::WebSocket.label(), frames);
                if !open {
                    return;
                }
            }
            Err(_) => return,
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

/// Ends the write side: sends what tungstenite still holds, which after a
/// client's Close is the echo of its close code (without it the client sees
/// `1006`), or a plain Close if neither side has closed yet.
async fn finish(sink: &mut SplitSink<WebSocket, Message>) {
    let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
}

/// Feeds a batch and flushes once. Returns the frames written and whether
/// the socket is still open (`false` after a close frame).
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &mut Vec<Outbound>,
    channels: &ChannelTable,
) -> Result<(usize, bool), axum::Error> {
    let mut frames = 0;
    for item in batch.drain(..) {
        match item {
            Outbound::Frame(frame) => {
                let message = match frame {
                    Frame::Text(text) => Message::Text(text),
                    Frame::Binary(bytes) => Message::Binary(bytes),
                };
                sink.feed(message).await?;
                frames += 1;
            }
            Outbound::ChannelClosed(id) => channels.forget(id),
            Outbound::Close { code, reason } => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                sink.send(Message::Close(Some(frame))).await?;
                return Ok((frames, false));
            }
        }
    }
    sink.flush().await?;
    Ok((frames, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_the_limit() {
        assert_eq!(truncate_reason(&"é".repeat(100)).len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
