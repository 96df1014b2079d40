//! The room host core over real WebSockets: joins, broadcasts, replies,
//! script errors, the Phoenix protocol's edge cases, supervision.

mod common;

use std::time::Duration;

use common::{Client, Server, http, test_config, texts};
use serde_json::{Value, json};

const THROWER: &str = r#"
let count = 0;
export function onMessage(conn, event, payload) {
  if (event === "boom") { count += 100; throw new Error("kaboom: " + payload.why); }
  count += 1;
  return { count };
}
export function snapshot() { return { count }; }
export function restore(s) { count = s.count; }
"#;

async fn server() -> Server {
    Server::start(&[("thrower.js", THROWER)], test_config()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_gets_history_and_replies_carry_ids() {
    let server = server().await;
    let mut alice = server.client("alice").await;
    let (jr, response) = alice.join_ok("chat:lobby").await;
    assert_eq!(response, json!({"messages": []}));
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let reply = alice
            .call(&jr, "chat:lobby", "new_msg", json!({"text": text}))
            .await;
        assert_eq!(reply, json!({"status": "ok", "response": {"id": i + 1}}));
    }
    let mut bob = server.client("bob").await;
    let (_, response) = bob.join_ok("chat:lobby").await;
    assert_eq!(texts(&response["messages"]), ["one", "two", "three"]);
    let first = &response["messages"][0];
    assert_eq!(first["user"], "alice");
    assert_eq!(first["id"], 1);
    assert!(first["at"].as_i64().unwrap() > 1_600_000_000_000);
    let info = bob.event("chat:lobby", "room_info").await;
    assert_eq!(info[4]["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_client_in_one_order() {
    let server = server().await;
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        let mut c = server.client(user).await;
        let (jr, _) = c.join_ok("chat:order").await;
        clients.push((c, jr));
    }
    // All three send concurrently.
    let mut sends = Vec::new();
    for (c, jr) in clients.iter_mut() {
        for i in 0..10 {
            sends.push(
                c.push(
                    Some(jr),
                    "chat:order",
                    "new_msg",
                    json!({"text": format!("{i}")}),
                )
                .await,
            );
        }
    }
    let mut orders = Vec::new();
    for (c, _) in clients.iter_mut() {
        let mut ids = Vec::new();
        while ids.len() < 30 {
            let frame = c.event("chat:order", "new_msg").await;
            assert_eq!(frame[0], Value::Null, "broadcasts carry no join_ref");
            ids.push(frame[4]["id"].as_u64().unwrap());
        }
        orders.push(ids);
    }
    assert_eq!(orders[0], (1..=30).collect::<Vec<_>>());
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_sees_its_broadcast_before_its_reply() {
    let server = server().await;
    let mut alice = server.client("alice").await;
    let (jr, _) = alice.join_ok("chat:seq").await;
    let r = alice
        .push(Some(&jr), "chat:seq", "new_msg", json!({"text": "hi"}))
        .await;
    let first = alice
        .until(|v| v[3] == "new_msg" || v[3] == "phx_reply")
        .await;
    assert_eq!(first[3], "new_msg");
    assert_eq!(alice.reply(&r).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwing_handler_fails_that_call_only_and_rolls_back() {
    let server = server().await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("thrower:x").await;
    assert_eq!(
        c.call(&jr, "thrower:x", "inc", json!({})).await["response"]["count"],
        1
    );
    let reply = c
        .call(&jr, "thrower:x", "boom", json!({"why": "test"}))
        .await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "kaboom: test"}})
    );
    // The mutation before the throw left no trace.
    assert_eq!(
        c.call(&jr, "thrower:x", "inc", json!({})).await["response"]["count"],
        2
    );
    let state = server.api("/api/rooms/thrower:x/state").await;
    assert_eq!(state["state"]["count"], 2);
    // Script errors reach the room's console for the dashboard.
    let console = server.api("/api/rooms/thrower:x/console").await;
    assert!(
        console["lines"][0]["message"]
            .as_str()
            .unwrap()
            .contains("kaboom")
    );
    // chat.js refuses blank messages with a reason.
    let (jr, _) = c.join_ok("chat:x").await;
    let reply = c
        .call(&jr, "chat:x", "new_msg", json!({"text": "   "}))
        .await;
    assert_eq!(reply["response"]["reason"], "message is blank");
    // ... and a text that is not a string, rather than storing "[object Object]".
    for text in [json!({"a": 1}), json!(42), json!(null), json!(["hi"])] {
        let reply = c
            .call(&jr, "chat:x", "new_msg", json!({ "text": text }))
            .await;
        assert_eq!(
            reply["response"]["reason"], "text must be a string",
            "{text}"
        );
    }
    let reply = c.call(&jr, "chat:x", "new_msg", json!({})).await;
    assert_eq!(reply["response"]["reason"], "text must be a string");
    let history = server.api("/api/rooms/chat:x/state").await;
    assert_eq!(
        history["state"]["messages"],
        json!([]),
        "nothing was stored"
    );
    let reply = c
        .call(&jr, "chat:x", "new_msg", json!({"text": "x".repeat(2001)}))
        .await;
    assert_eq!(reply["status"], "error");
    let reply = c.call(&jr, "chat:x", "other", json!({})).await;
    assert_eq!(reply["response"]["reason"], "unknown event \"other\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_and_invalid_topics_are_refused() {
    let server = server().await;
    let mut c = server.client("alice").await;
    let (_, reply) = c.join("nosuch:room", json!({})).await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "unknown room kind"}})
    );
    for topic in [
        "chat",
        "chat:",
        "Chat:x",
        "chat:a/b",
        "chat:..%2f",
        "chat:a\\b",
        "chat:a\u{0}b",
    ] {
        let (_, reply) = c.join(topic, json!({})).await;
        assert_eq!(reply["status"], "error", "{topic}");
        assert!(
            reply["response"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("invalid topic"),
            "{topic}: {reply}"
        );
    }
    let long = format!("chat:{}", "x".repeat(65));
    let (_, reply) = c.join(&long, json!({})).await;
    assert_eq!(reply["status"], "error");
    // `..` is refused outright (the store would escape it anyway).
    for topic in [
        "chat:..",
        "chat:a..b",
        &format!("chat:{}", "x".repeat(10_000)),
    ] {
        let (_, reply) = c.join(topic, json!({})).await;
        assert_eq!(reply["status"], "error", "{topic}");
    }
    assert!(!server.data.path().join("rooms/chat/~2e~2e").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_or_a_close_with_reason() {
    let server = server().await;
    // Answerable: the frame says where it came from.
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("chat:m").await;
    for payload in ["[1]", "\"text\"", "5", "null"] {
        let r = c.next_ref();
        c.send_text(&format!(r#"["{jr}","{r}","chat:m","new_msg",{payload}]"#))
            .await;
        let reply = c.reply(&r).await;
        assert_eq!(
            reply["response"]["reason"], "payload must be a JSON object",
            "{payload}"
        );
    }
    let r = c.next_ref();
    c.send_text(&format!(r#"["{jr}","{r}","chat:m",42,{{}}]"#))
        .await;
    assert_eq!(c.reply(&r).await["status"], "error");
    // A push to a topic not joined.
    let reply = c
        .call("9", "chat:other", "new_msg", json!({"text": "x"}))
        .await;
    assert_eq!(reply["response"]["reason"], "unmatched topic");
    // A binary push reaches the script (as a Uint8Array), which refuses
    // it with its own reason; the connection still works afterwards.
    let mut binary = vec![0u8, 1, 1, 6, 7];
    binary.extend_from_slice(b"19chat:mnew_msg\x01\x02");
    c.send_binary(binary).await;
    let reply = c.reply("9").await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["response"]["reason"], "text must be a string");
    assert_eq!(
        c.call(&jr, "chat:m", "new_msg", json!({"text": "still here"}))
            .await["status"],
        "ok"
    );

    // Unanswerable: closed with a reason, never a hang.
    for garbage in [
        "not json",
        "[1,2,3]",
        r#"{"topic":"x"}"#,
        "[{},null,\"t\",\"e\",{}]",
    ] {
        let mut c = server.client("bob").await;
        c.send_text(garbage).await;
        let (code, reason) = c.closed().await.expect("a close frame");
        assert_eq!(code, 1007, "{garbage}");
        assert!(reason.starts_with("malformed frame"), "{garbage}: {reason}");
    }
    let mut c = server.client("carol").await;
    c.send_binary(vec![0xde, 0xad, 0xbe, 0xef]).await;
    assert_eq!(c.closed().await.unwrap().0, 1003);
    // The server is fine.
    let mut d = server.client("dave").await;
    d.join_ok("chat:m").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_idle_timeout() {
    let config = roomhost::Config {
        heartbeat_timeout: Duration::from_millis(700),
        ..test_config()
    };
    let server = Server::start(&[], config).await;
    let mut c = server.client("alice").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = c.call("", "phoenix", "heartbeat", json!({})).await;
        assert_eq!(reply, json!({"status": "ok", "response": {}}));
    }
    // V2 heartbeats have a null join_ref.
    c.send_text(r#"[null,"hb","phoenix","heartbeat",{}]"#).await;
    assert_eq!(c.reply("hb").await["status"], "ok");
    let started = std::time::Instant::now();
    let (code, reason) = c.closed().await.expect("closed by the server");
    assert_eq!((code, reason.as_str()), (1000, "heartbeat timeout"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_object_frames_work() {
    let server = server().await;
    let mut c = Client::connect(server.addr, "user=old").await;
    c.send_text(r#"{"topic":"chat:v1","event":"phx_join","payload":{},"ref":"1"}"#)
        .await;
    let reply = c.until(|v| v["event"] == "phx_reply").await;
    assert_eq!(reply["payload"]["status"], "ok");
    assert_eq!(reply["ref"], "1");
    c.send_text(r#"{"topic":"chat:v1","event":"new_msg","payload":{"text":"hi"},"ref":"2"}"#)
        .await;
    let broadcast = c.until(|v| v["event"] == "new_msg").await;
    assert_eq!(broadcast["payload"]["text"], "hi");
    let reply = c.until(|v| v["event"] == "phx_reply").await;
    assert_eq!(reply["payload"]["response"]["id"], 1);
    c.send_text(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}"#)
        .await;
    assert_eq!(c.until(|v| v["event"] == "phx_reply").await["ref"], "3");
    // Byte for byte what Phoenix's V1 serializer writes: no join_ref, keys
    // sorted. And V1 JSON in a binary frame is a frame like any other.
    c.send_binary(br#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"4"}"#.to_vec())
        .await;
    assert_eq!(
        c.next_text().await,
        r#"{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"4","topic":"phoenix"}"#
    );
    c.send_binary(
        br#"{"topic":"chat:v1","event":"new_msg","payload":{"text":"bin"},"ref":"5"}"#.to_vec(),
    )
    .await;
    let broadcast = c.until(|v| v["event"] == "new_msg").await;
    assert_eq!(broadcast["payload"]["text"], "bin");
    let keys: Vec<&str> = broadcast
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["event", "payload", "ref", "topic"]);
    let reply = c.until(|v| v["event"] == "phx_reply").await;
    assert_eq!(
        (reply["ref"].as_str(), reply.get("join_ref")),
        (Some("5"), None)
    );
    // A binary frame that is not UTF-8 cannot be V1 JSON.
    c.send_binary(vec![0xff, 0xfe]).await;
    assert_eq!(c.closed().await.unwrap().0, 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handshake_echoes_the_code_and_invalid_utf8_is_1007() {
    let server = server().await;
    let mut c = server.client("alice").await;
    c.join_ok("chat:close").await;
    assert_eq!(c.close_with(1000, "bye").await.map(|c| c.0), Some(1000));
    let mut c = server.client("bob").await;
    assert_eq!(c.close_with(4001, "going").await.map(|c| c.0), Some(4001));
    let mut c = server.client("carol").await;
    c.send_raw_text(b"[null,\"1\",\"phoenix\",\"heartbeat\",{\"x\":\"\xc3\x28\"}]".to_vec())
        .await;
    let (code, reason) = c.closed().await.expect("a close frame");
    assert_eq!(
        (code, reason.as_str()),
        (1007, "text frame is not valid UTF-8")
    );
    // The server is fine.
    server.client("dave").await.join_ok("chat:close").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_phx_events_never_reach_a_script() {
    let server = server().await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("chat:reserved").await;
    for event in ["phx_custom", "phx_reply", "phx_error", "phx_close"] {
        let reply = c
            .call(&jr, "chat:reserved", event, json!({"text": "x"}))
            .await;
        assert_eq!(reply["status"], "error", "{event}");
        assert_eq!(
            reply["response"]["reason"],
            format!("reserved event {event:?}"),
        );
    }
    // Nothing ran: the first message the chat room stores still gets id 1.
    let reply = c
        .call(&jr, "chat:reserved", "new_msg", json!({"text": "hi"}))
        .await;
    assert_eq!(reply["response"]["id"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_join_closes_the_old_channel_and_stale_refs_are_ignored() {
    let server = server().await;
    let mut c = server.client("alice").await;
    let (old, _) = c.join_ok("chat:dup").await;
    let (new, _) = c.join_ok("chat:dup").await;
    let close = c.event("chat:dup", "phx_close").await;
    assert_eq!(close[0], old.as_str());
    // Only one channel in the room.
    let info = server.api("/api/rooms/chat:dup").await;
    assert_eq!(info["channels"], 1);
    // A push with the old join_ref is ignored; the new one works.
    let stale = c
        .push(Some(&old), "chat:dup", "new_msg", json!({"text": "stale"}))
        .await;
    let reply = c
        .call(&new, "chat:dup", "new_msg", json!({"text": "fresh"}))
        .await;
    assert_eq!(reply["response"]["id"], 1, "the stale push never ran");
    let broadcast = c.event("chat:dup", "new_msg").await;
    assert_eq!(broadcast[4]["text"], "fresh");
    assert!(
        c.none_within(Duration::from_millis(200), |v| v[1] == stale.as_str())
            .await,
        "no reply to {stale}"
    );
    // Leave: ok, then phx_close; pushes are then unmatched.
    let r = c.push(Some(&new), "chat:dup", "phx_leave", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    c.event("chat:dup", "phx_close").await;
    let reply = c
        .call(&new, "chat:dup", "new_msg", json!({"text": "gone"}))
        .await;
    assert_eq!(reply["response"]["reason"], "unmatched topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_sends_phx_error_and_the_room_restarts_with_its_state() {
    let server = server().await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("chat:k").await;
    c.call(&jr, "chat:k", "new_msg", json!({"text": "before"}))
        .await;
    let killed = server.kill("chat:k").await;
    assert_eq!(killed, json!({"topic": "chat:k", "generation": 2}));
    let error = c.event("chat:k", "phx_error").await;
    assert_eq!(error[0], jr.as_str(), "phx_error carries the join_ref");
    // Pushes on the dead channel are unmatched until the client rejoins.
    let reply = c
        .call(&jr, "chat:k", "new_msg", json!({"text": "lost"}))
        .await;
    assert_eq!(reply["response"]["reason"], "unmatched topic");
    c.clear();
    let (jr, response) = c.join_ok("chat:k").await;
    assert_eq!(texts(&response["messages"]), ["before"]);
    let info = c.event("chat:k", "room_info").await;
    assert_eq!(info[0], jr.as_str());
    assert_eq!(info[4]["generation"], 2);
    assert_eq!(
        c.call(&jr, "chat:k", "new_msg", json!({"text": "after"}))
            .await["response"]["id"],
        2
    );
    let room = server.api("/api/rooms/chat:k").await;
    assert_eq!(
        (room["generation"].as_u64(), room["restarts"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(room["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_intensity_marks_a_room_failed_until_reset() {
    let server = server().await;
    let mut c = server.client("alice").await;
    c.join_ok("chat:poison").await;
    for _ in 0..5 {
        server.kill("chat:poison").await;
    }
    let (status, body) = http(server.addr, "POST", "/api/rooms/chat:poison/kill", None).await;
    assert_eq!(status, 503, "{body}");
    let room = server.api("/api/rooms/chat:poison").await;
    assert_eq!(room["state"], "failed");
    let failed = room["last_error"].as_str().unwrap().to_string();
    assert!(failed.starts_with("crashed 6 times within"), "{failed}");
    assert!(failed.ends_with("An admin must reset it, or its code must change."));
    let (_, reply) = c.join("chat:poison", json!({})).await;
    let reason = reply["response"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("room failed"), "{reason}");
    // The console tells why the room is quiet: each crash and the failure.
    let console = console_messages(&server, "chat:poison").await;
    let crashes = console
        .iter()
        .filter(|m| m.contains("crashed: killed"))
        .count();
    assert_eq!(crashes, 6, "{console:?}");
    assert!(
        console
            .last()
            .unwrap()
            .starts_with("[roomhost] room failed: crashed 6 times"),
        "{console:?}"
    );
    // Other rooms are unaffected.
    c.join_ok("chat:healthy").await;
    let (status, body) = http(server.addr, "POST", "/api/rooms/chat:poison/reset", None).await;
    assert_eq!(status, 200, "{body}");
    let (_, reply) = c.join("chat:poison", json!({})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // After the reset the last error says so, and what it was before.
    let room = server.api("/api/rooms/chat:poison").await;
    let after = room["last_error"].as_str().unwrap();
    let had = failed.trim_end_matches(". An admin must reset it, or its code must change.");
    assert_eq!(after, format!("reset by an admin; it had {had}"), "{room}");
    let console = console_messages(&server, "chat:poison").await;
    assert!(
        console
            .iter()
            .any(|m| m == "[roomhost] reset by an admin; starting again"),
        "{console:?}"
    );
}

/// The messages of a room's console lines, oldest first.
async fn console_messages(server: &Server, topic: &str) -> Vec<String> {
    let console = server.api(&format!("/api/rooms/{topic}/console")).await;
    console["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated() {
    let server = server().await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let (ja, _) = a.join_ok("chat:one").await;
    let (_, _) = b.join_ok("chat:two").await;
    a.call(&ja, "chat:one", "new_msg", json!({"text": "only one"}))
        .await;
    // b's own join brings room_info and presence; nothing else may arrive.
    let anything = |v: &Value| {
        v[2] != "chat:two"
            || !["room_info", "presence_state", "presence_diff"]
                .contains(&v[3].as_str().unwrap_or(""))
    };
    assert!(b.none_within(Duration::from_millis(300), anything).await);
    server.kill("chat:one").await;
    assert!(
        b.none_within(Duration::from_millis(300), anything).await,
        "killing one room does not touch another"
    );
    let two = server.api("/api/rooms/chat:two").await;
    assert_eq!(two["generation"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_joins_start_one_room() {
    let server = server().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, &format!("vsn=2.0.0&user=u{i}")).await;
            let (_, reply) = c.join("chat:rush", json!({})).await;
            (c, reply)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        let (c, reply) = t.await.unwrap();
        assert_eq!(reply["status"], "ok");
        clients.push(c);
    }
    let room = server.api("/api/rooms/chat:rush").await;
    assert_eq!(room["generation"], 1);
    assert_eq!(room["channels"], 50);
    let totals = server.api("/api/rooms").await["totals"].clone();
    assert_eq!(totals["room_starts"], 1, "{totals}");
}

const BLAST: &str = r#"
const chunk = "x".repeat(32 * 1024);
export function onMessage(conn, event, payload) {
  for (let i = 0; i < payload.n; i++) room.broadcast("blast", { i, chunk });
  return { sent: payload.n };
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_without_stalling_others() {
    let config = roomhost::Config {
        outbound_queue: 16,
        ..test_config()
    };
    let server = Server::start(&[("blast.js", BLAST)], config).await;
    let mut slow = server.client("slow").await;
    slow.join_ok("blast:flood").await;
    let mut fast = server.client("fast").await;
    let (jr, _) = fast.join_ok("blast:flood").await;
    // 16 MB of broadcasts, far beyond the slow client's socket buffers.
    let started = std::time::Instant::now();
    for round in 0..50 {
        let reply = fast.call(&jr, "blast:flood", "go", json!({"n": 10})).await;
        assert_eq!(reply["status"], "ok", "round {round}");
        for _ in 0..10 {
            fast.event("blast:flood", "blast").await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the room never waited on the slow client"
    );
    let room = server.api("/api/rooms/blast:flood").await;
    assert_eq!(room["channels"], 1, "the slow consumer was removed");
    // The slow client finds its connection closed after its buffered frames;
    // the close frame itself may not fit in its full socket.
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.closed())
        .await
        .unwrap();
    if let Some((code, reason)) = closed {
        assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    }
    // Counted once in the metrics.
    let counted = "roomhost_slow_consumer_disconnects_total 1\n";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http(server.addr, "GET", "/metrics", None).await;
        if metrics.as_str().unwrap_or_default().contains(counted) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
