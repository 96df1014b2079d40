//! Fan-out from a room to the channels joined to it, and the one place that
//! turns what a room sends into frames.
//!
//! A room emits [`Output`]s (a reply, a script's [`Emit`], a host notice, a
//! membership change); its gate hands each one, once released, to the
//! [`FanOut`] seam, which [`Hub`] implements for this process's channels.
//! Only this module calls the codec (`protocol`) to build server frames:
//! changing how a broadcast is encoded means reading this file alone.
//!
//! Each client connection has one bounded outbound queue ([`Peer`]); a room
//! never waits on it. A broadcast is encoded once per serializer version and
//! the same bytes are handed to every channel. A peer whose queue is full is a
//! slow consumer: it is kicked (the connection closes with that reason) instead
//! of stalling the room or other clients.
//!
//! The [`Hub`] of a room outlives the room task, so that when the task dies the
//! supervisor can still tell every channel (`phx_error`).
//!
//! A hub may also record its broadcasts into the topic's [`Feed`], once
//! some SSE stream asked for one; rooms nobody streams pay nothing for it.
//!
//! A payload is JSON or bytes ([`Body`]). Bytes go out as V2 binary frames
//! (push, reply, broadcast) to channels whose connection carries them (V2
//! over WebSocket). A V1 or long-poll channel cannot: it gets the event
//! `binary_unsupported` `{event, bytes, reason}` instead of a push or
//! broadcast, and an error reply instead of a binary reply — never bytes it
//! would misread. SSE streams get the bytes as `base64:<base64>` data.

use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::feed::Feed;
use crate::protocol::{self, Ref, Status, Vsn};
use crate::topic::Topic;

/// What a room sends as a payload or a reply: JSON text or bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// JSON text.
    Json(String),
    /// Bytes, sent as a V2 binary frame.
    Binary(Bytes),
}

impl Body {
    /// The JSON text, or `None` for bytes.
    pub fn as_json(&self) -> Option<&str> {
        match self {
            Body::Json(json) => Some(json),
            Body::Binary(_) => None,
        }
    }

    /// Bytes on the wire (JSON text or the raw bytes).
    pub fn len(&self) -> usize {
        match self {
            Body::Json(json) => json.len(),
            Body::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Body {
    fn from(json: String) -> Body {
        Body::Json(json)
    }
}

impl From<&str> for Body {
    fn from(json: &str) -> Body {
        Body::Json(json.to_string())
    }
}

/// The event a channel gets instead of a binary push or broadcast its
/// connection cannot carry.
pub const BINARY_UNSUPPORTED: &str = "binary_unsupported";

/// A message a room script sends (`room.broadcast`, `room.push`), or the
/// host sends on a room's behalf: one shape from the JS engine to the frames.
#[derive(Debug, PartialEq)]
pub struct Emit {
    pub event: String,
    pub payload: Body,
    pub to: Audience,
}

/// Who an [`Emit`] is for.
#[derive(Debug, PartialEq)]
pub enum Audience {
    /// Every joined channel, except those of this connection id.
    All { except: Option<String> },
    /// The channel of this connection id, if joined.
    Conn(String),
}

impl Emit {
    /// A host broadcast to every channel.
    pub fn to_all(event: impl Into<String>, payload: String) -> Emit {
        Emit {
            event: event.into(),
            payload: Body::Json(payload),
            to: Audience::All { except: None },
        }
    }

    pub fn is_broadcast(&self) -> bool {
        matches!(self.to, Audience::All { .. })
    }
}

/// What a room hands the fan-out once its gate released it.
#[derive(Debug)]
pub enum Output {
    /// The `phx_reply` to a channel's join or push: `Ok(response)` or
    /// `Err(reason)`.
    Reply {
        channel: Arc<Channel>,
        msg_ref: Option<Ref>,
        result: Result<Body, String>,
    },
    /// A script's (or the host's) message to the room's channels.
    Emit(Emit),
    /// A host push to one channel (`room_info`, `presence_state`).
    Notice {
        channel: Arc<Channel>,
        event: &'static str,
        payload: String,
    },
    /// A join succeeded: the channel starts receiving broadcasts.
    Subscribe(Arc<Channel>),
    /// A join was refused: the connection forgets the channel.
    Refused(Arc<Channel>),
    /// A channel left: stop sending to it; `close` sends `phx_close` first.
    Unsubscribe { channel: ChannelId, close: bool },
}

/// The fan-out seam: where a room's released outputs go. [`Hub`] delivers
/// them to this process's channels, and (cluster mode, on the room's owner)
/// hands what other nodes' channels need to the room's [`Backplane`].
pub trait FanOut: Send + Sync {
    /// Delivers one output; returns the frames queued.
    fn deliver(&self, output: Output) -> usize;
}

/// Cluster mode, on the node that runs a room: the one ordered stream of
/// what the room sends to channels on other nodes (implemented by
/// `crate::cluster`). Each broadcast goes on it once, whatever the number
/// of remote channels; what a remote channel gets alone goes on it too, so
/// both keep the order the room released them in.
pub trait Backplane: Send + Sync + std::fmt::Debug {
    /// A broadcast, for every node's channels except those of `except`.
    fn broadcast(&self, event: &str, payload: &Body, except: Option<&str>);
    /// Something for one channel of another node.
    fn to_channel(&self, node: &str, channel: ChannelId, what: ToChannel);
}

/// What a [`Backplane`] carries to one remote channel.
#[derive(Debug)]
pub enum ToChannel {
    /// A frame encoded for it (a reply, a push, `phx_error`, ...).
    Frame(Frame),
    /// Its join succeeded: it gets the room's broadcasts from now on.
    Subscribed,
    /// The room ended it (see [`Outbound::ChannelClosed`]).
    Closed,
}

/// A frame ready to write: encoded once, shared by reference count.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Text(Utf8Bytes),
    /// A V2 binary frame (only queued for channels that carry them).
    Binary(Bytes),
}

impl Frame {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(text) => Some(text.as_str()),
            Frame::Binary(_) => None,
        }
    }
}

