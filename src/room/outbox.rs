//! Messages between rooms, exactly once (`room.send`): the sender's
//! [`Outbox`] and the target's [`Inbox`].
//!
//! A send leaves the sender only once the event that made it is durable (it
//! passes the output gate like a broadcast). Each target has a queue and a
//! delivery task that hands the queue's head, in order, to the target's
//! mailbox and waits for its acknowledgement, which the target sends once it
//! has journaled the messages (its gate again); on any failure it retries
//! with backoff. The target handles each message once: a message is named by
//! its [`Origin`] (the sender's event seq and the send's index in it), and
//! the target's inbox remembers the newest origin it handled per sender
//! (rebuilt by replay, kept in snapshots). Pending sends are kept in the
//! sender's snapshots and recreated by replaying its journal, so a crash or
//! a `kill -9` of either side resends what was not acknowledged, and the
//! inbox drops the copies. Per pair of rooms the order is the send order.
//!
//! A message the target's `onMessage` keeps refusing (throws) is dropped on
//! its [`MAX_TRIES`]th try, journaled as handled and logged with both topics,
//! so one bad message cannot stop the pair for good.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::registry::Rooms;
use super::{Command, RoomError};
use crate::conn::Conn;
use crate::store::Origin;
use crate::topic::Topic;

/// Tries a target gets for one message before it drops it.
pub const MAX_TRIES: u32 = 5;
/// Messages handed to a target at once.
const DELIVERY_BATCH: usize = 64;
/// Retry backoff after a failed delivery: from this, doubling, ...
const RETRY_FIRST: Duration = Duration::from_millis(20);
/// ...up to this.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One message on its way to another room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub origin: Origin,
    pub event: String,
    /// JSON text.
    pub payload: String,
    /// Deliveries the target has refused so far (its `onMessage` threw).
    #[serde(default)]
    pub tries: u32,
}

/// What a target answers a delivery with.
#[derive(Debug)]
pub struct Delivered {
    /// The newest origin now handled (journaled, or dropped after
    /// [`MAX_TRIES`]); every message up to it may leave the queue.
    pub upto: Option<Origin>,
    /// The first message not handled was refused with this (it stays first).
    pub refused: Option<String>,
}

