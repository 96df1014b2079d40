//! What travels between nodes for a room one of them runs: requests (a
//! client's node → the owner, on `rh.r.<topic>`), their answers, and the
//! room's backplane (the owner → every node, on `rh.b.<topic>`).
//!
//! A message is `[u32 big-endian length of a JSON head][head][body]`: the
//! head says what it is, the body carries the bytes as they are (join
//! params, a push's payload, a frame, a broadcast's payload; JSON or
//! binary), so nothing is escaped or parsed twice.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A channel's command, forwarded to the room's owner. The body is the
/// join params or the push's payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request {
    Join {
        /// The channel's node and its id there.
        node: String,
        channel: u64,
        conn: String,
        user: String,
        /// The connection's `meta` (JSON object text).
        meta: String,
        /// Refs as their JSON tokens (`Ref::as_json`).
        join_ref: Option<String>,
        msg_ref: Option<String>,
        /// Serializer: 1 or 2.
        vsn: u8,
        /// Whether the connection carries binary frames.
        binary: bool,
    },
    Push {
        node: String,
        channel: u64,
        event: String,
        msg_ref: Option<String>,
        /// The body is bytes (a V2 binary push), not JSON.
        bytes: bool,
    },
    Leave {
        node: String,
        channel: u64,
        /// `LeaveReason::as_str`.
        reason: String,
        msg_ref: Option<String>,
    },
    /// Node `node` still has channels in the room (sent when it sent
    /// nothing else for a while): the owner keeps them.
    Alive { node: String },
}

/// The owner's answer to a [`Request`]: the command is in the room's
/// mailbox, or why not. What the room answers the channel comes on the
/// backplane, in order with the room's broadcasts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub(super) enum Answer {
    /// Queued for the room, which serves under `epoch` (its backplane's).
    Accepted { epoch: u64 },
    /// Refused for this channel (an unknown channel, bad params).
    Refused { reason: String },
    /// This node does not run the room (any more): ask who does.
    NotServing,
}

/// A backplane message's head: which stream (`epoch`, one per room
/// generation on its owner) and where in it (`seq`, from 1, gapless).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Head {
    pub epoch: u64,
    pub seq: u64,
    #[serde(flatten)]
    pub what: What,
}

/// What a backplane message is.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum What {
    /// A broadcast (body: its payload) for every channel but `except`'s.
    Broadcast {
        event: String,
        except: Option<String>,
        bytes: bool,
    },
    /// A frame (body) for channel `channel` of node `node`.
    Frame {
        node: String,
        channel: u64,
        bytes: bool,
    },
    /// That channel's join succeeded: it gets broadcasts from now on.
    Subscribed { node: String, channel: u64 },
    /// The room ended that channel.
    Closed { node: String, channel: u64 },
    /// Nothing new: `seq` is the last one sent. Sent when the room is
    /// quiet, so a node notices a lost tail and a dead owner.
    Tick,
}

/// One message: `head` as JSON, then `body`.
pub(super) fn encode(head: &impl Serialize, body: &[u8]) -> Bytes {
    // A head of these types always serializes (strings and numbers).
    let head = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + head.len() + body.len());
    out.put_u32(head.len() as u32);
    out.put_slice(&head);
    out.put_slice(body);
    out.freeze()
}

/// The head and body of a message, or `None` if it is not one.
pub(super) fn decode<H: DeserializeOwned>(message: &[u8]) -> Option<(H, &[u8])> {
    let len = u32::from_be_bytes(message.get(..4)?.try_into().ok()?) as usize;
    let head = message.get(4..4usize.checked_add(len)?)?;
    let head = serde_json::from_slice(head).ok()?;
    Some((head, &message[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_its_head_and_body() {
        let head = Head {
            epoch: 7,
            seq: 3,
            what: What::Frame {
                node: "n2".into(),
                channel: 9,
                bytes: true,
            },
        };
        let message = encode(&head, b"\x00\x01");
        let (back, body) = decode::<Head>(&message).unwrap();
        assert_eq!((back.epoch, back.seq), (7, 3));
        assert!(
            matches!(back.what, What::Frame { channel: 9, bytes: true, ref node } if node == "n2")
        );
        assert_eq!(body, b"\x00\x01");
        let tick = encode(
            &Head {
                epoch: 1,
                seq: 0,
                what: What::Tick,
            },
            &[],
        );
        assert!(matches!(decode::<Head>(&tick).unwrap().0.what, What::Tick));
        assert!(decode::<Head>(b"\x00\x00\x00\x09{}").is_none(), "short");
        assert!(decode::<Answer>(b"").is_none());
    }
}