impl From<String> for Frame {
    fn from(text: String) -> Frame {
        Frame::Text(text.into())
    }
}

/// Identifies one channel (one connection's membership in one topic).
pub type ChannelId = u64;

/// What a room hands to a connection.
#[derive(Debug)]
pub enum Outbound {
    Frame(Frame),
    /// The channel ended on the room's side (join refused, room crashed,
    /// left): the connection forgets it. Sent after the channel's last frame.
    ChannelClosed(ChannelId),
    /// The connection itself ends with this close code and reason.
    Close {
        code: u16,
        reason: String,
    },
}

/// Why a connection was closed by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    SlowConsumer,
    Shutdown,
}

impl Kick {
    pub fn reason(self) -> &'static str {
        match self {
            Kick::SlowConsumer => "slow consumer",
            Kick::Shutdown => "server shutting down",
        }
    }
}

/// The sending side of one client connection, shared by its channels.
#[derive(Debug)]
pub struct Peer {
    sink: Sink,
    kicked: CancellationToken,
    kick: OnceLock<Kick>,
}

/// Where a peer's frames go.
#[derive(Debug)]
enum Sink {
    /// A connection of this process. Bounded: its capacity is how far a
    /// client may fall behind before it is disconnected
    /// (`Config::outbound_queue`).
    Local(mpsc::Sender<Outbound>),
    /// Cluster mode: a channel of another node, as its room's owner holds
    /// it; what it gets travels on the room's backplane to that node.
    Remote {
        backplane: Arc<dyn Backplane>,
        node: Arc<str>,
        /// The channel's id on its own node.
        channel: ChannelId,
    },
}

impl Peer {
    pub fn new(capacity: usize) -> (Arc<Peer>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let peer = Peer {
            sink: Sink::Local(tx),
            kicked: CancellationToken::new(),
            kick: OnceLock::new(),
        };
        (Arc::new(peer), rx)
    }

    /// The peer of channel `channel` of node `node`, on the node that runs
    /// its room (cluster mode).
    pub fn remote(backplane: Arc<dyn Backplane>, node: Arc<str>, channel: ChannelId) -> Arc<Peer> {
        Arc::new(Peer {
            sink: Sink::Remote {
                backplane,
                node,
                channel,
            },
            kicked: CancellationToken::new(),
            kick: OnceLock::new(),
        })
    }

    /// Whether this is another node's channel (its broadcasts travel once
    /// per room on the backplane, not per channel).
    pub fn is_remote(&self) -> bool {
        matches!(self.sink, Sink::Remote { .. })
    }

