//! Every client-facing limit, hit by a real client, answered with its
//! documented error; the connection or room survives where documented.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::sse::Sse;
use common::{Client, Server, http, test_config};
use roomhost::Config;
use serde_json::{Value, json};

const ECHO: &str = r#"export function onMessage(conn, event, payload) { return payload; }"#;

async fn server(config: Config) -> Server {
    Server::start(&[("echo.js", ECHO)], config).await
}

fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_with_1009_and_a_reason() {
    let server = server(test_config()).await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("echo:big").await;
    // Just under the limit passes.
    let text = "x".repeat(60 << 10);
    let reply = c
        .call(&jr, "echo:big", "say", json!({ "text": text }))
        .await;
    assert_eq!(reply["status"], "ok");
    let too_big = "x".repeat(65 << 10);
    c.push(Some(&jr), "echo:big", "say", json!({ "text": too_big }))
        .await;
    let (code, reason) = c.closed().await.expect("a close frame");
    assert_eq!(code, 1009);
    assert_eq!(reason, "frame too large (limit 65536 bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_payloads_are_refused_before_parsing() {
    let server = server(test_config()).await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("echo:deep").await;
    // At the limit: the payload object is depth 1, 31 more inside.
    let ok = format!(r#"["{jr}","7","echo:deep","say",{}]"#, nested(32));
    c.send_text(&ok).await;
    assert_eq!(c.reply("7").await["status"], "ok");
    for depth in [33, 10_000] {
        let deep = format!(r#"["{jr}","8","echo:deep","say",{}]"#, nested(depth));
        c.send_text(&deep).await;
        assert_eq!(
            c.reply("8").await,
            json!({"status": "error", "response": {"reason": "payload nested too deeply (limit 32)"}}),
            "depth {depth}"
        );
    }
    // The connection survives.
    let reply = c.call(&jr, "echo:deep", "say", json!({"a": [1]})).await;
    assert_eq!(reply, json!({"status": "ok", "response": {"a": [1]}}));
    // HTTP posts have the same limit.
    let body = format!(r#"{{"event":"say","payload":{}}}"#, nested(40));
    let (status, reply) = post(server.addr, "/api/rooms/echo:deep/messages", &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply,
        json!({"reason": "payload nested too deeply (limit 32)"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_too_many_channels_is_refused_and_the_others_stay() {
    let server = server(Config {
        max_channels_per_conn: 3,
        ..test_config()
    })
    .await;
    let mut c = server.client("alice").await;
    let mut refs = Vec::new();
    for n in 0..3 {
        refs.push(c.join_ok(&format!("echo:r{n}")).await.0);
    }
    let (_, reply) = c.join("echo:r3", json!({})).await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "too many channels joined"}})
    );
    let reply = c.call(&refs[0], "echo:r0", "say", json!({"x": 1})).await;
    assert_eq!(reply["status"], "ok");
    // Leaving one makes room for another.
    let leave = c
        .push(Some(&refs[1]), "echo:r1", "phx_leave", json!({}))
        .await;
    assert_eq!(c.reply(&leave).await["status"], "ok");
    c.join_ok("echo:r3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_is_rate_limited_then_disconnected() {
    let server = server(Config {
        msg_rate: 5,
        msg_burst: 10,
        ..test_config()
    })
    .await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("echo:flood").await; // the join takes a token
    let mut refs = Vec::new();
    for n in 0..12 {
        refs.push(
            c.push(Some(&jr), "echo:flood", "say", json!({ "n": n }))
                .await,
        );
    }
    let mut statuses = Vec::new();
    for r in &refs {
        let reply = c.reply(r).await;
        statuses.push(reply["status"].as_str().unwrap_or("").to_string());
        if reply["status"] == "error" {
            assert_eq!(reply["response"], json!({"reason": "rate_limited"}));
        }
    }
    let ok = statuses.iter().filter(|s| *s == "ok").count();
    assert!((9..=10).contains(&ok), "{statuses:?}");
    // Each refusal is counted in the metrics.
    let (_, metrics) = http(server.addr, "GET", "/metrics", None).await;
    let counted = format!("roomhost_rate_limited_total {}", 12 - ok);
    assert!(
        metrics.as_str().unwrap_or_default().contains(&counted),
        "{counted} in {metrics}"
    );
    // Heartbeats are not counted: they still answer ok.
    for _ in 0..5 {
        let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
        assert_eq!(c.reply(&r).await["status"], "ok");
    }
    // The bucket refills: after a pause the connection works again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let reply = c
        .call(&jr, "echo:flood", "say", json!({"again": true}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // Flooding on past `msg_burst` refusals closes the connection.
    for n in 0..40 {
        if c.try_push(Some(&jr), "echo:flood", "say", json!({ "n": n }))
            .await
            .is_none()
        {
            break;
        }
    }
    let (code, reason) = c.closed().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_long_poll_session_is_ended() {
    let server = server(Config {
        msg_rate: 1,
        msg_burst: 2,
        ..test_config()
    })
    .await;
    let (_, opened) = http(server.addr, "GET", "/socket/longpoll?vsn=2.0.0", None).await;
    let token = opened["token"]
        .as_str()
        .expect("a session token")
        .to_string();
    let path = format!("/socket/longpoll?vsn=2.0.0&token={token}");
    // Heartbeats are free.
    let beats = [r#"[null,"1","phoenix","heartbeat",{}]"#; 10].join("\n");
    let (status, _) = http(
        server.addr,
        "POST",
        &path,
        Some(("application/x-ndjson", &beats)),
    )
    .await;
    assert_eq!(status, 200);
    let flood: Vec<String> = (0..10)
        .map(|n| format!(r#"["1","{n}","echo:x","say",{{}}]"#))
        .collect();
    let (status, body) = http(
        server.addr,
        "POST",
        &path,
        Some(("application/x-ndjson", &flood.join("\n"))),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["reason"], "rate limit exceeded", "{body}");
    let (_, polled) = http(server.addr, "GET", &path, None).await;
    assert_eq!(polled["status"], 410, "the session is gone: {polled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_rate_zero_means_unlimited() {
    let server = server(Config {
        msg_rate: 0,
        msg_burst: 1,
        ..test_config()
    })
    .await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("echo:free").await;
    let mut refs = Vec::new();
    for n in 0..300 {
        refs.push(
            c.push(Some(&jr), "echo:free", "say", json!({ "n": n }))
                .await,
        );
    }
    for r in &refs {
        assert_eq!(c.reply(r).await["status"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_joins_and_keeps_serving_its_members() {
    let server = server(Config {
        max_conns_per_room: 2,
        ..test_config()
    })
    .await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let mut c = server.client("c").await;
    let (ja, _) = a.join_ok("echo:full").await;
    b.join_ok("echo:full").await;
    let (_, reply) = c.join("echo:full", json!({})).await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "room is full"}})
    );
    // A rejoin of a member is not a new member.
    let (ja2, _) = a.join_ok("echo:full").await;
    assert_ne!(ja, ja2);
    let reply = a.call(&ja2, "echo:full", "say", json!({"ok": 1})).await;
    assert_eq!(reply["status"], "ok");
    // Once someone leaves, the refused client gets in.
    b.close().await;
    let mut joined = false;
    for _ in 0..50 {
        let (_, reply) = c.join("echo:full", json!({})).await;
        if reply["status"] == "ok" {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(joined, "a seat frees up when a member leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_one_room_too_many_is_refused() {
    let server = server(Config {
        max_rooms: 2,
        ..test_config()
    })
    .await;
    let mut c = server.client("alice").await;
    let (j1, _) = c.join_ok("echo:one").await;
    c.join_ok("echo:two").await;
    let (_, reply) = c.join("echo:three", json!({})).await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "too many rooms"}})
    );
    // Rooms already live keep working, and joining them again is fine.
    let reply = c.call(&j1, "echo:one", "say", json!({"x": 1})).await;
    assert_eq!(reply["status"], "ok");
    let mut d = server.client("bob").await;
    d.join_ok("echo:two").await;
    // The HTTP transports get the same answer.
    let (status, reply) = post(
        server.addr,
        "/api/rooms/echo:four/messages",
        r#"{"event":"say","payload":{}}"#,
    )
    .await;
    assert_eq!((status, reply), (503, json!({"reason": "too many rooms"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_on_every_transport() {
    let server = server(Config {
        max_conns_per_ip: 2,
        limit_loopback: true,
        // A stream whose client went away is noticed at its next write.
        sse_keep_alive: Duration::from_millis(50),
        ..test_config()
    })
    .await;
    let first = server.client("a").await;
    let mut second = server.client("b").await;
    // A third WebSocket is refused at the upgrade.
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert_eq!(body, "too many connections from this address (limit 2)");
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    // So are a new long-poll session and an SSE stream.
    let (status, body) = http(server.addr, "GET", "/socket/longpoll?vsn=2.0.0", None).await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = http(server.addr, "GET", "/api/rooms/echo:x/events", None).await;
    assert_eq!(status, 429, "{body}");
    // Connections already open keep working.
    second.join_ok("echo:ip").await;
    // Closing one frees its slot (for any transport).
    first.close().await;
    let mut sse = None;
    for _ in 0..50 {
        let stream = Sse::open(server.addr, "echo:x", None).await;
        if stream.status == 200 {
            sse = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sse = sse.expect("a slot frees up when a connection closes");
    let (status, _) = http(server.addr, "GET", "/socket/longpoll?vsn=2.0.0", None).await;
    assert_eq!(status, 429, "the stream holds the freed slot");
    drop(sse);
    let mut opened = false;
    for _ in 0..50 {
        let (_, body) = http(server.addr, "GET", "/socket/longpoll?vsn=2.0.0", None).await;
        // A new session: HTTP 200 with Phoenix's status 410 and a token.
        if body["status"] == 410 {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened, "a closed SSE stream frees its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_exempt_from_the_address_limit_by_default() {
    let server = server(Config {
        max_conns_per_ip: 1,
        ..test_config()
    })
    .await;
    let mut clients = Vec::new();
    for n in 0..5 {
        let mut c: Client = server.client(&format!("u{n}")).await;
        c.join_ok("echo:many").await;
        clients.push(c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_payloads_arrives_unchanged() {
    let server = server(test_config()).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (ja, _) = alice.join_ok("chat:xss").await;
    bob.join_ok("chat:xss").await;
    let evil = r#"<img src=x onerror="alert(1)"><script>alert('x')</script>&amp;</textarea>"#;
    let reply = alice
        .call(&ja, "chat:xss", "new_msg", json!({ "text": evil }))
        .await;
    assert_eq!(reply["status"], "ok");
    let msg = bob.event("chat:xss", "new_msg").await;
    assert_eq!(msg[4]["text"], Value::String(evil.to_string()));
    let state = server.api("/api/rooms/chat:xss/state").await;
    assert!(state.to_string().contains("onerror"), "{state}");
}

/// POSTs JSON; (status, JSON body or the text).
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    http(addr, "POST", path, Some(("application/json", body))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_flags_are_accepted_and_bad_ones_stop_the_server() {
    let rooms = common::rooms_dir(&[("echo.js", ECHO)]);
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--msg-rate",
        "0",
        "--msg-burst",
        "10",
        "--kind-limits",
        "echo:memory=16MiB,cpu=50ms",
        "--script-stack",
        "256KiB",
        "--max-frame",
        "32KiB",
        "--max-json-depth",
        "8",
        "--max-channels",
        "5",
        "--max-conns-per-room",
        "3",
        "--max-rooms",
        "10",
        "--max-conns-per-ip",
        "5",
        "--durability",
        "off",
    ];
    let server = common::Binary::start(rooms.path(), data.path(), &flags).await;
    let mut c = server.client("alice").await;
    let (jr, _) = c.join_ok("echo:cli").await;
    let deep = format!(r#"["{jr}","9","echo:cli","say",{}]"#, nested(9));
    c.send_text(&deep).await;
    assert_eq!(
        c.reply("9").await["response"]["reason"],
        "payload nested too deeply (limit 8)"
    );
    server.kill_9().await;

    for (flag, value, error) in [
        ("--kind-limits", "echo:heap=1MiB", "unknown script limit"),
        ("--kind-limits", "Echo:cpu=1ms", "not a valid room kind"),
        ("--script-stack", "64MiB", "script stack limit"),
        ("--script-cpu", "100", "give a unit"),
        ("--heartbeat-timeout", "0", "more than 0 seconds"),
        ("--heartbeat-timeout", "soon", "invalid value"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .args(["serve", "--port", "0", "--rooms"])
            .arg(rooms.path())
            .arg("--data")
            .arg(data.path())
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(error), "{flag} {value}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_posts_are_rate_limited_per_address() {
    let server = server(Config {
        msg_rate: 2,
        msg_burst: 3,
        limit_loopback: true,
        ..test_config()
    })
    .await;
    let body = r#"{"event":"say","payload":{}}"#;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, reply) = post(server.addr, "/api/rooms/echo:posts/messages", body).await;
        if status == 429 {
            assert_eq!(reply, json!({"reason": "rate_limited"}));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    // The bucket refills at msg_rate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = post(server.addr, "/api/rooms/echo:posts/messages", body).await;
    assert_eq!(status, 200);
    let (_, metrics) = http(server.addr, "GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("roomhost_rate_limited_total 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_posts_are_not_rate_limited_by_default() {
    let server = server(Config {
        msg_rate: 1,
        msg_burst: 1,
        ..test_config()
    })
    .await;
    let body = r#"{"event":"say","payload":{}}"#;
    for _ in 0..5 {
        let (status, reply) = post(server.addr, "/api/rooms/echo:local/messages", body).await;
        assert_eq!(status, 200, "{reply}");
    }
}
