//! A room's members: the connections joined to it (with their channels) and
//! their presence, kept together so a membership change and its presence
//! change cannot drift apart. Also tracks whether the script's copy of the
//! presence (`room.presence()`) is stale.
//!
//! While the room's storage refuses writes, two kinds of channel wait for
//! it: *viewers*, joined read-only (their join is journaled when storage
//! returns), and members whose leave could not be journaled (they keep
//! their membership, without a channel, until it is).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use crate::conn::Conn;
use crate::hub::{Channel, ChannelId};
use crate::presence::{Presence, Shared, UpdateError};

pub(super) struct Member {
    pub(super) conn: Conn,
    /// `None` for members rebuilt by replay whose channel died with an
    /// earlier generation.
    pub(super) channel: Option<Arc<Channel>>,
}

pub(super) struct Members {
    by_conn: HashMap<Arc<str>, Member>,
    /// Channels joined read-only during a storage fault, with their join
    /// params, by connection id.
    viewers: HashMap<Arc<str>, (Arc<Channel>, Box<RawValue>)>,
    /// Shared with the script's `room.presence()`.
    presence: Shared,
    /// The presence changed since the script was last pointed at it (or
    /// the script is new): it is pointed at it again before its next hook,
    /// an `Arc` clone. A script rebuilt from the store (a rollback) reads
    /// its replay's presence until then, as it read its replay's copy.
    presence_dirty: bool,
}

impl Members {
    /// The members a replay ended with (their channels are gone) and their
    /// presence.
    pub(super) fn rebuilt(conns: Vec<Conn>, presence: Presence) -> Members {
        Members {
            by_conn: conns
                .into_iter()
                .map(|conn| {
                    let member = Member {
                        conn,
                        channel: None,
                    };
                    (member.conn.id.clone(), member)
                })
                .collect(),
            viewers: HashMap::new(),
            presence: Shared::new(presence),
            presence_dirty: true,
        }
    }

    /// After a rebuild from the durable state: the members it ended with,
    /// keeping the channels of those whose channel `still_subscribed`
    /// (members whose leave was undone lose theirs; joins that were undone
    /// are gone), and its presence.
    pub(super) fn reconcile(
        &mut self,
        conns: Vec<Conn>,
        presence: Presence,
        still_subscribed: impl Fn(&Channel) -> bool,
    ) {
        let mut channels: HashMap<Arc<str>, Arc<Channel>> = self
            .by_conn
            .drain()
            .filter_map(|(id, m)| m.channel.map(|c| (id, c)))
            .filter(|(_, c)| still_subscribed(c))
            .collect();
        self.by_conn = conns
            .into_iter()
            .map(|conn| {
                let channel = channels.remove(&conn.id);
                (conn.id.clone(), Member { conn, channel })
            })
            .collect();
        *self.presence.lock() = presence;
        self.presence_dirty = true;
    }

    /// A member's channel goes now; its membership waits for a journaled
    /// leave. Returns the channel.
    pub(super) fn defer_leave(&mut self, conn_id: &str) -> Option<Arc<Channel>> {
        self.by_conn.get_mut(conn_id)?.channel.take()
    }