    /// Queues without waiting. A full queue kicks the peer; returns whether
    /// the item was queued. A remote peer's items go on its backplane (a
    /// full backplane leaves a gap its node sees; see `crate::cluster`).
    pub fn deliver(&self, out: Outbound) -> bool {
        match &self.sink {
            Sink::Local(tx) => match tx.try_send(out) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.kick(Kick::SlowConsumer);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
            Sink::Remote {
                backplane,
                node,
                channel,
            } => {
                let what = match out {
                    Outbound::Frame(frame) => ToChannel::Frame(frame),
                    Outbound::ChannelClosed(_) => ToChannel::Closed,
                    // Connections are closed by their own node.
                    Outbound::Close { .. } => return false,
                };
                backplane.to_channel(node, *channel, what);
                true
            }
        }
    }

    /// A channel of this peer joined: a remote one hears it.
    fn subscribed(&self) {
        if let Sink::Remote {
            backplane,
            node,
            channel,
        } = &self.sink
        {
            backplane.to_channel(node, *channel, ToChannel::Subscribed);
        }
    }

    /// Queues, waiting for room if needed: for the connection's own replies,
    /// which must not be dropped.
    pub async fn send(&self, out: Outbound) -> bool {
        match &self.sink {
            Sink::Local(tx) => tx.send(out).await.is_ok(),
            Sink::Remote { .. } => self.deliver(out),
        }
    }

    pub fn kick(&self, why: Kick) {
        if self.kick.set(why).is_ok() {
            tracing::info!(reason = why.reason(), "disconnecting client");
        }
        self.kicked.cancel();
    }

    pub fn kicked(&self) -> &CancellationToken {
        &self.kicked
    }

    pub fn kick_reason(&self) -> Option<Kick> {
        self.kick.get().copied()
    }
}

/// One connection's membership in one topic.
#[derive(Debug)]
pub struct Channel {
    pub id: ChannelId,
    pub topic: Topic,
    pub conn: Conn,
    /// The `join_ref` of the join that created this channel; echoed in
    /// replies and pushes so the client can drop messages of older joins.
    pub join_ref: Option<Ref>,
    pub vsn: Vsn,
    /// Whether the connection carries binary frames: V2 over WebSocket.
    /// V1 has no binary frames; long-poll answers JSON text.
    pub binary: bool,
    pub peer: Arc<Peer>,
}

/// Why a channel cannot take bytes, for `binary_unsupported` and errors.
fn no_binary_reason(vsn: Vsn) -> &'static str {
    match vsn {
        Vsn::V1 => {
            "this connection cannot carry binary payloads: the V1 serializer has no binary frames (connect with vsn=2.0.0)"
        }
        Vsn::V2 => {
            "this connection cannot carry binary payloads: long-poll answers JSON text only (use the WebSocket)"
        }
    }
}

/// The JSON payload of `binary_unsupported`: which event of how many bytes
/// was not sent, and why.
fn binary_unsupported(event: &str, bytes: usize, reason: &str) -> String {
    format!(
        r#"{{"bytes":{bytes},"event":{},"reason":{}}}"#,
        protocol::json_string(event),
        protocol::json_string(reason)
    )
}

impl Channel {
    pub fn deliver_frame(&self, frame: Frame) -> bool {
        self.peer.deliver(Outbound::Frame(frame))
    }

    /// A frame for this channel only: carries its join_ref. Bytes go as a
    /// binary push (kind 0), or as `binary_unsupported` where they cannot.
    pub fn push_frame(&self, event: &str, payload: &Body) -> Frame {
        let json = match payload {
            Body::Json(json) => json,
            Body::Binary(bytes) if self.binary => {
                match protocol::encode_binary_push(
                    self.join_ref.as_ref(),
                    self.topic.as_str(),
                    event,
                    bytes,
                ) {
                    Ok(frame) => return Frame::Binary(frame.into()),
                    Err(why) => {
                        tracing::warn!(topic = %self.topic, event, %why, "binary push not sent");
                        let notice = binary_unsupported(event, bytes.len(), &why);
                        return self.notice_frame(BINARY_UNSUPPORTED, &notice);
                    }
                }
            }
            Body::Binary(bytes) => {
                let notice = binary_unsupported(event, bytes.len(), no_binary_reason(self.vsn));
                return self.notice_frame(BINARY_UNSUPPORTED, &notice);
            }
        };
        self.notice_frame(event, json)
    }

    /// A JSON push for this channel only.
    pub fn notice_frame(&self, event: &str, payload: &str) -> Frame {
        protocol::encode(
            self.vsn,
            self.join_ref.as_ref(),
            None,
            self.topic.as_str(),
            event,
            payload,
        )
        .into()
    }

