//! The example kinds shipped in rooms-js: counter, poll and lobby.

mod common;

use common::raw_http::request;
use common::{Server, test_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_counts_and_survives_a_kill() {
    let server = Server::start(&[], test_config()).await;
    let mut a = server.client("alice").await;
    let (ja, response) = a.join_ok("counter:c").await;
    assert_eq!(response, json!({"value": 0}));
    let mut b = server.client("bob").await;
    b.join_ok("counter:c").await;
    assert_eq!(
        a.call(&ja, "counter:c", "inc", json!({})).await["response"]["value"],
        1
    );
    assert_eq!(
        a.call(&ja, "counter:c", "inc", json!({"by": 5})).await["response"]["value"],
        6
    );
    assert_eq!(
        a.call(&ja, "counter:c", "dec", json!({"by": 2})).await["response"]["value"],
        4
    );
    let seen = b.until(|v| v[3] == "value" && v[4]["value"] == 4).await;
    assert_eq!(seen[4]["by"], "alice");
    for bad in [json!({"by": 1.5}), json!({"by": "x"}), json!({"by": 5000})] {
        assert_eq!(
            a.call(&ja, "counter:c", "inc", bad).await["status"],
            "error"
        );
    }
    assert_eq!(
        a.call(&ja, "counter:c", "reset", json!({})).await["response"]["reason"],
        "unknown event \"reset\""
    );
    server.kill("counter:c").await;
    let (rooms, data) = server.stop().await;
    let server = Server::start_in(rooms, data, test_config()).await;
    let mut c = server.client("carol").await;
    let (_, response) = c.join_ok("counter:c").await;
    assert_eq!(response, json!({"value": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_counts_one_vote_per_user() {
    let server = Server::start(&[], test_config()).await;
    let mut a = server.client("alice").await;
    let (ja, response) = a.join_ok("poll:lunch").await;
    assert_eq!(response, json!({"poll": null, "myVote": null}));
    let reply = a
        .call(
            &ja,
            "poll:lunch",
            "create",
            json!({"question": "Lunch?", "options": ["pizza", "ramen"]}),
        )
        .await;
    assert_eq!(reply["response"]["poll"]["tallies"], json!([0, 0]));
    let reply = a
        .call(
            &ja,
            "poll:lunch",
            "create",
            json!({"question": "Again?", "options": ["a", "b"]}),
        )
        .await;
    assert_eq!(reply["response"]["reason"], "a poll is already open");
    let mut b = server.client("bob").await;
    let (jb, _) = b.join_ok("poll:lunch").await;
    a.call(&ja, "poll:lunch", "vote", json!({"option": 0}))
        .await;
    b.call(&jb, "poll:lunch", "vote", json!({"option": 1}))
        .await;
    // Voting again changes the vote instead of adding one.
    let reply = b
        .call(&jb, "poll:lunch", "vote", json!({"option": 0}))
        .await;
    assert_eq!(reply["response"]["poll"]["tallies"], json!([2, 0]));
    assert_eq!(reply["response"]["poll"]["voters"], 2);
    let live = a
        .until(|v| v[3] == "poll" && v[4]["poll"]["tallies"] == json!([2, 0]))
        .await;
    assert_eq!(live[4]["poll"]["question"], "Lunch?");
    for bad in [
        json!({"option": 2}),
        json!({"option": -1}),
        json!({"option": "0"}),
    ] {
        assert_eq!(
            b.call(&jb, "poll:lunch", "vote", bad).await["response"]["reason"],
            "no such option"
        );
    }
    let reply = b.call(&jb, "poll:lunch", "close", json!({})).await;
    assert_eq!(
        reply["response"]["reason"],
        "only the poll's creator can close it"
    );
    let reply = a.call(&ja, "poll:lunch", "close", json!({})).await;
    assert_eq!(reply["response"]["poll"]["open"], false);
    let reply = b
        .call(&jb, "poll:lunch", "vote", json!({"option": 1}))
        .await;
    assert_eq!(reply["response"]["reason"], "no open poll");
    let mut c = server.client("carol").await;
    let (jc, response) = c.join_ok("poll:lunch").await;
    assert_eq!(response["poll"]["tallies"], json!([2, 0]));
    let bad = c
        .call(
            &jc,
            "poll:lunch",
            "create",
            json!({"question": "x", "options": ["same", "same"]}),
        )
        .await;
    assert_eq!(bad["response"]["reason"], "options must differ");
    let bad = c
        .call(
            &jc,
            "poll:lunch",
            "create",
            json!({"question": "", "options": ["a", "b"]}),
        )
        .await;
    assert_eq!(
        bad["response"]["reason"],
        "the question must be 1 to 200 characters"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_closes_itself_when_its_time_is_up_and_answers_over_http() {
    let server = Server::start(&[], test_config()).await;
    let mut a = server.client("alice").await;
    let (ja, _) = a.join_ok("poll:timed").await;
    let created = a
        .call(
            &ja,
            "poll:timed",
            "create",
            json!({"question": "Tea?", "options": ["yes", "no"], "seconds": 1}),
        )
        .await;
    assert_eq!(created["response"]["poll"]["open"], true);
    assert!(created["response"]["poll"]["closesAt"].as_i64().is_some());
    a.call(&ja, "poll:timed", "vote", json!({"option": 0}))
        .await;
    let results = request(server.addr, "GET", "/rooms/poll:timed/http/", &[], b"").await;
    assert_eq!(results.status, 200);
    assert_eq!(results.json()["poll"]["tallies"], json!([1, 0]));
    let closed = a
        .until(|v| v[3] == "poll" && v[4]["poll"]["open"] == false)
        .await;
    assert_eq!(closed[4]["poll"]["tallies"], json!([1, 0]));
    let post = request(server.addr, "POST", "/rooms/poll:timed/http/", &[], b"").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    let bad = a
        .call(
            &ja,
            "poll:timed",
            "create",
            json!({"question": "Q", "options": ["a", "b"], "seconds": 0}),
        )
        .await;
    assert_eq!(bad["status"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lobby_matches_players_announces_in_chat_and_kicks_idle_tabs() {
    // The shipped lobby, with a short idle time.
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rooms-js/lobby.js"),
    )
    .unwrap();
    let fast = source.replace("const IDLE_MS = 60_000;", "const IDLE_MS = 400;");
    assert_ne!(
        fast, source,
        "the lobby's idle time is where the test expects it"
    );
    let server = Server::start(&[("lobby.js", &fast)], test_config()).await;
    let mut watcher = server.client("watcher").await;
    watcher.join_ok("chat:arena").await;
    let mut ann = server.client("ann").await;
    let (ja, _) = ann.join_ok("lobby:arena").await;
    let mut bob = server.client("bob").await;
    let (jb, _) = bob.join_ok("lobby:arena").await;
    ann.call(&ja, "lobby:arena", "queue", json!({})).await;
    bob.call(&jb, "lobby:arena", "queue", json!({})).await;
    let matched = ann.event("lobby:arena", "matched").await;
    assert_eq!(matched[4]["players"], json!(["ann", "bob"]));
    let announced = watcher.event("chat:arena", "new_msg").await;
    assert_eq!(announced[4]["user"], "lobby:arena");
    assert_eq!(announced[4]["text"], "ann and bob start a match");
    // bob keeps pinging; ann goes quiet and is kicked.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        bob.call(&jb, "lobby:arena", "ping", json!({})).await;
    }
    let kicked = ann.event("lobby:arena", "kicked").await;
    assert_eq!(kicked[4], json!({"reason": "idle for 0.4 s"}));
    ann.event("lobby:arena", "phx_close").await;
    assert_eq!(
        bob.call(&jb, "lobby:arena", "ping", json!({})).await["status"],
        "ok"
    );
}