    /// The connection ids of members without a channel: dead with an
    /// earlier generation, or their leave deferred.
    pub(super) fn without_channel(&self) -> Vec<Arc<str>> {
        self.by_conn
            .iter()
            .filter(|(_, m)| m.channel.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A channel joined read-only, with the params of its join.
    pub(super) fn add_viewer(&mut self, channel: Arc<Channel>, params: Box<RawValue>) {
        self.viewers
            .insert(channel.conn.id.clone(), (channel, params));
    }

    /// Removes the viewer of `conn_id` if it is channel `id`.
    pub(super) fn take_viewer(&mut self, conn_id: &str, id: ChannelId) -> Option<Arc<Channel>> {
        if self.viewers.get(conn_id).is_none_or(|(c, _)| c.id != id) {
            return None;
        }
        self.viewers.remove(conn_id).map(|(c, _)| c)
    }

    /// Every viewer with its join params, to be joined for real.
    pub(super) fn take_viewers(&mut self) -> Vec<(Arc<Channel>, Box<RawValue>)> {
        self.viewers.drain().map(|(_, v)| v).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.by_conn.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    pub(super) fn contains(&self, conn_id: &str) -> bool {
        self.by_conn.contains_key(conn_id)
    }

    /// The id of the channel `conn_id` is joined with, if it has one.
    pub(super) fn channel_of(&self, conn_id: &str) -> Option<ChannelId> {
        self.by_conn
            .get(conn_id)
            .and_then(|m| m.channel.as_ref())
            .map(|c| c.id)
    }

    /// The channel `conn_id` is joined with, if it has one.
    pub(super) fn channel(&self, conn_id: &str) -> Option<Arc<Channel>> {
        self.by_conn.get(conn_id)?.channel.clone()
    }

    /// Whether `channel` is the current membership of its connection.
    pub(super) fn is_member(&self, channel: &Channel) -> bool {
        self.channel_of(&channel.conn.id) == Some(channel.id)
    }

    /// Every member's connection id.
    pub(super) fn ids(&self) -> Vec<Arc<str>> {
        self.by_conn.keys().cloned().collect()
    }

    /// The connection ids of members with a live channel.
    pub(super) fn joined_ids(&self) -> Vec<Arc<str>> {
        self.by_conn
            .iter()
            .filter(|(_, m)| m.channel.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Adds a member whose join succeeded (its presence joined before the
    /// hook ran, see [`Members::presence_join`]).
    pub(super) fn insert(&mut self, conn: Conn, channel: Arc<Channel>) {
        self.by_conn.insert(
            conn.id.clone(),
            Member {
                conn,
                channel: Some(channel),
            },
        );
    }

    /// Removes a member and its presence.
    pub(super) fn remove(&mut self, conn_id: &str) -> Option<Member> {
        let member = self.by_conn.remove(conn_id)?;
        self.presence.lock().leave(&member.conn);
        self.presence_dirty = true;
        Some(member)
    }

    /// A joining connection's presence, so `onJoin` already sees it.
    pub(super) fn presence_join(&mut self, conn: &Conn, phx_ref: String, at: i64) {
        self.presence.lock().join(conn, phx_ref, at);
        self.presence_dirty = true;
    }

    /// Takes back [`Members::presence_join`] for a refused join.
    pub(super) fn presence_refused(&mut self, conn: &Conn) {
        self.presence.lock().leave(conn);
    }

    /// A member's own presence meta update (`presence_update`).
    pub(super) fn presence_update(
        &mut self,
        conn: &Conn,
        patch: &str,
        now: Instant,
    ) -> Result<(), UpdateError> {
        self.presence.lock().update(conn, patch, now)?;
        self.presence_dirty = true;
        Ok(())
    }

    /// Clears `typing` flags that ran out.
    pub(super) fn expire_typing(&mut self, now: Instant) {
        self.presence.lock().expire_typing(now);
        self.presence_dirty = true;
    }

    /// When the next `typing` flag runs out.
    pub(super) fn presence_deadline(&self) -> Option<Instant> {
        self.presence.lock().next_deadline()
    }

    /// The presence for the script to read, if it changed since the
    /// script was last given it.
    pub(super) fn presence_for_js(&mut self) -> Option<Shared> {
        std::mem::take(&mut self.presence_dirty).then(|| self.presence.clone())
    }

    /// The script's copy must be refreshed before its next hook (new code).
    pub(super) fn presence_changed(&mut self) {
        self.presence_dirty = true;
    }

    /// `presence_state` for a channel that just joined.
    pub(super) fn presence_state(&mut self) -> String {
        self.presence.lock().state_for_client()
    }

    /// The presence changes since the last diff (`presence_diff`), if it
    /// may go out at `now` (see [`Presence::take_diff`]).
    pub(super) fn take_presence_diff(&mut self, now: Instant) -> Option<String> {
        self.presence.lock().take_diff(now)
    }

    /// When the pending `presence_diff` may go out.
    pub(super) fn presence_diff_due(&self) -> Option<Instant> {
        self.presence.lock().diff_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Peer;
    use crate::protocol::{Vsn, empty_object};
    use crate::topic::Topic;

    fn channel(id: u64, conn: &Conn) -> Arc<Channel> {
        Arc::new(Channel {
            id,
            topic: Topic::parse("chat:x").unwrap(),
            conn: conn.clone(),
            join_ref: None,
            vsn: Vsn::V2,
            binary: true,
            peer: Peer::new(4).0,
        })
    }

    #[test]
    fn presence_follows_membership_and_the_script_sees_each_change_once() {
        let presence = Presence::default().with_diff_interval(std::time::Duration::ZERO);
        let mut members = Members::rebuilt(Vec::new(), presence);
        assert!(
            members.presence_for_js().is_some(),
            "a new room tells the script"
        );
        assert!(members.presence_for_js().is_none());
        let alice = Conn::new("alice", empty_object());
        members.presence_join(&alice, "1".into(), 10);
        members.insert(alice.clone(), channel(1, &alice));
        let seen = members.presence_for_js().unwrap().state_json();
        assert!(seen.contains("alice"), "{seen}");
        assert!(
            members
                .take_presence_diff(Instant::now())
                .unwrap()
                .contains("alice")
        );
        assert!(members.presence_for_js().is_none());
        assert!(members.is_member(&channel(1, &alice)));
        assert!(!members.is_member(&channel(2, &alice)), "an older channel");
        assert_eq!(members.joined_ids(), std::slice::from_ref(&alice.id));
        let left = members.remove(&alice.id).unwrap();
        assert_eq!(left.conn.user.as_ref(), "alice");
        assert!(members.is_empty());
        assert!(
            !members
                .presence_for_js()
                .unwrap()
                .state_json()
                .contains("alice")
        );
        let diff = members.take_presence_diff(Instant::now()).unwrap();
        assert!(diff.contains(r#""leaves":{"alice""#), "{diff}");
    }

    #[test]
    fn replayed_members_have_no_channel() {
        let bob = Conn::new("bob", empty_object());
        let members = Members::rebuilt(vec![bob.clone()], Presence::default());
        assert_eq!(members.ids(), std::slice::from_ref(&bob.id));
        assert!(members.joined_ids().is_empty());
        assert_eq!(members.channel_of(&bob.id), None);
    }
}
