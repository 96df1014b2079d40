//! A client's node's side of a forwarded room: this node's channels of a
//! room another node runs.
//!
//! The room's slot stays registered here (the connections keep its
//! mailbox), but no room task runs: the proxy forwards each join, push and
//! leave to the owner by request/reply on `rh.r.<topic>`, one at a time in
//! mailbox order, and delivers what comes on the room's backplane
//! (`rh.b.<topic>`, subscribed before the first request): broadcasts,
//! encoded once for this node's channels, and the frames the owner encoded
//! for one of them. Replies thus reach a channel in the order the owner
//! released them with the broadcasts.
//!
//! Never a silent gap: a backplane message whose seq does not follow the
//! last one, or of another epoch (the owner restarted the room, or another
//! node runs it now), or a backplane quiet for [`SILENCE`], or a request
//! that timed out, ends the proxy with `phx_error` to every channel here
//! (phoenix.js rejoins). A request nobody answers ("no responders": nobody
//! runs the room) ends it too, with the command kept for whoever runs the
//! room next: the supervisor asks for the lease again, so the first join
//! anywhere starts the room on exactly one node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;

use super::serve::TICK;
use super::wire::{self, Answer, Head, Request, What};
use super::{Shared, backplane_subject, request_subject};
use crate::hub::{Body, Broadcast, Channel, ChannelId, Frame, Outbound};
use crate::metrics::Metrics;
use crate::protocol::{Payload, Ref, Vsn};
use crate::room::remote::Proxied;
use crate::room::{Command, LeaveReason, ReplyTo, RoomError, RoomSlot, Rooms};
use crate::topic::Topic;

/// How long the owner may take to take a forwarded command.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// A backplane quiet this long (it ticks every [`TICK`]) means the owner
/// is gone or cut off.
const SILENCE: Duration = Duration::from_secs(5);
/// A proxy with no channel for this long unregisters its room here.
const IDLE: Duration = Duration::from_secs(5);

/// Why a forwarded command did not reach the room.
enum Failed {
    /// Nobody runs the room: the command may go to whoever runs it next.
    NotServed,
    /// The owner did not answer in time (or the answer was unreadable):
    /// whether the room took it is unknown.
    Unavailable,
}

struct Proxy {
    shared: Arc<Shared>,
    topic: Topic,
    slot: Arc<RoomSlot>,
    owner: String,
    /// The owner's epoch, from the first command it accepted.
    epoch: Option<u64>,
    /// The last backplane seq seen of `epoch`.
    seq: Option<u64>,
    last_heard: Instant,
    /// When a request last went to the owner (it tells the owner this
    /// node is alive).
    last_sent: Instant,
    /// This node's channels whose join went to the owner, until it closes
    /// them (or the proxy ends).
    channels: HashMap<ChannelId, Arc<Channel>>,
    /// Why the proxy ends (a `roomhost_cluster_rejoins_total` reason).
    why: &'static str,
    metrics: Arc<Metrics>,
}

