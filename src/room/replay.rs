//! Building a room's JavaScript: loading the kind's code into a fresh
//! runtime, and replaying the store (snapshot + journal) into it with
//! outputs suppressed.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::outbox::{HostState, Inbox, Message};
use super::{ConsoleLine, Crash, LogLevel, RoomEnv, RoomSlot};
use crate::clock::now_ms;
use crate::conn::Conn;
use crate::engine::{
    Blank, CallError, ConsoleSink, Hook, Identity, ModuleSource, RoomJs, RoomSend,
};
use crate::presence::Shared;
use crate::scripts::{CompiledKind, ScriptError};
use crate::store::{Event, EventKind, Origin, Recovered, Snapshot};
use crate::topic::Topic;

pub(super) fn load_js(
    env: &RoomEnv,
    slot: &Arc<RoomSlot>,
    kind: &Arc<CompiledKind>,
    generation: u64,
) -> Result<RoomJs, Crash> {
    load_js_checked(env, slot, kind, generation)
        .map_err(|e| Crash::script(format!("script error: {e}")))
}

pub(super) fn load_js_checked(
    env: &RoomEnv,
    slot: &Arc<RoomSlot>,
    kind: &Arc<CompiledKind>,
    generation: u64,
) -> Result<RoomJs, ScriptError> {
    let topic = &slot.topic;
    let identity = Identity::new(topic.kind(), topic.name());
    let console_slot = slot.clone();
    let console: ConsoleSink = Arc::new(move |level, message| {
        let topic = console_slot.topic.as_str();
        match level {
            LogLevel::Error => {
                tracing::error!(target: "roomhost::script", topic, generation, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "roomhost::script", topic, generation, "{message}")
            }
            _ => tracing::info!(target: "roomhost::script", topic, generation, "{message}"),
        }
        console_slot.push_console(ConsoleLine {
            at: now_ms(),
            generation,
            level,
            message: message.to_string(),
        });
    });
    let warm = env.warm.take();
    env.metrics.room_context(warm.is_some());
    let blank = match warm {
        Some(blank) => blank,
        None => Blank::new()?,
    };
    let js = RoomJs::load_into(
        blank,
        &identity,
        ModuleSource::Compiled(kind.modules.clone()),
        &kind.entry,
        env.scripts.limits(slot.topic.kind()),
        Some(console),
    )?;
    js.set_generation(generation);
    let scripts = env.scripts.clone();
    js.set_kinds(Arc::new(move |kind| scripts.exists(kind)));
    Ok(js)
}

pub(crate) struct Replayed {
    /// Members at the end of the journal, in no particular order.
    pub members: Vec<Conn>,
    /// Their presence (without meta updates, which are not journaled),
    /// which the replayed script reads until the room points it at its own.
    pub presence: Shared,
    pub last_at: i64,
    /// Messages from other rooms handled so far.
    pub inbox: Inbox,
    /// Messages to other rooms the snapshot had pending, then those the
    /// replayed events sent, in order (those acknowledged since are sent
    /// again; their targets drop the copies).
    pub sends: Vec<(Topic, Message)>,
}

#[derive(serde::Deserialize)]
struct SnapshotMembers {
    members: Vec<(String, String, String)>,
}