    /// The reply to `msg_ref` (a join or a push of this channel). A binary
    /// reply is a kind 1 frame, or an error reply where bytes cannot go.
    pub fn deliver_reply(&self, msg_ref: Option<&Ref>, result: &Result<Body, String>) -> bool {
        match result {
            Ok(Body::Json(response)) => {
                let frame = protocol::encode_reply(
                    self.vsn,
                    self.join_ref.as_ref(),
                    msg_ref,
                    self.topic.as_str(),
                    Status::Ok,
                    response,
                );
                self.deliver_frame(frame.into())
            }
            Ok(Body::Binary(bytes)) if self.binary => {
                match protocol::encode_binary_reply(
                    self.join_ref.as_ref(),
                    msg_ref,
                    self.topic.as_str(),
                    Status::Ok,
                    bytes,
                ) {
                    Ok(frame) => self.deliver_frame(Frame::Binary(frame.into())),
                    Err(why) => self.deliver_error_reply(msg_ref, &why),
                }
            }
            Ok(Body::Binary(_)) => {
                let reason = format!("the reply is binary; {}", no_binary_reason(self.vsn));
                self.deliver_error_reply(msg_ref, &reason)
            }
            Err(reason) => self.deliver_error_reply(msg_ref, reason),
        }
    }

    /// An error reply to `msg_ref` (a join or a push of this channel).
    pub fn deliver_error_reply(&self, msg_ref: Option<&Ref>, reason: &str) -> bool {
        let frame = protocol::encode_error_reply(
            self.vsn,
            self.join_ref.as_ref(),
            msg_ref,
            self.topic.as_str(),
            reason,
        );
        self.deliver_frame(frame.into())
    }

    /// An error reply to `msg_ref` whose response is the JSON object
    /// `response` (e.g. `{"reason":"not_owner","node":"n2"}`).
    pub fn deliver_error_response(&self, msg_ref: Option<&Ref>, response: &str) -> bool {
        let frame = protocol::encode_reply(
            self.vsn,
            self.join_ref.as_ref(),
            msg_ref,
            self.topic.as_str(),
            protocol::Status::Error,
            response,
        );
        self.deliver_frame(frame.into())
    }

    /// The frame that ends this channel on the client: `event` is
    /// `phx_error` or `phx_close`, addressed to the join.
    pub fn close_frame(&self, event: &str) -> Frame {
        protocol::encode(
            self.vsn,
            self.join_ref.as_ref(),
            self.join_ref.as_ref(),
            self.topic.as_str(),
            event,
            "{}",
        )
        .into()
    }

    /// Sends `event` (e.g. `phx_error`, `phx_close`) and then tells the
    /// connection the channel is gone.
    pub fn close_with(&self, event: &str) {
        if self.deliver_frame(self.close_frame(event)) {
            self.peer.deliver(Outbound::ChannelClosed(self.id));
        }
    }
}

/// A broadcast encoded lazily, at most once per kind of channel.
pub struct Broadcast<'a> {
    topic: &'a str,
    event: &'a str,
    payload: &'a Body,
    v1: OnceLock<Frame>,
    v2: OnceLock<Frame>,
    /// V2 channels without binary frames (long-poll): the same frame as
    /// `v2` for JSON, `binary_unsupported` for bytes.
    v2_text: OnceLock<Frame>,
}

impl<'a> Broadcast<'a> {
    pub fn new(topic: &'a str, event: &'a str, payload: &'a Body) -> Self {
        Broadcast {
            topic,
            event,
            payload,
            v1: OnceLock::new(),
            v2: OnceLock::new(),
            v2_text: OnceLock::new(),
        }
    }

    /// Phoenix broadcasts carry no join_ref or ref, so one frame fits every
    /// channel of a version (and, for bytes, of a transport).
    pub fn frame(&self, vsn: Vsn, binary: bool) -> Frame {
        let json = match self.payload {
            Body::Json(json) => json,
            Body::Binary(bytes) => {
                let (cell, carried) = match (vsn, binary) {
                    (Vsn::V2, true) => (&self.v2, true),
                    (Vsn::V2, false) => (&self.v2_text, false),
                    (Vsn::V1, _) => (&self.v1, false),
                };
                return cell
                    .get_or_init(|| {
                        let notice = |reason: &str| {
                            let payload = binary_unsupported(self.event, bytes.len(), reason);
                            protocol::encode(
                                vsn,
                                None,
                                None,
                                self.topic,
                                BINARY_UNSUPPORTED,
                                &payload,
                            )
                            .into()
                        };
                        if !carried {
                            return notice(no_binary_reason(vsn));
                        }
                        match protocol::encode_binary_broadcast(self.topic, self.event, bytes) {
                            Ok(frame) => Frame::Binary(frame.into()),
                            Err(why) => notice(&why),
                        }
                    })
                    .clone();
            }
        };
        let cell = match vsn {
            Vsn::V1 => &self.v1,
            Vsn::V2 => &self.v2,
        };
        cell.get_or_init(|| protocol::encode(vsn, None, None, self.topic, self.event, json).into())
            .clone()
    }

