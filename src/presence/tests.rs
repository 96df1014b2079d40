//! Tests of the presence model: diffs paced, states encoded per user.

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
