//! What one command does to a room: a join, a message, a leave (each a
//! journaled event whose hook runs in the room's JS), and the host's own
//! commands (presence updates, reloads, inspection).
//!
//! An event runs in phases ([`Room::run_event`]): the hook runs; if it
//! returned, the event is journaled and its outputs are held in the gate
//! behind it; if it threw, it is rolled back (the context is rebuilt from
//! the store) and the caller gets the error; if it hit a fatal limit, the
//! room crashes.
//!
//! While the room's storage refuses writes ([`Room::handle_without_storage`])
//! nothing is journaled: pushes and joins get `storage unavailable` at once,
//! leaves take the channel away now and journal the membership change when
//! the storage is back, and a kind with `readOnlyJoins` still lets tabs
//! join and read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::value::RawValue;

use super::gate::Effect;
use super::journal::Input;
use super::outbox::{Delivered, MAX_TRIES, Message, room_conn};
use super::replay::outbox_messages;
use super::replay::{load_js, replay};
use super::task::Room;
use super::{Command, ConsoleLine, Crash, LeaveReason, LogLevel, ReplyTo, RoomError};
use crate::clock::now_ms;
use crate::conn::Conn;
use crate::engine::RoomSend;
use crate::engine::{CallError, Called, Hook};
use crate::hub::{Body, Channel, ChannelId, FanOut, Output};
use crate::protocol::{self, Payload, Ref};
use crate::store::EventKind;
use crate::store::Origin;
use crate::topic::Topic;
use tokio::sync::oneshot;

/// Who a journaled join is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JoinKind {
    /// A client's `phx_join`: answered, with `room_info` and presence.
    Client,
    /// A viewer joined read-only during a storage fault, journaled now.
    Promoted,
}

/// A rollback this far behind the last snapshot takes a new one, so later
/// rollbacks replay little.
const ROLLBACK_SNAPSHOT_AFTER: u64 = 64;

impl Room {
    pub(super) fn handle(&mut self, command: Command) -> Result<(), Crash> {
        self.slot.stats.events_in.fetch_add(1, Ordering::Relaxed);
        let handled = match self.storage.refusal() {
            Some(reason) => self.handle_without_storage(command, reason),
            None => self.handle_journaled(command),
        };
        handled?;
        self.run_kicks()
    }

