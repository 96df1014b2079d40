//! Host-owned presence of one room, in the shapes of Phoenix.Presence.
//!
//! Key = user; one meta per channel (browser tab): `{phx_ref, online_at,
//! ...fields the client set with presence_update}`. Changes accumulate into
//! one pending diff that the room broadcasts as `presence_diff` once per
//! mailbox batch, so a burst of joins costs one fan-out. The JSON produced
//! here is exactly what phoenix.js `Presence.syncState/syncDiff` consume.
//!
//! Presence is ephemeral: joins and leaves are journaled (as the room's
//! events), meta updates are not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::conn::Conn;

/// Largest accepted `presence_update` payload, in bytes of JSON.
pub const MAX_META_BYTES: usize = 512;
/// `typing: true` clears itself after this long without a refresh (default).
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(5);
/// Meta updates a channel may burst, and refill per second.
const UPDATE_BURST: f64 = 10.0;
const UPDATE_RATE: f64 = 5.0;
/// Fields the host owns; a client cannot set them.
const RESERVED: [&str; 3] = ["phx_ref", "phx_ref_prev", "online_at"];

#[derive(Debug, Clone)]
struct Meta {
    conn_id: String,
    phx_ref: String,
    online_at: i64,
    fields: Map<String, Value>,
    /// Set when this meta replaced another (an update), for the diff.
    phx_ref_prev: Option<String>,
    /// When `typing: true` expires.
    typing_until: Option<Instant>,
    /// Token bucket for updates.
    tokens: f64,
    refilled: Instant,
    /// Counts updates, to mint unique refs.
    updates: u32,
}

impl Meta {
    /// Replaces the fields under a new ref; returns (old, new) for the diff.
    fn replace(
        &mut self,
        fields: Map<String, Value>,
        typing_until: Option<Instant>,
    ) -> (Meta, Meta) {
        let old = self.clone();
        self.updates += 1;
        let base = old.phx_ref.split('.').next().unwrap_or_default();
        self.phx_ref = format!("{base}.{}", self.updates);
        self.phx_ref_prev = Some(old.phx_ref.clone());
        self.fields = fields;
        self.typing_until = typing_until;
        (old, self.clone())
    }

    fn to_json(&self) -> Value {
        let mut m = self.fields.clone();
        m.insert("phx_ref".into(), Value::String(self.phx_ref.clone()));
        m.insert("online_at".into(), Value::from(self.online_at));
        if let Some(prev) = &self.phx_ref_prev {
            m.insert("phx_ref_prev".into(), Value::String(prev.clone()));
        }
        Value::Object(m)
    }
}

/// Why a `presence_update` was refused; the text is the reply's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("presence_update payload must be a JSON object of at most 512 bytes")]
    Invalid,
    #[error("rate_limited")]
    RateLimited,
    #[error("not joined")]
    NotJoined,
}

#[derive(Debug)]
pub struct Presence {
    typing_timeout: Duration,
    /// user → metas, in join order.
    entries: BTreeMap<String, Vec<Meta>>,
    pending_joins: BTreeMap<String, Vec<Value>>,
    pending_leaves: BTreeMap<String, Vec<Value>>,
    /// Refs joined since the last diff, so a join and leave within one
    /// batch cancel out.
    pending_refs: Vec<String>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence::new(TYPING_TIMEOUT)
    }
}

impl Presence {
    pub fn new(typing_timeout: Duration) -> Presence {
        Presence {
            typing_timeout,
            entries: BTreeMap::new(),
            pending_joins: BTreeMap::new(),
            pending_leaves: BTreeMap::new(),
            pending_refs: Vec::new(),
        }
    }

    pub fn with_typing_timeout(mut self, typing_timeout: Duration) -> Presence {
        self.typing_timeout = typing_timeout;
        self
    }

    /// Adds a meta for `conn` (a channel that joined).
    pub fn join(&mut self, conn: &Conn, phx_ref: String, online_at: i64) {
        let meta = Meta {
            conn_id: conn.id.to_string(),
            phx_ref,
            online_at,
            fields: Map::new(),
            phx_ref_prev: None,
            typing_until: None,
            tokens: UPDATE_BURST,
            refilled: Instant::now(),
            updates: 0,
        };
        self.note_join(&conn.user, &meta);
        self.entries
            .entry(conn.user.to_string())
            .or_default()
            .push(meta);
    }

