//! Connection tokens and the Origin check, over every transport: the
//! WebSocket upgrade, long-poll, the SSE stream and the HTTP post, and the
//! `roomhost token` command.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::raw_http::{Reply, request};
use common::{Client, Server, test_config};
use hmac::{Hmac, KeyInit, Mac};
use roomhost::auth::{self, Secret};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

const SECRET: &str = "a test secret";

/// Answers with who the host says the connection is.
const WHOAMI: &str = r#"
export function onJoin(conn) { return { user: conn.user }; }
export function onMessage(conn, event, payload) {
  room.broadcast("seen", { user: conn.user });
  return { user: conn.user };
}
"#;

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn token(user: &str) -> String {
    auth::mint(&secret(), user, Duration::from_secs(3600))
}

/// A JWT with any header and claims, signed with `key`.
fn jwt(header: &Value, claims: &Value, key: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

async fn auth_server() -> Server {
    let config = roomhost::Config {
        auth_secret: Some(secret()),
        ..test_config()
    };
    Server::start(&[("whoami.js", WHOAMI)], config).await
}

/// A WebSocket handshake with extra headers: the connected client and the
/// subprotocol the server chose, or the refusal's HTTP status and body.
async fn handshake(
    server: &Server,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Option<String>), (u16, String)> {
    let url = format!("ws://{}/socket/websocket?{query}", server.addr);
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((Client::from_stream(ws), protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// Who the host says a connected client is (the join reply of `whoami`).
async fn whoami(client: &mut Client) -> String {
    let (_, response) = client.join_ok("whoami:x").await;
    response["user"].as_str().unwrap().to_string()
}

async fn refused(server: &Server, query: &str, headers: &[(&str, &str)]) -> String {
    match handshake(server, query, headers).await {
        Ok(_) => panic!("connected with {query:?} {headers:?}"),
        Err((status, body)) => {
            assert_eq!(status, 403, "{body}");
            body
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_needs_a_valid_token_and_is_the_token_s_user() {
    let server = auth_server().await;
    let now = auth::now_secs();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});

    // Valid, via the `token` param: the user is the token's, not the param's.
    let alice = token("alice");
    let (mut client, _) = handshake(
        &server,
        &format!("vsn=2.0.0&token={alice}&user=mallory"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(whoami(&mut client).await, "alice");
    let (jr, _) = client.join_ok("whoami:y").await;
    let reply = client.call(&jr, "whoami:y", "hi", json!({})).await;
    assert_eq!(reply["response"]["user"], "alice");

    // Via `Authorization: Bearer`.
    let bearer = format!("Bearer {}", token("bob"));
    let (mut client, _) = handshake(&server, "vsn=2.0.0", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(whoami(&mut client).await, "bob");

    // Via Phoenix's subprotocol, answered with `phoenix`.
    let protocols = format!(
        "phoenix, base64url.bearer.phx.{}",
        URL_SAFE_NO_PAD.encode(token("carol"))
    );
    let (mut client, protocol) = handshake(
        &server,
        "vsn=2.0.0",
        &[("sec-websocket-protocol", &protocols)],
    )
    .await
    .unwrap();
    assert_eq!(protocol.as_deref(), Some("phoenix"));
    assert_eq!(whoami(&mut client).await, "carol");

    // Refusals, each with its reason.
    let body = refused(&server, "vsn=2.0.0&user=alice", &[]).await;
    assert!(body.contains("authentication required"), "{body}");
    let expired = jwt(&hs256, &json!({"sub": "alice", "exp": now - 10}), SECRET);
    let body = refused(&server, &format!("vsn=2.0.0&token={expired}"), &[]).await;
    assert_eq!(body, "token expired");
    let forged = auth::mint(
        &Secret::new("another secret").unwrap(),
        "alice",
        Duration::from_secs(3600),
    );
    let body = refused(&server, &format!("vsn=2.0.0&token={forged}"), &[]).await;
    assert_eq!(body, "invalid token: bad signature");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "root", "exp": now + 3600}).to_string())
    );
    let body = refused(&server, &format!("vsn=2.0.0&token={none}"), &[]).await;
    assert!(body.contains("algorithm \"none\""), "{body}");
    let early = jwt(
        &hs256,
        &json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}),
        SECRET,
    );
    let body = refused(&server, &format!("vsn=2.0.0&token={early}"), &[]).await;
    assert!(body.contains("not valid yet"), "{body}");
    let body = refused(
        &server,
        "vsn=2.0.0",
        &[("authorization", "Bearer nonsense")],
    )
    .await;
    assert!(body.starts_with("invalid token"), "{body}");

    let text = server.metrics().await;
    for line in [
        "roomhost_auth_failures_total{reason=\"missing\"} 1",
        "roomhost_auth_failures_total{reason=\"expired\"} 1",
        "roomhost_auth_failures_total{reason=\"signature\"} 1",
        "roomhost_auth_failures_total{reason=\"algorithm\"} 1",
        "roomhost_auth_failures_total{reason=\"not_yet_valid\"} 1",
        "roomhost_auth_failures_total{reason=\"malformed\"} 1",
        "roomhost_connections_refused_total{reason=\"auth\"} 6",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_user_param_still_names_the_user() {
    let server = Server::start(&[("whoami.js", WHOAMI)], test_config()).await;
    let (mut client, protocol) = handshake(&server, "vsn=2.0.0&user=dora", &[])
        .await
        .unwrap();
    assert_eq!(protocol, None, "no subprotocol offered, none answered");
    assert_eq!(whoami(&mut client).await, "dora");
}

fn status_of(reply: &Reply) -> u16 {
    reply.json()["status"].as_u64().unwrap() as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_sse_and_posts_follow_the_same_rule() {
    let server = auth_server().await;
    let addr = server.addr;
    let alice = token("alice");

    // Long-poll: refused without a token, HTTP 403 and Phoenix's body.
    let reply = request(
        addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0&user=alice",
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(status_of(&reply), 403);
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("authentication required")
    );
    let expired = jwt(
        &json!({"alg": "HS256"}),
        &json!({"sub": "alice", "exp": auth::now_secs() - 1}),
        SECRET,
    );
    let reply = request(
        addr,
        "GET",
        &format!("/socket/longpoll?vsn=2.0.0&token={expired}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["reason"].clone()),
        (403, json!("token expired"))
    );

    // phoenix.js's `authToken` on long-poll: the X-Phoenix-AuthToken header.
    let reply = request(
        addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0",
        &[("x-phoenix-authtoken", &token("erin"))],
        b"",
    )
    .await;
    assert_eq!(
        (reply.status, status_of(&reply)),
        (200, 410),
        "{}",
        reply.body
    );

    // `params: {token}`: the first GET carries the connection token, later
    // requests the session token after it (the last `token` wins).
    let reply = request(
        addr,
        "GET",
        &format!("/socket/longpoll?vsn=2.0.0&token={alice}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status_of(&reply), 410, "{}", reply.body);
    let session = reply.json()["token"].as_str().unwrap().to_string();
    let path = format!("/socket/longpoll?vsn=2.0.0&token={alice}&token={session}");
    let join = r#"["1","1","whoami:lp","phx_join",{}]"#;
    let reply = request(
        addr,
        "POST",
        &path,
        &[("content-type", "application/x-ndjson")],
        join.as_bytes(),
    )
    .await;
    assert_eq!(status_of(&reply), 200, "{}", reply.body);
    let reply = request(addr, "GET", &path, &[], b"").await;
    assert_eq!(status_of(&reply), 200, "{}", reply.body);
    let frames: Vec<Value> = reply.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m.as_str().unwrap()).unwrap())
        .collect();
    let joined = frames
        .iter()
        .find(|f| f[3] == "phx_reply")
        .expect("the join reply");
    assert_eq!(joined[4]["response"]["user"], "alice", "{frames:?}");

    // SSE stream: refused without a token.
    let reply = request(addr, "GET", "/api/rooms/whoami:sse/events", &[], b"").await;
    assert_eq!(reply.status, 403);
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("authentication required")
    );

    // HTTP post: refused without a token; with one, the body's user is ignored.
    let post = br#"{"event":"hi","user":"mallory"}"#;
    let json_type = [("content-type", "application/json")];
    let reply = request(
        addr,
        "POST",
        "/api/rooms/whoami:post/messages",
        &json_type,
        post,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let bearer = format!("Bearer {alice}");
    let reply = request(
        addr,
        "POST",
        "/api/rooms/whoami:post/messages",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        post,
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"user": "alice"}))
    );
    let reply = request(
        addr,
        "POST",
        &format!("/api/rooms/whoami:post/messages?token={alice}"),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"event=hi&user=mallory",
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"user": "alice"}))
    );
}