/// Restores the snapshot and replays the events after it, outputs suppressed.
pub(crate) fn replay(
    js: &RoomJs,
    recovered: &Recovered,
    topic: &crate::topic::Topic,
) -> Result<Replayed, Crash> {
    js.set_replaying(true);
    let mut members: HashMap<Arc<str>, Conn> = HashMap::new();
    let shared = Shared::default();
    js.set_presence(shared.clone());
    let mut last_at = 0;
    let mut inbox = Inbox::default();
    let mut sends = Vec::new();
    if let Some(bytes) = &recovered.snapshot {
        let snapshot = Snapshot::decode(bytes).map_err(|e| Crash::storage("snapshot", e))?;
        if let Some(host) = snapshot.host {
            let host: HostState = serde_json::from_str(host.get())
                .map_err(|e| Crash::storage("snapshot host state", e))?;
            inbox = host.inbox();
            sends = host.outbox();
        }
        js.restore(snapshot.room.get(), snapshot.at)
            .map_err(|e| match e {
                CallError::Fatal(fatal) => Crash::Js {
                    fatal,
                    context: Some("restore() failed".into()),
                },
                CallError::Script { message, .. } => {
                    Crash::script(format!("restore() failed: {message}"))
                }
            })?;
        let saved: SnapshotMembers = serde_json::from_str(snapshot.room.get())
            .map_err(|e| Crash::storage("snapshot members", e))?;
        for (i, (id, user, meta)) in saved.members.into_iter().enumerate() {
            let meta =
                RawValue::from_string(meta).map_err(|e| Crash::storage("snapshot member", e))?;
            let conn = Conn {
                id: id.into(),
                user: user.into(),
                meta: meta.into(),
            };
            shared
                .lock()
                .join(&conn, format!("s{}-{i}", snapshot.seq), snapshot.at);
            members.insert(conn.id.clone(), conn);
        }
        last_at = snapshot.at;
    }
    for bytes in &recovered.events {
        let event = Event::decode(bytes).map_err(|e| Crash::storage("journal record", e))?;
        let conn = Conn {
            id: (&*event.conn.id).into(),
            user: (&*event.conn.user).into(),
            meta: event.conn.meta.to_owned().into(),
        };
        let reason: String;
        let bytes: Vec<u8>;
        let hook = match event.kind {
            EventKind::Join => Hook::Join {
                params: event.data.get(),
            },
            EventKind::Message => Hook::Message {
                event: event.event.as_deref().unwrap_or(""),
                payload: event.data.get(),
            },
            EventKind::BinaryMessage => {
                bytes = crate::store::binary_from_data(event.data).map_err(|e| {
                    Crash::storage(
                        "journal record",
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    )
                })?;
                Hook::Binary {
                    event: event.event.as_deref().unwrap_or(""),
                    payload: &bytes,
                }
            }
            EventKind::Leave => {
                reason = serde_json::from_str(event.data.get()).unwrap_or_default();
                Hook::Leave { reason: &reason }
            }
            EventKind::Drop => Hook::Drop,
            EventKind::Timer => Hook::Timer {
                name: event.event.as_deref().unwrap_or(""),
                info: event.data.get(),
            },
            EventKind::TimerDrop => Hook::TimerDrop {
                name: event.event.as_deref().unwrap_or(""),
            },
            EventKind::Request => Hook::Request {
                req: event.data.get(),
            },
            EventKind::RoomMessage => Hook::Message {
                event: event.event.as_deref().unwrap_or(""),
                payload: event.data.get(),
            },
            EventKind::RoomMessageDrop => {
                if let (Some(origin), Ok(from)) = (event.origin, Topic::parse(&event.conn.user)) {
                    inbox.handled(&from, origin);
                }
                last_at = last_at.max(event.at);
                continue;
            }
        };
        match event.kind {
            EventKind::Join => shared.lock().join(&conn, event.seq.to_string(), event.at),
            EventKind::Leave | EventKind::Drop => {
                shared.lock().leave(&conn);
            }
            _ => {}
        }
        match js.call(&conn, hook, event.at, event.seed) {
            Ok(called) => {
                sends.extend(outbox_messages(event.seq, called.sends));
                match event.kind {
                    EventKind::Join => {
                        members.insert(conn.id.clone(), conn);
                    }
                    EventKind::Leave | EventKind::Drop => {
                        members.remove(&conn.id);
                    }
                    EventKind::RoomMessage => {
                        if let (Some(origin), Ok(from)) =
                            (event.origin, Topic::parse(&event.conn.user))
                        {
                            inbox.handled(&from, origin);
                        }
                    }
                    _ => {}
                }
            }
            Err(CallError::Script { message, .. }) => {
                // Only possible if the code changed while the server was down
                // or the script is not deterministic.
                tracing::warn!(topic = %topic, seq = event.seq, error = %message, "replayed event failed; skipped");
                match event.kind {
                    EventKind::Leave | EventKind::Drop => {
                        members.remove(&conn.id);
                    }
                    EventKind::Join => {
                        shared.lock().leave(&conn);
                    }
                    _ => {}
                }
            }
            Err(CallError::Fatal(fatal)) => {
                return Err(Crash::Js {
                    fatal,
                    context: Some(format!("replaying seq {}", event.seq)),
                });
            }
        }
        last_at = last_at.max(event.at);
    }
    js.set_replaying(false);
    shared.lock().forget_diff();
    Ok(Replayed {
        members: members.into_values().collect(),
        presence: shared,
        last_at,
        inbox,
        sends,
    })
}

/// The messages event `seq` sent, named by their origin.
pub(super) fn outbox_messages(
    seq: u64,
    sends: Vec<RoomSend>,
) -> impl Iterator<Item = (Topic, Message)> {
    sends.into_iter().enumerate().map(move |(idx, send)| {
        let message = Message {
            origin: Origin {
                seq,
                idx: idx as u32,
            },
            event: send.event,
            payload: send.payload,
            tries: 0,
        };
        (send.topic, message)
    })
}
