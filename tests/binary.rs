//! Binary payloads end to end, over raw WebSockets: a V2 binary push
//! reaches the script as a `Uint8Array`, its binary reply and broadcast come
//! back as Phoenix lays them out, the journal replays them byte for byte
//! after a kill, oversized frames are refused, and connections that cannot
//! carry bytes (V1, long-poll, SSE) get a clear stand-in, never garbage.
//!
//! Frame layouts are those of `Phoenix.Socket.V2.JSONSerializer` and
//! phoenix.js's `serializer.js` (phoenixframework/phoenix at 167c469).

mod common;

use common::{Client, Server, WAIT, http, test_config};
use serde_json::{Value, json};

/// Keeps every binary update, relays it, answers with a binary count.
const KIND: &str = r#"
const updates = [];
export function onJoin() { return { updates: updates.length }; }
export function onMessage(conn, event, payload) {
  switch (event) {
    case "update":
      if (!(payload instanceof Uint8Array)) throw new Error("update needs bytes");
      updates.push(payload);
      room.broadcast("update", payload, { except: conn.id });
      return new Uint8Array([updates.length]);
    case "history":
      for (const u of updates) room.push(conn.id, "update", u);
      return { count: updates.length };
    case "kind":
      return { bytes: payload instanceof Uint8Array };
    case "binary_reply":
      return new Uint8Array([7, 7]);
    default:
      throw new Error(`unknown event ${event}`);
  }
}
"#;

const TOPIC: &str = "bin:doc";

/// `binaryEncode` of phoenix.js: `<<0, join_ref_size, ref_size,
/// topic_size, event_size, join_ref, ref, topic, event, payload>>`.
fn binary_push(join_ref: &str, r: &str, topic: &str, event: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ];
    for field in [join_ref, r, topic, event] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// `<<1, join_ref_size, ref_size, topic_size, status_size, join_ref, ref,