async fn origin_server(allowed: &[&str]) -> Server {
    let config = roomhost::Config {
        allowed_origins: allowed.iter().map(|o| o.to_string()).collect(),
        ..test_config()
    };
    Server::start(&[("whoami.js", WHOAMI)], config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_connections_are_refused_by_default() {
    let server = origin_server(&[]).await;
    let addr = server.addr;
    let own = format!("http://{addr}");
    let query = "vsn=2.0.0&user=olga";

    // Same origin, and no Origin at all (not a browser): allowed.
    let (mut client, _) = handshake(&server, query, &[("origin", &own)])
        .await
        .unwrap();
    assert_eq!(whoami(&mut client).await, "olga");
    handshake(&server, query, &[]).await.unwrap();

    // Another site, another port, `null`: refused with the reason.
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let body = refused(&server, query, &[("origin", origin)]).await;
        assert!(body.contains("not allowed"), "{origin}: {body}");
    }
    // Long-poll too.
    let reply = request(
        addr,
        "GET",
        "/socket/longpoll?vsn=2.0.0",
        &[("origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!((reply.status, status_of(&reply)), (403, 403));
    // A cross-site form post reaches no room.
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", "http://evil.example"),
    ];
    let reply = request(
        addr,
        "POST",
        "/api/rooms/whoami:f/messages",
        &form,
        b"text=hi",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.json()["reason"]
            .as_str()
            .unwrap()
            .contains("not allowed")
    );
    assert!(
        server.host.rooms().iter().all(|r| r.topic != "whoami:f"),
        "the room never started"
    );
    // Browsers that send no Origin but say the request is cross-site.
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("sec-fetch-site", "cross-site"),
    ];
    let reply = request(
        addr,
        "POST",
        "/api/rooms/whoami:f/messages",
        &form,
        b"text=hi",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // The same form from the page's own origin goes through.
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", own.as_str()),
    ];
    let reply = request(
        addr,
        "POST",
        "/api/rooms/whoami:f/messages",
        &form,
        b"user=olga",
    )
    .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"user": "olga"})));

    let text = server.metrics().await;
    let line = "roomhost_connections_refused_total{reason=\"origin\"} 6";
    assert!(text.contains(line), "{line} missing in\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_are_allowed_and_star_allows_all() {
    let server = origin_server(&["https://app.example.com", "http://localhost:5173"]).await;
    let query = "vsn=2.0.0&user=lee";
    for origin in ["https://app.example.com", "http://localhost:5173"] {
        let (mut client, _) = handshake(&server, query, &[("origin", origin)])
            .await
            .unwrap();
        assert_eq!(whoami(&mut client).await, "lee");
    }
    for origin in [
        "http://app.example.com",
        "https://evil.example",
        "http://localhost:5174",
    ] {
        refused(&server, query, &[("origin", origin)]).await;
    }

    let server = origin_server(&["*"]).await;
    let (mut client, _) = handshake(&server, query, &[("origin", "https://anywhere.example")])
        .await
        .unwrap();
    assert_eq!(whoami(&mut client).await, "lee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_allowed_origin_is_a_build_error() {
    let config = roomhost::Config {
        allowed_origins: vec!["example.com".into()],
        ..test_config()
    };
    let error = roomhost::Host::builder()
        .config(config)
        .build()
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("example.com"), "{error}");
}

#[test]
fn the_token_command_mints_tokens_the_server_accepts() {
    let bin = env!("CARGO_BIN_EXE_roomhost");
    let output = std::process::Command::new(bin)
        .args(["token", "--user", "alice", "--ttl", "1h"])
        .env("ROOMHOST_SECRET", SECRET)
        .env_remove("ROOMHOST_SECRET_FILE")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = auth::verify(&secret(), token.trim()).unwrap();
    assert_eq!(claims.user, "alice");
    let ttl = claims.exp - auth::now_secs();
    assert!((3590..=3600).contains(&ttl), "{ttl}");

    // From a file, too; and no secret at all is an error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let output = std::process::Command::new(bin)
        .args(["token", "--user", "bob", "--ttl", "90s", "--secret-file"])
        .arg(&file)
        .env_remove("ROOMHOST_SECRET")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(auth::verify(&secret(), token.trim()).unwrap().user, "bob");
    let output = std::process::Command::new(bin)
        .args(["token", "--user", "carl"])
        .env_remove("ROOMHOST_SECRET")
        .env_remove("ROOMHOST_SECRET_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ROOMHOST_SECRET"));
}
