//! The output gate (as in Durable Objects): what an event asked to send
//! waits here until the event is durable, then goes to the fan-out in the
//! order it was asked for. A client never sees the effect of an event a
//! crash could take back.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::outbox::{Delivered, Message};
use super::{ReplyTo, RoomError};
use crate::hub::{Body, Channel, Emit, FanOut, Outbound, Output};
use crate::metrics::Metrics;
use crate::topic::Topic;

/// An output waiting in the gate.
#[derive(Debug)]
pub(super) enum Effect {
    /// For the room's channels (see [`Output`]).
    Out(Output),
    /// The answer to a Rust caller (library API, HTTP post).
    Answer {
        to: oneshot::Sender<Result<String, RoomError>>,
        result: Result<String, String>,
    },
    /// A message for another room: it leaves once its event is durable.
    Send { to: Topic, message: Message },
    /// The answer to a sending room: what of its messages is journaled.
    Delivered {
        to: oneshot::Sender<Result<Delivered, RoomError>>,
        delivered: Delivered,
    },
}

impl Effect {
    /// The answer to a command, wherever it goes.
    /// A Rust caller takes JSON only: a binary result is an error for it.
    pub(super) fn reply(to: ReplyTo, result: Result<Body, String>) -> Effect {
        match to {
            ReplyTo::Channel { channel, msg_ref } => Effect::Out(Output::Reply {
                channel,
                msg_ref,
                result,
            }),
            ReplyTo::Caller(to) => {
                let result = result.and_then(|body| match body {
                    Body::Json(json) => Ok(json),
                    Body::Binary(bytes) => Err(format!(
                        "the hook returned {} bytes of binary; this caller takes JSON only",
                        bytes.len()
                    )),
                });
                Effect::Answer { to, result }
            }
        }
    }
}

impl From<Emit> for Effect {
    fn from(emit: Emit) -> Effect {
        Effect::Out(Output::Emit(emit))
    }
}

impl From<Output> for Effect {
    fn from(output: Output) -> Effect {
        Effect::Out(output)
    }
}

/// Effects in the order they were asked for, each behind the seq of the
/// last event journaled when it was.
#[derive(Default)]
pub(super) struct Gate {
    held: VecDeque<(u64, Effect)>,
    /// How many of `held` are messages for other rooms.
    sends: usize,
}

impl Gate {
    /// The messages for other rooms waiting here, in order.
    pub(super) fn held_sends(&self) -> impl Iterator<Item = (&Topic, &Message)> {
        self.held.iter().filter_map(|(_, effect)| match effect {
            Effect::Send { to, message } => Some((to, message)),
            _ => None,
        })
    }

    /// Holds `effect` until event `seq` is durable.
    pub(super) fn hold(&mut self, seq: u64, effect: impl Into<Effect>) {
        let effect = effect.into();
        self.sends += usize::from(matches!(effect, Effect::Send { .. }));
        self.held.push_back((seq, effect));
    }

    /// Gives back the queue's memory (a hibernating room's gate is empty).
    pub(super) fn shrink(&mut self) {
        self.held.shrink_to_fit();
    }

    /// Whether messages for other rooms wait here.
    pub(super) fn holds_sends(&self) -> bool {
        self.sends > 0
    }

    /// The events after `durable` were undone (their journal records were
    /// refused): their effects are never sent. Replies to them say `reason`
    /// instead, joins among them are refused, and channels that left meanwhile
    /// stop receiving; what waits for durable events stays.
    pub(super) fn refuse_after(&mut self, durable: u64, reason: &str, fanout: &dyn FanOut) {
        let split = self.held.partition_point(|(seq, _)| *seq <= durable);
        let undone = self.held.split_off(split);
        let mut joining = Vec::new();
        for (_, effect) in undone {
            match effect {
                Effect::Out(Output::Reply {
                    channel, msg_ref, ..
                }) => {
                    fanout.deliver(Output::Reply {
                        channel,
                        msg_ref,
                        result: Err(reason.to_string()),
                    });
                }
                Effect::Answer { to, .. } => {
                    let _ = to.send(Err(RoomError::StorageUnavailable(reason.to_string())));
                }
                Effect::Delivered { to, .. } => {
                    let _ = to.send(Err(RoomError::StorageUnavailable(reason.to_string())));
                }
                Effect::Send { .. } => self.sends -= 1,
                Effect::Out(Output::Subscribe(channel) | Output::Refused(channel)) => {
                    joining.push(channel);
                }
                Effect::Out(leave @ Output::Unsubscribe { .. }) => {
                    fanout.deliver(leave);
                }
                Effect::Out(Output::Emit(_) | Output::Notice { .. }) => {}
            }
        }
        for channel in joining {
            fanout.deliver(Output::Refused(channel));
        }
    }

