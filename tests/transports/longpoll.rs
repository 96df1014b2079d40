//! Long-poll: sessions, polls, batches, expiry, shutdown and bad input.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::raw_http::request;
use crate::common::{Server, test_config};
use crate::longpoll_client::LongPoll;
use crate::{ROSTER, config, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longpoll_and_websocket_clients_share_a_room() {
    let server = server().await;
    let mut lp = LongPoll::open(server.addr, "polly").await;
    let (lp_ref, response) = lp.join("chat:mixed").await;
    assert_eq!(response, json!({"messages": []}));
    let info = lp.event("chat:mixed", "room_info").await;
    assert_eq!(info[0], json!(lp_ref), "pushes carry the join_ref");

    let mut ws = server.client("wes").await;
    let (ws_ref, _) = ws.join_ok("chat:mixed").await;

    // WebSocket → long-poll.
    let reply = ws
        .call(&ws_ref, "chat:mixed", "new_msg", json!({"text": "from ws"}))
        .await;
    assert_eq!(reply["status"], "ok");
    let msg = lp.event("chat:mixed", "new_msg").await;
    assert_eq!(
        (msg[4]["text"].as_str(), msg[4]["user"].as_str()),
        (Some("from ws"), Some("wes"))
    );

    // Long-poll → WebSocket; the sender sees its broadcast before its reply.
    let r = lp
        .push(&lp_ref, "chat:mixed", "new_msg", json!({"text": "from lp"}))
        .await;
    let first = lp
        .until(|v| v[3] == "new_msg" || (v[3] == "phx_reply" && v[1] == r))
        .await;
    assert_eq!(first[3], "new_msg");
    assert_eq!(first[4]["text"], "from lp");
    assert_eq!(
        lp.reply(&r).await,
        json!({"status": "ok", "response": {"id": 2}})
    );
    let msg = ws.until(|v| v[3] == "new_msg" && v[4]["id"] == 2).await;
    assert_eq!(
        (msg[4]["text"].as_str(), msg[4]["user"].as_str()),
        (Some("from lp"), Some("polly"))
    );

    // Heartbeats and leaves work as over a WebSocket.
    let hb = lp.next_ref();
    lp.post(&[json!([null, hb, "phoenix", "heartbeat", {}])])
        .await;
    assert_eq!(lp.reply(&hb).await, json!({"status": "ok", "response": {}}));
    let leave = lp.push(&lp_ref, "chat:mixed", "phx_leave", json!({})).await;
    assert_eq!(lp.reply(&leave).await["status"], "ok");
    lp.event("chat:mixed", "phx_close").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_handled_in_order_and_conn_meta_names_the_transport() {
    let server = server().await;
    let mut lp = LongPoll::open(server.addr, "batcher").await;
    let (jr, response) = lp.join("roster:batch").await;
    assert_eq!(response, json!({"transport": "longpoll"}));
    let frames: Vec<Value> = (0..20)
        .map(|i| json!([jr, format!("b{i}"), "roster:batch", "say", {"n": i}]))
        .collect();
    lp.post(&frames).await;
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let frame = lp.event("roster:batch", "say").await;
        assert_eq!(frame[4]["transport"], "longpoll");
        seen.push(frame[4]["n"].as_u64().unwrap());
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_poll_answers_204_and_a_newer_poll_takes_over() {
    let server = server().await;
    let lp = LongPoll::open(server.addr, "quiet").await;
    let started = std::time::Instant::now();
    let answer = lp.poll().await;
    assert_eq!(answer["status"], 204);
    assert_eq!(
        answer,
        json!({"status": 204, "token": lp.token, "messages": []})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "held for the window"
    );

    // A second poll while one is held: the first gives way at once.
    let path = lp.path();
    let addr = server.addr;
    let first = tokio::spawn(async move { request(addr, "GET", &path, &[], b"").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let second = tokio::spawn({
        let path = lp.path();
        async move { request(addr, "GET", &path, &[], b"").await }
    });
    let first = first.await.unwrap();
    assert_eq!(first.json()["status"], 204);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "superseded early"
    );
    assert_eq!(second.await.unwrap().json()["status"], 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stops_polling_expires_and_its_channels_leave() {
    let config = roomhost::Config {
        longpoll_window: Duration::from_millis(200),
        longpoll_timeout: Duration::from_millis(600),
        ..test_config()
    };
    let server = Server::start(&[("roster.js", ROSTER)], config).await;
    let mut watcher = server.client("watcher").await;
    watcher.join_ok("roster:expiry").await;
    let mut lp = LongPoll::open(server.addr, "sleepy").await;
    lp.join("roster:expiry").await;
    let info = server.api("/api/rooms/roster:expiry").await;
    assert_eq!(info["channels"], 2);
    // Presence is the same as over a WebSocket.
    let state = lp.event("roster:expiry", "presence_state").await;
    assert!(state[4]["watcher"]["metas"].is_array(), "{state}");
    let joined = watcher
        .until(|v| v[3] == "presence_diff" && v[4]["joins"].get("sleepy").is_some())
        .await;
    assert_eq!(joined[4]["leaves"], json!({}));

    // Polling keeps the session alive well past the timeout...
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let answer = lp.poll().await;
        assert!(
            answer["status"] == 200 || answer["status"] == 204,
            "{answer}"
        );
    }
    // ...and silence ends it: the channel leaves like a closed socket's.
    let left = watcher.event("roster:expiry", "left").await;
    assert_eq!(
        left[4],
        json!({"user": "sleepy", "transport": "longpoll", "reason": "disconnect"})
    );
    let gone = watcher
        .until(|v| v[3] == "presence_diff" && v[4]["leaves"].get("sleepy").is_some())
        .await;
    assert_eq!(gone[4]["joins"], json!({}), "{gone}");
    let info = server.api("/api/rooms/roster:expiry").await;
    assert_eq!(info["channels"], 1);
    let answer = lp.poll().await;
    assert_eq!(answer["status"], 410, "the session is gone: {answer}");
    assert!(answer.get("token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_a_held_poll_and_stops_promptly() {
    let config = roomhost::Config {
        longpoll_window: Duration::from_secs(20),
        ..test_config()
    };
    let server = Server::start(&[], config).await;
    let mut lp = LongPoll::open(server.addr, "late").await;
    lp.join("chat:closing").await;
    lp.event("chat:closing", "room_info").await;
    // The join's last frame: nothing is left to end the held poll early.
    lp.event("chat:closing", "presence_diff").await;
    let path = lp.path();
    let addr = server.addr;
    let held = tokio::spawn(async move { request(addr, "GET", &path, &[], b"").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answer = held.await.unwrap().json();
    let closed = answer["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|f| f.as_str().unwrap().contains("phx_close")));
    assert!(closed || answer["status"] == 410, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_may_travel_in_the_header() {
    let server = server().await;
    let lp = LongPoll::open(server.addr, "header").await;
    let frame = json!(["1", "1", "chat:header", "phx_join", {}]).to_string();
    let reply = request(
        server.addr,
        "POST",
        "/socket/longpoll",
        &[
            ("Content-Type", "application/x-ndjson"),
            ("X-Phoenix-Longpoll-Token", &lp.token),
        ],
        frame.as_bytes(),
    )
    .await;
    assert_eq!(reply.json(), json!({"status": 200, "token": lp.token}));
    let reply = request(
        server.addr,
        "GET",
        "/socket/longpoll",
        &[("X-Phoenix-Longpoll-Token", &lp.token)],
        b"",
    )
    .await;
    let answer = reply.json();
    assert_eq!(answer["status"], 200);
    assert!(
        answer["messages"][0]
            .as_str()
            .unwrap()
            .contains("phx_reply")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_long_poll_input_gets_documented_errors() {
    let config = roomhost::Config {
        max_frame_bytes: 1024,
        ..config()
    };
    let server = Server::start(&[], config).await;
    let addr = server.addr;
    let get = |path: String| async move { request(addr, "GET", &path, &[], b"").await };

    // Refused at connect: 403 in the body, like Phoenix, and as the HTTP
    // status, like every transport.
    let refused = get("/socket/longpoll?vsn=9.0.0".into()).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["status"], 403);
    assert!(
        refused.json()["reason"]
            .as_str()
            .unwrap()
            .contains("version")
    );

    // Unknown, forged or missing tokens: the session is gone.
    let mut lp = LongPoll::open(addr, "tester").await;
    let forged = format!("{}0", &lp.token[..lp.token.len() - 1]);
    let forged = if forged == lp.token {
        format!("{}1", &lp.token[..lp.token.len() - 1])
    } else {
        forged
    };
    for token in ["nonsense", "00.00", forged.as_str()] {
        let answer = get(format!("/socket/longpoll?token={token}")).await.json();
        assert_eq!(answer["status"], 410, "{token}: {answer}");
        let reply = request(
            addr,
            "POST",
            &format!("/socket/longpoll?token={token}"),
            &[("Content-Type", "application/x-ndjson")],
            b"[null,\"1\",\"phoenix\",\"heartbeat\",{}]",
        )
        .await;
        assert_eq!(
            (reply.status, reply.json()["status"].clone()),
            (200, json!(410))
        );
    }
    let reply = request(addr, "POST", "/socket/longpoll", &[], b"[]").await;
    assert_eq!(reply.json()["status"], 410);

    // Wrong content type.
    let (status, answer) = lp
        .post_raw("application/x-www-form-urlencoded", "a=b")
        .await;
    assert_eq!((status, &answer["status"]), (415, &json!(415)));
    assert!(answer["reason"].as_str().unwrap().contains("ndjson"));

    // Malformed ndjson: refused whole, nothing of it reaches a room.
    let body = format!(
        "{}\n{{not json\n",
        json!(["1", "1", "chat:bad", "phx_join", {}])
    );
    let (status, answer) = lp.post_raw("application/x-ndjson", &body).await;
    assert_eq!((status, &answer["status"]), (400, &json!(400)));
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with("frame 2: malformed frame")
    );
    assert_eq!(lp.poll().await["status"], 204, "the join was not handled");
    let (status, _) = lp.post_raw("application/x-ndjson", "\u{0}\u{1}[").await;
    assert_eq!(status, 400);

    // Oversized: too many frames, a frame over the limit, a body over the limit.
    let many: Vec<String> = (0..101)
        .map(|i| json!([null, i.to_string(), "phoenix", "heartbeat", {}]).to_string())
        .collect();
    let (status, answer) = lp.post_raw("application/x-ndjson", &many.join("\n")).await;
    assert_eq!((status, &answer["status"]), (413, &json!(413)));
    let big = json!([null, "1", "phoenix", "heartbeat", {"pad": "x".repeat(2000)}]).to_string();
    let (status, answer) = lp.post_raw("application/x-ndjson", &big).await;
    assert_eq!(status, 413);
    assert!(answer["reason"].as_str().unwrap().contains("1024 bytes"));
    let huge =
        vec![json!([null, "1", "phoenix", "heartbeat", {"pad": "x".repeat(900)}]).to_string(); 20];
    let (status, answer) = lp.post_raw("application/x-ndjson", &huge.join("\n")).await;
    assert_eq!(status, 413, "{answer}");

    // Frames that say where they came from are answered over the poll, and
    // the session carries on.
    let (jr, _) = lp.join("chat:bad").await;
    lp.post(&[
        json!([jr, "7", "chat:bad", "new_msg", [1, 2]]),
        json!([null, "8", "chat:nope", "new_msg", {}]),
    ])
    .await;
    assert_eq!(
        lp.reply("7").await,
        json!({"status": "error", "response": {"reason": "payload must be a JSON object"}})
    );
    assert_eq!(lp.reply("8").await["response"]["reason"], "unmatched topic");
    let r = lp
        .push(&jr, "chat:bad", "new_msg", json!({"text": "still fine"}))
        .await;
    assert_eq!(lp.reply(&r).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_long_poll_clients_get_object_frames() {
    let server = server().await;
    let reply = request(server.addr, "GET", "/socket/longpoll?user=old", &[], b"").await;
    let token = reply.json()["token"].as_str().unwrap().to_string();
    let join = json!({"topic": "chat:v1lp", "event": "phx_join", "payload": {}, "ref": "1"});
    let reply = request(
        server.addr,
        "POST",
        &format!("/socket/longpoll?token={token}"),
        &[("Content-Type", "application/json")],
        join.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.json()["status"], 200);
    let answer = request(
        server.addr,
        "GET",
        &format!("/socket/longpoll?token={token}"),
        &[],
        b"",
    )
    .await
    .json();
    let frame: Value = serde_json::from_str(answer["messages"][0].as_str().unwrap()).unwrap();
    assert_eq!(frame["event"], "phx_reply");
    assert_eq!(frame["payload"]["status"], "ok");
}

/// Kicks whoever it is told to.
const BOUNCER: &str = r#"
export function onMessage(conn, event, p) {
  if (event === "kick") return { kicked: room.kick(p.id, p.reason) };
  return { id: conn.id };
}
export function onLeave(conn, reason) { room.broadcast("left", { user: conn.user, reason }); }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_long_poll_channel_hears_why_and_is_closed() {
    let server = Server::start(&[("bouncer.js", BOUNCER)], config()).await;
    let topic = "bouncer:lp";
    let mut lp = LongPoll::open(server.addr, "polly").await;
    let (lp_ref, _) = lp.join(topic).await;
    let asked = lp.push(&lp_ref, topic, "who", json!({})).await;
    let id = lp.reply(&asked).await["response"]["id"].clone();
    let mut ws = server.client("wes").await;
    let (ws_ref, _) = ws.join_ok(topic).await;
    let reply = ws
        .call(
            &ws_ref,
            topic,
            "kick",
            json!({"id": id, "reason": "off topic"}),
        )
        .await;
    assert_eq!(reply["response"]["kicked"], true);
    let kicked = lp.event(topic, "kicked").await;
    assert_eq!(kicked[4], json!({"reason": "off topic"}));
    lp.event(topic, "phx_close").await;
    let left = ws.event(topic, "left").await;
    assert_eq!(left[4], json!({"user": "polly", "reason": "kicked"}));
}
