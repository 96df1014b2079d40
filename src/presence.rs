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

    /// Every diff at once, as the tests of shapes want.
    fn unpaced() -> Presence {
        Presence::default().with_diff_interval(Duration::ZERO)
    }

    #[test]
    fn joins_and_leaves_shape_state_and_diffs() {
        let mut p = unpaced();
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
        let diff = v(&p.take_diff(Instant::now()).unwrap());
        assert_eq!(diff["joins"]["alice"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(diff["leaves"], json!({}));
        assert!(p.take_diff(Instant::now()).is_none());
        assert!(p.leave(&a1));
        assert!(!p.leave(&a1));
        let diff = v(&p.take_diff(Instant::now()).unwrap());
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["phx_ref"], "1");
        assert_eq!(diff["joins"], json!({}));
    }

    #[test]
    fn a_join_and_leave_in_one_batch_cancel_out() {
        let mut p = unpaced();
        let a = conn("alice");
        p.join(&a, "1".into(), 1);
        p.leave(&a);
        assert!(p.take_diff(Instant::now()).is_none());
        assert_eq!(p.state_json(), "{}");
    }

    #[test]
    fn updates_are_leave_plus_join_with_prev_ref() {
        let mut p = unpaced();
        let a = conn("alice");
        p.join(&a, "7".into(), 1);
        p.take_diff(Instant::now());
        let now = Instant::now();
        p.update(&a, r#"{"typing":true,"phx_ref":"hack","online_at":5}"#, now)
            .unwrap();
        let diff = v(&p.take_diff(Instant::now()).unwrap());
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["phx_ref"], "7");
        let joined = &diff["joins"]["alice"]["metas"][0];
        assert_eq!(joined["phx_ref_prev"], "7");
        assert_eq!(joined["typing"], true);
        assert_eq!(joined["online_at"], 1, "reserved fields are the host's");
        assert_ne!(joined["phx_ref"], "7");
        // typing clears itself.
        assert_eq!(p.next_deadline(), Some(now + TYPING_TIMEOUT));
        assert!(p.expire_typing(now + Duration::from_secs(1)).is_some());
        assert!(p.take_diff(Instant::now()).is_none());
        assert!(p.expire_typing(now + TYPING_TIMEOUT).is_none());
        let diff = v(&p.take_diff(Instant::now()).unwrap());
        assert_eq!(diff["joins"]["alice"]["metas"][0]["typing"], false);
    }

    #[test]
    fn updates_are_checked_and_rate_limited() {
        let mut p = unpaced();
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

    /// The encoding `state_json` replaced: one serde_json object of every
    /// user's metas.
    fn reference_state(p: &Presence) -> String {
        let state: Map<String, Value> = p
            .entries
            .iter()
            .map(|(user, entry)| {
                let metas: Vec<Value> = entry.metas.iter().map(Meta::to_json).collect();
                (user.clone(), json!({ "metas": metas }))
            })
            .collect();
        Value::Object(state).to_string()
    }

    #[test]
    fn state_is_the_same_text_as_one_serde_json_object() {
        let mut p = unpaced();
        assert_eq!(p.state_json(), "{}");
        let users = ["zed", "al\"ice\\", "bob", "émile", "al", "bob"];
        let conns: Vec<Conn> = users.iter().map(|u| conn(u)).collect();
        for (i, c) in conns.iter().enumerate() {
            p.join(c, format!("{i}"), i as i64 * 1000);
            assert_eq!(p.state_json(), reference_state(&p));
        }
        let now = Instant::now();
        p.update(&conns[2], r#"{"typing":true,"name":"B \"b\""}"#, now)
            .unwrap();
        assert_eq!(p.state_json(), reference_state(&p));
        p.expire_typing(now + TYPING_TIMEOUT);
        assert_eq!(p.state_json(), reference_state(&p));
        p.leave(&conns[5]);
        p.leave(&conns[0]);
        assert_eq!(p.state_json(), reference_state(&p));
        assert!(!p.state_json().contains("zed"));
        for c in &conns {
            p.leave(c);
        }
        assert_eq!(p.state_json(), "{}");
    }

    #[test]
    fn a_meta_in_a_clients_state_leaves_in_the_diff_even_if_its_join_is_pending() {
        let mut p = unpaced();
        let (a, b) = (conn("alice"), conn("bob"));
        p.join(&a, "1".into(), 1);
        // bob joins and is told alice is here, before any diff went out.
        p.join(&b, "2".into(), 2);
        let bobs = v(&p.state_for_client());
        assert!(bobs["alice"].is_object());
        p.leave(&a);
        let diff = v(&p.take_diff(Instant::now()).unwrap());
        assert_eq!(diff["joins"]["alice"]["metas"][0]["phx_ref"], "1");
        assert_eq!(diff["leaves"]["alice"]["metas"][0]["phx_ref"], "1");
        assert_eq!(diff["joins"]["bob"]["metas"][0]["phx_ref"], "2");
    }

    #[test]
    fn diffs_are_paced_while_changes_keep_coming() {
        let interval = Duration::from_millis(20);
        let mut p = Presence::default().with_diff_interval(interval);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(p.diff_due(), None);
        assert!(p.take_diff(t0).is_none(), "nothing pending");
        p.join(&conn("a"), "1".into(), 1);
        // After a quiet spell: at once.
        let first = v(&p.take_diff(t0).unwrap());
        assert!(first["joins"]["a"].is_object());
        p.join(&conn("b"), "2".into(), 2);
        assert!(p.take_diff(ms(1)).is_none(), "within the interval");
        assert_eq!(p.diff_due(), Some(ms(20)));
        p.join(&conn("c"), "3".into(), 3);
        assert!(p.take_diff(ms(19)).is_none());
        let second = v(&p.take_diff(ms(20)).unwrap());
        assert_eq!(
            second["joins"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(p.diff_due(), None);
        // Quiet again for an interval: the next change goes out at once.
        p.join(&conn("d"), "4".into(), 4);
        assert!(p.take_diff(ms(40)).is_some());
    }

    #[test]
    fn the_interval_grows_with_the_tabs_a_diff_goes_to() {
        let mut p = Presence::default();
        let tabs: Vec<Conn> = (0..3000).map(|i| conn(&format!("u{i}"))).collect();
        for (i, c) in tabs.iter().take(1000).enumerate() {
            p.join(c, i.to_string(), 0);
        }
        let t0 = Instant::now();
        assert!(p.take_diff(t0).is_some());
        p.join(&tabs[1000], "1000".into(), 0);
        // 1,001 tabs × 50 µs.
        assert_eq!(p.diff_due(), Some(t0 + Duration::from_micros(50_050)));
        for (i, c) in tabs.iter().enumerate().skip(1001) {
            p.join(c, i.to_string(), 0);
        }
        assert_eq!(p.diff_due(), Some(t0 + MAX_DIFF_INTERVAL));
        for c in &tabs[10..] {
            p.leave(c);
        }
        assert_eq!(p.diff_due(), Some(t0 + DIFF_INTERVAL), "a small room again");
        // Zero turns pacing off whatever the size.
        let mut p = p.with_diff_interval(Duration::ZERO);
        assert!(p.take_diff(t0).is_some());
        p.leave(&tabs[0]);
        assert!(p.take_diff(t0).is_some());
    }

    /// A client's copy of the presence, kept as phoenix.js `Presence`
    /// does: `presence_state` replaces it; a diff's joins merge by
    /// `phx_ref`, then its leaves remove by `phx_ref`.
    #[derive(Default, Clone)]
    struct Client {
        metas: BTreeMap<String, Value>,
        /// Strict: this client saw every change (its state was empty), so
        /// every join must be new to it and every leave of a meta it has.
        strict: bool,
    }

    impl Client {
        fn from_state(state: &str) -> Client {
            let mut metas = BTreeMap::new();
            for (_, entry) in v(state).as_object().unwrap() {
                for m in entry["metas"].as_array().unwrap() {
                    metas.insert(m["phx_ref"].as_str().unwrap().to_string(), m.clone());
                }
            }
            Client {
                metas,
                strict: false,
            }
        }

        fn apply(&mut self, diff: &Value) {
            for (_, entry) in diff["joins"].as_object().unwrap() {
                for m in entry["metas"].as_array().unwrap() {
                    let r = m["phx_ref"].as_str().unwrap().to_string();
                    let old = self.metas.insert(r.clone(), m.clone());
                    assert!(!self.strict || old.is_none(), "join of {r} told twice");
                }
            }
            for (_, entry) in diff["leaves"].as_object().unwrap() {
                for m in entry["metas"].as_array().unwrap() {
                    let r = m["phx_ref"].as_str().unwrap();
                    let gone = self.metas.remove(r);
                    assert!(
                        !self.strict || gone.is_some(),
                        "leave of {r} before its join, or twice"
                    );
                }
            }
        }
    }

    #[test]
    fn every_client_ends_with_the_rooms_presence_whatever_the_pacing() {
        // A fixed pseudo-random walk of joins, leaves, updates and clients
        // joining (taking `presence_state`), at 0-9 ms steps against a
        // 20 ms interval, so diffs carry 1 to many changes.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        for _round in 0..20 {
            let mut p = Presence::default()
                .with_diff_interval(Duration::from_millis(20))
                .with_typing_timeout(Duration::from_millis(50));
            let t0 = Instant::now();
            let mut now = t0;
            let users = ["a", "b", "c", "d"];
            let mut tabs: Vec<Conn> = Vec::new();
            let mut refs = 0u64;
            let mut watcher = Client {
                strict: true,
                ..Client::default()
            };
            let mut clients: Vec<Client> = Vec::new();
            let mut diffs = 0;
            for _ in 0..300 {
                now += Duration::from_millis(next(10));
                match next(10) {
                    0..=3 => {
                        let c = conn(users[next(4) as usize]);
                        refs += 1;
                        p.join(&c, refs.to_string(), refs as i64);
                        tabs.push(c);
                    }
                    4..=5 if !tabs.is_empty() => {
                        let c = tabs.swap_remove(next(tabs.len() as u64) as usize);
                        assert!(p.leave(&c));
                    }
                    6 if !tabs.is_empty() => {
                        let c = &tabs[next(tabs.len() as u64) as usize];
                        let typing = next(2) == 0;
                        let _ = p.update(c, &format!(r#"{{"typing":{typing}}}"#), now);
                    }
                    7 => {
                        p.expire_typing(now);
                    }
                    8 => clients.push(Client::from_state(&p.state_for_client())),
                    _ => {}
                }
                if let Some(diff) = p.take_diff(now) {
                    diffs += 1;
                    let diff = v(&diff);
                    watcher.apply(&diff);
                    for c in &mut clients {
                        c.apply(&diff);
                    }
                }
            }
            // The last changes go out once the interval has passed.
            if let Some(due) = p.diff_due() {
                assert!(p.take_diff(due - Duration::from_nanos(1)).is_none());
                let diff = v(&p.take_diff(due).unwrap());
                watcher.apply(&diff);
                for c in &mut clients {
                    c.apply(&diff);
                }
            }
            assert!(p.diff_due().is_none());
            assert!(diffs > 10 && diffs < 300, "{diffs} diffs: some coalesced");
            let truth = Client::from_state(&p.state_json()).metas;
            assert_eq!(watcher.metas, truth, "the client that saw every diff");
            for (i, c) in clients.iter().enumerate() {
                assert_eq!(c.metas, truth, "client {i}, joined midway");
            }
        }
    }
}