pub(super) async fn proxy(
    shared: Arc<Shared>,
    rooms: Rooms,
    slot: Arc<RoomSlot>,
    owner: String,
) -> Proxied {
    let topic = slot.topic.clone();
    let mut backplane = match shared.client.subscribe(backplane_subject(&topic)).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::warn!(topic = %topic, %error, "cannot subscribe to a room's backplane");
            return Proxied::OwnerGone;
        }
    };
    // The subscription is in place before any request (whose effects it
    // must see) leaves.
    if let Err(error) = shared.client.flush().await {
        tracing::warn!(topic = %topic, %error, "NATS did not confirm a subscription");
        return Proxied::OwnerGone;
    }
    let shutdown = rooms.env().shutdown.clone();
    let mut mailbox = slot.mailbox_rx.clone().lock_owned().await;
    let mut proxy = Proxy {
        shared,
        topic,
        slot,
        owner,
        epoch: None,
        seq: None,
        last_heard: Instant::now(),
        last_sent: Instant::now(),
        channels: HashMap::new(),
        why: "owner_gone",
        metrics: rooms.env().metrics.clone(),
    };
    let mut check = tokio::time::interval(TICK / 2);
    let mut used_at = Instant::now();
    let end = loop {
        // What an earlier room task or proxy took and left comes first.
        if !mailbox.taken.is_empty() {
            let command = mailbox.taken.remove(0);
            if let Err(again) = proxy.forward(command).await {
                if let Some(command) = again {
                    mailbox.taken.insert(0, command);
                }
                break Proxied::OwnerGone;
            }
            continue;
        }
        // Not biased: a flood on the backplane must not starve this node's
        // own commands (nor the other way round).
        tokio::select! {
            _ = shutdown.cancelled() => {
                proxy.leave_all().await;
                proxy.slot.mark_stopped();
                break Proxied::Stopped;
            }
            message = backplane.next() => match message {
                Some(message) => {
                    if !proxy.on_backplane(&message.payload) {
                        break Proxied::OwnerGone;
                    }
                }
                None => {
                    proxy.why = "owner_unavailable";
                    break Proxied::OwnerGone;
                }
            },
            command = mailbox.rx.recv() => match command {
                Some(command) => {
                    used_at = Instant::now();
                    if let Err(again) = proxy.forward(command).await {
                        if let Some(command) = again {
                            mailbox.taken.insert(0, command);
                        }
                        break Proxied::OwnerGone;
                    }
                }
                // Abandoned: nothing can send to it any more.
                None => break Proxied::Stopped,
            },
            _ = check.tick() => {
                if proxy.epoch.is_some()
                    && !proxy.channels.is_empty()
                    && proxy.last_heard.elapsed() > SILENCE
                {
                    tracing::warn!(topic = %proxy.topic, owner = %proxy.owner, "a room's owner went quiet");
                    proxy.why = "owner_silent";
                    break Proxied::OwnerGone;
                }
                if !proxy.channels.is_empty() && proxy.last_sent.elapsed() >= TICK {
                    let alive = Request::Alive { node: proxy.me() };
                    match proxy.request(&alive, &[]).await {
                        Ok(epoch) if proxy.accepted(epoch) => {}
                        _ => break Proxied::OwnerGone,
                    }
                }
                if !proxy.channels.is_empty() || !proxy.slot.hub.is_empty() {
                    used_at = Instant::now();
                } else if used_at.elapsed() > IDLE
                    && rooms.remove_if_unreachable(&proxy.slot, &mailbox)
                {
                    break Proxied::Stopped;
                }
            }
        }
    };
    if end == Proxied::OwnerGone {
        proxy.fail_all().await;
    }
    let _ = backplane.unsubscribe().await;
    end
}

impl Proxy {
    fn me(&self) -> String {
        self.shared.node.to_string()
    }

    /// Forwards one command. `Err(Some(command))`: nobody runs the room,
    /// keep it for whoever does; `Err(None)`: the owner failed us (the
    /// command's channel heard why).
    async fn forward(&mut self, command: Box<Command>) -> Result<(), Option<Box<Command>>> {
        match &*command {
            Command::Join {
                channel,
                params,
                msg_ref,
            } => {
                let request = Request::Join {
                    node: self.me(),
                    channel: channel.id,
                    conn: channel.conn.id.to_string(),
                    user: channel.conn.user.to_string(),
                    meta: channel.conn.meta.get().to_string(),
                    join_ref: channel.join_ref.as_ref().map(|r| r.as_json().to_string()),
                    msg_ref: msg_ref.as_ref().map(|r| r.as_json().to_string()),
                    vsn: match channel.vsn {
                        Vsn::V1 => 1,
                        Vsn::V2 => 2,
                    },
                    binary: channel.binary,
                };
                self.metrics.forwarded("join");
                match self.request(&request, params.get().as_bytes()).await {
                    Ok(epoch) => {
                        let same = self.accepted(epoch);
                        self.channels.insert(channel.id, channel.clone());
                        if !same {
                            return Err(None);
                        }
                    }
                    Err(Ok(reason)) => {
                        channel.deliver_error_reply(msg_ref.as_ref(), &reason);
                        channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                    }
                    Err(Err(Failed::NotServed)) => return Err(Some(command)),
                    Err(Err(Failed::Unavailable)) => {
                        channel.deliver_error_reply(msg_ref.as_ref(), "room unavailable");
                        channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                        return Err(None);
                    }
                }
            }
            Command::Message {
                event,
                payload,
                reply,
                ..
            } => {
                let ReplyTo::Channel { channel, msg_ref } = reply else {
                    // A Rust caller (library, HTTP) of a room run elsewhere.
                    if let Command::Message {
                        reply: ReplyTo::Caller(tx),
                        ..
                    } = *command
                    {
                        let _ = tx.send(Err(self.not_owner()));
                    }
                    return Ok(());
                };
                let (bytes, body): (bool, &[u8]) = match payload {
                    Payload::Json(json) => (false, json.get().as_bytes()),
                    Payload::Binary(data) => (true, data),
                };
                let request = Request::Push {
                    node: self.me(),
                    channel: channel.id,
                    event: event.clone(),
                    msg_ref: msg_ref.as_ref().map(|r| r.as_json().to_string()),
                    bytes,
                };
                self.metrics.forwarded("push");
                match self.request(&request, body).await {
                    Ok(epoch) => {
                        if !self.accepted(epoch) {
                            return Err(None);
                        }
                    }
                    Err(Ok(reason)) => {
                        channel.deliver_error_reply(msg_ref.as_ref(), &reason);
                    }
                    Err(Err(Failed::NotServed)) => return Err(Some(command)),
                    Err(Err(Failed::Unavailable)) => {
                        channel.deliver_error_reply(msg_ref.as_ref(), "room unavailable");
                        return Err(None);
                    }
                }
            }
            Command::Leave {
                channel,
                reason,
                reply,
                ..
            } => {
                self.slot.hub.unsubscribe(*channel);
                let Some(joined) = self.channels.get(channel).cloned() else {
                    return Ok(());
                };
                let request = Request::Leave {
                    node: self.me(),
                    channel: *channel,
                    reason: reason.as_str().to_string(),
                    msg_ref: reply.as_ref().map(|r| r.as_json().to_string()),
                };
                self.metrics.forwarded("leave");
                match self.request(&request, &[]).await {
                    // The owner closes it (and answers the leave) on the
                    // backplane.
                    Ok(epoch) => {
                        if !self.accepted(epoch) {
                            return Err(None);
                        }
                    }
                    Err(Ok(_)) => {
                        self.channels.remove(channel);
                        left(&joined, reply.as_ref());
                    }
                    Err(Err(Failed::NotServed)) => return Err(Some(command)),
                    Err(Err(Failed::Unavailable)) => {
                        self.channels.remove(channel);
                        left(&joined, reply.as_ref());
                        return Err(None);
                    }
                }
            }
            Command::Inspect(_) | Command::Request { .. } | Command::Deliver { .. } => {
                let error = self.not_owner();
                match *command {
                    Command::Inspect(tx) | Command::Request { reply: tx, .. } => {
                        let _ = tx.send(Err(error));
                    }
                    Command::Deliver { reply, .. } => {
                        let _ = reply.send(Err(error));
                    }
                    _ => {}
                }
            }
            // The owner runs the code; new code here is its own business.
            Command::Reload(_) | Command::ScriptError(_) => {}
        }
        Ok(())
    }