/// topic, status, data>>` (`encode!(%Reply{payload: {:binary, _}})`).
fn binary_reply(join_ref: &str, r: &str, topic: &str, status: &str, data: &[u8]) -> Vec<u8> {
    let mut out = vec![
        1,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        status.len() as u8,
    ];
    for field in [join_ref, r, topic, status] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `<<2, topic_size, event_size, topic, event, data>>` (`fastlane!`).
fn binary_broadcast(topic: &str, event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = vec![2, topic.len() as u8, event.len() as u8];
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(data);
    out
}

/// `<<0, join_ref_size, topic_size, event_size, join_ref, topic, event,
/// data>>`: a server push has no ref.
fn binary_server_push(join_ref: &str, topic: &str, event: &str, data: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0,
        join_ref.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ];
    for field in [join_ref, topic, event] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Bytes no text frame could carry: NUL, 0xff, a lone UTF-8 continuation.
fn update(n: u8) -> Vec<u8> {
    vec![0x00, 0xff, 0x80, n, b'{', 0xfe]
}

async fn v1_client(server: &Server, user: &str) -> Client {
    Client::connect(server.addr, &format!("vsn=1.0.0&user={user}")).await
}

/// A V1 join (objects, no join_ref): returns the join's ref.
async fn v1_join(c: &mut Client, topic: &str) -> String {
    let r = c.next_ref();
    let frame = json!({"topic": topic, "event": "phx_join", "payload": {}, "ref": r});
    c.send_text(&frame.to_string()).await;
    let reply = c
        .until(|v| v["event"] == "phx_reply" && v["ref"] == r)
        .await;
    assert_eq!(reply["payload"]["status"], "ok", "{reply}");
    r
}

#[tokio::test]
async fn binary_pushes_replies_and_broadcasts_survive_a_kill_byte_for_byte() {
    let server = Server::start(&[("bin.js", KIND)], test_config()).await;
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    let mut old = v1_client(&server, "carol").await;
    let (ja, _) = a.join_ok(TOPIC).await;
    let (_jb, _) = b.join_ok(TOPIC).await;
    v1_join(&mut old, TOPIC).await;
    let mut sse = common::sse::Sse::open(server.addr, TOPIC, None).await;
    assert_eq!(sse.status, 200);

    for n in 1..=2u8 {
        let r = a.next_ref();
        a.send_binary(binary_push(&ja, &r, TOPIC, "update", &update(n)))
            .await;
        // The sender's reply is binary (kind 1) with the hook's bytes.
        assert_eq!(
            a.next_binary().await,
            binary_reply(&ja, &r, TOPIC, "ok", &[n])
        );
        // The others get the broadcast (kind 2) with the exact bytes.
        assert_eq!(
            b.next_binary().await,
            binary_broadcast(TOPIC, "update", &update(n))
        );
        // A V1 channel cannot carry bytes: it is told, in JSON.
        let notice = old.until(|v| v["event"] == "binary_unsupported").await;
        assert_eq!(notice["topic"], TOPIC);
        assert_eq!(notice["payload"]["event"], "update");
        assert_eq!(notice["payload"]["bytes"], update(n).len());
        let reason = notice["payload"]["reason"].as_str().unwrap();
        assert!(reason.contains("V1 serializer"), "{reason}");
        // SSE gets the bytes as base64 (presence diffs may come first).
        let event = loop {
            let event = tokio::time::timeout(WAIT, sse.next())
                .await
                .expect("an SSE event")
                .expect("stream open");
            if event.event != "presence_diff" {
                break event;
            }
        };
        assert_eq!(event.event, "update");
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(update(n));
        assert_eq!(event.data, format!("base64:{encoded}"));
    }
    // JSON pushes still reach the hook as objects.
    let reply = a.call(&ja, TOPIC, "kind", json!({"x": 1})).await;
    assert_eq!(reply, json!({"status": "ok", "response": {"bytes": false}}));
    // A binary reply to a V1 push is an error reply that says why.
    let r = old.next_ref();
    let frame = json!({"topic": TOPIC, "event": "binary_reply", "payload": {}, "ref": r});
    old.send_text(&frame.to_string()).await;
    let reply = old
        .until(|v| v["event"] == "phx_reply" && v["ref"] == r)
        .await;
    assert_eq!(reply["payload"]["status"], "error");
    let reason = reply["payload"]["response"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("the reply is binary"), "{reason}");

    // Kill the room: it is rebuilt from the journal, bytes and all.
    let killed = server.kill(TOPIC).await;
    assert!(killed["generation"].as_u64().unwrap() >= 2, "{killed}");
    let mut late = server.client("dave").await;
    let (jl, joined) = late.join_ok(TOPIC).await;
    assert_eq!(joined["updates"], 2, "{joined}");
    let r = late.push(Some(&jl), TOPIC, "history", json!({})).await;
    for n in 1..=2u8 {
        assert_eq!(
            late.next_binary().await,
            binary_server_push(&jl, TOPIC, "update", &update(n))
        );
    }
    assert_eq!(
        late.reply(&r).await,
        json!({"status": "ok", "response": {"count": 2}})
    );
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_obey_the_frame_limit_and_the_rules_of_pushes() {
    let config = roomhost::Config {
        max_frame_bytes: 4096,
        ..test_config()
    };
    let server = Server::start(&[("bin.js", KIND)], config).await;
    let mut a = server.client("alice").await;
    let (ja, _) = a.join_ok(TOPIC).await;
    // A binary phx_join, or a binary presence_update, is answered: both need
    // a JSON object.
    let r = a.next_ref();
    a.send_binary(binary_push(&r, &r, "bin:other", "phx_join", b"\x00"))
        .await;
    let reply = a.reply(&r).await;
    assert_eq!(reply["status"], "error");
    assert_eq!(
        reply["response"]["reason"],
        "phx_join needs a JSON object payload, not binary"
    );
    let r = a.next_ref();
    a.send_binary(binary_push(&ja, &r, TOPIC, "presence_update", b"{}"))
        .await;
    let reply = a.reply(&r).await;
    assert_eq!(
        reply["response"]["reason"],
        "presence_update needs a JSON object payload, not binary"
    );
    // A push to a topic not joined: the usual error reply.
    let r = a.next_ref();
    a.send_binary(binary_push(&ja, &r, "bin:nope", "update", b"x"))
        .await;
    assert_eq!(a.reply(&r).await["response"]["reason"], "unmatched topic");
    // Within the limit: accepted.
    let r = a.next_ref();
    let payload = vec![0xab; 4000];
    a.send_binary(binary_push(&ja, &r, TOPIC, "update", &payload))
        .await;
    assert_eq!(
        a.next_binary().await,
        binary_reply(&ja, &r, TOPIC, "ok", &[1])
    );
    // Past the limit: the connection closes with 1009 and the limit.
    let r = a.next_ref();
    a.send_binary(binary_push(&ja, &r, TOPIC, "update", &vec![0xab; 5000]))
        .await;
    assert_eq!(
        a.closed().await,
        Some((1009, "frame too large (limit 4096 bytes)".to_string()))
    );
    // Garbage in a binary frame (not a push) closes with 1003.
    let mut g = server.client("gus").await;
    g.send_binary(vec![9, 9, 9]).await;
    assert_eq!(
        g.closed().await,
        Some((1003, "binary frame is not a Phoenix push".to_string()))
    );
    // The oversized push was not journaled: the room holds one update.
    let mut c = server.client("carl").await;
    let (_, joined) = c.join_ok(TOPIC).await;
    assert_eq!(joined["updates"], 1);
    server.stop().await;
}

/// Long-poll carries a binary push as a base64 line, as phoenix.js's
/// `LongPoll.send` writes it; what comes back is JSON text only.
#[tokio::test]
async fn long_poll_takes_base64_binary_pushes_and_answers_in_text() {
    let server = Server::start(&[("bin.js", KIND)], test_config()).await;
    let path = "/socket/longpoll?vsn=2.0.0&user=lp";
    let (_, opened) = http(server.addr, "GET", path, None).await;
    assert_eq!(opened["status"], 410, "{opened}");
    let token = opened["token"].as_str().unwrap().to_string();
    let with_token = format!("{path}&token={token}");
    let post = |body: String| {
        let url = with_token.clone();
        let addr = server.addr;
        async move { http(addr, "POST", &url, Some(("application/x-ndjson", &body))).await }
    };
    let join = json!(["1", "1", TOPIC, "phx_join", {}]).to_string();
    use base64::Engine as _;
    let push = base64::engine::general_purpose::STANDARD.encode(binary_push(
        "1",
        "2",
        TOPIC,
        "update",
        &update(1),
    ));
    let json_push = json!(["1", "3", TOPIC, "history", {}]).to_string();
    let (_, posted) = post(format!("{join}\n{push}\n{json_push}\n")).await;
    assert_eq!(posted["status"], 200, "{posted}");
    let mut frames: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !frames.iter().any(|f| f[1] == "3" && f[3] == "phx_reply") {
        assert!(tokio::time::Instant::now() < deadline, "{frames:?}");
        let (_, polled) = http(server.addr, "GET", &with_token, None).await;
        for m in polled["messages"].as_array().into_iter().flatten() {
            frames.push(serde_json::from_str(m.as_str().unwrap()).unwrap());
        }
    }
    // The binary reply cannot be sent as text: an error reply says so.
    let reply = frames.iter().find(|f| f[1] == "2").expect("a reply to 2");
    assert_eq!(reply[4]["status"], "error");
    let reason = reply[4]["response"]["reason"].as_str().unwrap();
    assert!(reason.contains("long-poll"), "{reason}");
    // The update was kept: `history` pushes it, as binary_unsupported.
    let notice = frames
        .iter()
        .find(|f| f[3] == "binary_unsupported")
        .expect("a binary_unsupported push");
    assert_eq!(notice[4]["event"], "update");
    assert_eq!(notice[4]["bytes"], update(1).len());
    let done = frames.iter().find(|f| f[1] == "3").unwrap();
    assert_eq!(done[4]["response"]["count"], 1);
    // Neither JSON nor base64: the batch is refused whole.
    let (status, bad) = post("not base64!\n".to_string()).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["reason"].as_str().unwrap().contains("base64"), "{bad}");
    server.stop().await;
}

/// `y-protocols` sync message `[0 sync, step, varUint8Array(data)]` (data
/// under 128 bytes, so its length is one varuint byte).
fn sync_message(step: u8, data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 128);
    let mut out = vec![0, step, data.len() as u8];
    out.extend_from_slice(data);
    out
}

