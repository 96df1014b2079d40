//! The room API beyond join/message/leave: durable timers, HTTP requests
//! into a room, kick, and exactly-once messages between rooms, against a
//! real server (and the real binary where a `kill -9` is needed).

mod common;

use std::time::{Duration, Instant};

use common::raw_http::request;
use common::{Binary, Client, Server, test_config};
use serde_json::{Value, json};

/// A kind whose timers record their firings in its state.
const TIMERS: &str = r#"
let fired = [];
export function onMessage(conn, event, p) {
  if (event === "set") { room.setTimer(p.name, p.ms, p.payload); return { timers: room.timers() }; }
  if (event === "clear") return { cleared: room.clearTimer(p.name) };
  if (event === "list") return { timers: room.timers() };
  throw new Error("unknown event");
}
export function onTimer(name, payload, info) {
  fired.push({ name, payload, late: info.late_ms, at: Date.now() });
  room.broadcast("fired", { name, payload, late_ms: info.late_ms });
  if (name === "again" && fired.filter((f) => f.name === "again").length < 3) room.setTimer("again", 30);
  if (name === "bad") throw new Error("a broken timer");
}
export function snapshot() { return { fired }; }
export function restore(s) { fired = s.fired; }
"#;

async fn state(addr: std::net::SocketAddr, topic: &str) -> Value {
    common::http(addr, "GET", &format!("/api/rooms/{topic}/state"), None)
        .await
        .1["state"]
        .clone()
}

