//! The example kinds shipped in rooms-js: counter and poll.

mod common;

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
