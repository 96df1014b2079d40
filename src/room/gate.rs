//! The output gate (as in Durable Objects): what an event asked to send
//! waits here until the event is durable, then goes to the fan-out in the
//! order it was asked for. A client never sees the effect of an event a
//! crash could take back.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{ReplyTo, RoomError};
use crate::hub::{Channel, Emit, FanOut, Outbound, Output};
use crate::metrics::Metrics;

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
}

impl Effect {
    /// The answer to a command, wherever it goes.
    pub(super) fn reply(to: ReplyTo, result: Result<String, String>) -> Effect {
        match to {
            ReplyTo::Channel { channel, msg_ref } => Effect::Out(Output::Reply {
                channel,
                msg_ref,
                result,
            }),
            ReplyTo::Caller(to) => Effect::Answer { to, result },
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
}

impl Gate {
    /// Holds `effect` until event `seq` is durable.
    pub(super) fn hold(&mut self, seq: u64, effect: impl Into<Effect>) {
        self.held.push_back((seq, effect.into()));
    }

    /// Delivers every held effect whose event is durable (`seq <= durable`).
    pub(super) fn release(&mut self, durable: u64, fanout: &dyn FanOut, metrics: &Metrics) {
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
