//! `GET /metrics`: the metric names, counters that move with traffic,
//! separate registries per host, and the admin access rule it shares with
//! `/api`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::{Server, WAIT, http, test_config};
use serde_json::json;
use tower::ServiceExt;

/// Every metric family `/metrics` exposes (the `# TYPE` names).
const FAMILIES: &[(&str, &str)] = &[
    ("roomhost_rooms", "gauge"),
    ("roomhost_room_starts", "counter"),
    ("roomhost_room_contexts", "counter"),
    ("roomhost_room_crashes", "counter"),
    ("roomhost_room_restarts", "counter"),
    ("roomhost_channels", "gauge"),
    ("roomhost_connections", "gauge"),
    ("roomhost_messages_in", "counter"),
    ("roomhost_messages_out", "counter"),
    ("roomhost_fanout_deliveries", "counter"),
    ("roomhost_hook_duration_seconds", "histogram"),
    ("roomhost_journal_fsync_duration_seconds", "histogram"),
    ("roomhost_journal_fsync_group_events", "histogram"),
    ("roomhost_js_memory_bytes", "gauge"),
    ("roomhost_room_js_memory_bytes", "gauge"),
    ("roomhost_slow_consumer_disconnects", "counter"),
    ("roomhost_rate_limited", "counter"),
    ("roomhost_auth_failures", "counter"),
    ("roomhost_connections_refused", "counter"),
    ("roomhost_build_info", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
];

/// Scrapes until `ready` holds (at most 5 s), returning the last scrape.
/// Counters move just after the event a client sees (a frame is counted once
/// queued or written, which may be after the client read it), so a test that
/// reacts to a frame polls briefly instead of racing the counter.
async fn scrape_until(server: &Server, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics().await;
        if ready(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the sample `name` (with its labels, exactly), or 0 if the
/// sample is absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_named_typed_and_move_with_traffic() {
    let server = Server::start(&[], test_config()).await;
    let before = server.metrics().await;
    assert!(before.ends_with("# EOF\n"));
    assert_eq!(sample(&before, "roomhost_room_starts_total"), 0.0);
    // Series with known labels exist from the start, at zero.
    for series in [
        "roomhost_connections{transport=\"longpoll\"} 0",
        "roomhost_room_crashes_total{reason=\"cpu\"} 0",
        "roomhost_auth_failures_total{reason=\"expired\"} 0",
        "roomhost_connections_refused_total{reason=\"origin\"} 0",
        "roomhost_rooms{state=\"failed\"} 0",
    ] {
        assert!(before.contains(series), "{series} missing in\n{before}");
    }

    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (ja, _) = alice.join_ok("chat:metrics").await;
    let (_jb, _) = bob.join_ok("chat:metrics").await;
    // Both have seen bob's presence: the joins' broadcasts are all out.
    alice
        .until(|v| v[3] == "presence_diff" && v[4]["joins"]["bob"].is_object())
        .await;
    bob.until(|v| v[3] == "presence_diff" && v[4]["joins"]["bob"].is_object())
        .await;
    let fanout_before = sample(
        &scrape_until(&server, |t| {
            sample(t, "roomhost_fanout_deliveries_total") >= 2.0
        })
        .await,
        "roomhost_fanout_deliveries_total",
    );
    assert!(fanout_before >= 2.0, "presence diffs are broadcasts too");
    const N: usize = 5;
    for i in 0..N {
        let reply = alice
            .call(
                &ja,
                "chat:metrics",
                "new_msg",
                json!({"text": format!("m{i}")}),
            )
            .await;
        assert_eq!(reply["status"], "ok");
    }
    for _ in 0..N {
        bob.event("chat:metrics", "new_msg").await;
    }

    let ws = "{transport=\"websocket\"}";
    let out = format!("roomhost_messages_out_total{ws}");
    let text = scrape_until(&server, |t| {
        sample(t, "roomhost_fanout_deliveries_total") - fanout_before >= (2 * N) as f64
            && sample(t, &out) >= (2 + 3 * N) as f64
    })
    .await;
    for (family, kind) in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} ({kind}) missing in\n{text}"
        );
    }
    assert_eq!(sample(&text, &format!("roomhost_connections{ws}")), 2.0);
    assert_eq!(sample(&text, "roomhost_channels"), 2.0);
    assert_eq!(sample(&text, "roomhost_rooms{state=\"running\"}"), 1.0);
    assert_eq!(sample(&text, "roomhost_room_starts_total"), 1.0);
    // 2 joins + N messages in; every reply and broadcast out.
    assert!(sample(&text, &format!("roomhost_messages_in_total{ws}")) >= (2 + N) as f64);
    assert!(sample(&text, &format!("roomhost_messages_out_total{ws}")) >= (2 + 3 * N) as f64);
    // Each broadcast reaches both channels.
    assert_eq!(
        sample(&text, "roomhost_fanout_deliveries_total") - fanout_before,
        (2 * N) as f64
    );
    let hooks = "roomhost_hook_duration_seconds_count{hook=\"message\",kind=\"chat\"}";
    assert_eq!(sample(&text, hooks), N as f64);
    let joins = "roomhost_hook_duration_seconds_count{hook=\"join\",kind=\"chat\"}";
    assert_eq!(sample(&text, joins), 2.0);
    // Strict durability: every event fsynced, in groups of at least one.
    let fsyncs = sample(&text, "roomhost_journal_fsync_duration_seconds_count");
    assert!(fsyncs >= 1.0, "{text}");
    assert_eq!(
        sample(&text, "roomhost_journal_fsync_group_events_count"),
        fsyncs
    );
    assert!(sample(&text, "roomhost_journal_fsync_group_events_sum") >= (2 + N) as f64);
    let memory = sample(
        &text,
        "roomhost_room_js_memory_bytes{topic=\"chat:metrics\"}",
    );
    assert!(memory > 0.0, "{text}");
    assert_eq!(sample(&text, "roomhost_js_memory_bytes"), memory);

    // A crash (an admin kill) and its restart.
    server.kill("chat:metrics").await;
    let text = server.metrics().await;
    assert_eq!(
        sample(&text, "roomhost_room_crashes_total{reason=\"killed\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "roomhost_room_restarts_total{reason=\"killed\"}"),
        1.0
    );
    assert_eq!(sample(&text, "roomhost_room_starts_total"), 2.0);
    let contexts = |t: &str| {
        sample(t, "roomhost_room_contexts_total{source=\"warm\"}")
            + sample(t, "roomhost_room_contexts_total{source=\"built\"}")
    };
    assert_eq!(contexts(&text), 2.0, "one context per start");

    // Connections going away are counted down.
    alice.close().await;
    bob.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = server.metrics().await;
        if sample(&text, &format!("roomhost_connections{ws}")) == 0.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rooms take warm contexts when the pool has one ready, and build their own
/// otherwise (or always, with the pool turned off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_contexts_are_counted_by_source() {
    let warm = "roomhost_room_contexts_total{source=\"warm\"}";
    let built = "roomhost_room_contexts_total{source=\"built\"}";

    let off = Server::start(
        &[],
        roomhost::Config {
            warm_contexts: 0,
            ..test_config()
        },
    )
    .await;
    let mut client = off.client("ann").await;
    for i in 0..3 {
        client.join_ok(&format!("chat:off-{i}")).await;
    }
    let text = off.metrics().await;
    assert_eq!((sample(&text, warm), sample(&text, built)), (0.0, 3.0));

    // With a pool, a room started after a pause finds a ready context (the
    // pool refills in the background, so give it a few chances).
    let pooled = Server::start(&[], test_config()).await;
    let mut client = pooled.client("ann").await;
    let mut rooms = 0.0;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.join_ok(&format!("chat:pooled-{i}")).await;
        rooms += 1.0;
        let text = pooled.metrics().await;
        assert_eq!(sample(&text, warm) + sample(&text, built), rooms);
        if sample(&text, warm) >= 1.0 {
            return;
        }
    }
    panic!("no room took a warm context in 50 starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_has_its_own_registry() {
    let busy = Server::start(&[], test_config()).await;
    let quiet = Server::start(&[], test_config()).await;
    let mut client = busy.client("ann").await;
    let (jr, _) = client.join_ok("chat:one").await;
    client
        .call(&jr, "chat:one", "new_msg", json!({"text": "hi"}))
        .await;
    let ws = "{transport=\"websocket\"}";
    assert!(
        sample(
            &busy.metrics().await,
            &format!("roomhost_messages_in_total{ws}")
        ) >= 2.0
    );
    let text = quiet.metrics().await;
    assert_eq!(
        sample(&text, &format!("roomhost_messages_in_total{ws}")),
        0.0
    );
    assert_eq!(sample(&text, "roomhost_room_starts_total"), 0.0);
}

