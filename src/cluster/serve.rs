//! The owner's side of a forwarded room: other nodes' channels of a room
//! this node runs.
//!
//! While a room generation holds the lease it is served: its answering task
//! takes the joins, pushes and leaves other nodes send on `rh.r.<topic>`
//! and puts them in the room's mailbox as commands of *remote channels*
//! (`Channel`s whose `Peer` is remote), then answers the request. The room
//! runs their hooks exactly as for its own channels, behind the same
//! output gate. What it sends them goes on the room's [`Link`], the
//! backplane on `rh.b.<topic>`: each broadcast once for all nodes, and
//! what one remote channel gets alone (its replies, pushes, `phx_error`),
//! all in the order the room released them, numbered (epoch, seq).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::wire::{self, Answer, Head, Request, What};
use super::{Shared, backplane_subject, request_subject};
use crate::conn::Conn;
use crate::hub::{Backplane, Body, Channel, ChannelId, Frame, Peer, ToChannel};
use crate::protocol::{Payload, Ref, Vsn};
use crate::room::{Command, LeaveReason, ReplyTo, RoomSlot};

/// Messages a room's backplane holds before it is published. A room
/// faster than NATS for this long leaves a gap, which every node sees and
/// answers with `phx_error` (its channels rejoin): the room never waits.
const BACKLOG: usize = 8192;
/// How long a forwarded join or push may wait for room in the mailbox of a
/// busy room (a third of the requester's 3 s timeout).
const MAILBOX_WAIT: Duration = Duration::from_secs(1);
/// A quiet backplane says so this often (see [`What::Tick`]); a node with
/// channels in the room but nothing to forward says it is alive as often.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// A node not heard from for this long is gone: its channels leave the
/// room (after a `phx_error`, in case it was only paused).
const NODE_SILENCE: Duration = Duration::from_secs(6);

/// Serving one room generation; dropping it stops taking requests.
pub(super) struct Serving {
    _stop: DropGuard,
    link: Arc<dyn Backplane>,
    slot: Weak<RoomSlot>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.upgrade() {
            slot.hub.detach_backplane(&self.link);
        }
    }
}

/// Starts serving `slot`'s room to other nodes.
pub(super) fn serve(shared: &Arc<Shared>, slot: &Arc<RoomSlot>) -> Serving {
    let link = Link::start(shared, slot);
    slot.hub.attach_backplane(link.clone());
    let stop = CancellationToken::new();
    shared.rt.spawn(answer(
        shared.clone(),
        Arc::downgrade(slot),
        link.clone(),
        stop.clone(),
    ));
    Serving {
        _stop: stop.drop_guard(),
        link,
        slot: Arc::downgrade(slot),
    }
}

/// One room generation's backplane (see the module doc).
#[derive(Debug)]
pub(super) struct Link {
    epoch: u64,
    /// The next seq. Taken, with the message queued, under this lock, so
    /// the queue's order is the seq's; the publishing task reads it under
    /// the lock too (for [`What::Tick`]). Never held across an await.
    next_seq: Arc<Mutex<u64>>,
    tx: mpsc::Sender<Bytes>,
    /// Remote channels by (node, their id there). Weak: the room holds
    /// them, and they hold this link.
    remotes: Mutex<HashMap<RemoteId, Weak<Channel>>>,
    /// When each node with remote channels last sent a request.
    heard: Mutex<HashMap<Arc<str>, Instant>>,
}

/// A remote channel: its node, and its id there.
type RemoteId = (Arc<str>, ChannelId);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one assignment, insert or remove.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    fn start(shared: &Arc<Shared>, slot: &RoomSlot) -> Arc<Link> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let link = Arc::new(Link {
            epoch: rand::random::<u64>() >> 1,
            next_seq: Arc::new(Mutex::new(1)),
            tx,
            remotes: Mutex::default(),
            heard: Mutex::default(),
        });
        shared.rt.spawn(publish(
            shared.client.clone(),
            backplane_subject(&slot.topic),
            link.epoch,
            link.next_seq.clone(),
            rx,
        ));
        link
    }

    fn send(&self, what: What, body: &[u8]) {
        let mut next = lock(&self.next_seq);
        let head = Head {
            epoch: self.epoch,
            seq: *next,
            what,
        };
        *next += 1;
        if self.tx.try_send(wire::encode(&head, body)).is_err() {
            tracing::warn!(
                seq = head.seq,
                "a room's backplane is full: its other nodes' channels rejoin"
            );
        }
    }

    /// The remote channels of nodes not heard from for [`NODE_SILENCE`],
    /// forgotten here.
    fn silent_nodes_channels(&self) -> Vec<Arc<Channel>> {
        let now = Instant::now();
        let mut heard = lock(&self.heard);
        let mut remotes = lock(&self.remotes);
        let gone: Vec<Arc<str>> = heard
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > NODE_SILENCE)
            .map(|(node, _)| node.clone())
            .collect();
        let mut channels = Vec::new();
        for node in gone {
            heard.remove(&node);
            let before = channels.len();
            remotes.retain(|(of, _), channel| {
                if *of != node {
                    return true;
                }
                channels.extend(channel.upgrade());
                false
            });
            if channels.len() > before {
                tracing::warn!(node = %node, channels = channels.len() - before, "a node with channels in a room went silent: they leave");
            }
        }
        channels
    }

    fn remote(&self, node: &str, channel: ChannelId) -> Option<Arc<Channel>> {
        lock(&self.remotes)
            .get(&(Arc::from(node), channel))
            .and_then(Weak::upgrade)
    }
}