/// Waits until the room's state satisfies `done` (bounded).
async fn state_until(
    addr: std::net::SocketAddr,
    topic: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = state(addr, topic).await;
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn room_starts(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("roomhost_room_starts_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("roomhost_room_starts_total")
}

fn names(fired: &Value) -> Vec<String> {
    fired
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_in_order_with_their_payloads_and_refuse_bad_arguments() {
    let server = Server::start(&[("t.js", TIMERS)], test_config()).await;
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok("t:order").await;
    for (name, ms) in [("c", 600), ("a", 400), ("b", 500)] {
        let reply = c
            .call(
                &jr,
                "t:order",
                "set",
                json!({"name": name, "ms": ms, "payload": {"n": name}}),
            )
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    let listed = c.call(&jr, "t:order", "list", json!({})).await;
    let listed: Vec<&str> = listed["response"]["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a", "b", "c"], "room.timers() lists by due time");
    // Replacing a timer by name, and clearing one.
    c.call(&jr, "t:order", "set", json!({"name": "c", "ms": 50}))
        .await;
    let cleared = c.call(&jr, "t:order", "clear", json!({"name": "b"})).await;
    assert_eq!(cleared["response"]["cleared"], true);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = c.event("t:order", "fired").await;
        seen.push(frame[4]["name"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["c", "a"]);
    let fired = state(server.addr, "t:order").await["fired"].clone();
    assert_eq!(names(&fired), ["c", "a"]);
    assert_eq!(fired[1]["payload"], json!({"n": "a"}));
    assert!(fired[1]["late"].as_i64().unwrap() < 100, "{fired}");

    // A timer that re-arms itself in onTimer, and one whose onTimer throws
    // (dropped, not fired again and again).
    c.call(&jr, "t:order", "set", json!({"name": "again", "ms": 30}))
        .await;
    c.call(&jr, "t:order", "set", json!({"name": "bad", "ms": 20}))
        .await;
    let fired = state_until(server.addr, "t:order", |s| names(&s["fired"]).len() >= 6).await;
    let names = names(&fired["fired"]);
    assert_eq!(
        names.iter().filter(|n| *n == "again").count(),
        3,
        "{names:?}"
    );
    assert!(
        !names.contains(&"bad".to_string()),
        "a throwing onTimer is rolled back: {names:?}"
    );
    let timers = c.call(&jr, "t:order", "list", json!({})).await;
    assert_eq!(
        timers["response"]["timers"],
        json!([]),
        "the bad timer is gone"
    );

    for bad in [
        json!({"name": "x", "ms": 5}),
        json!({"name": "", "ms": 100}),
        json!({"name": "x", "ms": "soon"}),
    ] {
        let reply = c.call(&jr, "t:order", "set", bad.clone()).await;
        assert_eq!(reply["status"], "error", "{bad}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_may_hold_at_most_a_thousand_timers() {
    let many = r#"
export function onMessage(conn, event, p) {
  for (let i = 0; i < p.n; i++) room.setTimer(`t${p.from + i}`, 3600000);
  return { n: room.timers().length };
}"#;
    let server = Server::start(&[("many.js", many)], test_config()).await;
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok("many:x").await;
    let reply = c
        .call(&jr, "many:x", "set", json!({"n": 1000, "from": 0}))
        .await;
    assert_eq!(reply["response"]["n"], 1000);
    let reply = c
        .call(&jr, "many:x", "set", json!({"n": 1, "from": 1000}))
        .await;
    assert_eq!(reply["status"], "error");
    assert!(
        reply["response"]["reason"]
            .as_str()
            .unwrap()
            .contains("at most 1000"),
        "{reply}"
    );
    let reply = c
        .call(&jr, "many:x", "set", json!({"n": 1, "from": 5}))
        .await;
    assert_eq!(
        reply["response"]["n"], 1000,
        "re-setting an existing name is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_survive_a_kill_and_an_idle_stop_and_replay_to_the_same_state() {
    let config = roomhost::Config {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = Server::start(&[("t.js", TIMERS)], config).await;
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok("t:durable").await;
    c.call(&jr, "t:durable", "set", json!({"name": "early", "ms": 100}))
        .await;
    c.call(
        &jr,
        "t:durable",
        "set",
        json!({"name": "after-kill", "ms": 800}),
    )
    .await;
    c.event("t:durable", "fired").await;
    server.kill("t:durable").await;
    let fired = state_until(server.addr, "t:durable", |s| names(&s["fired"]).len() >= 2).await;
    assert_eq!(
        names(&fired["fired"]),
        ["early", "after-kill"],
        "fired once each across the kill"
    );
    // Rebuilt from its journal (a second kill), the room is the same.
    server.kill("t:durable").await;
    assert_eq!(state(server.addr, "t:durable").await, fired);

    // No channel: the room stops when idle, and starts again for its timer.
    let (jr, _) = c.join_ok("t:durable").await; // the kills closed the channel
    let reply = c
        .call(
            &jr,
            "t:durable",
            "set",
            json!({"name": "while-stopped", "ms": 1500}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    c.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let room = server.api("/api/rooms/t:durable").await;
        if room["state"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "the room did not stop: {room}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing touches the room: its own wakeup starts it (and it fires).
    let starts = || async { room_starts(&server.metrics().await) };
    let stopped_starts = starts().await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(starts().await > stopped_starts, "started for its timer");
    let fired = state(server.addr, "t:durable").await;
    assert_eq!(
        names(&fired["fired"]),
        ["early", "after-kill", "while-stopped"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_while_the_server_was_down_fires_once_at_start_with_its_lateness() {
    let rooms = common::rooms_dir(&[("t.js", TIMERS)]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok("t:down").await;
    let reply = c
        .call(&jr, "t:down", "set", json!({"name": "late", "ms": 400}))
        .await;
    assert_eq!(reply["status"], "ok");
    server.kill_9().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Nobody joins: the restarted server starts the room for its timer.
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let fired = state_until(server.addr, "t:down", |s| !names(&s["fired"]).is_empty()).await;
    assert_eq!(names(&fired["fired"]), ["late"]);
    let late = fired["fired"][0]["late"].as_i64().unwrap();
    assert!(late >= 700, "it fired {late} ms late");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(&state(server.addr, "t:down").await["fired"]),
        ["late"],
        "once"
    );
    server.terminate().await;
}

/// A kind that answers HTTP requests with what it was sent.
const ECHO: &str = r#"
let hits = 0;
export function onMessage() { return { hits }; }
export function onRequest(req) {
  hits += 1;
  if (req.path === "/boom") throw new Error("it broke");
  if (req.path === "/teapot") return { status: 418, headers: { "x-kind": "tea" }, body: "short and stout" };
  return { hits, method: req.method, path: req.path, query: req.query, headers: req.headers, body: req.body };
}
export function snapshot() { return { hits }; }
export function restore(s) { hits = s.hits; }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_request_answers_http_requests_as_journaled_events() {
    let server = Server::start(&[("echo.js", ECHO)], test_config()).await;
    let addr = server.addr;
    let reply = request(
        addr,
        "POST",
        "/rooms/echo:a/http/items/7?sort=new&token=secret",
        &[
            ("Content-Type", "text/plain"),
            ("X-Trace", "abc"),
            ("Cookie", "s=1"),
        ],
        b"hello",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let echoed = reply.json();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/items/7");
    assert_eq!(
        echoed["query"],
        json!({"sort": "new"}),
        "the token stays out"
    );
    assert_eq!(echoed["body"], "hello");
    assert_eq!(echoed["headers"]["x-trace"], "abc");
    assert!(echoed["headers"].get("cookie").is_none(), "{echoed}");
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let reply = request(addr, method, "/rooms/echo:a/http", &[], b"").await;
        assert_eq!(
            (reply.status, reply.json()["path"].clone()),
            (200, json!("/")),
            "{method}"
        );
    }
    let tea = request(addr, "GET", "/rooms/echo:a/http/teapot", &[], b"").await;
    assert_eq!(tea.status, 418);
    assert_eq!(tea.header("x-kind"), Some("tea"));
    assert_eq!(tea.body, "short and stout");
    let boom = request(addr, "GET", "/rooms/echo:a/http/boom", &[], b"").await;
    assert_eq!(
        (boom.status, boom.json()["reason"].clone()),
        (500, json!("it broke"))
    );
    // A kind without onRequest, an unknown kind, a bad topic, a big body.
    let none = request(addr, "GET", "/rooms/chat:a/http/x", &[], b"").await;
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(
        none.json()["reason"]
            .as_str()
            .unwrap()
            .contains("onRequest")
    );
    assert_eq!(
        request(addr, "GET", "/rooms/nokind:a/http", &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        request(addr, "GET", "/rooms/bad%20topic/http", &[], b"")
            .await
            .status,
        400
    );
    let big = vec![b'x'; 70 * 1024];
    assert_eq!(
        request(addr, "POST", "/rooms/echo:a/http", &[], &big)
            .await
            .status,
        413
    );
    // Requests are events: journaled, so they survive a restart; the thrown
    // one left no trace.
    let before = request(addr, "GET", "/rooms/echo:a/http", &[], b"")
        .await
        .json()["hits"]
        .clone();
    let (rooms, data) = server.stop().await;
    let server = Server::start_in(rooms, data, test_config()).await;
    let after = request(server.addr, "GET", "/rooms/echo:a/http", &[], b"")
        .await
        .json()["hits"]
        .clone();
    assert_eq!(after.as_i64().unwrap(), before.as_i64().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_http_post_rules() {
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";
    let secret = roomhost::auth::Secret::new(SECRET).unwrap();
    let config = roomhost::Config {
        auth_secret: roomhost::auth::Secret::new(SECRET),
        msg_rate: 1,
        msg_burst: 4,
        limit_loopback: true,
        ..test_config()
    };
    let server = Server::start(&[("echo.js", ECHO)], config).await;
    let addr = server.addr;
    let refused = request(addr, "GET", "/rooms/echo:r/http", &[], b"").await;
    assert_eq!(refused.status, 403, "a token is required: {}", refused.body);
    let token = roomhost::auth::mint(&secret, "ann", Duration::from_secs(60));
    let path = format!("/rooms/echo:r/http?token={token}");
    let origin = request(
        addr,
        "GET",
        &path,
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(origin.status, 403, "a foreign origin: {}", origin.body);
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(request(addr, "GET", &path, &[], b"").await.status);
        }
        out
    };
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "rate limited: {statuses:?}"
    );
}

/// A kind whose script kicks whoever it is told to.
const BOUNCER: &str = r#"
export const left = [];
let gone = [];
export function onMessage(conn, event, p) {
  if (event === "kick") return { kicked: room.kick(p.id, p.reason) };
  if (event === "who") return { ids: room.connections().map((c) => c.id), gone };
  throw new Error("unknown");
}
export function onLeave(conn, reason) { gone.push([conn.user, reason]); }
export function snapshot() { return { gone }; }
export function restore(s) { gone = s.gone; }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_a_channel_for_good_and_runs_on_leave() {
    let server = Server::start(&[("bouncer.js", BOUNCER)], test_config()).await;
    let topic = "bouncer:a";
    let mut ann = server.client("ann").await;
    let (ann_ref, _) = ann.join_ok(topic).await;
    let mut bob = server.client("bob").await;
    let (bob_ref, _) = bob.join_ok(topic).await;
    let ids = ann.call(&ann_ref, topic, "who", json!({})).await["response"]["ids"].clone();
    let bob_id = ids
        .as_array()
        .unwrap()
        .iter()
        .find(|id| *id != &ids[0])
        .unwrap()
        .clone();
    let reply = ann
        .call(
            &ann_ref,
            topic,
            "kick",
            json!({"id": bob_id, "reason": "spam"}),
        )
        .await;
    assert_eq!(reply["response"]["kicked"], true);
    let kicked = bob.event(topic, "kicked").await;
    assert_eq!(kicked[4], json!({"reason": "spam"}));
    assert_eq!(kicked[0], json!(bob_ref), "addressed to the join");
    let close = bob.event(topic, "phx_close").await;
    assert_eq!(close[0], json!(bob_ref));
    let pushed = bob.call(&bob_ref, topic, "who", json!({})).await;
    assert_eq!(
        pushed["response"]["reason"], "unmatched topic",
        "the channel is gone"
    );
    let who = ann.call(&ann_ref, topic, "who", json!({})).await["response"].clone();
    assert_eq!(who["gone"], json!([["bob", "kicked"]]));
    assert_eq!(who["ids"].as_array().unwrap().len(), 1);
    let again = ann
        .call(&ann_ref, topic, "kick", json!({"id": bob_id}))
        .await;
    assert_eq!(again["response"]["kicked"], false, "not a member any more");
}

/// Sends `n` messages to `to` in one event.
const SENDER: &str = r#"
export function onMessage(conn, event, p) {
  if (event === "go") { for (let i = 0; i < p.n; i++) room.send(p.to, "add", { i }); return {}; }
  if (event === "bad") { room.send(p.to, "add", {}); return {}; }
  throw new Error("unknown");
}
"#;

/// Counts what other rooms send it, per sender, in order; each message takes
/// a while, so a kill lands mid-stream.
const SINK: &str = r#"
let got = {}; let total = 0;
export function onMessage(conn, event, p) {
  if (!conn.meta.room) return { total, got };
  if (p.i === undefined) throw new Error("no i");
  let x = 0;
  for (let k = 0; k < 20000; k++) x += k; // a hook that takes a while
  (got[conn.user] ??= []).push(p.i);
  total += 1;
  room.broadcast("got", { from: conn.user, i: p.i });
  return {};
}
export function snapshot() { return { got, total }; }
export function restore(s) { ({ got, total } = s); }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_arrives_once_with_the_sender_as_conn_and_bad_sends_throw() {
    let server = Server::start(&[("sender.js", SENDER), ("sink.js", SINK)], test_config()).await;
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok("sender:a").await;
    let (sink_ref, _) = c.join_ok("sink:a").await;
    let reply = c
        .call(&jr, "sender:a", "go", json!({"n": 3, "to": "sink:a"}))
        .await;
    assert_eq!(reply["status"], "ok");
    for i in 0..3 {
        let got = c.event("sink:a", "got").await;
        assert_eq!(got[4], json!({"from": "sender:a", "i": i}));
    }
    let counted = c.call(&sink_ref, "sink:a", "count", json!({})).await;
    assert_eq!(counted["response"]["total"], 3);
    for (to, why) in [
        ("nokind:x", "unknown room kind"),
        ("bad topic", "topic"),
        ("sink:a", "at most 100"),
    ] {
        let n = if why == "at most 100" { 101 } else { 1 };
        let reply = c
            .call(&jr, "sender:a", "go", json!({"n": n, "to": to}))
            .await;
        assert_eq!(reply["status"], "error", "{to}");
        let reason = reply["response"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("room.send") && reason.contains(why),
            "{reason}"
        );
    }
    // A message the target keeps refusing is dropped after 5 tries (each
    // throw is rolled back, but the room's console keeps it).
    c.call(&jr, "sender:a", "bad", json!({"to": "sink:a"}))
        .await;
    c.call(&jr, "sender:a", "go", json!({"n": 1, "to": "sink:a"}))
        .await;
    let sink = state_until(server.addr, "sink:a", |s| s["total"] == 4).await;
    assert_eq!(
        sink["got"]["sender:a"],
        json!([0, 1, 2, 0]),
        "the next one gets through"
    );
    let console = server.api("/api/rooms/sink:a/console").await;
    let refusals = console["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["message"].as_str().unwrap_or("").contains("no i"))
        .count();
    assert_eq!(refusals, 5, "tried five times, then dropped: {console}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_room_messages_from_ten_rooms_arrive_exactly_once_across_a_kill_9() {
    let rooms = common::rooms_dir(&[("sender.js", SENDER), ("sink.js", SINK)]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let mut senders: Vec<(Client, String, String)> = Vec::new();
    for s in 0..10 {
        let topic = format!("sender:s{s}");
        let mut c = server.client(&format!("u{s}")).await;
        let (jr, _) = c.join_ok(&topic).await;
        senders.push((c, jr, topic));
    }
    // The sink takes its time, so the kill lands while messages flow.
    let slow_sink = "sink:total";
    for (c, jr, topic) in &mut senders {
        let reply = c
            .call(jr, topic, "go", json!({"n": 100, "to": slow_sink}))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = state(server.addr, slow_sink).await["total"]
        .as_i64()
        .unwrap_or(0);
    server.kill_9().await;
    let server = Binary::start(rooms.path(), data.path(), &[]).await;
    let sink = state_until(server.addr, slow_sink, |s| {
        s["total"].as_i64() >= Some(1000)
    })
    .await;
    println!("{before} of 1000 delivered before the kill -9");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sink = if sink["total"] == 1000 {
        state(server.addr, slow_sink).await
    } else {
        sink
    };
    assert_eq!(sink["total"], 1000, "exactly once: {}", sink["total"]);
    for s in 0..10 {
        let got = &sink["got"][format!("sender:s{s}")];
        let expected: Vec<i64> = (0..100).collect();
        assert_eq!(got, &json!(expected), "sender {s} in order, once each");
    }
    server.terminate().await;
}

/// A kind without snapshot(): it replays its journal when it wakes.
const TALLY: &str = r#"
let n = 0;
export function onMessage(conn, event) { n += 1; return { n }; }
"#;

async fn until_state(server: &Server, topic: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let room = server.api(&format!("/api/rooms/{topic}")).await;
        if room["state"] == state {
            return room;
        }
        assert!(Instant::now() < deadline, "never {state}: {room}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_hibernates_with_its_channels_and_wakes_for_the_next_event() {
    let config = roomhost::Config {
        hibernate_after: Duration::from_millis(300),
        ..test_config()
    };
    let server = Server::start(&[("t.js", TIMERS), ("tally.js", TALLY)], config).await;
    let mut ann = server.client("ann").await;
    let (ja, _) = ann.join_ok("chat:nap").await;
    let mut bob = server.client("bob").await;
    let (jb, _) = bob.join_ok("chat:nap").await;
    // Both joins told before the room sleeps (bob's diff may be paced).
    ann.until(|v| v[3] == "presence_diff" && v[4]["joins"]["bob"].is_object())
        .await;
    let first = ann
        .call(&ja, "chat:nap", "new_msg", json!({"text": "one"}))
        .await;
    ann.clear();
    let asleep = until_state(&server, "chat:nap", "hibernated").await;
    assert_eq!(
        (asleep["js_memory"].as_u64(), asleep["channels"].as_u64()),
        (Some(0), Some(2)),
        "{asleep}"
    );
    // Looking does not wake it.
    assert_eq!(
        server.api("/api/rooms/chat:nap").await["state"],
        "hibernated"
    );
    let second = bob
        .call(&jb, "chat:nap", "new_msg", json!({"text": "two"}))
        .await;
    assert_eq!(
        second["response"]["id"],
        first["response"]["id"].as_i64().unwrap() + 1
    );
    let got = ann.event("chat:nap", "new_msg").await;
    assert_eq!(got[4]["text"], "two");
    assert!(
        ann.none_within(Duration::from_millis(200), |f| f[3] != "new_msg")
            .await,
        "a wake is invisible: no phx_error, no presence change"
    );
    let room = server.api("/api/rooms/chat:nap").await;
    assert_eq!(
        (room["state"].as_str(), room["generation"].as_u64()),
        (Some("running"), Some(1))
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("roomhost_room_hibernations_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("roomhost_room_wakes_total 1"), "{metrics}");

    // A kind without snapshot() replays to wake; a timer wakes a room too.
    let (jt, _) = ann.join_ok("tally:nap").await;
    ann.call(&jt, "tally:nap", "add", json!({})).await;
    until_state(&server, "tally:nap", "hibernated").await;
    assert_eq!(
        ann.call(&jt, "tally:nap", "add", json!({})).await["response"]["n"],
        2
    );
    let (jtm, _) = ann.join_ok("t:nap").await;
    ann.call(&jtm, "t:nap", "set", json!({"name": "wake", "ms": 900}))
        .await;
    until_state(&server, "t:nap", "hibernated").await;
    let fired = ann.event("t:nap", "fired").await;
    assert_eq!(fired[4]["name"], "wake");
    // A kill of a hibernated room restarts it as usual.
    until_state(&server, "chat:nap", "hibernated").await;
    let killed = server.kill("chat:nap").await;
    assert_eq!(killed["generation"], 2, "{killed}");
}
