//! Host-owned presence of one room, in the shapes of Phoenix.Presence.
//!
//! Key = user; one meta per channel (browser tab): `{phx_ref, online_at,
//! ...fields the client set with presence_update}`. Changes accumulate into
//! one pending diff that the room broadcasts as `presence_diff`. The JSON
//! produced here is exactly what phoenix.js `Presence.syncState/syncDiff`
//! consume.
//!
//! **Diffs are paced** ([`Presence::take_diff`]): a change after a quiet
//! spell goes out with the batch that made it, but while changes keep
//! coming, a diff goes out at most once per interval and carries every
//! change since the last one. The interval is `diff_interval` (default
//! [`DIFF_INTERVAL`], 20 ms), or 50 µs per tab present when that is longer,
//! up to [`MAX_DIFF_INTERVAL`] (1,000 tabs: 50 ms; 2,000 or more: 100 ms),
//! since a diff is one frame per tab. So a burst of n joins into a room of
//! n costs about one fan-out per interval, not one per mailbox batch
//! (O(n²) frames). What a client sees:
//! a presence change reaches the others up to one interval later than the
//! room's other outputs of the same moment (a `new_msg` from a tab may
//! arrive before the diff that shows the tab joined); no change is lost,
//! and diffs keep their order (each is one broadcast, queued in the room's
//! order). A pending diff may repeat a join that a later joiner's
//! `presence_state` already holds: phoenix.js merges joins by `phx_ref`,
//! so applying it again changes nothing.
//!
//! `presence_state` is built from each user's entry encoded once per change
//! of that user, so a joiner's state is one concatenation, not a
//! serialization of every meta: without that, n joins cost O(n²) JSON work.
//!
//! Presence is ephemeral: joins and leaves are journaled (as the room's
//! events), meta updates are not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
/// At most one `presence_diff` per this long while changes keep coming
/// (default; `Config::presence_interval`).
pub const DIFF_INTERVAL: Duration = Duration::from_millis(20);
/// A diff is one frame per tab, so in a large room the interval grows by
/// this much per tab present (1,000 tabs: 50 ms), up to
/// [`MAX_DIFF_INTERVAL`]: the room's presence fan-out stays near 20,000
/// frames a second however many join.
const DIFF_INTERVAL_PER_TAB: Duration = Duration::from_micros(50);
pub const MAX_DIFF_INTERVAL: Duration = Duration::from_millis(100);
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

/// A room's presence shared with its script: `room.presence()` encodes it
/// when the script calls it, instead of the room handing the script a copy
/// of the whole presence before every hook that follows a change (O(n) per
/// join or leave, so O(n²) for n of them, whether the script reads it or
/// not). A std mutex: only the room's own thread takes it, never across an
/// `.await`, and never while the script runs (the script's read takes it
/// alone), so it is uncontended.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<Presence>>);