    /// The broadcast as SSE `data`: JSON as it is, bytes as
    /// `base64:<standard base64>` (never valid JSON, so never ambiguous).
    fn sse_data(&self) -> std::borrow::Cow<'_, str> {
        match self.payload {
            Body::Json(json) => json.as_str().into(),
            Body::Binary(bytes) => format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
            .into(),
        }
    }
}

/// The channels joined to one room.
pub struct Hub {
    topic: Topic,
    /// A std mutex: only the room task (and the supervisor once the task is
    /// dead) touches it, never across an `.await`, so it is uncontended.
    channels: Mutex<Vec<Arc<Channel>>>,
    /// The topic's feed, set (once) when an SSE stream first listens.
    feed: OnceLock<Arc<Feed>>,
    /// Cluster mode, while this node runs the room: where broadcasts for
    /// other nodes go. A std mutex, never held across an await.
    backplane: Mutex<Option<Arc<dyn Backplane>>>,
}

impl Hub {
    pub fn new(topic: Topic) -> Hub {
        Hub {
            topic,
            channels: Mutex::default(),
            feed: OnceLock::new(),
            backplane: Mutex::default(),
        }
    }

    /// Cluster mode: this node runs the room from now on; its broadcasts
    /// also go to `backplane`.
    pub fn attach_backplane(&self, backplane: Arc<dyn Backplane>) {
        *self.backplane_lock() = Some(backplane);
    }

    /// Stops sending broadcasts to `backplane`, if it is the one attached.
    pub fn detach_backplane(&self, backplane: &Arc<dyn Backplane>) {
        let mut attached = self.backplane_lock();
        if attached.as_ref().is_some_and(|b| Arc::ptr_eq(b, backplane)) {
            *attached = None;
        }
    }

    /// The backplane attached, if any.
    pub fn backplane(&self) -> Option<Arc<dyn Backplane>> {
        self.backplane_lock().clone()
    }

