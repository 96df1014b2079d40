//! The output gate's contents: what an event asked to send, and how it is
//! delivered once the event is durable.

use std::sync::Arc;

use super::task::Room;
use super::{ReplyTo, RoomError};
use crate::hub::{Broadcast, Channel, ChannelId, Outbound};
use crate::protocol::{self, Status};

/// An output waiting in the gate.
#[derive(Debug)]
pub(super) enum Effect {
    Reply {
        to: ReplyTo,
        result: Result<String, String>,
    },
    Broadcast {
        event: String,
        payload: String,
        except: Option<String>,
    },
    Push {
        conn_id: String,
        event: String,
        payload: String,
    },
    /// A join succeeded: the channel starts receiving broadcasts.
    Subscribe(Arc<Channel>),
    /// A host push to one channel (e.g. `presence_state`).
    ChannelPush {
        channel: Arc<Channel>,
        event: &'static str,
        payload: String,
    },
    /// A join was refused: the connection forgets the channel.
    Refused(Arc<Channel>),
    /// A channel left: stop sending to it; `close` sends `phx_close` first.
    Unsubscribe { channel: ChannelId, close: bool },
}

impl Room {
    pub(super) fn apply(&self, effect: Effect) {
        let topic = self.slot.topic.as_str();
        match effect {
            Effect::Reply { to, result } => match to {
                ReplyTo::Channel { channel, msg_ref } => match &result {
                    Ok(response) => {
                        let frame = protocol::encode_reply(
                            channel.vsn,
                            channel.join_ref.as_ref(),
                            msg_ref.as_ref(),
                            topic,
                            Status::Ok,
                            response,
                        );
                        channel.deliver_frame(frame.into());
                    }
                    Err(reason) => {
                        channel.deliver_error_reply(msg_ref.as_ref(), reason);
                    }
                },
                ReplyTo::Caller(tx) => {
                    let _ = tx.send(result.map_err(RoomError::Refused));
                }
            },
            Effect::Broadcast {
                event,
                payload,
                except,
            } => {
                let broadcast = Broadcast::new(topic, &event, &payload);
                let delivered = self.slot.hub.publish(&broadcast, except.as_deref());
                self.shared.metrics.fanout(delivered);
            }
            Effect::Push {
                conn_id,
                event,
                payload,
            } => {
                if let Some(channel) = self.slot.hub.find_conn(&conn_id) {
                    channel.deliver_frame(channel.push_frame(&event, &payload));
                }
            }
            Effect::Subscribe(channel) => self.slot.hub.subscribe(channel),
            Effect::ChannelPush {
                channel,
                event,
                payload,
            } => {
                channel.deliver_frame(channel.push_frame(event, &payload));
            }
            Effect::Refused(channel) => {
                channel.peer.deliver(Outbound::ChannelClosed(channel.id));
            }
            Effect::Unsubscribe { channel, close } => {
                if let Some(channel) = self.slot.hub.unsubscribe(channel) {
                    if close {
                        channel.close_with("phx_close");
                    } else {
                        channel.peer.deliver(Outbound::ChannelClosed(channel.id));
                    }
                }
            }
        }
    }
}

/// A room that ends with outputs still in its gate (a crash or a kill; a
/// clean stop releases everything first) drops them: their events were not
/// durable and are not replayed. Subscribed channels hear of it from the
/// supervisor (`phx_error`), but a channel whose join is among them is not in
/// the hub yet: without an answer here it would wait for a join reply that
/// never comes. It gets an error reply to its join (and to any push it sent
/// meanwhile), and the connection forgets it, so the client rejoins.
impl Drop for Room {
    fn drop(&mut self) {
        let joining: Vec<Arc<Channel>> = self
            .gate
            .iter()
            .filter_map(|(_, effect)| match effect {
                Effect::Subscribe(channel) | Effect::Refused(channel) => Some(channel.clone()),
                _ => None,
            })
            .collect();
        if joining.is_empty() {
            return;
        }
        let reason = RoomError::Crashed.to_string();
        for (_, effect) in self.gate.drain(..) {
            let Effect::Reply {
                to: ReplyTo::Channel { channel, msg_ref },
                ..
            } = effect
            else {
                continue;
            };
            if joining.iter().any(|j| j.id == channel.id) {
                channel.deliver_error_reply(msg_ref.as_ref(), &reason);
            }
        }
        for channel in joining {
            channel.peer.deliver(Outbound::ChannelClosed(channel.id));
        }
    }
}