    fn not_owner(&self) -> RoomError {
        RoomError::NotOwner {
            node: Some(self.owner.clone()),
        }
    }

    /// The owner accepted a command under `epoch`: whether that is the
    /// epoch this proxy follows (the first one it hears).
    fn accepted(&mut self, epoch: u64) -> bool {
        match self.epoch {
            None => {
                self.epoch = Some(epoch);
                self.last_heard = Instant::now();
                true
            }
            Some(known) if known == epoch => true,
            Some(_) => {
                self.why = "owner_changed";
                false
            }
        }
    }

    /// Sends one request: the owner's epoch, or its refusal's reason
    /// (`Err(Ok)`), or why it failed.
    async fn request(
        &mut self,
        request: &Request,
        body: &[u8],
    ) -> Result<u64, Result<String, Failed>> {
        self.last_sent = Instant::now();
        let message = async_nats::Request::new()
            .payload(wire::encode(request, body))
            .timeout(Some(FORWARD_TIMEOUT));
        let answer = self
            .shared
            .client
            .send_request(request_subject(&self.topic), message)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) if error.kind() == RequestErrorKind::NoResponders => {
                self.why = "owner_gone";
                return Err(Err(Failed::NotServed));
            }
            // This command alone cannot travel (NATS's max_payload).
            Err(error) if error.kind() == RequestErrorKind::MaxPayloadExceeded => {
                return Err(Ok(format!(
                    "too large to forward to the room's node: {error}"
                )));
            }
            Err(error) => {
                tracing::warn!(topic = %self.topic, owner = %self.owner, %error, "a forwarded command failed");
                self.why = "owner_unavailable";
                return Err(Err(Failed::Unavailable));
            }
        };
        match wire::decode::<Answer>(&answer.payload) {
            Some((Answer::Accepted { epoch }, _)) => Ok(epoch),
            Some((Answer::Refused { reason }, _)) => Err(Ok(reason)),
            Some((Answer::NotServing, _)) => {
                self.why = "owner_gone";
                Err(Err(Failed::NotServed))
            }
            None => {
                self.why = "owner_unavailable";
                Err(Err(Failed::Unavailable))
            }
        }
    }

    /// Handles one backplane message; `false` when the proxy must end (a
    /// gap, another epoch).
    fn on_backplane(&mut self, message: &Bytes) -> bool {
        let Some((head, body)) = wire::decode::<Head>(message) else {
            tracing::warn!(topic = %self.topic, "unreadable backplane message");
            return true;
        };
        let Some(epoch) = self.epoch else {
            // Nothing forwarded yet: nothing here is ours.
            return true;
        };
        let tick = matches!(head.what, What::Tick);
        if head.epoch != epoch {
            if tick {
                // A former owner's last breath: nothing it sends counts.
                return true;
            }
            tracing::info!(topic = %self.topic, "the room's owner changed: its channels here rejoin");
            self.why = "owner_changed";
            return false;
        }
        self.last_heard = Instant::now();
        let gap = match (self.seq, tick) {
            (None, _) => false,
            (Some(last), false) => head.seq != last + 1,
            (Some(last), true) => head.seq > last,
        };
        if gap {
            tracing::warn!(topic = %self.topic, last = ?self.seq, seq = head.seq, "a gap in a room's backplane: its channels here rejoin");
            self.why = "gap";
            return false;
        }
        self.seq = Some(head.seq);
        let me = &*self.shared.node;
        match head.what {
            What::Broadcast {
                event,
                except,
                bytes,
            } => {
                let Some(payload) = body_of(bytes, body) else {
                    self.why = "gap";
                    return false;
                };
                let broadcast = Broadcast::new(self.topic.as_str(), &event, &payload);
                self.slot.hub.publish(&broadcast, except.as_deref());
            }
            What::Frame {
                node,
                channel,
                bytes,
            } if node == me => {
                let Some(channel) = self.channels.get(&channel) else {
                    return true;
                };
                let frame = match body_of(bytes, body) {
                    Some(Body::Json(text)) => Frame::Text(text.into()),
                    Some(Body::Binary(data)) => Frame::Binary(data),
                    None => {
                        self.why = "gap";
                        return false;
                    }
                };
                channel.deliver_frame(frame);
            }
            What::Subscribed { node, channel } if node == me => {
                if let Some(channel) = self.channels.get(&channel) {
                    self.slot.hub.subscribe(channel.clone());
                }
            }
            What::Closed { node, channel } if node == me => {
                self.slot.hub.unsubscribe(channel);
                if let Some(channel) = self.channels.remove(&channel) {
                    channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                }
            }
            _ => {}
        }
        true
    }

    /// The owner is gone or cannot be followed: every channel here
    /// rejoins. An owner still there (a gap, a full backplane) hears them
    /// leave first, so it keeps no member without a channel; their rejoins
    /// wait in the mailbox behind these leaves.
    async fn fail_all(&mut self) {
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        if !ids.is_empty() || !self.slot.hub.is_empty() {
            self.metrics.cluster_rejoin(self.why);
        }
        for (id, channel) in self.channels.drain() {
            self.slot.hub.unsubscribe(id);
            channel.close_with("phx_error");
        }
        for channel in self.slot.hub.drain() {
            channel.close_with("phx_error");
        }
        self.send_leaves(ids, LeaveReason::Disconnect, Duration::from_secs(1))
            .await;
    }

    /// Tells the owner that `channels` left, one request each, until one
    /// fails or `within` passes: nobody there, or too slow, and a new owner
    /// starts without them anyway.
    async fn send_leaves(
        &mut self,
        channels: Vec<ChannelId>,
        reason: LeaveReason,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        for channel in channels {
            let request = Request::Leave {
                node: self.me(),
                channel,
                reason: reason.as_str().into(),
                msg_ref: None,
            };
            match tokio::time::timeout_at(deadline, self.request(&request, &[])).await {
                Ok(Ok(_)) | Ok(Err(Ok(_))) => {}
                Ok(Err(Err(_))) | Err(_) => break,
            }
        }
    }

    /// The host shuts down: the owner hears this node's channels leave.
    async fn leave_all(&mut self) {
        let leaving: Vec<ChannelId> = self.channels.keys().copied().collect();
        self.send_leaves(leaving, LeaveReason::Shutdown, Duration::from_secs(2))
            .await;
        self.channels.clear();
        self.slot.hub.drain();
    }
}

/// The body of a backplane message as a payload.
fn body_of(bytes: bool, body: &[u8]) -> Option<Body> {
    if bytes {
        return Some(Body::Binary(Bytes::copy_from_slice(body)));
    }
    std::str::from_utf8(body)
        .ok()
        .map(|text| Body::Json(text.to_string()))
}

/// A channel whose owner could not take its leave: answered here.
fn left(channel: &Channel, reply: Option<&Ref>) {
    if reply.is_some() {
        channel.deliver_reply(reply, &Ok(Body::Json("{}".into())));
    }
    channel.peer.deliver(Outbound::ChannelClosed(channel.id));
}
