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
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
}