/// The identity a message from room `from` arrives with.
pub fn room_conn(from: &Topic) -> Conn {
    let meta = serde_json::value::RawValue::from_string(r#"{"room":true}"#.to_string())
        .unwrap_or_else(|_| crate::protocol::empty_object());
    Conn {
        id: format!("room:{from}").into(),
        user: from.as_str().into(),
        meta: meta.into(),
    }
}

/// A target's queue, shared by the sender and its delivery task (a std
/// mutex: held to push or pop, never across an await).
#[derive(Default)]
struct Queue {
    messages: Mutex<VecDeque<Message>>,
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sender's side: a queue and a delivery task per target.
pub(super) struct Outbox {
    from: Topic,
    rooms: Rooms,
    queues: BTreeMap<Topic, (Arc<Queue>, JoinHandle<()>)>,
}

impl Outbox {
    pub(super) fn new(from: Topic, rooms: Rooms) -> Outbox {
        Outbox {
            from,
            rooms,
            queues: BTreeMap::new(),
        }
    }

    /// Queues a message whose event is durable.
    pub(super) fn push(&mut self, to: Topic, message: Message) {
        let (queue, _) = self.queues.entry(to.clone()).or_insert_with(|| {
            let queue = Arc::new(Queue::default());
            let delivery = tokio::spawn(deliver(
                self.rooms.clone(),
                self.from.clone(),
                to,
                queue.clone(),
            ));
            (queue, delivery)
        });
        queue.lock().push_back(message);
        queue.ready.notify_one();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queues.values().all(|(q, _)| q.lock().is_empty())
    }

    /// Every message not yet acknowledged, by target, in order.
    pub(super) fn pending(&self) -> Vec<(Topic, Message)> {
        self.queues
            .iter()
            .flat_map(|(to, (q, _))| {
                q.lock()
                    .iter()
                    .map(|m| (to.clone(), m.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        for (_, delivery) in self.queues.values() {
            delivery.abort();
        }
    }
}

/// Hands `queue`'s head to room `to`, in order, until the outbox is dropped.
async fn deliver(rooms: Rooms, from: Topic, to: Topic, queue: Arc<Queue>) {
    let mut backoff = RETRY_FIRST;
    loop {
        let batch: Vec<Message> = queue.lock().iter().take(DELIVERY_BATCH).cloned().collect();
        if batch.is_empty() {
            queue.ready.notified().await;
            continue;
        }
        match hand_over(&rooms, &from, &to, batch).await {
            Ok(delivered) => {
                let mut messages = queue.lock();
                if let Some(upto) = delivered.upto {
                    while messages.front().is_some_and(|m| m.origin <= upto) {
                        messages.pop_front();
                    }
                }
                match (delivered.refused, messages.front_mut()) {
                    (Some(reason), Some(first)) => {
                        first.tries += 1;
                        tracing::debug!(from = %from, to = %to, tries = first.tries, %reason, "room message refused; retrying");
                    }
                    _ => {
                        backoff = RETRY_FIRST;
                        continue;
                    }
                }
            }
            Err(RoomError::UnknownKind | RoomError::KindRemoved | RoomError::InvalidTopic(_)) => {
                let dropped = std::mem::take(&mut *queue.lock()).len();
                tracing::error!(from = %from, to = %to, dropped, "room messages dropped: their target cannot exist");
                continue;
            }
            Err(e) => {
                tracing::debug!(from = %from, to = %to, error = %e, "room message not delivered; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

async fn hand_over(
    rooms: &Rooms,
    from: &Topic,
    to: &Topic,
    messages: Vec<Message>,
) -> Result<Delivered, RoomError> {
    let (_, mailbox) = rooms.open(to)?;
    let (reply, answer) = oneshot::channel();
    mailbox
        .send(Command::Deliver {
            from: from.clone(),
            messages,
            reply,
        })
        .await
        .map_err(|_| RoomError::Crashed)?;
    answer.await.map_err(|_| RoomError::Crashed)?
}

/// The target's side: the newest origin handled per sender.
#[derive(Default)]
pub(super) struct Inbox {
    handled: HashMap<Topic, Origin>,
}

impl Inbox {
    /// Whether `origin` from `from` was handled already.
    pub(super) fn seen(&self, from: &Topic, origin: Origin) -> bool {
        self.handled.get(from).is_some_and(|last| origin <= *last)
    }

    pub(super) fn handled(&mut self, from: &Topic, origin: Origin) {
        let last = self.handled.entry(from.clone()).or_insert(origin);
        *last = (*last).max(origin);
    }
}

/// What a snapshot keeps of a room besides its JS state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct HostState {
    #[serde(default)]
    pub(super) outbox: Vec<(String, Message)>,
    #[serde(default)]
    pub(super) inbox: Vec<(String, Origin)>,
}

impl HostState {
    /// `held` are the messages still waiting for their event to be durable
    /// (they come after the outbox's in send order).
    pub(super) fn of<'a>(
        outbox: &Outbox,
        held: impl Iterator<Item = (&'a Topic, &'a Message)>,
        inbox: &Inbox,
    ) -> HostState {
        let mut inbox: Vec<(String, Origin)> = inbox
            .handled
            .iter()
            .map(|(t, o)| (t.to_string(), *o))
            .collect();
        inbox.sort();
        HostState {
            outbox: outbox
                .pending()
                .into_iter()
                .map(|(t, m)| (t.to_string(), m))
                .chain(held.map(|(t, m)| (t.to_string(), m.clone())))
                .collect(),
            inbox,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.outbox.is_empty() && self.inbox.is_empty()
    }

    /// The inbox it records (senders whose topic no longer parses are
    /// skipped: they cannot send again).
    pub(super) fn inbox(&self) -> Inbox {
        Inbox {
            handled: self
                .inbox
                .iter()
                .filter_map(|(t, o)| Topic::parse(t).ok().map(|t| (t, *o)))
                .collect(),
        }
    }

    /// The messages it records, by target.
    pub(super) fn outbox(&self) -> Vec<(Topic, Message)> {
        self.outbox
            .iter()
            .filter_map(|(t, m)| Topic::parse(t).ok().map(|t| (t, m.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(seq: u64, idx: u32) -> Origin {
        Origin { seq, idx }
    }

    #[test]
    fn the_inbox_handles_each_origin_once_in_send_order() {
        let a = Topic::parse("counter:a").unwrap();
        let b = Topic::parse("counter:b").unwrap();
        let mut inbox = Inbox::default();
        assert!(!inbox.seen(&a, origin(3, 0)));
        inbox.handled(&a, origin(3, 1));
        assert!(inbox.seen(&a, origin(3, 0)) && inbox.seen(&a, origin(3, 1)));
        assert!(inbox.seen(&a, origin(2, 9)), "earlier events of the sender");
        assert!(!inbox.seen(&a, origin(3, 2)) && !inbox.seen(&a, origin(4, 0)));
        assert!(!inbox.seen(&b, origin(1, 0)), "per sender");
        inbox.handled(&a, origin(1, 0));
        assert!(inbox.seen(&a, origin(3, 1)), "never goes back");
    }

    #[test]
    fn host_state_round_trips_through_json() {
        let a = Topic::parse("counter:a").unwrap();
        let mut inbox = Inbox::default();
        inbox.handled(&a, origin(7, 2));
        let state = HostState {
            outbox: vec![(
                "counter:b".into(),
                Message {
                    origin: origin(9, 0),
                    event: "inc".into(),
                    payload: "{}".into(),
                    tries: 2,
                },
            )],
            inbox: vec![("counter:a".into(), origin(7, 2))],
        };
        let json = serde_json::to_string(&state).unwrap();
        let back: HostState = serde_json::from_str(&json).unwrap();
        assert!(back.inbox().seen(&a, origin(7, 2)));
        assert_eq!(back.outbox()[0].1.tries, 2);
        assert!(!back.is_empty());
        let old: HostState = serde_json::from_str("{}").unwrap();
        assert!(old.is_empty(), "snapshots of earlier versions have none");
    }

    #[test]
    fn a_message_from_a_room_names_it() {
        let conn = room_conn(&Topic::parse("chat:lobby").unwrap());
        assert_eq!((&*conn.id, &*conn.user), ("room:chat:lobby", "chat:lobby"));
        assert_eq!(conn.meta.get(), r#"{"room":true}"#);
    }
}