    /// Removes `conn`'s meta; returns whether it was present.
    pub fn leave(&mut self, conn: &Conn) -> bool {
        let Some(metas) = self.entries.get_mut(&*conn.user) else {
            return false;
        };
        let Some(at) = metas.iter().position(|m| m.conn_id == *conn.id) else {
            return false;
        };
        let meta = metas.remove(at);
        if metas.is_empty() {
            self.entries.remove(&*conn.user);
        }
        self.note_leave(&conn.user, &meta);
        true
    }

    /// Merges `patch` (a JSON object) into `conn`'s meta: a leave of the old
    /// meta and a join of the new one, as Phoenix does.
    pub fn update(&mut self, conn: &Conn, patch: &str, now: Instant) -> Result<(), UpdateError> {
        if patch.len() > MAX_META_BYTES {
            return Err(UpdateError::Invalid);
        }
        let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(patch) else {
            return Err(UpdateError::Invalid);
        };
        let meta = self
            .entries
            .get_mut(&*conn.user)
            .and_then(|metas| metas.iter_mut().find(|m| m.conn_id == *conn.id))
            .ok_or(UpdateError::NotJoined)?;
        let elapsed = now.saturating_duration_since(meta.refilled).as_secs_f64();
        meta.tokens = (meta.tokens + elapsed * UPDATE_RATE).min(UPDATE_BURST);
        meta.refilled = now;
        if meta.tokens < 1.0 {
            return Err(UpdateError::RateLimited);
        }
        meta.tokens -= 1.0;
        let mut fields = meta.fields.clone();
        for (key, value) in patch {
            if RESERVED.contains(&key.as_str()) {
                continue;
            }
            if value.is_null() {
                fields.remove(&key);
            } else {
                fields.insert(key, value);
            }
        }
        if Value::Object(fields.clone()).to_string().len() > MAX_META_BYTES {
            return Err(UpdateError::Invalid);
        }
        let typing = fields.get("typing") == Some(&Value::Bool(true));
        let (old, new) = meta.replace(fields, typing.then(|| now + self.typing_timeout));
        self.note_leave(&conn.user, &old);
        self.note_join(&conn.user, &new);
        Ok(())
    }

    /// Clears `typing` on metas whose refresh is overdue. Returns the next
    /// deadline, if any meta is typing.
    pub fn expire_typing(&mut self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        for (user, metas) in &self.entries {
            for m in metas {
                if m.typing_until.is_some_and(|t| t <= now) {
                    expired.push((user.clone(), m.conn_id.clone()));
                }
            }
        }
        for (user, conn_id) in expired {
            let Some(meta) = self
                .entries
                .get_mut(&user)
                .and_then(|metas| metas.iter_mut().find(|m| m.conn_id == conn_id))
            else {
                continue;
            };
            let mut fields = meta.fields.clone();
            fields.insert("typing".into(), Value::Bool(false));
            let (old, new) = meta.replace(fields, None);
            self.note_leave(&user, &old);
            self.note_join(&user, &new);
        }
        self.next_deadline()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .flatten()
            .filter_map(|m| m.typing_until)
            .min()
    }

    /// `presence_state`: `{user: {metas: [...]}}`.
    pub fn state_json(&self) -> String {
        let state: Map<String, Value> = self
            .entries
            .iter()
            .map(|(user, metas)| {
                let metas: Vec<Value> = metas.iter().map(Meta::to_json).collect();
                (user.clone(), serde_json::json!({ "metas": metas }))
            })
            .collect();
        Value::Object(state).to_string()
    }

    /// The pending `presence_diff` `{joins, leaves}`, if anything changed.
    pub fn take_diff(&mut self) -> Option<String> {
        self.pending_refs.clear();
        if self.pending_joins.is_empty() && self.pending_leaves.is_empty() {
            return None;
        }
        let shape = |m: BTreeMap<String, Vec<Value>>| -> Map<String, Value> {
            m.into_iter()
                .map(|(user, metas)| (user, serde_json::json!({ "metas": metas })))
                .collect()
        };
        let joins = shape(std::mem::take(&mut self.pending_joins));
        let leaves = shape(std::mem::take(&mut self.pending_leaves));
        Some(serde_json::json!({ "joins": joins, "leaves": leaves }).to_string())
    }