    /// Delivers every held effect whose event is durable (`seq <= durable`).
    /// Messages for other rooms go to `send`.
    pub(super) fn release(
        &mut self,
        durable: u64,
        fanout: &dyn FanOut,
        metrics: &Metrics,
        send: &mut dyn FnMut(Topic, Message),
    ) {
        while self.held.front().is_some_and(|(seq, _)| *seq <= durable) {
            let Some((_, effect)) = self.held.pop_front() else {
                break;
            };
            match effect {
                Effect::Out(output) => {
                    let broadcast = matches!(&output, Output::Emit(emit) if emit.is_broadcast());
                    let delivered = fanout.deliver(output);
                    if broadcast {
                        metrics.fanout(delivered);
                    }
                }
                Effect::Answer { to, result } => {
                    let _ = to.send(result.map_err(RoomError::Refused));
                }
                Effect::Send { to, message } => {
                    self.sends -= 1;
                    send(to, message);
                }
                Effect::Delivered { to, delivered } => {
                    let _ = to.send(Ok(delivered));
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
impl Drop for Gate {
    fn drop(&mut self) {
        let joining: Vec<Arc<Channel>> = self
            .held
            .iter()
            .filter_map(|(_, effect)| match effect {
                Effect::Out(Output::Subscribe(channel) | Output::Refused(channel)) => {
                    Some(channel.clone())
                }
                _ => None,
            })
            .collect();
        if joining.is_empty() {
            return;
        }
        let reason = RoomError::Crashed.to_string();
        for (_, effect) in self.held.drain(..) {
            let Effect::Out(Output::Reply {
                channel, msg_ref, ..
            }) = effect
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Conn;
    use crate::hub::{Hub, Peer};
    use crate::protocol::{Ref, Vsn, empty_object};
    use crate::topic::Topic;
    use tokio::sync::mpsc;

    fn channel(id: u64) -> (Arc<Channel>, mpsc::Receiver<Outbound>) {
        let (peer, rx) = Peer::new(16);
        let channel = Channel {
            id,
            topic: Topic::parse("chat:x").unwrap(),
            conn: Conn::new(format!("u{id}"), empty_object()),
            join_ref: Some(Ref::from_text("1")),
            vsn: Vsn::V2,
            binary: true,
            peer,
        };
        (Arc::new(channel), rx)
    }

    fn frames(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|out| match out {
                Outbound::Frame(f) => f.as_text().unwrap_or("<binary>").to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn outputs_wait_for_their_event_and_leave_in_order() {
        let hub = Hub::new(Topic::parse("chat:x").unwrap());
        let metrics = Metrics::new();
        let (a, mut ra) = channel(1);
        let mut gate = Gate::default();
        gate.hold(0, Output::Subscribe(a.clone()));
        gate.hold(1, Emit::to_all("first", "{}".into()));
        let (tx, mut answer) = oneshot::channel();
        gate.hold(2, Effect::reply(ReplyTo::Caller(tx), Err("no".into())));
        gate.hold(2, Emit::to_all("second", "{}".into()));
        gate.release(1, &hub, &metrics, &mut |_, _| {});
        assert_eq!(frames(&mut ra), [r#"[null,null,"chat:x","first",{}]"#]);
        assert!(answer.try_recv().is_err(), "event 2 is not durable yet");
        gate.release(2, &hub, &metrics, &mut |_, _| {});
        assert!(matches!(answer.try_recv(), Ok(Err(RoomError::Refused(r))) if r == "no"));
        assert_eq!(frames(&mut ra), [r#"[null,null,"chat:x","second",{}]"#]);
        assert!(
            metrics
                .encode()
                .contains("roomhost_fanout_deliveries_total 2")
        );
    }

    #[test]
    fn a_join_still_in_the_gate_of_a_dead_room_is_answered() {
        let (joining, mut rx) = channel(7);
        let mut gate = Gate::default();
        gate.hold(3, Output::Subscribe(joining.clone()));
        gate.hold(
            3,
            Output::Reply {
                channel: joining.clone(),
                msg_ref: Some(Ref::from_text("5")),
                result: Ok("{}".into()),
            },
        );
        drop(gate);
        let out = frames(&mut rx);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0]
                .contains(r#""phx_reply",{"response":{"reason":"room crashed"},"status":"error"}"#),
            "{out:?}"
        );
        assert_eq!(out[1], "ChannelClosed(7)");
    }
}