/// rooms-js/yjs.js over raw frames (its updates are opaque bytes to it, so
/// these need not be real Yjs): the sync sequence a provider expects, and the
/// compaction of a long log by asking a synced tab for its whole document.
#[tokio::test]
async fn the_yjs_kind_syncs_and_compacts_a_long_log() {
    const DOC: &str = "yjs:raw";
    let server = Server::start(&[], test_config()).await;
    let mut a = server.client("alice").await;
    let (ja, _) = a.join_ok(DOC).await;
    let sync = |c: &mut Client, jr: &str| {
        let r = c.next_ref();
        binary_push(jr, &r, DOC, "yjs_sync", &sync_message(0, &[0]))
    };
    let frame = sync(&mut a, &ja);
    a.send_binary(frame).await;
    // An empty log: an empty step 2 (the provider is synced on a step 2),
    // then the room's step 1 with an empty state vector.
    let empty_step2 = binary_server_push(&ja, DOC, "yjs", &sync_message(1, &[0, 0]));
    let ask_a = binary_server_push(&ja, DOC, "yjs", &sync_message(0, &[0]));
    assert_eq!(a.next_binary().await, empty_step2);
    assert_eq!(a.next_binary().await, ask_a);
    // a answers with its (empty) document: the log is that state alone.
    let r = a.next_ref();
    a.send_binary(binary_push(&ja, &r, DOC, "yjs", &sync_message(1, &[0, 0])))
        .await;
    let kept = |state: Value| state["state"]["updates"].as_array().unwrap().clone();
    let state = server.api(&format!("/api/rooms/{DOC}/state")).await;
    assert_eq!(kept(state), vec![json!("AAA=")]);

    // 500 updates from a second tab: relayed to a; the 500th makes the log
    // too long (501), so the room asks a synced tab (a) for its document.
    let mut b = server.client("bob").await;
    let (jb, _) = b.join_ok(DOC).await;
    for i in 0..500u32 {
        let r = b.next_ref();
        let update = sync_message(2, &i.to_le_bytes());
        b.send_binary(binary_push(&jb, &r, DOC, "yjs", &update))
            .await;
        assert_eq!(
            a.next_binary().await,
            binary_broadcast(DOC, "yjs", &update),
            "update {i} relayed"
        );
    }
    assert_eq!(a.next_binary().await, ask_a, "the long log asks a");
    let state = server.api(&format!("/api/rooms/{DOC}/state")).await;
    assert_eq!(kept(state).len(), 501);
    // One more update arrives before a's answer: it stays after the base.
    let r = b.next_ref();
    let late = sync_message(2, b"late");
    b.send_binary(binary_push(&jb, &r, DOC, "yjs", &late)).await;
    assert_eq!(a.next_binary().await, binary_broadcast(DOC, "yjs", &late));
    let r = a.next_ref();
    a.send_binary(binary_push(
        &ja,
        &r,
        DOC,
        "yjs",
        &sync_message(1, b"whole doc"),
    ))
    .await;
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    let state = server.api(&format!("/api/rooms/{DOC}/state")).await;
    assert_eq!(kept(state), vec![b64(b"whole doc"), b64(b"late")]);
    // A late joiner gets exactly that, then the empty step 2 and the ask.
    let mut c = server.client("carol").await;
    let (jc, _) = c.join_ok(DOC).await;
    let frame = sync(&mut c, &jc);
    c.send_binary(frame).await;
    for update in [&b"whole doc"[..], b"late"] {
        assert_eq!(
            c.next_binary().await,
            binary_server_push(&jc, DOC, "yjs", &sync_message(2, update))
        );
    }
    assert_eq!(
        c.next_binary().await,
        binary_server_push(&jc, DOC, "yjs", &sync_message(1, &[0, 0]))
    );
    assert_eq!(
        c.next_binary().await,
        binary_server_push(&jc, DOC, "yjs", &sync_message(0, &[0]))
    );
    // c's answer (its first sync) goes to the others: it may hold edits
    // made offline.
    let r = c.next_ref();
    let mine = sync_message(1, b"c's doc");
    c.send_binary(binary_push(&jc, &r, DOC, "yjs", &mine)).await;
    assert_eq!(
        b.next_binary().await,
        binary_broadcast(DOC, "yjs", &sync_message(2, b"c's doc"))
    );
    assert_eq!(
        a.next_binary().await,
        binary_broadcast(DOC, "yjs", &sync_message(2, b"c's doc"))
    );
    // c's document replaced the log. A resync of a tab already synced
    // compacts too, but is not relayed.
    let frame = sync(&mut a, &ja);
    a.send_binary(frame).await;
    assert_eq!(
        a.next_binary().await,
        binary_server_push(&ja, DOC, "yjs", &sync_message(2, b"c's doc"))
    );
    assert_eq!(a.next_binary().await, empty_step2);
    assert_eq!(a.next_binary().await, ask_a);
    let r = a.next_ref();
    a.send_binary(binary_push(
        &ja,
        &r,
        DOC,
        "yjs",
        &sync_message(1, b"resync"),
    ))
    .await;
    assert!(
        b.none_within(std::time::Duration::from_millis(300), |_| false)
            .await,
        "a resync's answer is not relayed"
    );
    let state = server.api(&format!("/api/rooms/{DOC}/state")).await;
    assert_eq!(kept(state), vec![b64(b"resync")]);
    server.stop().await;
}