    /// Users present, and channels (tabs) in all.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.entries.len(),
            self.entries.values().map(Vec::len).sum(),
        )
    }

    fn note_join(&mut self, user: &str, meta: &Meta) {
        self.pending_refs.push(meta.phx_ref.clone());
        self.pending_joins
            .entry(user.to_string())
            .or_default()
            .push(meta.to_json());
    }

    fn note_leave(&mut self, user: &str, meta: &Meta) {
        // Joined and left within one diff: nobody needs to hear of it.
        if let Some(at) = self.pending_refs.iter().position(|r| *r == meta.phx_ref) {
            self.pending_refs.swap_remove(at);
            if let Some(joins) = self.pending_joins.get_mut(user) {
                joins.retain(|m| m["phx_ref"] != meta.phx_ref.as_str());
                if joins.is_empty() {
                    self.pending_joins.remove(user);
                }
            }
            return;
        }
        self.pending_leaves
            .entry(user.to_string())
            .or_default()
            .push(meta.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::empty_object;
    use serde_json::json;

    fn conn(user: &str) -> Conn {
        Conn::new(user, empty_object())
    }

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn joins_and_leaves_shape_state_and_diffs() {
        let mut p = Presence::default();
        let (a1, a2, b) = (conn("alice"), conn("alice"), conn("bob"));
        p.join(&a1, "1".into(), 100);
        p.join(&a2, "2".into(), 200);
        p.join(&b, "3".into(), 300);
        assert_eq!(p.counts(), (2, 3));
        let state = v(&p.state_json());
        assert_eq!(state["alice"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(
            state["bob"]["metas"][0],
            json!({"phx_ref": "3", "online_at": 300})
        );
        let diff = v(&p.take_diff().unwrap());
        assert_eq!(diff["joins"]["alice"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(diff["leaves"], json!({}));
        assert!(p.take_diff().is_none());
        assert!(p.leave(&a1));
        assert!(!p.leave(&a1));
        let diff = v(&p.take_diff().unwrap());
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["phx_ref"], "1");
        assert_eq!(diff["joins"], json!({}));
    }

    #[test]
    fn a_join_and_leave_in_one_batch_cancel_out() {
        let mut p = Presence::default();
        let a = conn("alice");
        p.join(&a, "1".into(), 1);
        p.leave(&a);
        assert!(p.take_diff().is_none());
        assert_eq!(p.state_json(), "{}");
    }

    #[test]
    fn updates_are_leave_plus_join_with_prev_ref() {
        let mut p = Presence::default();
        let a = conn("alice");
        p.join(&a, "7".into(), 1);
        p.take_diff();
        let now = Instant::now();
        p.update(&a, r#"{"typing":true,"phx_ref":"hack","online_at":5}"#, now)
            .unwrap();
        let diff = v(&p.take_diff().unwrap());
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["phx_ref"], "7");
        let joined = &diff["joins"]["alice"]["metas"][0];
        assert_eq!(joined["phx_ref_prev"], "7");
        assert_eq!(joined["typing"], true);
        assert_eq!(joined["online_at"], 1, "reserved fields are the host's");
        assert_ne!(joined["phx_ref"], "7");
        // typing clears itself.
        assert_eq!(p.next_deadline(), Some(now + TYPING_TIMEOUT));
        assert!(p.expire_typing(now + Duration::from_secs(1)).is_some());
        assert!(p.take_diff().is_none());
        assert!(p.expire_typing(now + TYPING_TIMEOUT).is_none());
        let diff = v(&p.take_diff().unwrap());
        assert_eq!(diff["joins"]["alice"]["metas"][0]["typing"], false);
    }

    #[test]
    fn updates_are_checked_and_rate_limited() {
        let mut p = Presence::default();
        let a = conn("alice");
        assert_eq!(
            p.update(&a, "{}", Instant::now()),
            Err(UpdateError::NotJoined)
        );
        p.join(&a, "1".into(), 1);
        let now = Instant::now();
        assert_eq!(p.update(&a, "[1]", now), Err(UpdateError::Invalid));
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(600));
        assert_eq!(p.update(&a, &big, now), Err(UpdateError::Invalid));
        for _ in 0..10 {
            p.update(&a, r#"{"typing":true}"#, now).unwrap();
        }
        assert_eq!(
            p.update(&a, r#"{"typing":true}"#, now),
            Err(UpdateError::RateLimited)
        );
        assert!(
            p.update(&a, r#"{"typing":false}"#, now + Duration::from_secs(1))
                .is_ok()
        );
    }
}
