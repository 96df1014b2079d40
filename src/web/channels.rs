//! One connection's channels, whatever transport carries its frames.
//!
//! [`Channels`] owns a connection's channel table (topic → joined channel)
//! and turns decoded client frames into room commands: `phx_join`,
//! `phx_leave`, pushes, and the `heartbeat` on topic `phoenix`, which it
//! answers itself, as it answers malformed frames. The WebSocket and the
//! long-poll transports feed it frames and drain the connection's outbound
//! queue ([`Peer`]); this module does no I/O of its own and never decides
//! how a connection ends.
//!
//! Sending to a room mailbox waits when the mailbox is full: that is the
//! back-pressure a flooding client feels, whichever transport it uses. On
//! top of it every frame but a heartbeat passes the connection's token
//! bucket ([`RateLimit`]), and payloads nested deeper than `max_json_depth`
//! are refused before anything parses them recursively.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::WebState;
use crate::conn::Conn;
use crate::hub::{Channel, ChannelId, Outbound, Peer};
use crate::protocol::{self, BadFrame, Incoming, Payload, Ref, Status, Vsn};
use crate::room::{Command, LeaveReason, MailboxSender, ReplyTo};
use crate::topic::Topic;

use super::rate::{RateLimit, Verdict};

/// Why the transport must close a connection: a close code and reason.
pub(crate) type Disconnect = (u16, String);

/// One joined channel, as the connection sees it.
pub(crate) struct Joined {
    channel: Arc<Channel>,
    mailbox: MailboxSender,
}

/// Topic → joined channel. Shared with the part of the transport that drains
/// the outbound queue, which forgets channels the room closed
/// ([`Outbound::ChannelClosed`]); a std mutex never held across an await.
#[derive(Clone, Default)]
pub(crate) struct ChannelTable(Arc<Mutex<HashMap<String, Joined>>>);

