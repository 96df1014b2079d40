//! Durability: nothing acknowledged is lost — across room kills, `kill -9`
//! of the server, torn or corrupt files, idle stops and graceful shutdowns.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Binary, Client, Server, test_config, texts};
use serde_json::{Value, json};

/// What one sender learned about its messages.
#[derive(Default, Debug)]
struct Outcome {
    /// (reply id, text) of messages answered ok, in reply order.
    acked: Vec<(u64, String)>,
    /// Texts answered with an error.
    refused: Vec<String>,
    /// Texts that got no answer before the channel or connection died.
    unknown: Vec<String>,
}

impl Outcome {
    /// Notes the `phx_reply` frame that answered the message `text`.
    fn record(&mut self, reply: &Value, text: String) {
        if reply[4]["status"] == "ok" {
            self.acked
                .push((reply[4]["response"]["id"].as_u64().unwrap(), text));
        } else {
            self.refused.push(text);
        }
    }
}

/// What every sender learned, once all of them stopped.
async fn all_outcomes(senders: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for s in senders {
        outcomes.push(s.await.unwrap());
    }
    outcomes
}

/// Sends `new_msg` continuously with up to 4 in flight until the channel
/// errors or the connection drops (or `limit` messages were sent).
async fn send_until_broken(mut c: Client, topic: &str, prefix: &str, limit: usize) -> Outcome {
    let (jr, _) = c.join_ok(topic).await;
    let mut outcome = Outcome::default();
    let mut in_flight: HashMap<String, String> = HashMap::new();
    let mut sent = 0;
    loop {
        while in_flight.len() < 4 && sent < limit {
            let text = format!("{prefix}-{sent}");
            sent += 1;
            match c
                .try_push(Some(&jr), topic, "new_msg", json!({"text": text}))
                .await
            {
                Some(r) => in_flight.insert(r, text),
                None => {
                    outcome.unknown.push(text);
                    break;
                }
            };
        }
        if sent >= limit && in_flight.is_empty() {
            break;
        }
        let Some(frame) = c.next().await else { break };
        match frame[3].as_str() {
            Some("phx_reply") => {
                let Some(text) = frame[1].as_str().and_then(|r| in_flight.remove(r)) else {
                    continue;
                };
                outcome.record(&frame, text);
            }
            Some("phx_error") => break,
            _ => {}
        }
    }
    outcome.unknown.extend(in_flight.into_values());
    outcome
}

/// Like chat.js, but keeps every message, so a test can see them all.
const BOOK: &str = r#"
let messages = [];
export function onMessage(conn, event, payload) {
  const msg = { id: messages.length + 1, text: payload.text };
  messages.push(msg);
  room.broadcast("new_msg", msg);
  return { id: msg.id };
}
export function snapshot() { return { messages }; }
export function restore(s) { messages = s.messages; }
"#;

fn texts_in_state(state: &Value) -> Vec<String> {
    texts(&state["state"]["messages"])
}

