//! SSE + POST: one room across every transport, resuming by Last-Event-ID,
//! resets, kills, idle stops, keep-alives and bad input.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::raw_http::{post_message, request, say};
use crate::common::sse::Sse;
use crate::common::{Server, WAIT};
use crate::longpoll_client::LongPoll;
use crate::{ROSTER, config, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_serves_sse_post_websocket_and_long_poll_in_one_order() {
    let server = server().await;
    let topic = "chat:all";
    let mut sse = Sse::open(server.addr, topic, None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    let mut ws = server.client("wes").await;
    let (ws_ref, _) = ws.join_ok(topic).await;
    let mut lp = LongPoll::open(server.addr, "polly").await;
    let (lp_ref, _) = lp.join(topic).await;

    // One message from each transport, sent concurrently.
    let addr = server.addr;
    let http = tokio::spawn(async move { say(addr, topic, "hugh", "over http").await });
    let form = tokio::spawn(async move {
        post_message(
            addr,
            topic,
            "application/x-www-form-urlencoded",
            "text=over+a+form&user=fay",
        )
        .await
    });
    ws.push(Some(&ws_ref), topic, "new_msg", json!({"text": "over ws"}))
        .await;
    lp.push(&lp_ref, topic, "new_msg", json!({"text": "over lp"}))
        .await;
    let reply = http.await.unwrap();
    assert!(reply["id"].as_u64().is_some(), "the hook's reply: {reply}");
    let (status, reply) = form.await.unwrap();
    assert_eq!(status, 200, "{reply}");

    // Every transport sees all four, once each, in the same order.
    let mut via_sse = Vec::new();
    let mut sse_ids = Vec::new();
    let mut present = Vec::new();
    while via_sse.len() < 4 {
        let event = sse.next().await.expect("the stream stays open");
        if event.event == "presence_diff" {
            let joins = event.json()["joins"].as_object().unwrap().clone();
            present.extend(joins.keys().cloned());
            continue;
        }
        assert_eq!(event.event, "new_msg");
        sse_ids.push(event.id());
        let msg = event.json();
        via_sse.push((
            msg["id"].as_u64().unwrap(),
            msg["user"].as_str().unwrap().to_string(),
        ));
    }
    let mut via_ws = Vec::new();
    let mut via_lp = Vec::new();
    while via_ws.len() < 4 {
        let frame = ws.event(topic, "new_msg").await;
        via_ws.push((
            frame[4]["id"].as_u64().unwrap(),
            frame[4]["user"].as_str().unwrap().to_string(),
        ));
    }
    while via_lp.len() < 4 {
        let frame = lp.event(topic, "new_msg").await;
        via_lp.push((
            frame[4]["id"].as_u64().unwrap(),
            frame[4]["user"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(via_sse, via_ws);
    assert_eq!(via_sse, via_lp);
    let ids: Vec<u64> = via_sse.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    let mut users: Vec<&str> = via_sse.iter().map(|(_, u)| u.as_str()).collect();
    users.sort();
    assert_eq!(users, ["fay", "hugh", "polly", "wes"]);
    assert!(sse_ids.windows(2).all(|w| w[1] > w[0]), "{sse_ids:?}");
    // Presence diffs stream too: both channels' joins (HTTP posts and
    // streams are not members). A diff is paced, so it may come after the
    // messages sent in the same moment; no fifth message may come with it.
    while present.len() < 2 {
        let event = sse.next().await.expect("the stream stays open");
        assert_eq!(event.event, "presence_diff", "only presence is owed");
        let joins = event.json()["joins"].as_object().unwrap().clone();
        present.extend(joins.keys().cloned());
    }
    present.sort();
    assert_eq!(present, ["polly", "wes"]);
    assert!(
        ws.none_within(Duration::from_millis(300), |v| v[3] == "new_msg")
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_exactly_the_missed_events() {
    let server = server().await;
    let topic = "chat:resume";
    let mut sse = Sse::open(server.addr, topic, None).await;
    say(server.addr, topic, "a", "one").await;
    say(server.addr, topic, "a", "two").await;
    sse.event("new_msg").await;
    let seen = sse.event("new_msg").await;
    assert_eq!(seen.json()["text"], "two");
    drop(sse);

    for text in ["three", "four", "five"] {
        say(server.addr, topic, "a", text).await;
    }
    let mut sse = Sse::open(server.addr, topic, seen.id.as_deref()).await;
    let mut texts = Vec::new();
    for expected_id in seen.id() + 1..=seen.id() + 3 {
        let event = sse.next().await.unwrap();
        assert_eq!((event.event.as_str(), event.id()), ("new_msg", expected_id));
        texts.push(event.json()["text"].as_str().unwrap().to_string());
    }
    assert_eq!(texts, ["three", "four", "five"]);
    // Then live, with nothing repeated.
    say(server.addr, topic, "a", "six").await;
    let live = sse.next().await.unwrap();
    assert_eq!(
        (live.json()["text"].as_str(), live.id()),
        (Some("six"), seen.id() + 4)
    );

    // Caught up: resuming from the newest id replays nothing.
    let mut sse = Sse::open(server.addr, topic, live.id.as_deref()).await;
    say(server.addr, topic, "a", "seven").await;
    assert_eq!(sse.next().await.unwrap().json()["text"], "seven");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_too_old_last_event_id_gets_a_reset() {
    let server = server().await;
    let topic = "chat:reset";
    let mut sse = Sse::open(server.addr, topic, None).await;
    say(server.addr, topic, "a", "one").await;
    let mut newest = sse.event("new_msg").await;
    for asked in [
        "1",
        "garbage",
        "99999999999999999999",
        &(newest.id() + 10).to_string(),
    ] {
        let mut sse = Sse::open(server.addr, topic, Some(asked)).await;
        let reset = sse.next().await.unwrap();
        assert_eq!(reset.event, "reset", "{asked}");
        assert_eq!(reset.id(), newest.id(), "the reset moves the client to now");
        assert_eq!(reset.json()["last_event_id"], asked);
        say(server.addr, topic, "a", "after").await;
        let next = sse.next().await.unwrap();
        assert_eq!(
            (next.event.as_str(), next.id()),
            ("new_msg", newest.id() + 1)
        );
        newest = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_keep_counting_across_a_room_kill() {
    let server = server().await;
    let topic = "chat:killed";
    let mut sse = Sse::open(server.addr, topic, None).await;
    say(server.addr, topic, "a", "before").await;
    let before = sse.event("new_msg").await;
    let killed = server.kill(topic).await;
    assert_eq!(killed["generation"], 2, "{killed}");
    say(server.addr, topic, "a", "after").await;
    let after = sse.event("new_msg").await;
    assert_eq!(after.id(), before.id() + 1);
    assert_eq!(after.json()["text"], "after");
    // A client that saw only "before" resumes across the kill.
    let mut late = Sse::open(server.addr, topic, before.id.as_deref()).await;
    let resumed = late.next().await.unwrap();
    assert_eq!(
        (resumed.id(), resumed.json()["text"].clone()),
        (after.id(), json!("after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_the_room_stopping_when_idle() {
    let config = roomhost::Config {
        idle_timeout: Duration::from_millis(200),
        ..config()
    };
    let server = Server::start(&[], config).await;
    let topic = "chat:idle";
    let mut sse = Sse::open(server.addr, topic, None).await;
    say(server.addr, topic, "a", "first").await;
    let first = sse.event("new_msg").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.host.rooms().iter().any(|r| r.topic == topic) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room stops when idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(server.addr, topic, "a", "second").await;
    let second = sse.event("new_msg").await;
    assert_eq!(second.json()["text"], "second");
    assert_eq!(second.id(), first.id() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_get_keep_alive_comments_and_shutdown_ends_them() {
    let config = roomhost::Config {
        sse_keep_alive: Duration::from_millis(200),
        ..config()
    };
    let server = Server::start(&[], config).await;
    let mut sse = Sse::open(server.addr, "chat:quiet", None).await;
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let started = std::time::Instant::now();
        server.stop().await;
        started.elapsed()
    });
    assert!(sse.next().await.is_none(), "the stream ends at shutdown");
    assert!(stopper.await.unwrap() < Duration::from_secs(5));
    let keep_alives = sse.comments.iter().filter(|c| *c == "keep-alive").count();
    assert!(keep_alives >= 2, "{:?}", sse.comments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_documented_errors() {
    let config = roomhost::Config {
        max_frame_bytes: 1024,
        ..config()
    };
    let server = Server::start(&[("roster.js", ROSTER)], config).await;
    let addr = server.addr;
    let json_post = |topic: &'static str, body: Value| async move {
        post_message(addr, topic, "application/json", &body.to_string()).await
    };
    let cases: Vec<(u16, (u16, Value))> = vec![
        (415, post_message(addr, "chat:x", "text/plain", "hi").await),
        (415, post_message(addr, "chat:x", "", "hi").await),
        (
            400,
            post_message(addr, "chat:x", "application/json", "{not json").await,
        ),
        (400, json_post("chat:x", json!({"payload": {}})).await),
        (
            400,
            json_post("chat:x", json!({"event": "new_msg", "payload": [1]})).await,
        ),
        (
            400,
            json_post("chat:x", json!({"event": "new_msg", "extra": 1})).await,
        ),
        (400, json_post("chat:x", json!({"event": ""})).await),
        (400, json_post("chat:x", json!({"event": "phx_join"})).await),
        (
            400,
            json_post("chat:x", json!({"event": "new_msg", "user": "a\u{7}"})).await,
        ),
        (
            400,
            json_post("bad%20topic!", json!({"event": "new_msg"})).await,
        ),
        (
            404,
            json_post("nokind:x", json!({"event": "new_msg"})).await,
        ),
        (
            413,
            json_post(
                "chat:x",
                json!({"event": "new_msg", "payload": {"text": "x".repeat(2000)}}),
            )
            .await,
        ),
        (
            422,
            json_post(
                "chat:x",
                json!({"event": "new_msg", "payload": {"text": " "}}),
            )
            .await,
        ),
        (422, json_post("chat:x", json!({"event": "nope"})).await),
    ];
    for (expected, (status, answer)) in cases {
        assert_eq!(status, expected, "{answer}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{answer}"
        );
    }
    assert_eq!(
        json_post(
            "chat:x",
            json!({"event": "new_msg", "payload": {"text": " "}})
        )
        .await
        .1,
        json!({"reason": "message is blank"})
    );
    // A post is a connection of its own, over "http".
    let (status, reply) = json_post("roster:x", json!({"event": "hi", "user": "hal"})).await;
    assert_eq!((status, reply), (200, json!({"ok": true})));

    for (path, expected) in [
        ("/api/rooms/bad%20topic/events", 400),
        ("/api/rooms/nokind:x/events", 404),
    ] {
        let reply = request(addr, "GET", path, &[], b"").await;
        assert_eq!(reply.status, expected, "{path}: {}", reply.body);
        assert!(reply.json()["reason"].is_string());
    }
}