    fn handle_journaled(&mut self, command: Command) -> Result<(), Crash> {
        match command {
            Command::Join {
                channel,
                params,
                msg_ref,
            } => self
                .join_member(channel, &params, msg_ref, JoinKind::Client)
                .map(drop),
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } if event == "presence_update" => {
                self.update_presence(&conn, payload, reply);
                Ok(())
            }
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } => self.message(&conn, &event, payload, reply),
            Command::Leave {
                channel,
                conn_id,
                reason,
                reply,
            } => self.leave(&conn_id, Some(channel), reason, reply),
            Command::Request { conn, req, reply } => self.request(&conn, &req, reply),
            Command::Deliver {
                from,
                messages,
                reply,
            } => self.deliver(&from, messages, reply),
            host => self.handle_host(host),
        }
    }

    /// Messages from room `from`, in its send order: each runs `onMessage`
    /// as a journaled event unless the inbox shows it handled already. The
    /// answer leaves once they are durable; it stops at the first refused
    /// one, which the sender retries (and which is dropped, journaled as
    /// handled, on its `MAX_TRIES`th refusal).
    fn deliver(
        &mut self,
        from: &Topic,
        messages: Vec<Message>,
        reply: oneshot::Sender<Result<Delivered, RoomError>>,
    ) -> Result<(), Crash> {
        let conn = room_conn(from);
        let mut delivered = Delivered {
            upto: None,
            refused: None,
        };
        for message in messages {
            let origin = message.origin;
            if self.inbox.seen(from, origin) {
                delivered.upto = Some(origin);
                continue;
            }
            let Ok(payload) = RawValue::from_string(message.payload) else {
                // Cannot happen: the sender's prelude made it with JSON.stringify.
                self.drop_room_message(&conn, from, origin, "its payload is not JSON");
                delivered.upto = Some(origin);
                continue;
            };
            let hook = Hook::Message {
                event: &message.event,
                payload: payload.get(),
            };
            let mut input = Input::new(
                EventKind::RoomMessage,
                &conn,
                Some(&message.event),
                &payload,
            );
            input.origin = Some(origin);
            let at = self.journal.next_at();
            match self.run_event(at, input, hook)? {
                Ok(_) => {
                    self.inbox.handled(from, origin);
                    delivered.upto = Some(origin);
                }
                Err(reason) if message.tries + 1 >= MAX_TRIES => {
                    self.drop_room_message(&conn, from, origin, &reason);
                    delivered.upto = Some(origin);
                }
                Err(reason) => {
                    delivered.refused = Some(reason);
                    break;
                }
            }
        }
        self.hold_now(Effect::Delivered {
            to: reply,
            delivered,
        });
        Ok(())
    }

    /// Journals a message from another room as handled without running it.
    fn drop_room_message(&mut self, conn: &Conn, from: &Topic, origin: Origin, reason: &str) {
        tracing::warn!(
            from = %from,
            to = %self.slot.topic,
            seq = origin.seq,
            idx = origin.idx,
            tries = MAX_TRIES,
            %reason,
            "room message dropped: onMessage refused it every time"
        );
        let empty = protocol::empty_object();
        let mut input = Input::new(EventKind::RoomMessageDrop, conn, None, &empty);
        input.origin = Some(origin);
        let at = self.journal.next_at();
        self.journal.record(at, 0, &input);
        self.snapshots.recorded(std::time::Duration::ZERO);
        self.inbox.handled(from, origin);
    }

    /// Holds the messages event `seq` sent until it is durable.
    pub(super) fn outbox_sent(&mut self, seq: u64, sends: Vec<RoomSend>) {
        for (to, message) in outbox_messages(seq, sends) {
            self.gate.hold(seq, Effect::Send { to, message });
        }
    }

    /// `onRequest(req)` for an HTTP request, as a journaled event.
    fn request(
        &mut self,
        conn: &Conn,
        req: &RawValue,
        reply: oneshot::Sender<Result<String, RoomError>>,
    ) -> Result<(), Crash> {
        if !self.kind.on_request {
            let _ = reply.send(Err(RoomError::NoHook("onRequest")));
            return Ok(());
        }
        let at = self.journal.next_at();
        let hook = Hook::Request { req: req.get() };
        let result = self.run_event(at, Input::new(EventKind::Request, conn, None, req), hook)?;
        self.hold_now(Effect::reply(ReplyTo::Caller(reply), result));
        Ok(())
    }

    /// The next timer is due: `onTimer(name, payload, {late_ms})` runs as a
    /// journaled event. One that throws is dropped (journaled too), so a
    /// broken timer cannot fire again and again.
    pub(super) fn fire_timer(&mut self) -> Result<(), Crash> {
        let Some(timer) = self.next_timer.clone() else {
            return Ok(());
        };
        let at = self.journal.next_at();
        let late_ms = (at - timer.at).max(0);
        let info = RawValue::from_string(format!(r#"{{"late_ms":{late_ms}}}"#))
            .unwrap_or_else(|_| protocol::empty_object());
        let system = Conn::system();
        let hook = Hook::Timer {
            name: &timer.name,
            info: info.get(),
        };
        let fired = self.run_event(
            at,
            Input::new(EventKind::Timer, &system, Some(&timer.name), &info),
            hook,
        )?;
        if let Err(error) = fired {
            tracing::info!(topic = %self.slot.topic, timer = %timer.name, %error, "onTimer threw; the timer is dropped");
            let empty = protocol::empty_object();
            let at = self.journal.next_at();
            let hook = Hook::TimerDrop { name: &timer.name };
            self.run_event(
                at,
                Input::new(EventKind::TimerDrop, &system, Some(&timer.name), &empty),
                hook,
            )?
            .map_err(|e| Crash::script(format!("dropping a timer failed: {e}")))?;
        }
        if self.next_timer.as_ref() == Some(&timer) {
            // The hook ran but the timer is still due (a rollback restored
            // it, or the JS lost it): never fire the same timer in a loop.
            return Err(Crash::script(format!(
                "timer {:?} did not clear",
                timer.name
            )));
        }
        self.run_kicks()
    }

    /// Closes the connections hooks kicked: each gets `kicked` `{reason}`,
    /// then leaves (`onLeave(conn, "kicked")`, journaled) with `phx_close`,
    /// so phoenix.js does not rejoin.
    fn run_kicks(&mut self) -> Result<(), Crash> {
        while !self.kicks.is_empty() {
            let kick = self.kicks.remove(0);
            let Some(channel) = self.members.channel(&kick.conn_id) else {
                continue; // gone already, or its channel died with a crash
            };
            let payload = serde_json::json!({ "reason": kick.reason }).to_string();
            self.hold_now(Output::Notice {
                channel: channel.clone(),
                event: "kicked",
                payload,
            });
            self.leave(&kick.conn_id, Some(channel.id), LeaveReason::Kicked, None)?;
        }
        Ok(())
    }

    /// A command while the storage refuses writes (`reason` says why).
    fn handle_without_storage(&mut self, command: Command, reason: String) -> Result<(), Crash> {
        match command {
            Command::Join {
                channel,
                params,
                msg_ref,
            } if self.kind.read_only_joins && self.storage.is_faulted() => {
                self.view(channel, params, msg_ref)
            }
            Command::Join {
                channel, msg_ref, ..
            } => {
                let hub = &self.slot.hub;
                hub.deliver(Output::Reply {
                    channel: channel.clone(),
                    msg_ref,
                    result: Err(reason),
                });
                hub.deliver(Output::Refused(channel));
                Ok(())
            }
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } if event == "presence_update" => {
                self.update_presence(&conn, payload, reply);
                Ok(())
            }
            Command::Message { reply, .. } => {
                match reply {
                    ReplyTo::Channel { channel, msg_ref } => {
                        self.slot.hub.deliver(Output::Reply {
                            channel,
                            msg_ref,
                            result: Err(reason),
                        });
                    }
                    ReplyTo::Caller(tx) => {
                        let _ = tx.send(Err(RoomError::StorageUnavailable(reason)));
                    }
                }
                Ok(())
            }
            Command::Leave {
                channel,
                conn_id,
                reason,
                reply,
            } => {
                self.leave_later(&conn_id, channel, reason, reply);
                Ok(())
            }
            host => self.handle_host(host),
        }
    }

    /// The host's own commands: the same whatever the storage does.
    fn handle_host(&mut self, command: Command) -> Result<(), Crash> {
        match command {
            Command::Request { reply, .. } => {
                let reason = self.storage.refusal().unwrap_or_default();
                let _ = reply.send(Err(RoomError::StorageUnavailable(reason)));
                Ok(())
            }
            Command::Deliver { reply, .. } => {
                let reason = self.storage.refusal().unwrap_or_default();
                let _ = reply.send(Err(RoomError::StorageUnavailable(reason)));
                Ok(())
            }
            Command::Join { .. } | Command::Message { .. } | Command::Leave { .. } => Ok(()),
            Command::Reload(kind) => {
                self.pending_reload = Some(kind);
                Ok(())
            }
            Command::ScriptError(error) => {
                self.report_script_error(&error);
                Ok(())
            }
            Command::Inspect(reply) => {
                let snapshot = match &self.asleep {
                    Some(asleep) if asleep.state().is_some() => {
                        Ok(asleep.state().unwrap_or_default().to_string())
                    }
                    _ => self.js()?.snapshot(),
                };
                let state = match snapshot {
                    Ok(state) => Ok(state),
                    Err(CallError::Script { message, .. }) => {
                        Err(RoomError::Refused(format!("snapshot() threw: {message}")))
                    }
                    Err(CallError::Fatal(f)) => {
                        let _ = reply.send(Err(RoomError::Crashed));
                        return Err(f.into());
                    }
                };
                let _ = reply.send(state);
                Ok(())
            }
        }
    }

    /// A member's own presence meta (`presence_update`): host state, not a
    /// journaled event.
    fn update_presence(&mut self, conn: &Conn, payload: Payload, reply: ReplyTo) {
        let result = match (&reply, payload.into_json("presence_update")) {
            (_, Err(why)) => Err(why),
            (ReplyTo::Channel { channel, .. }, Ok(payload)) if self.members.is_member(channel) => {
                self.members
                    .presence_update(conn, payload.get(), Instant::now())
                    .map(|()| Body::from("{}"))
                    .map_err(|e| e.to_string())
            }
            _ => Err("presence_update needs a joined channel".to_string()),
        };
        self.hold_now(Effect::reply(reply, result));
    }

    /// `onMessage`: a JSON payload is journaled as it came, bytes as a
    /// base64 string (`EventKind::BinaryMessage`).
    fn message(
        &mut self,
        conn: &Conn,
        event: &str,
        payload: Payload,
        reply: ReplyTo,
    ) -> Result<(), Crash> {
        if let ReplyTo::Channel { channel, .. } = &reply
            && !self.members.is_member(channel)
        {
            self.hold_now(Effect::reply(reply, Err("unmatched topic".into())));
            return Ok(());
        }
        let at = self.journal.next_at();
        let result = match &payload {
            Payload::Json(json) => {
                let hook = Hook::Message {
                    event,
                    payload: json.get(),
                };
                let input = Input::new(EventKind::Message, conn, Some(event), json);
                self.run_event(at, input, hook)?
            }
            Payload::Binary(bytes) => {
                let data = crate::store::binary_data(bytes);
                let hook = Hook::Binary {
                    event,
                    payload: bytes,
                };
                let input = Input::new(EventKind::BinaryMessage, conn, Some(event), &data);
                self.run_event(at, input, hook)?
            }
        };
        self.hold_now(Effect::reply(reply, result));
        Ok(())
    }

    /// A journaled join. Returns whether it succeeded. A [`JoinKind::Client`]
    /// join answers the client and tells it the room's info and presence; a
    /// [`JoinKind::Promoted`] one is a viewer's, whose client has heard all
    /// that already.
    pub(super) fn join_member(
        &mut self,
        channel: Arc<Channel>,
        params: &RawValue,
        msg_ref: Option<Ref>,
        kind: JoinKind,
    ) -> Result<bool, Crash> {
        let conn = channel.conn.clone();
        if self.members.contains(&conn.id) {
            self.leave(&conn.id, None, LeaveReason::Rejoin, None)?;
        }
        let max = self.env().config.max_conns_per_room;
        if max > 0 && self.members.len() >= max {
            tracing::debug!(topic = %self.slot.topic, conn = %conn.id, max, "join refused: room is full");
            self.env().metrics.refused("conns_per_room");
            self.refuse_join(channel, msg_ref, Err("room is full".into()));
            return Ok(false);
        }
        let at = self.journal.next_at();
        self.members
            .presence_join(&conn, (self.journal.seq() + 1).to_string(), at);
        let hook = Hook::Join {
            params: params.get(),
        };
        let result = self.run_event(at, Input::new(EventKind::Join, &conn, None, params), hook)?;
        if result.is_err() {
            self.members.presence_refused(&conn);
            if kind == JoinKind::Client {
                self.refuse_join(channel, msg_ref, result);
            }
            return Ok(false);
        }
        self.members.insert(conn, channel.clone());
        if kind == JoinKind::Promoted {
            return Ok(true);
        }
        // Subscribed before the reply goes out, so a client that has its ok
        // is counted and receives every later broadcast; the same release
        // pass delivers both, so nothing can come in between.
        self.hold_now(Output::Subscribe(channel.clone()));
        self.hold_now(Output::Reply {
            channel: channel.clone(),
            msg_ref,
            result,
        });
        let info = self.room_info();
        self.hold_now(Output::Notice {
            channel: channel.clone(),
            event: "room_info",
            payload: info,
        });
        let presence = self.members.presence_state();
        self.hold_now(Output::Notice {
            channel,
            event: "presence_state",
            payload: presence,
        });
        Ok(true)
    }

    /// `room_info`: the room's identity and code version (and, while its
    /// storage refuses writes, why).
    fn room_info(&self) -> String {
        let mut info = serde_json::json!({
            "topic": self.slot.topic.as_str(),
            "kind": self.slot.topic.kind(),
            "generation": self.generation,
            "version": self.kind.version,
        });
        if let Some(status) = self.storage.status() {
            info["storage"] = serde_json::json!(status);
        }
        info.to_string()
    }

    /// A read-only join while the storage refuses writes (the kind exports
    /// `readOnlyJoins`): `onJoin` runs as a query — what it changed is
    /// undone — so the client gets its reply (its history) and the room's
    /// broadcasts; it is journaled as a member when the storage is back.
    fn view(
        &mut self,
        channel: Arc<Channel>,
        params: Box<RawValue>,
        msg_ref: Option<Ref>,
    ) -> Result<(), Crash> {
        let conn = channel.conn.clone();
        if let Some(old) = self.members.defer_leave(&conn.id) {
            self.slot.hub.deliver(Output::Unsubscribe {
                channel: old.id,
                close: false,
            });
        }
        let at = self.journal.next_at();
        let presence = self.members.presence_for_js();
        let js = self.js()?;
        if let Some(presence) = presence {
            js.set_presence(presence);
        }
        let hook = Hook::Join {
            params: params.get(),
        };
        let called = js.call(&conn, hook, at, rand::random());
        self.undo_to_durable()?;
        let hub = &self.slot.hub;
        match called {
            Ok(Called { response, .. }) => {
                hub.deliver(Output::Subscribe(channel.clone()));
                hub.deliver(Output::Reply {
                    channel: channel.clone(),
                    msg_ref,
                    result: Ok(response),
                });
                hub.deliver(Output::Notice {
                    channel: channel.clone(),
                    event: "room_info",
                    payload: self.room_info(),
                });
                hub.deliver(Output::Notice {
                    channel: channel.clone(),
                    event: "presence_state",
                    payload: self.members.presence_state(),
                });
                self.members.add_viewer(channel, params);
            }
            Err(CallError::Script { message, .. }) => {
                hub.deliver(Output::Reply {
                    channel: channel.clone(),
                    msg_ref,
                    result: Err(message),
                });
                hub.deliver(Output::Refused(channel));
            }
            Err(CallError::Fatal(fatal)) => return Err(fatal.into()),
        }
        Ok(())
    }

    /// A leave while the storage refuses writes: the channel goes now (with
    /// its `phx_leave` reply and `phx_close`), the membership change is
    /// journaled when the storage is back.
    fn leave_later(
        &mut self,
        conn_id: &str,
        channel: ChannelId,
        reason: LeaveReason,
        reply: Option<Ref>,
    ) {
        let gone = match self.members.take_viewer(conn_id, channel) {
            Some(viewer) => Some(viewer),
            None if self.members.channel_of(conn_id) == Some(channel) => {
                self.members.defer_leave(conn_id)
            }
            None => None,
        };
        let Some(channel) = gone else { return };
        let hub = &self.slot.hub;
        if let Some(msg_ref) = reply {
            hub.deliver(Output::Reply {
                channel: channel.clone(),
                msg_ref: Some(msg_ref),
                result: Ok("{}".into()),
            });
        }
        hub.deliver(Output::Unsubscribe {
            channel: channel.id,
            close: closes_for_good(reason),
        });
    }

    /// Answers a refused join and makes the connection forget the channel.
    fn refuse_join(
        &mut self,
        channel: Arc<Channel>,
        msg_ref: Option<Ref>,
        result: Result<Body, String>,
    ) {
        self.hold_now(Output::Reply {
            channel: channel.clone(),
            msg_ref,
            result,
        });
        self.hold_now(Output::Refused(channel));
    }

    /// Removes a member: `onLeave` runs and is journaled; if it throws, the
    /// membership change is journaled alone (a `drop` event).
    pub(super) fn leave(
        &mut self,
        conn_id: &str,
        channel: Option<ChannelId>,
        reason: LeaveReason,
        reply: Option<Ref>,
    ) -> Result<(), Crash> {
        if !self.members.contains(conn_id) {
            return Ok(()); // already gone (e.g. a leave racing a crash)
        }
        if channel.is_some() && channel != self.members.channel_of(conn_id) {
            return Ok(()); // a leave for an older channel of this connection
        }
        let Some(member) = self.members.remove(conn_id) else {
            return Ok(());
        };
        let data = RawValue::from_string(protocol::json_string(reason.as_str()))
            .unwrap_or_else(|_| protocol::empty_object());
        let hook = Hook::Leave {
            reason: reason.as_str(),
        };
        let at = self.journal.next_at();
        if self
            .run_event(
                at,
                Input::new(EventKind::Leave, &member.conn, None, &data),
                hook,
            )?
            .is_err()
        {
            let empty = protocol::empty_object();
            let at = self.journal.next_at();
            self.run_event(
                at,
                Input::new(EventKind::Drop, &member.conn, None, &empty),
                Hook::Drop,
            )?
            .map_err(|e| Crash::script(format!("dropping a member failed: {e}")))?;
        }
        if let Some(channel) = member.channel {
            if let Some(msg_ref) = reply {
                self.hold_now(Output::Reply {
                    channel: channel.clone(),
                    msg_ref: Some(msg_ref),
                    result: Ok("{}".into()),
                });
            }
            let close = closes_for_good(reason) || reason == LeaveReason::Kicked;
            self.hold_now(Output::Unsubscribe {
                channel: channel.id,
                close,
            });
        }
        Ok(())
    }

    /// Runs a hook as a journaled event. `Ok(Err(reason))` is a script error
    /// (already rolled back); `Err` is fatal for the room.
    pub(super) fn run_event(
        &mut self,
        at: i64,
        input: Input,
        hook: Hook,
    ) -> Result<Result<Body, String>, Crash> {
        let Input { kind, conn, .. } = input;
        let seed: u64 = rand::random();
        let presence = self.members.presence_for_js();
        let js = self.js()?;
        if let Some(presence) = presence {
            js.set_presence(presence);
        }
        let started = Instant::now();
        let called = js.call(conn, hook, at, seed);
        let took = started.elapsed();
        self.env()
            .metrics
            .hook(self.slot.topic.kind(), kind.label(), took);
        match called {
            Ok(Called {
                response,
                effects,
                kicks,
                sends,
                next_timer,
            }) => {
                let seq = self.journal.record(at, seed, &input);
                for emit in effects {
                    self.gate.hold(seq, Output::Emit(emit));
                }
                self.outbox_sent(seq, sends);
                self.kicks.extend(kicks);
                if let Some(next) = next_timer {
                    self.next_timer = next;
                }
                self.snapshots.recorded(took);
                Ok(Ok(response))
            }
            Err(CallError::Script { message, stack }) => {
                self.hook_threw(kind, &message, stack);
                self.rollback()?;
                Ok(Err(message))
            }
            Err(CallError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// A hook threw: the log and the dashboard's console say so.
    fn hook_threw(&self, kind: EventKind, message: &str, stack: Option<String>) {
        // A throw is how a script refuses a call (a blank message, an
        // unknown event): the caller gets the reason, and the server is
        // fine, so it is not a warning. Its stack matters only to the author.
        tracing::info!(
            topic = %self.slot.topic,
            generation = self.generation,
            hook = ?kind,
            error = %message,
            "hook threw; rolled back"
        );
        tracing::debug!(
            topic = %self.slot.topic,
            generation = self.generation,
            stack = stack.as_deref().unwrap_or(""),
            "stack of the throw"
        );
        self.slot.push_console(ConsoleLine {
            at: now_ms(),
            generation: self.generation,
            level: LogLevel::Error,
            message: format!(
                "{:?} threw: {message}{}",
                kind,
                stack.map(|s| format!("\n{s}")).unwrap_or_default()
            ),
        });
    }

    /// Rebuilds the context from the store: the state before the failed call.
    fn rollback(&mut self) -> Result<(), Crash> {
        let recovered = match self.journal.reread() {
            Ok(recovered) => recovered,
            // The batch could not be written: the room is rebuilt from the
            // durable events instead, the failed call with the rest.
            Err(failed) => return self.storage_failed(failed),
        };
        let js = load_js(self.env(), &self.slot, &self.kind, self.generation)?;
        replay(&js, &recovered, &self.slot.topic)?;
        self.next_timer = js.next_timer();
        self.js = Some(js);
        self.asleep = None;
        if recovered.events.len() as u64 > ROLLBACK_SNAPSHOT_AFTER {
            self.take_snapshot()?;
        }
        Ok(())
    }
}

/// Whether a leave tells the client `phx_close` (the channel is over; the
/// official client will not rejoin it). A shutdown does not: the connection
/// closes with 1001 right after, and the client rejoins the room on the
/// server that takes over, as it would after a network drop.
fn closes_for_good(reason: LeaveReason) -> bool {
    reason == LeaveReason::Left
}