/// Every acknowledged message is in `state` exactly once and in id order;
/// refused ones are absent; unknown ones appear at most once (or, when
/// `strict_unknown`, not at all).
fn check_outcomes(state_texts: &[String], outcomes: &[Outcome], strict_unknown: bool) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in state_texts {
        *counts.entry(t).or_default() += 1;
    }
    let mut acked: Vec<&(u64, String)> = outcomes.iter().flat_map(|o| &o.acked).collect();
    assert!(!acked.is_empty(), "some messages were acknowledged");
    acked.sort();
    for (id, text) in &acked {
        assert_eq!(
            counts.get(text.as_str()),
            Some(&1),
            "acked {text} (id {id}) exactly once; state has {} messages, first {:?}, acked {}",
            state_texts.len(),
            &state_texts[..state_texts.len().min(8)],
            acked.len()
        );
    }
    let positions: Vec<usize> = acked
        .iter()
        .map(|(_, t)| state_texts.iter().position(|s| s == t).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "acked messages in reply-id order"
    );
    for o in outcomes {
        for t in &o.refused {
            assert!(!counts.contains_key(t.as_str()), "refused {t} absent");
        }
        for t in &o.unknown {
            let n = counts.get(t.as_str()).copied().unwrap_or(0);
            if strict_unknown {
                assert_eq!(n, 0, "{t} was never acknowledged, so it must not appear");
            } else {
                assert!(n <= 1, "{t} at most once");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_room_loses_nothing_acknowledged() {
    let server = Server::start(&[("book.js", BOOK)], test_config()).await;
    let mut senders = Vec::new();
    for who in ["a", "b", "c"] {
        let c = server.client(who).await;
        senders.push(tokio::spawn(send_until_broken(
            c,
            "book:durable",
            who,
            100_000,
        )));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = server.kill("book:durable").await;
    assert_eq!(killed["generation"], 2);
    let outcomes = all_outcomes(senders).await;
    let state = server.api("/api/rooms/book:durable/state").await;
    let texts = texts_in_state(&state);
    // In-process crashes discard journaled but unreleased events, so even
    // messages whose reply was lost in flight are absent.
    check_outcomes(&texts, &outcomes, true);
    let total: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    assert!(total >= 3, "acked {total}");
    assert_eq!(texts.len(), total);
}

fn binary_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let extra = [("det.js", DETERMINISTIC), ("book.js", BOOK)];
    (common::rooms_dir(&extra), tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    kill_dash_nine(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_with_frequent_snapshots_loses_nothing_acknowledged() {
    kill_dash_nine(&["--snapshot-events", "25"]).await;
}

async fn kill_dash_nine(args: &[&str]) {
    let (rooms, data) = binary_dirs();
    let server = Binary::start(rooms.path(), data.path(), args).await;
    let mut senders = Vec::new();
    for who in ["a", "b", "c"] {
        let c = server.client(who).await;
        senders.push(tokio::spawn(send_until_broken(c, "book:k9", who, 100_000)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill_9().await;
    let outcomes = all_outcomes(senders).await;
    let server = Binary::start(rooms.path(), data.path(), args).await;
    let state = server.api("/api/rooms/book:k9/state").await;
    check_outcomes(&texts_in_state(&state), &outcomes, false);
}

const DETERMINISTIC: &str = r#"
let log = [];
export function onMessage(conn, event, payload) {
  log.push({ now: Date.now(), iso: new Date().toISOString(), r: Math.random(),
             u: crypto.randomUUID(), who: conn.user, n: payload.n });
  return { n: log.length };
}
export function snapshot() { return { log }; }
export function restore(state) { log = state.log; }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_byte_identical_state() {
    let (rooms, data) = binary_dirs();
    // Snapshot every 4 events, so a restart restores one and replays the rest.
    let args = ["--snapshot-events", "4"];
    let server = Binary::start(rooms.path(), data.path(), &args).await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("det:x").await;
    for n in 0..10 {
        c.call(&jr, "det:x", "go", json!({"n": n})).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let before = server.api("/api/rooms/det:x/state").await;
    assert_eq!(before["state"]["log"].as_array().unwrap().len(), 10);
    // A room kill replays inside the process...
    common::http(server.addr, "POST", "/api/rooms/det:x/kill", None).await;
    let after_kill = server.api("/api/rooms/det:x/state").await;
    assert_eq!(before["state"], after_kill["state"]);
    // ...and kill -9 replays from disk.
    server.kill_9().await;
    let server = Binary::start(rooms.path(), data.path(), &args).await;
    let after_restart = server.api("/api/rooms/det:x/state").await;
    assert_eq!(
        serde_json::to_string(&before["state"]).unwrap(),
        serde_json::to_string(&after_restart["state"]).unwrap()
    );
}

fn room_dir(data: &Path, kind: &str, name: &str) -> PathBuf {
    data.join("rooms").join(kind).join(name)
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .filter(|p| !p.to_str().unwrap().ends_with(".corrupt"))
        .collect();
    files.sort();
    files
}

/// Every file of a room's directory with its length.
fn sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    files(dir, "")
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

/// Sends `n` messages and returns the still-connected client, so that its
/// leave is not the journal's last record.
async fn fill(server: &Binary, topic: &str, n: usize) -> Client {
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok(topic).await;
    for i in 0..n {
        let reply = c
            .call(&jr, topic, "new_msg", json!({"text": format!("m{i}")}))
            .await;
        assert_eq!(reply["status"], "ok");
    }
    c
}

/// Where a journal segment's records end (zeroed space follows them).
fn records_end(path: &std::path::Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    data.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_and_flipped_tails_are_truncated_and_logged() {
    let (rooms, data) = binary_dirs();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let _alice = fill(&server, "chat:torn", 5).await;
    server.kill_9().await;
    let dir = room_dir(data.path(), "chat", "torn");
    let journal = files(&dir, "journal-").pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(records_end(&journal) - 3)
        .unwrap();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let state = server.api("/api/rooms/chat:torn/state").await;
    assert_eq!(texts_in_state(&state), ["m0", "m1", "m2", "m3"]);
    assert!(server.logged("dropped").await, "{}", server.log());
    // Flip a byte in the (new) last record.
    let _alice = fill(&server, "chat:torn", 1).await;
    server.kill_9().await;
    let mut bytes = std::fs::read(&journal).unwrap();
    let at = records_end(&journal) as usize - 5;
    bytes[at] ^= 0x20;
    std::fs::write(&journal, bytes).unwrap();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let state = server.api("/api/rooms/chat:torn/state").await;
    let texts = texts_in_state(&state);
    assert_eq!(texts[..4], ["m0", "m1", "m2", "m3"]);
    assert!(server.logged("checksum mismatch").await, "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_falls_back_to_the_previous_one() {
    let (rooms, data) = binary_dirs();
    let args = ["--snapshot-events", "3"];
    let server = Binary::start(rooms.path(), data.path(), &args).await;
    let _alice = fill(&server, "chat:snap", 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let snapshot writes land
    server.kill_9().await;
    let dir = room_dir(data.path(), "chat", "snap");
    let snapshots = files(&dir, "snapshot-");
    assert_eq!(snapshots.len(), 2, "two snapshots kept: {snapshots:?}");
    let newest = snapshots.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(newest, bytes).unwrap();
    let server = Binary::start(rooms.path(), data.path(), &args).await;
    let state = server.api("/api/rooms/chat:snap/state").await;
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(texts_in_state(&state), expected);
    assert!(server.logged("corrupt").await, "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwing_handler_leaves_no_trace_after_restart() {
    const THROWER: &str = r#"
        let count = 0;
        export function onMessage(conn, event) {
          count += 1;
          if (event === "boom") throw new Error("boom");
          return { count };
        }
        export function snapshot() { return { count }; }
        export function restore(s) { count = s.count; }
    "#;
    let server = Server::start(&[("thrower.js", THROWER)], test_config()).await;
    let mut c = server.client("a").await;
    let (jr, _) = c.join_ok("thrower:t").await;
    c.call(&jr, "thrower:t", "inc", json!({})).await;
    assert_eq!(
        c.call(&jr, "thrower:t", "boom", json!({})).await["status"],
        "error"
    );
    server.kill("thrower:t").await;
    let state = server.api("/api/rooms/thrower:t/state").await;
    assert_eq!(state["state"]["count"], 1);
    let (rooms, data) = server.stop().await;
    let server = Server::start_in(rooms, data, test_config()).await;
    let state = server.api("/api/rooms/thrower:t/state").await;
    assert_eq!(state["state"]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_stop_and_wake_with_their_state() {
    let config = roomhost::Config {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = Server::start(&[], config).await;
    let mut c = server.client("a").await;
    let (jr, _) = c.join_ok("chat:nap").await;
    c.call(
        &jr,
        "chat:nap",
        "new_msg",
        json!({"text": "before the nap"}),
    )
    .await;
    c.close().await;
    let mut stopped = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopped = server.api("/api/rooms/chat:nap").await;
        if stopped["state"] == "stopped" {
            break;
        }
    }
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["journal_bytes"].as_u64().unwrap() > 0);
    let listed = server.api("/api/rooms").await;
    assert!(
        listed["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["topic"] == "chat:nap" && r["state"] == "stopped")
    );
    let mut c = server.client("b").await;
    let (_, response) = c.join_ok("chat:nap").await;
    assert_eq!(response["messages"][0]["text"], "before the nap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_leaves_a_snapshot_and_no_journal_tail() {
    let server = Server::start(&[], test_config()).await;
    let mut c = server.client("a").await;
    let (jr, _) = c.join_ok("chat:bye").await;
    for i in 0..5 {
        c.call(&jr, "chat:bye", "new_msg", json!({"text": format!("m{i}")}))
            .await;
    }
    let stop = tokio::spawn(server.stop());
    // No phx_close (a client does not rejoin a closed channel): the
    // connection closes with 1001, and clients rejoin on the next server.
    let mut frames = Vec::new();
    while let Some(frame) = c.next().await {
        frames.push(frame);
    }
    assert!(
        !frames.iter().any(|f| f[3] == "phx_close"),
        "{frames:?} (join ref {jr})"
    );
    assert_eq!(
        c.closed,
        Some((1001, "server shutting down".to_string())),
        "{frames:?}"
    );
    let (rooms, data) = stop.await.unwrap();
    let dir = room_dir(data.path(), "chat", "bye");
    let snapshot = files(&dir, "snapshot-").pop().expect("a snapshot");
    let seq: u64 = snapshot.file_stem().unwrap().to_str().unwrap()["snapshot-".len()..]
        .parse()
        .unwrap();
    for journal in files(&dir, "journal-") {
        let start: u64 = journal.file_stem().unwrap().to_str().unwrap()["journal-".len()..]
            .parse()
            .unwrap();
        let len = std::fs::metadata(&journal).unwrap().len();
        assert!(
            start <= seq || len == 0,
            "no events after the snapshot: {journal:?}"
        );
    }
    let server = Server::start_in(rooms, data, test_config()).await;
    let mut c = server.client("b").await;
    let (_, response) = c.join_ok("chat:bye").await;
    assert_eq!(response["messages"].as_array().unwrap().len(), 5);
}

/// Like `send_until_broken`, but rejoins after every `phx_error` and keeps
/// sending until `deadline`.
async fn send_through_crashes(
    mut c: Client,
    topic: &str,
    prefix: &str,
    deadline: tokio::time::Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut sent = 0;
    while tokio::time::Instant::now() < deadline {
        c.clear();
        let (jr, reply) = c.join(topic, json!({})).await;
        if reply["status"] != "ok" {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut in_flight: HashMap<String, String> = HashMap::new();
        loop {
            while in_flight.len() < 4 && tokio::time::Instant::now() < deadline {
                let text = format!("{prefix}-{sent}");
                sent += 1;
                let r = c
                    .push(Some(&jr), topic, "new_msg", json!({"text": text}))
                    .await;
                in_flight.insert(r, text);
            }
            if in_flight.is_empty() {
                break;
            }
            let frame = c.next().await.expect("connection stays open");
            match frame[3].as_str() {
                Some("phx_reply") => {
                    if let Some(text) = frame[1].as_str().and_then(|r| in_flight.remove(r)) {
                        outcome.record(&frame, text);
                    }
                }
                Some("phx_error") if frame[0] == jr.as_str() => break,
                _ => {}
            }
        }
        outcome.unknown.extend(in_flight.into_values());
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_under_load_lose_nothing_acknowledged() {
    let config = roomhost::Config {
        snapshot_every_events: 50,
        max_restarts: 100,
        ..test_config()
    };
    let server = Server::start(&[("book.js", BOOK)], config).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut senders = Vec::new();
    for who in ["a", "b", "c"] {
        let c = server.client(who).await;
        senders.push(tokio::spawn(send_through_crashes(
            c,
            "book:storm",
            who,
            deadline,
        )));
    }
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill("book:storm").await;
    }
    let outcomes = all_outcomes(senders).await;
    let state = server.api("/api/rooms/book:storm/state").await;
    let texts = texts_in_state(&state);
    check_outcomes(&texts, &outcomes, false);
    let refused: usize = outcomes.iter().map(|o| o.refused.len()).sum();
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    assert!(acked > 50, "acked {acked}, refused {refused}");
    assert_eq!(
        texts.len(),
        acked,
        "only acknowledged messages are in the state"
    );
}

/// Runs `roomhost inspect` with `args` on the binary's directories.
fn inspect(
    rooms: &tempfile::TempDir,
    data: &tempfile::TempDir,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .arg("inspect")
        .args(args)
        .arg("--rooms")
        .arg(rooms.path())
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_prints_state_and_journal_without_touching_it() {
    let (rooms, data) = binary_dirs();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let _alice = fill(&server, "chat:look", 3).await;
    server.kill_9().await;
    let dir = room_dir(data.path(), "chat", "look");
    let before = sizes(&dir);
    let output = inspect(&rooms, &data, &["chat:look", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["journal"]["by_kind"],
        json!({"join": 1, "message": 3})
    );
    assert_eq!(report["members"][0][1], "alice");
    assert_eq!(texts_in_state(&report["state"]), ["m0", "m1", "m2"]);
    let after = sizes(&dir);
    assert_eq!(before, after, "inspect is read-only");
    // Text output for people.
    let output = inspect(&rooms, &data, &["chat:look"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("journal   4 events"), "{text}");
}

/// A room whose hooks are cheap spins here on demand: `spin` runs ~1M loop
/// iterations (milliseconds even in a release build), `noop` nothing.
const SPIN: &str = r#"
let n = 0;
export function onMessage(conn, event, payload) {
  if (event === "spin") { let x = 0; for (let i = 0; i < 1e6; i++) x += i; n += x > 0 ? 1 : 0; }
  return { n };
}
export function snapshot() { return { n }; }
export function restore(s) { n = s.n; }
"#;

/// Waits up to 2 s for a snapshot file in the room's directory.
async fn snapshot_appears(dir: &Path) -> bool {
    for _ in 0..40 {
        if dir.is_dir() && !files(dir, "snapshot-").is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_comes_when_replaying_the_journal_would_take_long() {
    let mut config = roomhost::Config {
        snapshot_every_events: 1_000_000,
        snapshot_replay: Duration::from_millis(10),
        ..test_config()
    };
    config.script_limits.cpu_per_call = Duration::from_secs(5);
    let server = Server::start(&[("spin.js", SPIN)], config).await;
    let mut c = server.client("alice").await;
    let dir = |name: &str| room_dir(server.data.path(), "spin", name);

    // Cheap hooks: a join and three events are far from 10 ms of replay.
    let (cheap, _) = c.join_ok("spin:cheap").await;
    for _ in 0..3 {
        let reply = c.call(&cheap, "spin:cheap", "noop", json!({})).await;
        assert_eq!(reply["status"], "ok");
    }
    // One costly hook is replay enough for a snapshot.
    let (costly, _) = c.join_ok("spin:costly").await;
    let reply = c.call(&costly, "spin:costly", "spin", json!({})).await;
    assert_eq!(reply["status"], "ok");
    assert!(
        snapshot_appears(&dir("costly")).await,
        "a costly event snapshots"
    );
    assert!(
        files(&dir("cheap"), "snapshot-").is_empty(),
        "cheap events do not snapshot"
    );
    let reply = c.call(&cheap, "spin:cheap", "spin", json!({})).await;
    assert_eq!(reply["status"], "ok");
    assert!(
        snapshot_appears(&dir("cheap")).await,
        "then a costly one does"
    );
}