impl Shared {
    pub fn new(presence: Presence) -> Shared {
        Shared(Arc::new(Mutex::new(presence)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Presence> {
        // Every change is applied whole under the lock; a panic between
        // two cannot leave it half done.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `{user: {metas: [...]}}` as it is now.
    pub fn state_json(&self) -> String {
        self.lock().state_json()
    }

    /// Takes the presence out, leaving an empty one.
    pub fn take(&self) -> Presence {
        std::mem::take(&mut *self.lock())
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

/// One user's metas and their `presence_state` entry.
#[derive(Debug, Default)]
struct User {
    /// In join order.
    metas: Vec<Meta>,
    /// `"user":{"metas":[...]}`, re-encoded whenever `metas` changes, so
    /// [`Presence::state_json`] only concatenates.
    json: String,
}

impl User {
    fn encode(&mut self, user: &str) {
        let metas: Vec<Value> = self.metas.iter().map(Meta::to_json).collect();
        let entry = serde_json::json!({ "metas": metas });
        self.json = format!("{}:{entry}", Value::from(user));
    }
}

#[derive(Debug)]
pub struct Presence {
    typing_timeout: Duration,
    /// Least time between two diffs while changes keep coming.
    diff_interval: Duration,
    /// When the last diff was taken.
    last_diff: Option<Instant>,
    /// Metas present (tabs), for the interval.
    tabs: usize,
    entries: BTreeMap<String, User>,
    pending_joins: BTreeMap<String, Vec<Value>>,
    pending_leaves: BTreeMap<String, Vec<Value>>,
    /// Refs joined since the last diff and since the last `presence_state`
    /// a client was given, so that a join and leave in between cancel out:
    /// nobody has heard of the meta. Once a client's state holds it, its
    /// leave must go out.
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
            diff_interval: DIFF_INTERVAL,
            last_diff: None,
            tabs: 0,
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

    /// Diffs at most once per `interval` while changes keep coming (zero:
    /// every diff at once).
    pub fn with_diff_interval(mut self, interval: Duration) -> Presence {
        self.diff_interval = interval;
        self
    }

    /// The least time between two diffs, for the tabs present now.
    fn interval(&self) -> Duration {
        if self.diff_interval.is_zero() {
            return Duration::ZERO;
        }
        let by_size =
            DIFF_INTERVAL_PER_TAB.saturating_mul(self.tabs.try_into().unwrap_or(u32::MAX));
        self.diff_interval.max(by_size.min(MAX_DIFF_INTERVAL))
    }

    /// Re-encodes `user`'s entry after a change to its metas, or removes it
    /// when it has none left.
    fn changed(&mut self, user: &str) {
        let Some(entry) = self.entries.get_mut(user) else {
            return;
        };
        if entry.metas.is_empty() {
            self.entries.remove(user);
        } else {
            entry.encode(user);
        }
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
            .metas
            .push(meta);
        self.tabs += 1;
        self.changed(&conn.user);
    }

    /// Removes `conn`'s meta; returns whether it was present.
    pub fn leave(&mut self, conn: &Conn) -> bool {
        let Some(user) = self.entries.get_mut(&*conn.user) else {
            return false;
        };
        let Some(at) = user.metas.iter().position(|m| m.conn_id == *conn.id) else {
            return false;
        };
        let meta = user.metas.remove(at);
        self.tabs -= 1;
        self.changed(&conn.user);
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
            .and_then(|user| user.metas.iter_mut().find(|m| m.conn_id == *conn.id))
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
        self.changed(&conn.user);
        self.note_leave(&conn.user, &old);
        self.note_join(&conn.user, &new);
        Ok(())
    }

    /// Clears `typing` on metas whose refresh is overdue. Returns the next
    /// deadline, if any meta is typing.
    pub fn expire_typing(&mut self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        for (user, entry) in &self.entries {
            for m in &entry.metas {
                if m.typing_until.is_some_and(|t| t <= now) {
                    expired.push((user.clone(), m.conn_id.clone()));
                }
            }
        }
        for (user, conn_id) in expired {
            let Some(meta) = self
                .entries
                .get_mut(&user)
                .and_then(|entry| entry.metas.iter_mut().find(|m| m.conn_id == conn_id))
            else {
                continue;
            };
            let mut fields = meta.fields.clone();
            fields.insert("typing".into(), Value::Bool(false));
            let (old, new) = meta.replace(fields, None);
            self.changed(&user);
            self.note_leave(&user, &old);
            self.note_join(&user, &new);
        }
        self.next_deadline()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .flat_map(|entry| &entry.metas)
            .filter_map(|m| m.typing_until)
            .min()
    }

    /// The presence `{user: {metas: [...]}}`, as `presence_state` carries
    /// it (users in key order, as a JSON object of serde_json's would be).
    pub fn state_json(&self) -> String {
        let len = self
            .entries
            .values()
            .map(|e| e.json.len() + 1)
            .sum::<usize>();
        let mut state = String::with_capacity(len + 2);
        state.push('{');
        for (i, entry) in self.entries.values().enumerate() {
            if i > 0 {
                state.push(',');
            }
            state.push_str(&entry.json);
        }
        state.push('}');
        state
    }

    /// `presence_state` for a client that just joined. From now on a meta
    /// it holds that leaves is told as a leave, even if its join is still
    /// in the pending diff.
    pub fn state_for_client(&mut self) -> String {
        self.pending_refs.clear();
        self.state_json()
    }

    /// When the pending diff may go out: `None` with nothing pending.
    pub fn diff_due(&self) -> Option<Instant> {
        if self.pending_joins.is_empty() && self.pending_leaves.is_empty() {
            return None;
        }
        Some(
            self.last_diff
                .map_or_else(Instant::now, |last| last + self.interval()),
        )
    }

    /// The pending `presence_diff` `{joins, leaves}`, if anything changed
    /// and the last diff was taken at least `diff_interval` before `now`;
    /// otherwise it stays pending (see [`Presence::diff_due`]).
    pub fn take_diff(&mut self, now: Instant) -> Option<String> {
        let pending = !self.pending_joins.is_empty() || !self.pending_leaves.is_empty();
        let waited = self
            .last_diff
            .is_none_or(|last| last + self.interval() <= now);
        if !(pending && waited) {
            return None;
        }
        self.last_diff = Some(now);
        self.pending_refs.clear();
        let shape = |m: BTreeMap<String, Vec<Value>>| -> Map<String, Value> {
            m.into_iter()
                .map(|(user, metas)| (user, serde_json::json!({ "metas": metas })))
                .collect()
        };
        let joins = shape(std::mem::take(&mut self.pending_joins));
        let leaves = shape(std::mem::take(&mut self.pending_leaves));
        Some(serde_json::json!({ "joins": joins, "leaves": leaves }).to_string())
    }

    /// Drops the pending diff: changes nobody is to be told of (a replay's).
    pub fn forget_diff(&mut self) {
        self.pending_joins.clear();
        self.pending_leaves.clear();
        self.pending_refs.clear();
    }

    /// Users present, and channels (tabs) in all.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.entries.len(),
            self.entries.values().map(|e| e.metas.len()).sum(),
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
mod tests;
