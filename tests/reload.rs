//! Hot reload: edit rooms-js while clients are joined; rooms switch to the
//! new code in place, keeping state and connections.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Server, test_config, texts};
use serde_json::{Value, json};

/// chat.js with an extra `shout` event.
fn chat_with_shout() -> String {
    let chat =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rooms-js/chat.js"))
            .unwrap();
    chat.replace(
        r#"  if (event !== "new_msg") throw new Error(`unknown event "${event}"`);"#,
        r#"  if (event === "shout") return { loud: String(payload.text).toUpperCase(), count: messages.length };
  if (event !== "new_msg") throw new Error(`unknown event "${event}"`);"#,
    )
}

/// Writes like an editor that saves through a temp file and a rename.
fn save(dir: &Path, name: &str, source: &str) {
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, source).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn joined(server: &Server, user: &str, topic: &str) -> (Client, String) {
    let mut c = server.client(user).await;
    let (jr, _) = c.join_ok(topic).await;
    (c, jr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_kind_reloads_live_rooms_in_place() {
    let server = Server::start(&[], test_config()).await;
    let (mut a, ja) = joined(&server, "alice", "chat:x").await;
    let (mut b, _) = joined(&server, "bob", "chat:x").await;
    for text in ["one", "two"] {
        a.call(&ja, "chat:x", "new_msg", json!({"text": text}))
            .await;
    }
    let old_version = server.api("/api/rooms/chat:x").await["version"].clone();
    let saved = Instant::now();
    save(&server.scripts(), "chat.js", &chat_with_shout());
    let reloaded_a = a.event("chat:x", "room_reloaded").await;
    let reloaded_b = b.event("chat:x", "room_reloaded").await;
    assert!(
        saved.elapsed() < Duration::from_secs(1),
        "reloaded within 1 s: {:?}",
        saved.elapsed()
    );
    assert_eq!(reloaded_a[4], reloaded_b[4]);
    assert_eq!(reloaded_a[4]["generation"], 2);
    assert_ne!(reloaded_a[4]["version"], old_version);
    // Same channel, same join_ref, state intact, new event live.
    let reply = a.call(&ja, "chat:x", "shout", json!({"text": "hey"})).await;
    assert_eq!(reply["response"], json!({"loud": "HEY", "count": 2}));
    assert_eq!(
        a.call(&ja, "chat:x", "new_msg", json!({"text": "three"}))
            .await["response"]["id"],
        3
    );
    let room = server.api("/api/rooms/chat:x").await;
    assert_eq!(room["version"], reloaded_a[4]["version"]);
    assert_eq!(room["generation"], 2);
    assert_eq!(room["restarts"], 0, "a reload is not a crash");
    assert!(
        a.none_within(Duration::from_millis(100), |v| v[3] == "phx_error"
            || v[3] == "phx_close")
            .await
    );
    // A later restart replays on top of the snapshot taken at the switch.
    server.kill("chat:x").await;
    let (mut c, jc) = joined(&server, "carol", "chat:x").await;
    let reply = c.call(&jc, "chat:x", "shout", json!({"text": "x"})).await;
    assert_eq!(reply["response"]["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_old_code_serving_until_fixed() {
    let server = Server::start(&[], test_config()).await;
    let (mut a, ja) = joined(&server, "alice", "chat:x").await;
    a.call(&ja, "chat:x", "new_msg", json!({"text": "before"}))
        .await;
    let good = std::fs::read_to_string(server.scripts().join("chat.js")).unwrap();
    let broken = good.replace(
        "export function onJoin(conn, params) {",
        "export function onJoin(conn, params) {\n  let x = ;",
    );
    save(&server.scripts(), "chat.js", &broken);
    let error = a.event("chat:x", "script_error").await;
    assert_eq!(error[4]["kind"], "chat");
    assert_eq!(error[4]["file"], "chat.js");
    assert!(error[4]["line"].as_u64().unwrap() > 0, "{error}");
    assert!(
        error[4]["message"].as_str().unwrap().contains("unexpected"),
        "{error}"
    );
    // The old code still serves.
    assert_eq!(
        a.call(&ja, "chat:x", "new_msg", json!({"text": "still"}))
            .await["status"],
        "ok"
    );
    let chat = kind(&server, "chat").await;
    assert_eq!(chat["script_error"]["file"], "chat.js");
    let room = server.api("/api/rooms/chat:x").await;
    assert_eq!(room["script_error"]["line"], error[4]["line"]);
    // Fix it: the room reloads.
    save(&server.scripts(), "chat.js", &chat_with_shout());
    a.event("chat:x", "room_reloaded").await;
    assert_eq!(
        a.call(&ja, "chat:x", "shout", json!({"text": "ok"})).await["response"]["count"],
        2
    );
    assert_eq!(
        server.api("/api/rooms/chat:x").await["script_error"],
        Value::Null
    );
}

const COUNTER_V1: &str = r#"
let n = 0;
export function onMessage() { n += 1; return { n }; }
export function snapshot() { return { n }; }
export function restore(s) { n = s.n; }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwing_restore_keeps_the_old_code() {
    let server = Server::start(&[("tally.js", COUNTER_V1)], test_config()).await;
    let (mut a, ja) = joined(&server, "alice", "tally:t").await;
    a.call(&ja, "tally:t", "inc", json!({})).await;
    let v1 = server.api("/api/rooms/tally:t").await["version"].clone();
    let bad = COUNTER_V1.replace(
        "export function restore(s) { n = s.n; }",
        "export function restore(s) {\n  throw new Error(\"cannot migrate\");\n}",
    );
    save(&server.scripts(), "tally.js", &bad);
    let error = a.event("tally:t", "script_error").await;
    assert!(
        error[4]["message"]
            .as_str()
            .unwrap()
            .contains("cannot migrate"),
        "{error}"
    );
    assert_eq!(error[4]["line"], 6, "{error}");
    let room = server.api("/api/rooms/tally:t").await;
    assert_eq!(room["version"], v1);
    assert!(
        room["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot migrate")
    );
    assert_eq!(
        a.call(&ja, "tally:t", "inc", json!({})).await["response"]["n"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_modules_reload_their_importers_and_escapes_are_refused() {
    let lib = "export function greet(name) { return `hello ${name}`; }\n";
    let kind = r#"import { greet } from "./lib/greet.js";
export function onMessage(conn) { return { text: greet(conn.user) }; }
"#;
    let server = Server::start(
        &[("lib/greet.js", lib), ("greeter.js", kind)],
        test_config(),
    )
    .await;
    let (mut a, ja) = joined(&server, "alice", "greeter:g").await;
    assert_eq!(
        a.call(&ja, "greeter:g", "hi", json!({})).await["response"]["text"],
        "hello alice"
    );
    save(
        &server.scripts().join("lib"),
        "greet.js",
        "export function greet(name) { return `hi ${name}!`; }\n",
    );
    a.event("greeter:g", "room_reloaded").await;
    assert_eq!(
        a.call(&ja, "greeter:g", "hi", json!({})).await["response"]["text"],
        "hi alice!"
    );
    // An import that climbs out of rooms-js is refused; the old code stays.
    std::fs::write(
        server.scripts().parent().unwrap().join("secret.js"),
        "export const s = 1;",
    )
    .ok();
    save(
        &server.scripts(),
        "greeter.js",
        &format!("import {{ s }} from \"../secret.js\";\n{kind}"),
    );
    let error = a.event("greeter:g", "script_error").await;
    assert!(
        error[4]["message"].as_str().unwrap().contains("escapes"),
        "{error}"
    );
    assert_eq!(
        a.call(&ja, "greeter:g", "hi", json!({})).await["response"]["text"],
        "hi alice!"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_kinds_join_and_deleted_kinds_refuse_new_rooms() {
    let server = Server::start(&[("tally.js", COUNTER_V1)], test_config()).await;
    let mut a = server.client("alice").await;
    let (_, reply) = a.join("fresh:one", json!({})).await;
    assert_eq!(reply["response"]["reason"], "unknown room kind");
    save(&server.scripts(), "fresh.js", COUNTER_V1);
    let (jf, _) = a.join_ok("fresh:one").await;
    assert_eq!(
        a.call(&jf, "fresh:one", "inc", json!({})).await["response"]["n"],
        1
    );
    // Delete a kind with a live room.
    let (jt, _) = a.join_ok("tally:live").await;
    std::fs::remove_file(server.scripts().join("tally.js")).unwrap();
    let mut refused = false;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, reply) = a.join(&format!("tally:other{i}"), json!({})).await;
        if reply["response"]["reason"] == "room kind removed" {
            refused = true;
            break;
        }
    }
    assert!(refused, "new rooms of a deleted kind are refused");
    assert_eq!(
        a.call(&jt, "tally:live", "inc", json!({})).await["response"]["n"],
        1,
        "the live room keeps working"
    );
    let tally = kind(&server, "tally").await;
    assert_eq!(tally["removed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_storm_ends_on_the_last_version_and_loses_nothing() {
    let server = Server::start(&[], test_config()).await;
    let (mut a, ja) = joined(&server, "alice", "chat:storm").await;
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut i = 0;
        while Instant::now() < deadline {
            let text = format!("m{i}");
            let reply = a
                .call(&ja, "chat:storm", "new_msg", json!({"text": text}))
                .await;
            assert_eq!(reply["status"], "ok", "{reply}");
            acked.push(text);
            i += 1;
        }
        acked
    });
    let base = chat_with_shout();
    for n in 0..20 {
        let version = base.replace(
            "const KEEP = 500;",
            &format!("const KEEP = 500; // save {n}"),
        );
        save(&server.scripts(), "chat.js", &version);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked = sender.await.unwrap();
    let last = crc32c_version(&server).await;
    let mut settled = false;
    for _ in 0..40 {
        let room = server.api("/api/rooms/chat:storm").await;
        if room["version"] == last {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "the room ends on the last saved version");
    let state = server.api("/api/rooms/chat:storm/state").await;
    assert_eq!(
        texts(&state["state"]["messages"]),
        acked[acked.len().saturating_sub(500)..].to_vec()
    );
}

/// What `GET /api/kinds` says about `name`.
async fn kind(server: &Server, name: &str) -> Value {
    let kinds = server.api("/api/kinds").await;
    kinds["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap()
        .clone()
}

/// The version the kinds API reports for chat once it stops changing.
async fn crc32c_version(server: &Server) -> Value {
    let mut last = Value::Null;
    for _ in 0..40 {
        let chat = kind(server, "chat").await["version"].clone();
        if chat == last {
            return chat;
        }
        last = chat;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_good_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("rooms-js/chat.js");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: chat.js"));
    std::fs::write(
        dir.path().join("bad.js"),
        "export function onMessage() {\n  return {;\n}\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .arg("check")
        .arg(dir.path().join("bad.js"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("bad.js:2:"), "{stderr}");
}

/// Save-to-`room_reloaded` latency as a client sees it (median of 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_to_reload_latency() {
    let server = Server::start(&[("tally.js", COUNTER_V1)], test_config()).await;
    let (mut a, _) = joined(&server, "alice", "tally:lat").await;
    let mut samples = Vec::new();
    for n in 0..20 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let saved = Instant::now();
        save(
            &server.scripts(),
            "tally.js",
            &format!("{COUNTER_V1}// edit {n}\n"),
        );
        a.event("tally:lat", "room_reloaded").await;
        samples.push(saved.elapsed());
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    eprintln!(
        "save -> room_reloaded: median {median:?}, min {:?}, max {:?}; all {samples:?}",
        samples[0], samples[19]
    );
    assert!(median < Duration::from_secs(1));
}
