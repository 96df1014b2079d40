//! What one command does to a room: a join, a message, a leave (each a
//! journaled event whose hook runs in the room's JS), and the host's own
//! commands (presence updates, reloads, inspection).
//!
//! An event runs in phases ([`Room::run_event`]): the hook runs; if it
//! returned, the event is journaled and its outputs are held in the gate
//! behind it; if it threw, it is rolled back (the context is rebuilt from
//! the store) and the caller gets the error; if it hit a fatal limit, the
//! room crashes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::value::RawValue;

use super::gate::Effect;
use super::replay::{load_js, replay};
use super::task::Room;
use super::{Command, ConsoleLine, Crash, LeaveReason, LogLevel, ReplyTo, RoomError};
use crate::clock::now_ms;
use crate::conn::Conn;
use crate::engine::{CallError, Called, Hook};
use crate::hub::{Channel, ChannelId, Output};
use crate::protocol::{self, Ref};
use crate::store::EventKind;

/// A rollback this far behind the last snapshot takes a new one, so later
/// rollbacks replay little.
const ROLLBACK_SNAPSHOT_AFTER: u64 = 64;

impl Room {
    pub(super) fn handle(&mut self, command: Command) -> Result<(), Crash> {
        self.slot.stats.events_in.fetch_add(1, Ordering::Relaxed);
        match command {
            Command::Join {
                channel,
                params,
                msg_ref,
            } => self.join(channel, &params, msg_ref),
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } if event == "presence_update" => {
                self.update_presence(&conn, &payload, reply);
                Ok(())
            }
            Command::Message {
                conn,
                event,
                payload,
                reply,
            } => self.message(&conn, &event, &payload, reply),
            Command::Leave {
                channel,
                conn_id,
                reason,
                reply,
            } => self.leave(&conn_id, Some(channel), reason, reply),
            Command::Reload(kind) => {
                self.pending_reload = Some(kind);
                Ok(())
            }
            Command::ScriptError(error) => {
                self.report_script_error(&error);
                Ok(())
            }
            Command::Inspect(reply) => {
                let state = match self.js.snapshot() {
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
    fn update_presence(&mut self, conn: &Conn, payload: &RawValue, reply: ReplyTo) {
        let result = match &reply {
            ReplyTo::Channel { channel, .. } if self.members.is_member(channel) => self
                .members
                .presence_update(conn, payload.get(), Instant::now())
                .map(|()| "{}".to_string())
                .map_err(|e| e.to_string()),
            _ => Err("presence_update needs a joined channel".to_string()),
        };
        self.hold_now(Effect::reply(reply, result));
    }

    fn message(
        &mut self,
        conn: &Conn,
        event: &str,
        payload: &RawValue,
        reply: ReplyTo,
    ) -> Result<(), Crash> {
        if let ReplyTo::Channel { channel, .. } = &reply
            && !self.members.is_member(channel)
        {
            self.hold_now(Effect::reply(reply, Err("unmatched topic".into())));
            return Ok(());
        }
        let hook = Hook::Message {
            event,
            payload: payload.get(),
        };
        let at = self.journal.next_at();
        let result = self.run_event(at, EventKind::Message, conn, Some(event), payload, hook)?;
        self.hold_now(Effect::reply(reply, result));
        Ok(())
    }

    fn join(
        &mut self,
        channel: Arc<Channel>,
        params: &RawValue,
        msg_ref: Option<Ref>,
    ) -> Result<(), Crash> {
        let conn = channel.conn.clone();
        if self.members.contains(&conn.id) {
            self.leave(&conn.id, None, LeaveReason::Rejoin, None)?;
        }
        let max = self.env().config.max_conns_per_room;
        if max > 0 && self.members.len() >= max {
            tracing::debug!(topic = %self.slot.topic, conn = %conn.id, max, "join refused: room is full");
            self.env().metrics.refused("conns_per_room");
            self.refuse_join(channel, msg_ref, Err("room is full".into()));
            return Ok(());
        }
        let at = self.journal.next_at();
        self.members
            .presence_join(&conn, (self.journal.seq() + 1).to_string(), at);
        let hook = Hook::Join {
            params: params.get(),
        };
        let result = self.run_event(at, EventKind::Join, &conn, None, params, hook)?;
        if result.is_err() {
            self.members.presence_refused(&conn);
            self.refuse_join(channel, msg_ref, result);
            return Ok(());
        }
        self.members.insert(conn, channel.clone());
        // Subscribed before the reply goes out, so a client that has its ok
        // is counted and receives every later broadcast; the same release
        // pass delivers both, so nothing can come in between.
        self.hold_now(Output::Subscribe(channel.clone()));
        self.hold_now(Output::Reply {
            channel: channel.clone(),
            msg_ref,
            result,
        });
        let info = serde_json::json!({
            "topic": self.slot.topic.as_str(),
            "kind": self.slot.topic.kind(),
            "generation": self.generation,
            "version": self.kind.version,
        });
        self.hold_now(Output::Notice {
            channel: channel.clone(),
            event: "room_info",
            payload: info.to_string(),
        });
        let presence = self.members.presence_state();
        self.hold_now(Output::Notice {
            channel,
            event: "presence_state",
            payload: presence,
        });
        Ok(())
    }

    /// Answers a refused join and makes the connection forget the channel.
    fn refuse_join(
        &mut self,
        channel: Arc<Channel>,
        msg_ref: Option<Ref>,
        result: Result<String, String>,
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
            .run_event(at, EventKind::Leave, &member.conn, None, &data, hook)?
            .is_err()
        {
            let empty = protocol::empty_object();
            let at = self.journal.next_at();
            self.run_event(at, EventKind::Drop, &member.conn, None, &empty, Hook::Drop)?
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
            let close = matches!(reason, LeaveReason::Left | LeaveReason::Shutdown);
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
        kind: EventKind,
        conn: &Conn,
        event: Option<&str>,
        data: &RawValue,
        hook: Hook,
    ) -> Result<Result<String, String>, Crash> {
        let seed: u64 = rand::random();
        if let Some(presence) = self.members.presence_for_js() {
            self.js.set_presence(presence);
        }
        let started = Instant::now();
        let called = self.js.call(conn, hook, at, seed);
        let took = started.elapsed();
        self.env()
            .metrics
            .hook(self.slot.topic.kind(), kind.label(), took);
        match called {
            Ok(Called { response, effects }) => {
                let seq = self.journal.record(kind, at, seed, conn, event, data);
                for emit in effects {
                    self.gate.hold(seq, Output::Emit(emit));
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
        tracing::warn!(
            topic = %self.slot.topic,
            generation = self.generation,
            hook = ?kind,
            error = %message,
            stack = stack.as_deref().unwrap_or(""),
            "hook threw; rolling back"
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
        let recovered = self.journal.reread()?;
        let js = load_js(self.env(), &self.slot, &self.kind, self.generation)?;
        replay(&js, &recovered, &self.slot.topic)?;
        self.js = js;
        if recovered.events.len() as u64 > ROLLBACK_SNAPSHOT_AFTER {
            self.take_snapshot()?;
        }
        Ok(())
    }
}