impl Backplane for Link {
    fn broadcast(&self, event: &str, payload: &Body, except: Option<&str>) {
        let (bytes, body) = match payload {
            Body::Json(json) => (false, json.as_bytes()),
            Body::Binary(data) => (true, &data[..]),
        };
        let what = What::Broadcast {
            event: event.to_string(),
            except: except.map(str::to_string),
            bytes,
        };
        self.send(what, body);
    }

    fn to_channel(&self, node: &str, channel: ChannelId, what: ToChannel) {
        let node_name = node.to_string();
        match what {
            ToChannel::Frame(Frame::Text(text)) => self.send(
                What::Frame {
                    node: node_name,
                    channel,
                    bytes: false,
                },
                text.as_bytes(),
            ),
            ToChannel::Frame(Frame::Binary(data)) => self.send(
                What::Frame {
                    node: node_name,
                    channel,
                    bytes: true,
                },
                &data,
            ),
            ToChannel::Subscribed => self.send(
                What::Subscribed {
                    node: node_name,
                    channel,
                },
                &[],
            ),
            ToChannel::Closed => {
                lock(&self.remotes).remove(&(Arc::from(node), channel));
                self.send(
                    What::Closed {
                        node: node_name,
                        channel,
                    },
                    &[],
                );
            }
        }
    }
}

/// Publishes a link's messages in order, and a tick when it is quiet,
/// until the link is dropped.
async fn publish(
    client: async_nats::Client,
    subject: String,
    epoch: u64,
    next_seq: Arc<Mutex<u64>>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    loop {
        let message = match tokio::time::timeout(TICK, rx.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(_) => {
                let tick = {
                    let next = lock(&next_seq);
                    // Under the lock nothing is being queued: an empty queue
                    // means every seq below `next` was published (or lost).
                    rx.is_empty().then(|| Head {
                        epoch,
                        seq: *next - 1,
                        what: What::Tick,
                    })
                };
                match tick {
                    Some(head) => wire::encode(&head, &[]),
                    None => continue,
                }
            }
        };
        if let Err(error) = client.publish(subject.clone(), message).await {
            // The nodes see the gap and their channels rejoin.
            tracing::warn!(subject, %error, "publishing on a room's backplane failed");
        }
    }
}

/// Answers other nodes' requests for the room until `stop`.
async fn answer(
    shared: Arc<Shared>,
    slot: Weak<RoomSlot>,
    link: Arc<Link>,
    stop: CancellationToken,
) {
    let Some(subject) = slot.upgrade().map(|s| request_subject(&s.topic)) else {
        return;
    };
    let mut requests = match shared.client.subscribe(subject.clone()).await {
        Ok(requests) => requests,
        Err(error) => {
            // Other nodes find no responder and try the lease, which this
            // node holds: their joins wait and are retried.
            tracing::error!(subject, %error, "cannot serve a room to other nodes");
            return;
        }
    };
    let mut check = tokio::time::interval(TICK);
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => break,
            request = requests.next() => match request {
                Some(request) => request,
                None => break,
            },
            _ = check.tick() => {
                if let Some(slot) = slot.upgrade() {
                    drop_silent_nodes(&slot, &link).await;
                }
                continue;
            }
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let answer = match wire::decode::<Request>(&request.payload) {
            Some((command, body)) => match slot.upgrade() {
                // A full mailbox makes this wait (the back-pressure other
                // nodes feel), but never past the end of the generation.
                Some(slot) => tokio::select! {
                    answer = take(&shared, &slot, &link, command, body) => answer,
                    _ = stop.cancelled() => Answer::NotServing,
                },
                None => Answer::NotServing,
            },
            None => Answer::Refused {
                reason: "malformed request".into(),
            },
        };
        if let Err(error) = shared
            .client
            .publish(reply, wire::encode(&answer, &[]))
            .await
        {
            tracing::warn!(subject, %error, "answering a forwarded command failed");
        }
    }
    let _ = requests.unsubscribe().await;
}

