//! Behind a trusted reverse proxy (`trusted_proxies`, `--trusted-proxy`),
//! the client is the address the proxy put in `X-Forwarded-For`: the admin
//! API's loopback rule, the per-address connection limit and the logs use
//! it. From any other peer the header changes nothing.

mod common;

use std::net::SocketAddr;

use common::raw_http::{Reply, request};
use common::{Binary, Server, rooms_dir, test_config};
use roomhost::Config;

async fn get(addr: SocketAddr, path: &str, forwarded_for: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|f| ("X-Forwarded-For", f))
        .into_iter()
        .collect();
    request(addr, "GET", path, &headers, b"").await
}

fn behind_local_proxy() -> Config {
    Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sees_the_forwarded_client() {
    let server = Server::start(&[], behind_local_proxy()).await;
    // A browser on the internet, through the proxy: not loopback.
    let remote = get(server.addr, "/api/rooms", Some("203.0.113.7")).await;
    assert_eq!(remote.status, 403, "{}", remote.body);
    assert!(
        remote.body.contains("loopback clients only"),
        "{}",
        remote.body
    );
    let page = get(server.addr, "/admin", Some("203.0.113.7")).await;
    assert_eq!(page.status, 403, "the dashboard page too");
    // The client cannot pass for loopback by sending the header itself: the
    // proxy appends the real address on the right.
    let forged = get(server.addr, "/api/rooms", Some("127.0.0.1, 203.0.113.7")).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    // A client on the proxy's own machine, and a request straight to roomhost.
    let local = get(server.addr, "/api/rooms", Some("127.0.0.1")).await;
    assert_eq!(local.status, 200, "{}", local.body);
    let direct = get(server.addr, "/api/rooms", None).await;
    assert_eq!(direct.status, 200, "{}", direct.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_header_is_ignored() {
    let server = Server::start(&[], test_config()).await;
    let reply = get(server.addr, "/api/rooms", Some("203.0.113.7")).await;
    assert_eq!(reply.status, 200, "the TCP peer (loopback) is the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_per_forwarded_client() {
    let server = Server::start(
        &[],
        Config {
            max_conns_per_ip: 1,
            ..behind_local_proxy()
        },
    )
    .await;
    // A new long-poll session holds a connection slot until it expires.
    let open = |client| get(server.addr, "/socket/longpoll?vsn=2.0.0", Some(client));
    assert_eq!(open("198.51.100.1").await.status, 200);
    let second = open("198.51.100.1").await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(
        second
            .body
            .contains("too many connections from this address (limit 1)"),
        "{}",
        second.body
    );
    // Another browser behind the same proxy has its own slots...
    assert_eq!(open("198.51.100.2").await.status, 200);
    // ...and loopback clients stay exempt (limit_loopback is off).
    assert_eq!(open("127.0.0.1").await.status, 200);
    assert_eq!(open("127.0.0.1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_reaches_the_server_and_its_logs() {
    let rooms = rooms_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(
        rooms.path(),
        data.path(),
        &["--trusted-proxy", "127.0.0.1,::1"],
    )
    .await;
    assert!(server.logged("serving").await, "{}", server.log());
    let start = server
        .log()
        .lines()
        .find(|l| l.contains("serving"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        start.contains("trusted_proxies=[127.0.0.1, ::1]"),
        "{start}"
    );
    let remote = get(server.addr, "/api/rooms", Some("203.0.113.9")).await;
    assert_eq!(remote.status, 403, "{}", remote.body);
    // A refusal names the client and the proxy it came through.
    let reply = request(
        server.addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0",
        &[
            ("Origin", "https://evil.example.net"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        server.logged("peer=203.0.113.9 (via 127.0.0.1:").await,
        "{}",
        server.log()
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(["--trusted-proxy", "nginx.local", "--port", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("invalid value 'nginx.local' for '--trusted-proxy"),
        "{stderr}"
    );
}
