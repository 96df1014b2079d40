//! Presence over real WebSockets: Phoenix shapes, several tabs per user,
//! meta updates, typing expiry, restarts without ghosts.

mod common;

use std::time::Duration;

use common::{Client, Server, test_config};
use serde_json::{Value, json};

const WHO: &str = r#"
export function onJoin(conn) { return { presence: room.presence() }; }
export function onMessage(conn, event) { return { presence: room.presence() }; }
export function onLeave(conn) { console.log("left; present:", Object.keys(room.presence()).join(",")); }
"#;

async fn server() -> Server {
    let config = roomhost::Config {
        typing_timeout: Duration::from_millis(400),
        ..test_config()
    };
    Server::start(&[("who.js", WHO)], config).await
}

/// Applies a presence_state / presence_diff the way phoenix.js does.
#[derive(Default)]
struct Mirror(serde_json::Map<String, Value>);

impl Mirror {
    fn apply(&mut self, frame: &Value) {
        match frame[3].as_str() {
            Some("presence_state") => self.0 = frame[4].as_object().unwrap().clone(),
            Some("presence_diff") => {
                for (user, p) in frame[4]["joins"].as_object().unwrap() {
                    let entry = self.0.entry(user.clone()).or_insert(json!({"metas": []}));
                    let metas = entry["metas"].as_array_mut().unwrap();
                    for m in p["metas"].as_array().unwrap() {
                        if !metas.iter().any(|x| x["phx_ref"] == m["phx_ref"]) {
                            metas.push(m.clone());
                        }
                    }
                }
                for (user, p) in frame[4]["leaves"].as_object().unwrap() {
                    if let Some(entry) = self.0.get_mut(user) {
                        let refs: Vec<&Value> = p["metas"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| &m["phx_ref"])
                            .collect();
                        entry["metas"]
                            .as_array_mut()
                            .unwrap()
                            .retain(|m| !refs.contains(&&m["phx_ref"]));
                        if entry["metas"].as_array().unwrap().is_empty() {
                            self.0.remove(user);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn tabs(&self, user: &str) -> usize {
        self.0
            .get(user)
            .map_or(0, |p| p["metas"].as_array().unwrap().len())
    }

    fn users(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// Reads presence frames until `done(mirror)` holds.
async fn sync_until(
    c: &mut Client,
    topic: &str,
    mirror: &mut Mirror,
    mut done: impl FnMut(&Mirror) -> bool,
) {
    while !done(mirror) {
        let frame = c
            .until(|v| v[2] == topic && (v[3] == "presence_state" || v[3] == "presence_diff"))
            .await;
        mirror.apply(&frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_tracks_users_and_tabs() {
    let server = server().await;
    let mut alice1 = server.client("alice").await;
    let (_, response) = alice1.join_ok("who:room").await;
    // onJoin runs with presence already updated.
    assert_eq!(
        response["presence"]["alice"]["metas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut view = Mirror::default();
    sync_until(&mut alice1, "who:room", &mut view, |m| m.tabs("alice") == 1).await;

    let mut alice2 = server.client("alice").await;
    alice2.join_ok("who:room").await;
    let mut bob = server.client("bob").await;
    let (bob_ref, response) = bob.join_ok("who:room").await;
    assert_eq!(response["presence"].as_object().unwrap().len(), 2);
    let state = bob.event("who:room", "presence_state").await;
    assert_eq!(
        state[0],
        bob_ref.as_str(),
        "presence_state carries the join_ref"
    );
    let meta = &state[4]["bob"]["metas"][0];
    assert!(meta["phx_ref"].is_string());
    assert!(meta["online_at"].as_i64().unwrap() > 1_600_000_000_000);

    sync_until(&mut alice1, "who:room", &mut view, |m| {
        m.tabs("alice") == 2 && m.tabs("bob") == 1
    })
    .await;
    assert_eq!(view.users(), ["alice", "bob"]);

    // A tab closes: its meta leaves; alice is still there with one tab.
    alice2.close().await;
    sync_until(&mut alice1, "who:room", &mut view, |m| m.tabs("alice") == 1).await;
    assert_eq!(view.tabs("bob"), 1);
    bob.close().await;
    sync_until(&mut alice1, "who:room", &mut view, |m| m.tabs("bob") == 0).await;
    assert_eq!(view.users(), ["alice"]);
    let console = server.api("/api/rooms/who:room/console").await;
    let last = console["lines"].as_array().unwrap().last().unwrap()["message"].clone();
    assert_eq!(
        last, "left; present: alice",
        "onLeave runs with presence already updated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_updates_and_typing_expiry() {
    let server = server().await;
    let mut alice = server.client("alice").await;
    let (ja, _) = alice.join_ok("chat:typing").await;
    let mut bob = server.client("bob").await;
    bob.join_ok("chat:typing").await;
    let mut view = Mirror::default();
    sync_until(&mut bob, "chat:typing", &mut view, |m| {
        m.tabs("alice") == 1 && m.tabs("bob") == 1
    })
    .await;

    let reply = alice
        .call(
            &ja,
            "chat:typing",
            "presence_update",
            json!({"typing": true}),
        )
        .await;
    assert_eq!(reply, json!({"status": "ok", "response": {}}));
    let diff = bob
        .until(|v| v[3] == "presence_diff" && v[4]["joins"]["alice"].is_object())
        .await;
    let joined = &diff[4]["joins"]["alice"]["metas"][0];
    let left = &diff[4]["leaves"]["alice"]["metas"][0];
    assert_eq!(joined["typing"], true);
    assert_eq!(
        joined["phx_ref_prev"], left["phx_ref"],
        "an update is a leave plus a join"
    );
    view.apply(&diff);
    assert_eq!(view.0["alice"]["metas"][0]["typing"], true);
    // No refresh: typing clears itself.
    let diff = bob
        .until(|v| v[3] == "presence_diff" && v[4]["joins"]["alice"]["metas"][0]["typing"] == false)
        .await;
    view.apply(&diff);
    assert_eq!(view.tabs("alice"), 1);

    // Bad updates are answered, not applied.
    let reply = alice
        .call(
            &ja,
            "chat:typing",
            "presence_update",
            json!({"x": "y".repeat(600)}),
        )
        .await;
    assert_eq!(reply["status"], "error");
    let mut limited = false;
    for _ in 0..30 {
        let reply = alice
            .call(
                &ja,
                "chat:typing",
                "presence_update",
                json!({"typing": true}),
            )
            .await;
        if reply["response"]["reason"] == "rate_limited" {
            limited = true;
            break;
        }
    }
    assert!(limited, "presence updates are rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_comes_back_after_a_kill_without_ghosts() {
    let server = server().await;
    let mut alice = server.client("alice").await;
    alice.join_ok("who:k").await;
    let mut bob = server.client("bob").await;
    bob.join_ok("who:k").await;
    server.kill("who:k").await;
    alice.event("who:k", "phx_error").await;
    bob.event("who:k", "phx_error").await;
    // Only alice rejoins: bob must not linger as a ghost.
    alice.clear();
    let (_, response) = alice.join_ok("who:k").await;
    let presence = response["presence"].as_object().unwrap();
    assert_eq!(
        presence.keys().collect::<Vec<_>>(),
        ["alice"],
        "{presence:?}"
    );
    let state = alice.event("who:k", "presence_state").await;
    assert_eq!(state[4].as_object().unwrap().len(), 1);
    assert_eq!(state[4]["alice"]["metas"].as_array().unwrap().len(), 1);
}

/// A client's presence kept strictly: after its `presence_state`, every
/// join a diff tells must be new to it (or one of the state's own metas,
/// told once more: a diff still pending when the state was taken), and
/// every leave must be of a meta it has. A lost, repeated or reordered
/// diff fails one of these.
struct StrictMirror {
    metas: std::collections::BTreeMap<String, String>,
    in_state: std::collections::BTreeSet<String>,
    diffs: usize,
}

impl StrictMirror {
    fn from_state(state: &Value) -> StrictMirror {
        let mut metas = std::collections::BTreeMap::new();
        for (user, p) in state.as_object().unwrap() {
            for m in p["metas"].as_array().unwrap() {
                metas.insert(m["phx_ref"].as_str().unwrap().to_string(), user.clone());
            }
        }
        let in_state = metas.keys().cloned().collect();
        StrictMirror {
            metas,
            in_state,
            diffs: 0,
        }
    }

    fn apply(&mut self, diff: &Value) {
        self.diffs += 1;
        for (user, p) in diff["joins"].as_object().unwrap() {
            for m in p["metas"].as_array().unwrap() {
                let r = m["phx_ref"].as_str().unwrap().to_string();
                let again = self.metas.insert(r.clone(), user.clone()).is_some();
                assert!(
                    !again || self.in_state.remove(&r),
                    "join of {user} {r} told twice: {diff}"
                );
            }
        }
        for (user, p) in diff["leaves"].as_object().unwrap() {
            for m in p["metas"].as_array().unwrap() {
                let r = m["phx_ref"].as_str().unwrap();
                assert!(
                    self.metas.remove(r).is_some(),
                    "leave of {user} {r} it never had: {diff}"
                );
            }
        }
    }

    fn users(&self) -> std::collections::BTreeSet<String> {
        self.metas.values().cloned().collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_and_leaves_reaches_a_watcher_whole_and_in_order() {
    let server = server().await;
    let mut watcher = server.client("watcher").await;
    watcher.join_ok("who:burst").await;
    let state = watcher.event("who:burst", "presence_state").await;
    let mut mirror = StrictMirror::from_state(&state[4]);
    // 40 tabs join at once; every other one leaves right after its join,
    // so joins and leaves of the same metas fall into the same diffs, and
    // the tabs that stay took their states while those diffs were pending.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let client = server.client(&format!("u{i:02}")).await;
        tasks.spawn(async move {
            let mut client = client;
            client.join_ok("who:burst").await;
            if i % 2 == 0 {
                client.close().await;
                None
            } else {
                let state = client.event("who:burst", "presence_state").await;
                let mut view = Mirror::default();
                view.apply(&state);
                Some((client, view))
            }
        });
    }
    let mut staying = Vec::new();
    while let Some(done) = tasks.join_next().await {
        staying.extend(done.unwrap());
    }
    let expected: std::collections::BTreeSet<String> = std::iter::once("watcher".to_string())
        .chain((1..40).step_by(2).map(|i| format!("u{i:02}")))
        .collect();
    while mirror.users() != expected {
        let diff = watcher
            .until(|v| v[2] == "who:burst" && v[3] == "presence_diff")
            .await;
        mirror.apply(&diff[4]);
    }
    // Nothing more is owed: a late tab's state is what the watcher has.
    let mut late = server.client("late").await;
    late.join_ok("who:burst").await;
    let state = late.event("who:burst", "presence_state").await;
    let late_view = StrictMirror::from_state(&state[4]);
    let mut theirs = late_view.metas.clone();
    theirs.retain(|_, user| user != "late");
    assert_eq!(mirror.metas, theirs);
    let diff = watcher
        .until(|v| v[2] == "who:burst" && v[3] == "presence_diff")
        .await;
    mirror.apply(&diff[4]);
    assert_eq!(
        diff[4]["joins"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["late"]
    );
    assert_eq!(diff[4]["leaves"], json!({}));
    eprintln!("{} diffs for 61 changes", mirror.diffs);
    // Every tab that joined midway, applying diffs as phoenix.js does, ends
    // where the watcher is: no meta it was told of stays behind as a ghost.
    let refs = |view: &Mirror| -> std::collections::BTreeSet<String> {
        view.0
            .values()
            .flat_map(|p| p["metas"].as_array().unwrap().clone())
            .map(|m| m["phx_ref"].as_str().unwrap().to_string())
            .collect()
    };
    let truth: std::collections::BTreeSet<String> = mirror.metas.keys().cloned().collect();
    for (mut client, mut view) in staying {
        loop {
            let diff = client
                .until(|v| v[2] == "who:burst" && v[3] == "presence_diff")
                .await;
            view.apply(&diff);
            if diff[4]["joins"].get("late").is_some() {
                break;
            }
        }
        assert_eq!(refs(&view), truth, "a tab that joined midway");
    }
}
