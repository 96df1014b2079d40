//! [`RoomHandle`]: one room as an embedder (or the HTTP transport) sees it.

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::registry::Rooms;
use super::{Command, ReplyTo, RoomError, RoomInfo};
use crate::conn::Conn;
use crate::topic::Topic;

/// One room, for embedders: send messages, read its state, kill it.
/// Holds the topic, not the room: the room may stop when idle and start
/// again on the next call.
#[derive(Clone)]
pub struct RoomHandle {
    rooms: Rooms,
    topic: Topic,
}

impl RoomHandle {
    pub(super) fn new(rooms: Rooms, topic: Topic) -> RoomHandle {
        RoomHandle { rooms, topic }
    }

    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The room's description, if it is registered.
    pub fn info(&self) -> Option<RoomInfo> {
        self.rooms.get(&self.topic).map(|slot| slot.info())
    }

    /// Runs `onMessage(conn, event, payload)`; returns the hook's result.
    pub async fn message(
        &self,
        conn: Conn,
        event: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, RoomError> {
        let payload = RawValue::from_string(payload.to_string())
            .map_err(|e| RoomError::Refused(e.to_string()))?;
        let raw = self.message_raw(conn, event, payload).await?;
        serde_json::from_str(&raw).map_err(|e| RoomError::Refused(e.to_string()))
    }

    /// Like [`RoomHandle::message`] with JSON text in and out.
    pub async fn message_raw(
        &self,
        conn: Conn,
        event: &str,
        payload: Box<RawValue>,
    ) -> Result<String, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Message {
            conn,
            event: event.to_string(),
            payload: crate::protocol::Payload::Json(payload),
            reply: ReplyTo::Caller(tx),
        })
        .await?;
        rx.await.map_err(|_| RoomError::Crashed)?
    }

    /// Runs `onRequest(req)` (`req` is the request's JSON description);
    /// returns the hook's result as JSON.
    pub async fn request(&self, conn: Conn, req: Box<RawValue>) -> Result<String, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Request {
            conn,
            req,
            reply: tx,
        })
        .await?;
        rx.await.map_err(|_| RoomError::Crashed)?
    }

    /// The room's JS state as `snapshot()` returns it, with its members:
    /// `{"members": [[id, user, meta], ...], "state": ...}`.
    pub async fn state(&self) -> Result<serde_json::Value, RoomError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Inspect(tx)).await?;
        let raw = rx.await.map_err(|_| RoomError::Crashed)??;
        serde_json::from_str(&raw).map_err(|e| RoomError::Refused(e.to_string()))
    }

    /// Aborts the room (as a crash would) and waits for the next generation.
    pub async fn kill(&self) -> Result<u64, RoomError> {
        self.rooms.kill(&self.topic).await
    }

    async fn send(&self, command: Command) -> Result<(), RoomError> {
        let (_, mailbox) = self.rooms.open(&self.topic)?;
        mailbox.send(command).await.map_err(|_| RoomError::Crashed)
    }
}