/// The channels of nodes gone silent leave the room, as if they had
/// disconnected.
async fn drop_silent_nodes(slot: &RoomSlot, link: &Link) {
    let channels = link.silent_nodes_channels();
    if channels.is_empty() {
        return;
    }
    let Ok(mailbox) = slot.mailbox() else {
        return;
    };
    for channel in channels {
        // Heard only if that node was just paused: it rejoins.
        channel.close_with("phx_error");
        let leave = Command::Leave {
            channel: channel.id,
            conn_id: channel.conn.id.clone(),
            reason: LeaveReason::Disconnect,
            reply: None,
        };
        if mailbox.send(leave).await.is_err() {
            return;
        }
    }
}

/// Puts one forwarded command into the room's mailbox.
async fn take(
    shared: &Shared,
    slot: &RoomSlot,
    link: &Arc<Link>,
    request: Request,
    body: &[u8],
) -> Answer {
    let Ok(mailbox) = slot.mailbox() else {
        return Answer::NotServing;
    };
    let refused = |reason: &str| Answer::Refused {
        reason: reason.to_string(),
    };
    let node = match &request {
        Request::Join { node, .. }
        | Request::Push { node, .. }
        | Request::Leave { node, .. }
        | Request::Alive { node } => node,
    };
    lock(&link.heard).insert(node.as_str().into(), Instant::now());
    let command = match request {
        Request::Alive { .. } => return Answer::Accepted { epoch: link.epoch },
        Request::Join {
            node,
            channel,
            conn,
            user,
            meta,
            join_ref,
            msg_ref,
            vsn,
            binary,
        } => {
            let Some(params) = json_body(body) else {
                return refused("phx_join needs a JSON object payload");
            };
            let vsn = match vsn {
                1 => Vsn::V1,
                _ => Vsn::V2,
            };
            let node: Arc<str> = node.into();
            let peer = Peer::remote(link.clone(), node.clone(), channel);
            let remote = Arc::new(Channel {
                id: shared
                    .next_channel
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                topic: slot.topic.clone(),
                conn: Conn {
                    id: conn.into(),
                    user: user.into(),
                    meta: with_node(&meta, &node).into(),
                },
                join_ref: parse_ref(join_ref.as_deref()),
                vsn,
                binary,
                peer,
            });
            lock(&link.remotes).insert((node, channel), Arc::downgrade(&remote));
            Command::Join {
                channel: remote,
                params,
                msg_ref: parse_ref(msg_ref.as_deref()),
            }
        }
        Request::Push {
            node,
            channel,
            event,
            msg_ref,
            bytes,
        } => {
            let Some(remote) = link.remote(&node, channel) else {
                return refused("unmatched topic");
            };
            let payload = if bytes {
                Payload::Binary(Bytes::copy_from_slice(body))
            } else {
                match json_body(body) {
                    Some(json) => Payload::Json(json),
                    None => return refused("malformed payload"),
                }
            };
            Command::Message {
                conn: remote.conn.clone(),
                event,
                payload,
                reply: ReplyTo::Channel {
                    channel: remote,
                    msg_ref: parse_ref(msg_ref.as_deref()),
                },
            }
        }
        Request::Leave {
            node,
            channel,
            reason,
            msg_ref,
        } => {
            let Some(remote) = link.remote(&node, channel) else {
                return refused("unknown channel");
            };
            Command::Leave {
                channel: remote.id,
                conn_id: remote.conn.id.clone(),
                reason: leave_reason(&reason),
                reply: parse_ref(msg_ref.as_deref()),
            }
        }
    };
    // A leave must not be lost: it waits as long as the room makes it. A
    // join or push waits at most MAILBOX_WAIT, well within the requester's
    // timeout: a command the requester gave up on must not be taken later,
    // behind commands its client sent since by another way.
    let leave = matches!(command, Command::Leave { .. });
    let sent = if leave {
        mailbox.send(command).await
    } else {
        match tokio::time::timeout(MAILBOX_WAIT, mailbox.send(command)).await {
            Ok(sent) => sent,
            Err(_) => {
                return Answer::Refused {
                    reason: "room busy".into(),
                };
            }
        }
    };
    match sent {
        Ok(()) => Answer::Accepted { epoch: link.epoch },
        Err(_) => Answer::NotServing,
    }
}

fn json_body(body: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(body).ok()?;
    RawValue::from_string(text.to_string()).ok()
}

fn parse_ref(json: Option<&str>) -> Option<Ref> {
    json.and_then(|json| Ref::from_json(json).ok().flatten())
}

/// The connection's meta with `"node"` naming the node it is on, so the
/// room's script can tell.
fn with_node(meta: &str, node: &str) -> Box<RawValue> {
    let mut object = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(meta)
        .unwrap_or_default();
    object.insert("node".into(), node.into());
    serde_json::value::to_raw_value(&object).unwrap_or_else(|_| crate::protocol::empty_object())
}

fn leave_reason(reason: &str) -> LeaveReason {
    match reason {
        "leave" => LeaveReason::Left,
        "rejoin" => LeaveReason::Rejoin,
        "shutdown" => LeaveReason::Shutdown,
        _ => LeaveReason::Disconnect,
    }
}