impl ChannelTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Joined>> {
        // Every operation is one insert or remove: a panic elsewhere cannot
        // leave the map half-updated, so poisoning is ignored.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room ended channel `id` (refused, crashed, left): forget it.
    pub fn forget(&self, id: ChannelId) {
        self.lock().retain(|_, j| j.channel.id != id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's channel bookkeeping and frame handling.
pub(crate) struct Channels {
    web: Arc<WebState>,
    conn: Conn,
    vsn: Vsn,
    /// Whether the transport carries binary frames (see `Channel::binary`).
    binary: bool,
    peer: Arc<Peer>,
    table: ChannelTable,
    /// `None` when `msg_rate` is 0 (unlimited).
    rate: Option<RateLimit>,
}

impl Channels {
    pub fn new(
        web: Arc<WebState>,
        conn: Conn,
        vsn: Vsn,
        binary: bool,
        peer: Arc<Peer>,
    ) -> Channels {
        Channels {
            conn,
            vsn,
            binary,
            peer,
            table: ChannelTable::default(),
            rate: RateLimit::new(
                web.config.msg_rate,
                web.config.msg_burst,
                std::time::Instant::now(),
            ),
            web,
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The table, for the outbound side of the transport.
    /// The serializer this connection speaks.
    pub fn vsn(&self) -> Vsn {
        self.vsn
    }

    pub fn table(&self) -> ChannelTable {
        self.table.clone()
    }

    /// Handles one text frame. `Err` when the connection must close: a
    /// frame so broken that nothing could be answered (1007), or a client
    /// that keeps flooding past its rate limit (1008).
    pub async fn on_text(&mut self, text: &str) -> Result<(), Disconnect> {
        match self.decode(text) {
            Ok(message) => self.handle(message).await,
            Err(bad) => self.refuse(bad).await.map_err(|r| (1007, r)),
        }
    }

    /// Decodes a text frame under the configured JSON nesting limit.
    fn decode(&self, text: &str) -> Result<Incoming, BadFrame> {
        protocol::decode_text_within(self.vsn, text, self.web.config.max_json_depth)
    }

    /// Handles one decoded frame. `Err` when the client is disconnected for
    /// flooding.
    pub async fn handle(&mut self, message: Incoming) -> Result<(), Disconnect> {
        let heartbeat = message.topic == "phoenix" && message.event == "heartbeat";
        if !heartbeat && let Some(rate) = &mut self.rate {
            match rate.check(std::time::Instant::now()) {
                Verdict::Allow => {}
                Verdict::Refuse => {
                    tracing::debug!(conn = %self.conn.id, topic = %message.topic, "rate limited");
                    self.web.metrics.rate_limited();
                    self.reply_error(&message, "rate_limited").await;
                    return Ok(());
                }
                Verdict::Disconnect => {
                    tracing::warn!(conn = %self.conn.id, user = %self.conn.user, "disconnected: rate limit exceeded");
                    self.web.metrics.rate_limited();
                    return Err((1008, "rate limit exceeded".into()));
                }
            }
        }
        self.dispatch(message).await;
        Ok(())
    }

    async fn dispatch(&mut self, message: Incoming) {
        match (message.topic.as_str(), message.event.as_str()) {
            ("phoenix", "heartbeat") => self.reply(&message, Status::Ok, "{}").await,
            // Boxed: joins and leaves are rare, and their futures would
            // otherwise size every connection's task.
            (_, "phx_join") => Box::pin(self.join(message)).await,
            (_, "phx_leave") => Box::pin(self.leave(message)).await,
            // Every other `phx_*` event is the host's: never a script's.
            (_, event) if event.starts_with("phx_") => {
                let reason = format!("reserved event {event:?}");
                self.reply_error(&message, &reason).await
            }
            _ => self.push(message).await,
        }
    }

    /// Answers a bad frame with an error reply when we know where it came
    /// from; otherwise returns its reason.
    pub async fn refuse(&mut self, bad: BadFrame) -> Result<(), String> {
        let Some((join_ref, msg_ref, topic)) = bad.reply_to else {
            return Err(bad.reason);
        };
        let frame = protocol::encode_error_reply(
            self.vsn,
            join_ref.as_ref(),
            msg_ref.as_ref(),
            &topic,
            &bad.reason,
        );
        self.send(frame).await;
        Ok(())
    }

    async fn join(&mut self, mut message: Incoming) {
        let topic = match Topic::parse(&message.topic) {
            Ok(topic) => topic,
            Err(e) => return self.reply_error(&message, &e.to_string()).await,
        };
        let payload = std::mem::replace(
            &mut message.payload,
            Payload::Json(protocol::empty_object()),
        );
        let params = match payload.into_json("phx_join") {
            Ok(params) => params,
            Err(why) => return self.reply_error(&message, &why).await,
        };
        let previous = self.table.lock().remove(topic.as_str());
        if let Some(old) = previous {
            // A second join of the same topic replaces the first (Phoenix).
            old.channel
                .peer
                .deliver(Outbound::Frame(old.channel.close_frame("phx_close")));
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
        if self.table.len() >= self.web.config.max_channels_per_conn {
            return self.reply_error(&message, "too many channels joined").await;
        }
        let (_, mut mailbox) = match self.web.rooms.open(&topic) {
            Ok(room) => room,
            Err(e) => return self.reply_error(&message, &e.to_string()).await,
        };
        if mailbox.is_closed() {
            // The room was just given up (cluster mode: another node owns
            // it): a new one asks again, and its refusal names the owner.
            if let Ok((_, again)) = self.web.rooms.open(&topic) {
                mailbox = again;
            }
        }
        let channel = Arc::new(Channel {
            id: self.web.next_channel.fetch_add(1, Ordering::Relaxed),
            topic: topic.clone(),
            conn: self.conn.clone(),
            join_ref: message.join_ref.clone().or_else(|| message.msg_ref.clone()),
            vsn: self.vsn,
            binary: self.binary,
            peer: self.peer.clone(),
        });
        self.table.lock().insert(
            topic.as_str().to_string(),
            Joined {
                channel: channel.clone(),
                mailbox: mailbox.clone(),
            },
        );
        let join = Command::Join {
            channel,
            params,
            msg_ref: message.msg_ref.clone(),
        };
        if mailbox.send(join).await.is_err() {
            self.table.lock().remove(topic.as_str());
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
            let mut channels = self.table.lock();
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
            let channels = self.table.lock();
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
    pub async fn leave_all(&mut self) {
        let joined: Vec<Joined> = self.table.lock().drain().map(|(_, j)| j).collect();
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
