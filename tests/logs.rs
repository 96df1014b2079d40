//! The binary's logs: `--log-format json` writes one JSON object a line, and
//! the startup summary states the settings the host enforces.

mod common;

use common::{Binary, rooms_dir};
use serde_json::Value;

/// The log's lines, each parsed as JSON (a line that is not JSON fails).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_a_truthful_startup_summary() {
    let rooms = rooms_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(
        rooms.path(),
        data.path(),
        &[
            "--log-format",
            "json",
            "--allowed-origins",
            "https://chat.example.com",
            "--durability",
            "relaxed",
        ],
    )
    .await;
    assert!(server.logged("\"serving\"").await, "{}", server.log());
    let lines = json_lines(&server.log());
    let start = lines
        .iter()
        .find(|l| l["message"] == "serving")
        .expect("a serving line");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["local"], server.addr.to_string(), "{start}");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["client_tokens"], false);
    assert_eq!(start["admin"], "loopback only");
    assert_eq!(start["origins"], "https://chat.example.com");
    assert_eq!(start["durability"], "Relaxed");
    assert_eq!(start["max_frame"], 65536);
    // A refused connection is logged with its reason, transport and peer.
    let reply = common::raw_http::request(
        server.addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0&user=ana",
        &[("Origin", "https://evil.example.net")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        server.logged("connection refused").await,
        "{}",
        server.log()
    );
    let lines = json_lines(&server.log());
    let refused = lines
        .iter()
        .find(|l| l["message"] == "connection refused")
        .unwrap();
    assert_eq!(refused["level"], "INFO", "{refused}");
    assert_eq!(refused["transport"], "longpoll", "{refused}");
    assert!(
        refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{refused}"
    );
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("evil.example.net"),
        "{refused}"
    );
    // SIGTERM: the shutdown is logged when it starts and when it is done.
    let log = server.log.clone();
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    let log = log.lock().unwrap().clone();
    let lines = json_lines(&log);
    let done = lines
        .iter()
        .find(|l| l["message"] == "shut down: rooms stopped, connections closed")
        .unwrap_or_else(|| panic!("no shutdown line in\n{log}"));
    assert!(done["took_ms"].is_u64(), "{done}");
}

/// The JSON lines whose message is `message` and transport `transport`.
fn lines_of(log: &str, message: &str, transport: &str) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|l| l["message"] == message && l["transport"] == transport)
        .collect()
}

/// Waits (bounded) until the log has a `message` line of `transport`.
async fn wait_for_line(server: &Binary, message: &str, transport: &str) -> Value {
    for _ in 0..50 {
        if let Some(line) = lines_of(&server.log(), message, transport).pop() {
            return line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {message:?} line for {transport} in\n{}", server.log());
}

fn assert_local_peer(line: &Value) {
    let peer = line["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_sse_connections_are_logged_with_their_peer() {
    let rooms = rooms_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start_logging(
        rooms.path(),
        data.path(),
        &["--log-format", "json"],
        "info,roomhost=debug",
    )
    .await;

    // A long-poll session opens with its first GET (410 and a token).
    let opened = common::raw_http::request(
        server.addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0&user=ana",
        &[],
        b"",
    )
    .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(opened.json()["status"], 410, "{}", opened.body);
    let connected = wait_for_line(&server, "connected", "longpoll").await;
    assert_local_peer(&connected);
    assert_eq!(connected["user"], "ana", "{connected}");

    // An event stream: opened, then closed by the client.
    let sse = common::sse::Sse::open(server.addr, "chat:logs", None).await;
    assert_eq!(sse.status, 200);
    let connected = wait_for_line(&server, "connected", "sse").await;
    assert_local_peer(&connected);
    assert_eq!(connected["topic"], "chat:logs", "{connected}");
    assert!(lines_of(&server.log(), "disconnected", "sse").is_empty());
    drop(sse);
    let closed = wait_for_line(&server, "disconnected", "sse").await;
    assert_local_peer(&closed);
    assert_eq!(closed["reason"], "client closed", "{closed}");
    assert_eq!(closed["conn"], connected["conn"], "{closed}");

    // The long-poll session ends with the server, and says so.
    assert!(lines_of(&server.log(), "disconnected", "longpoll").is_empty());
    let log = server.log.clone();
    assert!(server.terminate().await.success());
    let log = log.lock().unwrap().clone();
    let ended = lines_of(&log, "disconnected", "longpoll");
    let ended = ended
        .first()
        .unwrap_or_else(|| panic!("no long-poll disconnect in\n{log}"));
    assert_local_peer(ended);
    assert_eq!(ended["reason"], "server shutting down", "{ended}");
}

#[test]
fn a_bad_rooms_directory_is_reported_once() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args([
            "serve",
            "--port",
            "0",
            "--rooms",
            "/nonexistent/rooms-js",
            "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("/nonexistent/rooms-js").count(),
        1,
        "{stderr}"
    );
}