/// A request as the router sees it from `peer`.
async fn status_from(
    router: axum::Router,
    path: &str,
    peer: &str,
    bearer: Option<&str>,
) -> StatusCode {
    let peer: SocketAddr = peer.parse().unwrap();
    let mut request = Request::builder().uri(path).extension(ConnectInfo(peer));
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

/// The admin rule looks at the TCP peer's address: without an admin token,
/// loopback peers only (all of 127.0.0.0/8 and ::1, so a server bound to
/// 127.0.0.2 would not tell anything apart); with one, the bearer token from
/// anywhere. A non-loopback peer cannot be produced on this machine's
/// loopback interface, so the real router is driven in-process with the
/// peer address a served connection would carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_api_follow_the_admin_rule() {
    let open = Server::start(&[], test_config()).await;
    for path in ["/metrics", "/api/rooms"] {
        let router = || open.host.router();
        assert_eq!(
            status_from(router(), path, "192.0.2.7:5555", None).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, "[2001:db8::1]:80", None).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, "127.0.0.1:5555", None).await,
            200,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, "127.0.0.2:5555", None).await,
            200,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, "[::1]:5555", None).await,
            200,
            "{path}"
        );
    }
    // Over a real socket from 127.0.0.1.
    open.metrics().await;

    let config = roomhost::Config {
        admin_token: Some("admin-secret".into()),
        ..test_config()
    };
    let guarded = Server::start(&[], config).await;
    for path in ["/metrics", "/api/rooms"] {
        let router = || guarded.host.router();
        let remote = "192.0.2.7:5555";
        assert_eq!(
            status_from(router(), path, remote, None).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, remote, Some("wrong")).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_from(router(), path, remote, Some("admin-secret")).await,
            200,
            "{path}"
        );
        // With a token configured, loopback needs it too.
        assert_eq!(
            status_from(router(), path, "127.0.0.1:1", None).await,
            403,
            "{path}"
        );
    }
    let (status, body) = http(guarded.addr, "GET", "/metrics", None).await;
    assert_eq!(status, 403);
    assert!(
        body["reason"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
}

/// `relaxed` fsyncs once per interval (10 ms) while events keep coming, not
/// back to back as fast as the disk allows, and still covers every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_fsyncs_once_per_interval_and_covers_every_event() {
    let config = roomhost::Config {
        durability: roomhost::Durability::Relaxed,
        ..test_config()
    };
    let server = Server::start(&[], config).await;
    let mut alice = server.client("alice").await;
    let (ja, _) = alice.join_ok("chat:relaxed").await;
    let started = tokio::time::Instant::now();
    let mut events = 1; // the join
    while started.elapsed() < Duration::from_millis(300) {
        let text = format!("m{events}");
        let reply = alice
            .call(&ja, "chat:relaxed", "new_msg", json!({ "text": text }))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        events += 1;
    }
    let synced = "roomhost_journal_fsync_group_events_sum";
    let text = scrape_until(&server, |t| sample(t, synced) >= events as f64).await;
    let elapsed = started.elapsed();
    assert_eq!(
        sample(&text, synced),
        events as f64,
        "every event synced once"
    );
    let fsyncs = sample(&text, "roomhost_journal_fsync_duration_seconds_count");
    let intervals = (elapsed.as_millis() / 10) as f64;
    assert!(
        fsyncs >= 1.0 && fsyncs <= intervals + 2.0,
        "{fsyncs} fsyncs for {events} events in {elapsed:?}"
    );
    assert!(
        events > 2 * intervals as usize,
        "{events} events: too few to tell"
    );
}

