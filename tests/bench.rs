//! The load generator end to end: every `roomhost bench` scenario, scaled
//! down, against a real server process. Checks that each run counts what it
//! claims (every expected delivery received, joins and contexts added up,
//! memory readings present), not how fast anything is: performance is
//! measured by the benches themselves, never by tests.

mod common;

use common::Binary;
use serde_json::Value;

/// Runs `roomhost bench <args> --json` against `server`; returns its report.
async fn bench(server: &Binary, args: &[&str]) -> Value {
    let url = format!("ws://{}/socket/websocket", server.addr);
    let pid = server.child.id().expect("the server runs").to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .arg("bench")
        .args(args)
        .args(["--url", &url, "--pid", &pid, "--json"])
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the bench ends by itself")
        .expect("the bench starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A load run delivered everything it sent, to every receiver.
fn assert_all_delivered(report: &Value, connections: u64) {
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["connections"], connections, "{report}");
    let expected = report["expected"].as_u64().expect("expected");
    assert!(expected > 0, "something was measured: {report}");
    assert_eq!(report["received"], expected, "{report}");
    assert_eq!(report["delivery_ratio"], 1.0, "{report}");
    let latency = &report["latency_ms"];
    let (p50, max) = (latency["p50"].as_f64(), latency["max"].as_f64());
    assert!(p50.is_some_and(|p| p > 0.0) && max >= p50, "{report}");
    assert!(report["server_peak_rss_kib"].as_u64().unwrap_or(0) > 0);
}

/// A load run reported what joining cost and, with `--pid`, the server's
/// CPU time: every client's join timed, the CPU readings of a live process.
fn assert_join_and_cpu_costs(report: &Value, clients: u64) {
    let joins = &report["joins"];
    assert_eq!(joins["clients"], clients, "{report}");
    let total = joins["total_s"].as_f64().expect("total_s");
    let (p50, max) = (
        joins["latency_ms"]["p50"].as_f64().expect("join p50"),
        joins["latency_ms"]["max"].as_f64().expect("join max"),
    );
    assert!(p50 > 0.0 && max >= p50 && total >= max / 1000.0, "{report}");
    let cpu = &report["server_cpu"];
    let (setup, window) = (cpu["setup_s"].as_f64(), cpu["window_s"].as_f64());
    assert!(setup.is_some_and(|s| s >= 0.0), "{report}");
    let window = window.expect("window_s");
    let sent = report["sent"].as_f64().expect("sent");
    let per_message = cpu["per_message_us"].as_f64().expect("per_message_us");
    assert!((per_message - window * 1e6 / sent).abs() < 1e-6, "{report}");
    assert!(cpu["threads"].as_u64().unwrap_or(0) >= 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_counts_what_it_sent() {
    let rooms = common::rooms_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(rooms.path(), data.path(), &["--msg-rate", "0"]).await;
    let short = ["--duration", "1", "--warmup", "0.2"];

    let fanout = [
        &short[..],
        &["--clients", "8", "--senders", "2", "--rate", "40"],
    ]
    .concat();
    let report = bench(&server, &[&["fanout"], &fanout[..]].concat()).await;
    assert_eq!(report["scenario"], "fanout");
    assert_all_delivered(&report, 8);
    // 2 senders × 40 msg/s × 1 s, each to 8 receivers (the warm-up excluded).
    let expected = report["expected"].as_u64().unwrap();
    assert!((400..=960).contains(&expected), "{report}");

    let rooms_args = [
        &short[..],
        &["--rooms", "4", "--clients", "3", "--rate", "20"],
    ]
    .concat();
    let report = bench(&server, &[&["rooms"], &rooms_args[..]].concat()).await;
    assert_eq!(report["rooms"], 4);
    assert_all_delivered(&report, 12);

    let maxtp = [
        &short[..],
        &["--clients", "4", "--senders", "2", "--inflight", "2"],
    ]
    .concat();
    let report = bench(&server, &[&["maxtp"], &maxtp[..]].concat()).await;
    assert_all_delivered(&report, 4);

    let big = [
        &short[..],
        &["--rooms", "6", "--clients", "3", "--rate", "10"],
    ]
    .concat();
    let report = bench(&server, &[&["big"], &big[..]].concat()).await;
    assert_eq!(
        (report["scenario"].as_str(), report["rooms"].as_u64()),
        (Some("big"), Some(6))
    );
    assert_all_delivered(&report, 18);
    assert_join_and_cpu_costs(&report, 18);

    let fan1k = [&short[..], &["--clients", "30", "--rate", "10"]].concat();
    let report = bench(&server, &[&["fan1k"], &fan1k[..]].concat()).await;
    assert_eq!(report["scenario"], "fan1k");
    assert_all_delivered(&report, 30);
    assert_join_and_cpu_costs(&report, 30);
    // fan1k's 2 senders (its default) × 10 msg/s × 1 s, each to 30 receivers.
    let expected = report["expected"].as_u64().unwrap();
    assert!((300..=900).contains(&expected), "{report}");

    let report = bench(&server, &["coldstart", "--count", "6", "--pause", "20"]).await;
    let cold = &report["coldstart"];
    assert_eq!(cold["joins"], 6, "{report}");
    assert_eq!(cold["pause_ms"], 20.0);
    let contexts = &cold["contexts"];
    let taken = contexts["warm"].as_u64().unwrap() + contexts["built"].as_u64().unwrap();
    assert_eq!(taken, 6, "one context per cold room: {report}");
    assert!(cold["cold"]["p50"].as_f64().unwrap() > 0.0);
    assert!(cold["warm"]["p50"].as_f64().unwrap() > 0.0);

    let report = bench(&server, &["idle", "--rooms", "3", "--clients", "2"]).await;
    let idle = &report["idle"];
    assert_eq!(
        (idle["rooms"].as_u64(), idle["clients_per_room"].as_u64()),
        (Some(3), Some(2))
    );
    for reading in [
        "rss_baseline_kib",
        "rss_connected_kib",
        "rss_rooms_kib",
        "rss_joined_kib",
    ] {
        assert!(
            idle[reading].as_u64().unwrap_or(0) > 0,
            "{reading}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_api_scenarios_run_and_count_what_they_measured() {
    let hop = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kinds/hop.js"),
    )
    .unwrap();
    let rooms = common::rooms_dir(&[("hop.js", &hop)]);
    let data = tempfile::tempdir().unwrap();
    let server = Binary::start(
        rooms.path(),
        data.path(),
        &["--msg-rate", "0", "--hibernate-after", "0.3"],
    )
    .await;

    let report = bench(
        &server,
        &["wake", "--rooms", "4", "--rounds", "2", "--nap", "1"],
    )
    .await;
    assert_eq!(report["room_api"]["samples"], 8, "{report}");
    assert_eq!(
        report["room_api"]["wakes"], 8,
        "every push woke its room: {report}"
    );
    assert!(report["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    let report = bench(&server, &["tick", "--duration", "1", "--every", "50"]).await;
    let ticks = report["room_api"]["samples"].as_u64().unwrap();
    assert!(
        (10..=25).contains(&ticks),
        "about 20 ticks in a second: {report}"
    );
    assert_eq!(report["room_api"]["missed"], 0, "{report}");

    let report = bench(&server, &["hop", "--duration", "1", "--warmup", "0.2"]).await;
    assert!(report["received"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["errors"], 0, "{report}");

    let report = bench(
        &server,
        &["idle", "--rooms", "3", "--clients", "2", "--hold", "1.5"],
    )
    .await;
    // The three rooms held, and the bench's own warm room.
    let hibernated = report["idle"]["hibernated"].as_u64().unwrap_or(0);
    assert!(hibernated >= 3, "held rooms hibernate: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_that_cannot_run_says_why() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args([
            "bench",
            "idle",
            "--url",
            "ws://127.0.0.1:9/socket/websocket",
        ])
        .output()
        .await
        .expect("the bench starts");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pid"), "{stderr}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(["bench", "coldstart", "--count", "0"])
        .output()
        .await
        .expect("the bench starts");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}