    fn backplane_lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<dyn Backplane>>> {
        // Only ever replaced whole: poisoning cannot leave it half-written.
        self.backplane
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records every later broadcast into `feed` as well. A hub keeps the
    /// first feed it is given; the registry only ever hands it the topic's.
    pub fn attach_feed(&self, feed: Arc<Feed>) {
        let _ = self.feed.set(feed);
    }

    pub fn subscribe(&self, channel: Arc<Channel>) {
        channel.peer.subscribed();
        self.lock().push(channel);
    }

    /// Removes the channel with this id, if still subscribed.
    pub fn unsubscribe(&self, id: ChannelId) -> Option<Arc<Channel>> {
        let mut channels = self.lock();
        let at = channels.iter().position(|c| c.id == id)?;
        Some(channels.swap_remove(at))
    }

    /// Sends a broadcast to every channel except those of `except` (a conn id).
    /// Returns the number of deliveries on this node. Other nodes' channels
    /// get it through the backplane, once for all of them.
    pub fn publish(&self, broadcast: &Broadcast, except: Option<&str>) -> usize {
        if let Some(feed) = self.feed.get() {
            feed.record(broadcast.event, &broadcast.sse_data());
        }
        let channels = self.lock();
        let mut delivered = 0;
        let mut remote = false;
        for channel in channels.iter() {
            if channel.peer.is_remote() {
                remote = true;
                continue;
            }
            if except.is_some_and(|id| *channel.conn.id == *id) {
                continue;
            }
            delivered +=
                usize::from(channel.deliver_frame(broadcast.frame(channel.vsn, channel.binary)));
        }
        drop(channels);
        // Only rooms with channels elsewhere pay for the backplane (a node
        // whose first channel joins later starts counting after its join).
        if remote && let Some(backplane) = self.backplane() {
            backplane.broadcast(broadcast.event, broadcast.payload, except);
        }
        delivered
    }

    /// Whether the channel with this id is subscribed.
    pub fn contains(&self, id: ChannelId) -> bool {
        self.lock().iter().any(|c| c.id == id)
    }

    /// The channel of connection `conn_id`, if joined.
    pub fn find_conn(&self, conn_id: &str) -> Option<Arc<Channel>> {
        self.lock().iter().find(|c| *c.conn.id == *conn_id).cloned()
    }

    /// The channels of other nodes' connections (cluster mode).
    pub fn remote_channels(&self) -> Vec<Arc<Channel>> {
        let channels = self.lock();
        channels
            .iter()
            .filter(|c| c.peer.is_remote())
            .cloned()
            .collect()
    }

    /// Empties the hub, returning who was in it.
    pub fn drain(&self) -> Vec<Arc<Channel>> {
        std::mem::take(&mut *self.lock())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct users among the joined channels.
    pub fn users(&self) -> usize {
        let channels = self.lock();
        let mut users: Vec<&str> = channels.iter().map(|c| &*c.conn.user).collect();
        users.sort_unstable();
        users.dedup();
        users.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Channel>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent
        // (every operation is a single push/remove), so poisoning is ignored.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FanOut for Hub {
    fn deliver(&self, output: Output) -> usize {
        match output {
            Output::Reply {
                channel,
                msg_ref,
                result,
            } => usize::from(channel.deliver_reply(msg_ref.as_ref(), &result)),
            Output::Emit(Emit {
                event,
                payload,
                to: Audience::All { except },
            }) => {
                let broadcast = Broadcast::new(self.topic.as_str(), &event, &payload);
                self.publish(&broadcast, except.as_deref())
            }
            Output::Emit(Emit {
                event,
                payload,
                to: Audience::Conn(conn_id),
            }) => self.find_conn(&conn_id).map_or(0, |channel| {
                usize::from(channel.deliver_frame(channel.push_frame(&event, &payload)))
            }),
            Output::Notice {
                channel,
                event,
                payload,
            } => usize::from(channel.deliver_frame(channel.notice_frame(event, &payload))),
            Output::Subscribe(channel) => {
                self.subscribe(channel);
                0
            }
            Output::Refused(channel) => {
                channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                0
            }
            Output::Unsubscribe { channel, close } => {
                if let Some(channel) = self.unsubscribe(channel) {
                    if close {
                        channel.close_with("phx_close");
                    } else {
                        channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                    }
                }
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::empty_object;

    fn channel(id: ChannelId, vsn: Vsn, cap: usize) -> (Arc<Channel>, mpsc::Receiver<Outbound>) {
        channel_over(id, vsn, vsn == Vsn::V2, cap)
    }

    fn channel_over(
        id: ChannelId,
        vsn: Vsn,
        binary: bool,
        cap: usize,
    ) -> (Arc<Channel>, mpsc::Receiver<Outbound>) {
        let (peer, rx) = Peer::new(cap);
        let conn = Conn::new(format!("u{id}"), empty_object());
        let topic = Topic::parse("chat:x").unwrap();
        let ch = Channel {
            id,
            topic,
            conn,
            join_ref: Some(Ref::from_text("1")),
            vsn,
            binary,
            peer,
        };
        (Arc::new(ch), rx)
    }

    #[test]
    fn broadcast_is_encoded_once_per_version_and_shared() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let (a, mut ra) = channel(1, Vsn::V2, 4);
        let (b, mut rb) = channel(2, Vsn::V2, 4);
        let (c, mut rc) = channel(3, Vsn::V1, 4);
        for ch in [&a, &b, &c] {
            hub.subscribe(ch.clone());
        }
        let payload = Body::from(r#"{"a":1}"#);
        let bc = Broadcast::new("chat:x", "new_msg", &payload);
        assert_eq!(hub.publish(&bc, Some(&b.conn.id)), 2);
        let Outbound::Frame(fa) = ra.try_recv().unwrap() else {
            panic!()
        };
        assert!(rb.try_recv().is_err(), "except skips b");
        let Outbound::Frame(fc) = rc.try_recv().unwrap() else {
            panic!()
        };
        assert_eq!(
            fa.as_text(),
            Some(r#"[null,null,"chat:x","new_msg",{"a":1}]"#)
        );
        assert_eq!(
            fc.as_text(),
            Some(r#"{"event":"new_msg","payload":{"a":1},"ref":null,"topic":"chat:x"}"#)
        );
        // Same allocation handed out twice.
        let again = bc.frame(Vsn::V2, true);
        assert_eq!(
            again.as_text().unwrap().as_ptr(),
            fa.as_text().unwrap().as_ptr()
        );
    }

    fn next(rx: &mut mpsc::Receiver<Outbound>) -> Frame {
        match rx.try_recv() {
            Ok(Outbound::Frame(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn unsupported(frame: &Frame) -> serde_json::Value {
        let text = frame.as_text().expect("a text frame");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let (event, payload) = if v.is_array() {
            (v[3].clone(), v[4].clone())
        } else {
            (v["event"].clone(), v["payload"].clone())
        };
        assert_eq!(event, BINARY_UNSUPPORTED, "{text}");
        payload
    }

    #[test]
    fn binary_broadcast_is_one_binary_frame_and_a_notice_where_bytes_cannot_go() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let (ws_a, mut ra) = channel(1, Vsn::V2, 4);
        let (ws_b, mut rb) = channel(2, Vsn::V2, 4);
        let (v1, mut r1) = channel(3, Vsn::V1, 4);
        let (lp, mut rl) = channel_over(4, Vsn::V2, false, 4);
        for ch in [&ws_a, &ws_b, &v1, &lp] {
            hub.subscribe(ch.clone());
        }
        let payload = Body::Binary(Bytes::from_static(&[0, 1, 255]));
        let bc = Broadcast::new("chat:x", "doc", &payload);
        assert_eq!(hub.publish(&bc, None), 4);
        let (fa, fb) = (next(&mut ra), next(&mut rb));
        // fastlane!/1 of Phoenix.Socket.V2.JSONSerializer (phoenix 167c469,
        // lib/phoenix/socket/serializers/v2_json_serializer.ex):
        // <<@broadcast, topic_size, event_size, topic, event, data>>.
        let Frame::Binary(bytes) = &fa else {
            panic!("{fa:?}")
        };
        assert_eq!(&bytes[..], b"\x02\x06\x03chat:xdoc\x00\x01\xff");
        let Frame::Binary(other) = &fb else {
            panic!("{fb:?}")
        };
        assert_eq!(bytes.as_ptr(), other.as_ptr(), "encoded once, shared");
        for (frame, why) in [(next(&mut r1), "V1"), (next(&mut rl), "long-poll")] {
            let notice = unsupported(&frame);
            assert_eq!(notice["event"], "doc");
            assert_eq!(notice["bytes"], 3);
            assert!(notice["reason"].as_str().unwrap().contains(why), "{notice}");
        }
    }

    #[test]
    fn binary_push_and_reply_follow_phoenix_layouts() {
        let (ws, mut rw) = channel(1, Vsn::V2, 4);
        let payload = Body::Binary(Bytes::from_static(b"\x00hi"));
        // encode!(%Message{payload: {:binary, _}}): <<@push, join_ref_size,
        // topic_size, event_size, join_ref, topic, event, data>> (no ref).
        assert_eq!(
            ws.push_frame("doc", &payload),
            Frame::Binary(Bytes::from_static(b"\x00\x01\x06\x031chat:xdoc\x00hi"))
        );
        // encode!(%Reply{payload: {:binary, _}}): <<@reply, join_ref_size,
        // ref_size, topic_size, status_size, join_ref, ref, topic, status,
        // data>>; a string ref is written without its JSON quotes.
        let r = Ref::from_text("7");
        assert!(ws.deliver_reply(Some(&r), &Ok(payload.clone())));
        assert_eq!(
            next(&mut rw),
            Frame::Binary(Bytes::from_static(b"\x01\x01\x01\x06\x0217chat:xok\x00hi"))
        );
        // A V1 channel gets an error reply and a notice instead.
        let (v1, mut r1) = channel(2, Vsn::V1, 4);
        assert!(v1.deliver_reply(Some(&r), &Ok(payload.clone())));
        let reply: serde_json::Value =
            serde_json::from_str(next(&mut r1).as_text().unwrap()).unwrap();
        assert_eq!(reply["payload"]["status"], "error");
        let reason = reply["payload"]["response"]["reason"].as_str().unwrap();
        assert!(reason.starts_with("the reply is binary"), "{reason}");
        assert_eq!(unsupported(&v1.push_frame("doc", &payload))["bytes"], 3);
        // A ref longer than a binary header field allows: an error reply.
        let long = Ref::from_text(&"r".repeat(300));
        assert!(ws.deliver_reply(Some(&long), &Ok(payload)));
        let reply: serde_json::Value =
            serde_json::from_str(next(&mut rw).as_text().unwrap()).unwrap();
        assert!(
            reply[4]["response"]["reason"]
                .as_str()
                .unwrap()
                .contains("ref must be at most 255 bytes"),
            "{reply}"
        );
    }

    #[test]
    fn full_queue_kicks_the_slow_consumer_only() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let (slow, _keep) = channel(1, Vsn::V2, 2);
        let (fast, mut rf) = channel(2, Vsn::V2, 64);
        hub.subscribe(slow.clone());
        hub.subscribe(fast.clone());
        for i in 0..10 {
            let payload = Body::Json(format!("{{\"i\":{i}}}"));
            hub.publish(&Broadcast::new("chat:x", "e", &payload), None);
        }
        assert_eq!(slow.peer.kick_reason(), Some(Kick::SlowConsumer));
        assert!(fast.peer.kick_reason().is_none());
        let mut n = 0;
        while rf.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 10);
    }

    /// Records what a hub hands its backplane.
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl Backplane for Recorded {
        fn broadcast(&self, event: &str, _: &Body, except: Option<&str>) {
            let mut seen = self.0.lock().unwrap();
            seen.push(format!("broadcast {event} except {except:?}"));
        }

        fn to_channel(&self, node: &str, channel: ChannelId, what: ToChannel) {
            let what = match what {
                ToChannel::Frame(frame) => format!("frame {}", frame.as_text().unwrap_or("?")),
                ToChannel::Subscribed => "subscribed".into(),
                ToChannel::Closed => "closed".into(),
            };
            self.0
                .lock()
                .unwrap()
                .push(format!("{node}/{channel} {what}"));
        }
    }

    #[test]
    fn other_nodes_channels_get_broadcasts_once_through_the_backplane() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let recorded = Arc::new(Recorded::default());
        let backplane: Arc<dyn Backplane> = recorded.clone();
        hub.attach_backplane(backplane.clone());
        let (local, mut rl) = channel(1, Vsn::V2, 4);
        hub.subscribe(local.clone());
        let payload = Body::from(r#"{"a":1}"#);
        // Only local channels: nothing for other nodes.
        assert_eq!(
            hub.publish(&Broadcast::new("chat:x", "e", &payload), None),
            1
        );
        assert!(recorded.0.lock().unwrap().is_empty());
        let remote = |id: ChannelId, theirs: ChannelId| {
            Arc::new(Channel {
                id,
                topic: Topic::parse("chat:x").unwrap(),
                conn: Conn::new(format!("r{id}"), empty_object()),
                join_ref: Some(Ref::from_text("1")),
                vsn: Vsn::V2,
                binary: true,
                peer: Peer::remote(backplane.clone(), "n2".into(), theirs),
            })
        };
        let (r1, r2) = (remote(10, 7), remote(11, 8));
        hub.subscribe(r1.clone());
        hub.subscribe(r2.clone());
        assert_eq!(
            hub.publish(&Broadcast::new("chat:x", "e", &payload), Some(&r1.conn.id)),
            1,
            "delivered here to the local channel only"
        );
        assert!(r1.deliver_reply(Some(&Ref::from_text("2")), &Ok(Body::from("{}"))));
        hub.detach_backplane(&backplane);
        hub.publish(&Broadcast::new("chat:x", "late", &payload), None);
        hub.deliver(Output::Unsubscribe {
            channel: 11,
            close: false,
        });
        let seen = recorded.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "n2/7 subscribed".to_string(),
                "n2/8 subscribed".into(),
                format!("broadcast e except Some({:?})", r1.conn.id),
                r#"n2/7 frame ["1","2","chat:x","phx_reply",{"response":{},"status":"ok"}]"#.into(),
                "n2/8 closed".into(),
            ]
        );
        assert_eq!(next(&mut rl).as_text(), next(&mut rl).as_text());
    }

    #[test]
    fn unsubscribe_and_drain() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let (a, _ra) = channel(1, Vsn::V2, 4);
        let (b, _rb) = channel(2, Vsn::V2, 4);
        hub.subscribe(a);
        hub.subscribe(b.clone());
        assert!(hub.unsubscribe(1).is_some());
        assert!(hub.unsubscribe(1).is_none());
        assert_eq!(hub.find_conn(&b.conn.id).unwrap().id, 2);
        assert_eq!(hub.drain().len(), 1);
        assert!(hub.is_empty());
    }
}