/// The `roomhost_rooms` gauges agree with `/api/rooms`, stopped rooms (durable
/// state, no task) included, and the totals count what the list shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_gauges_agree_with_the_api() {
    let server = Server::start(&[], test_config()).await;
    let mut c = server.client("ana").await;
    for name in ["a", "b", "c"] {
        let topic = format!("chat:{name}");
        let (jr, _) = c.join_ok(&topic).await;
        let reply = c.call(&jr, &topic, "new_msg", json!({"text": "hi"})).await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    c.close().await;
    // Restarted on the same data: three stopped rooms; one started again.
    let (rooms, data) = server.stop().await;
    let server = Server::start_in(rooms, data, test_config()).await;
    let mut c = server.client("ana").await;
    c.join_ok("chat:b").await;
    let list = server.api("/api/rooms").await;
    let metrics = server.metrics().await;
    let rooms = list["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 3, "{list}");
    assert_eq!(list["totals"]["rooms"], 3, "{list}");
    assert_eq!(list["totals"]["live_rooms"], 1, "{list}");
    for state in roomhost::metrics::ROOM_STATES {
        let in_api = rooms.iter().filter(|r| r["state"] == state).count();
        assert_eq!(
            sample(&metrics, &format!("roomhost_rooms{{state=\"{state}\"}}")),
            in_api as f64,
            "state {state}: api {list}\nmetrics\n{metrics}"
        );
    }
    assert_eq!(sample(&metrics, "roomhost_rooms{state=\"stopped\"}"), 2.0);
    let channels: u64 = rooms.iter().map(|r| r["channels"].as_u64().unwrap()).sum();
    assert_eq!(sample(&metrics, "roomhost_channels"), channels as f64);
    c.close().await;
}

/// The standard process families and the build info, with plausible values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_metrics_and_build_info_are_exposed() {
    let server = Server::start(&[], test_config()).await;
    let text = server.metrics().await;
    for (family, kind) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_threads", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("roomhost_build_info", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} missing in\n{text}"
        );
    }
    assert!(
        sample(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    let fds = sample(&text, "process_open_fds");
    assert!(
        fds >= 3.0 && fds <= sample(&text, "process_max_fds"),
        "{text}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&text, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines()
            .any(|l| l.starts_with("roomhost_build_info{commit=\"")
                && l.ends_with(&format!(",version=\"{version}\"}} 1"))),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "one EOF, at the end");
    assert_eq!(text.matches("# EOF").count(), 1);
}
