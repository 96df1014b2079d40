//! What rooms and connections cost the server: `coldstart` (a never-used
//! room's first join against a running room's) and `idle` (the memory idle
//! connections and rooms hold), plus reading the server's own metrics.

use std::time::Duration;

use anyhow::bail;
use futures_util::SinkExt;

use super::client::Client;
use super::report::{ColdStart, Contexts, Idle, Latency, Report, proc_status_kib};
use super::{BenchArgs, HEARTBEAT, SETTLE, histogram, open_all, run_id};

/// Joins never-used rooms one after another, alternating with joins of a
/// room that is already running, on one connection.
pub(super) async fn coldstart(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if !(args.pause >= 0.0 && args.pause.is_finite()) {
        bail!("--pause must be a number of milliseconds, 0 or more");
    }
    let run = run_id();
    let mut client = Client::connect(args.url(), "bcold").await?;
    let warm_topic = format!("{}:bench-{run}-warm", args.kind);
    // Start the warm room (and let the server compile the kind) first.
    let (join_ref, _) = client.join(&warm_topic).await?;
    client.leave(&warm_topic, join_ref).await?;
    let contexts_before = room_contexts(args.url()).await;
    let (mut cold, mut warm) = (histogram(), histogram());
    // With a pause, each join (cold and warm alike) follows one, so the
    // two are measured from the same idle state and their difference is
    // the cold start, not the cost of waking an idle machine.
    let pause = || async {
        if args.pause > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.pause / 1000.0)).await;
        }
    };
    for i in 0..args.count {
        let topic = format!("{}:bench-{run}-cold-{i}", args.kind);
        pause().await;
        let (join_ref, took) = client.join(&topic).await?;
        let _ = cold.record((took.as_micros() as u64).max(1));
        client.leave(&topic, join_ref).await?;
        pause().await;
        let (join_ref, took) = client.join(&warm_topic).await?;
        let _ = warm.record((took.as_micros() as u64).max(1));
        client.leave(&warm_topic, join_ref).await?;
    }
    let (Some(cold), Some(warm)) = (Latency::from_us(&cold), Latency::from_us(&warm)) else {
        bail!("no joins were measured");
    };
    let contexts = match (contexts_before, room_contexts(args.url()).await) {
        (Some(before), Some(after)) => Some(Contexts {
            warm: after.warm.saturating_sub(before.warm),
            built: after.built.saturating_sub(before.built),
        }),
        _ => None,
    };
    let mut report = Report::new("coldstart", args.label.clone());
    report.connections = 1;
    report.rooms = args.count + 1;
    report.coldstart = Some(ColdStart {
        joins: args.count,
        pause_ms: args.pause,
        net_p50_ms: cold.p50 - warm.p50,
        net_p99_ms: cold.p99 - warm.p50,
        cold,
        warm,
        contexts,
    });
    if let Some(pid) = args.pid {
        report.server_rss_kib = Some(proc_status_kib(pid, "VmRSS")?);
        report.server_peak_rss_kib = Some(proc_status_kib(pid, "VmHWM")?);
    }
    Ok(report)
}

/// The server's `/metrics` answer, read from the host and port of the
/// WebSocket URL; `None` when that is not possible (another server, or one
/// that wants an admin token).
async fn metrics_response(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().ok()?;
    let authority = uri.authority()?.as_str().to_string();
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()?
}

async fn room_contexts(url: &str) -> Option<Contexts> {
    parse_room_contexts(&metrics_response(url).await?)
}

/// One sample of the server's metrics, e.g. `roomhost_room_wakes_total`
/// or `roomhost_rooms{state="hibernated"}`.
pub(super) async fn metric(url: &str, sample: &str) -> Option<f64> {
    let response = metrics_response(url).await?;
    let prefix = format!("{sample} ");
    response
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// The two `roomhost_room_contexts_total` samples of an HTTP response whose
/// status is 200.
fn parse_room_contexts(response: &str) -> Option<Contexts> {
    let status = response.lines().next()?;
    if status.split(' ').nth(1) != Some("200") {
        return None;
    }
    let count = |source: &str| -> Option<u64> {
        let name = format!("roomhost_room_contexts_total{{source=\"{source}\"}} ");
        response
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    Some(Contexts {
        warm: count("warm")?,
        built: count("built")?,
    })
}

/// Opens R × C idle connections, then joins them to R rooms, reading the
/// server's RSS before, between and after.
pub(super) async fn idle(args: &BenchArgs) -> anyhow::Result<Report> {
    let Some(pid) = args.pid else {
        bail!("idle needs --pid <server pid> to read the server's memory");
    };
    let rooms = args.rooms.unwrap_or(100);
    let clients = args.clients.unwrap_or(10);
    if rooms == 0 || clients == 0 {
        bail!("--rooms and --clients must be at least 1");
    }
    let run = run_id();
    // Warm the server up: one connection in one room, kept open, so the
    // kind's first compile and lazily built server state are not counted.
    let warm = open_all(
        &args.url,
        vec![(
            "bwarm".into(),
            Some(format!("{}:bench-{run}-warm", args.kind)),
        )],
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let baseline = proc_status_kib(pid, "VmRSS")?;

    let specs = (0..rooms * clients)
        .map(|i| (format!("bidle{i}"), None))
        .collect();
    let mut conns = open_all(&args.url, specs).await?;
    tokio::time::sleep(SETTLE).await;
    let connected = proc_status_kib(pid, "VmRSS")?;
    let mut readings = Vec::with_capacity(2);

    // First the first client of every room (starting the rooms), then the
    // others, so a room and a member can be told apart.
    let mut beaten = tokio::time::Instant::now();
    for first in [true, false] {
        for i in 0..conns.len() {
            if (i % clients == 0) != first {
                continue;
            }
            let topic = format!("{}:bench-{run}-{}", args.kind, i / clients);
            let (client, join_ref) = &mut conns[i];
            *join_ref = client.join(&topic).await?.0;
            if i % 256 == 0 {
                keep_alive(&mut conns, &mut beaten).await?;
            }
        }
        keep_alive(&mut conns, &mut beaten).await?;
        tokio::time::sleep(SETTLE).await;
        readings.push(proc_status_kib(pid, "VmRSS")?);
    }
    let (started, joined) = (readings[0], readings[1]);
    let hold_until = tokio::time::Instant::now() + Duration::from_secs_f64(args.hold.max(0.0));
    while tokio::time::Instant::now() < hold_until {
        tokio::time::sleep_until(hold_until.min(tokio::time::Instant::now() + HEARTBEAT)).await;
        keep_alive(&mut conns, &mut beaten).await?;
    }
    let held = proc_status_kib(pid, "VmRSS")?;
    let hibernated = metric(args.url(), "roomhost_rooms{state=\"hibernated\"}")
        .await
        .map(|n| n as u64);
    let peak = proc_status_kib(pid, "VmHWM")?;
    let connections = conns.len() + warm.len();
    drop(conns);
    drop(warm);

    let per_conn_kib = connected.saturating_sub(baseline) as f64 / (rooms * clients) as f64;
    let later_joins = rooms * (clients - 1);
    let per_member_kib = if later_joins == 0 {
        0.0
    } else {
        joined.saturating_sub(started) as f64 / later_joins as f64
    };
    let mut report = Report::new("idle", args.label.clone());
    report.connections = connections;
    report.rooms = rooms;
    report.server_rss_kib = Some(held);
    report.server_peak_rss_kib = Some(peak);
    report.idle = Some(Idle {
        rooms,
        clients_per_room: clients,
        rss_baseline_kib: baseline,
        rss_connected_kib: connected,
        rss_rooms_kib: started,
        rss_joined_kib: joined,
        rss_held_kib: held,
        hibernated,
        per_conn_kib,
        per_room_kib: started.saturating_sub(connected) as f64 / rooms as f64,
        per_member_kib,
        per_joined_conn_kib: per_conn_kib + per_member_kib,
    });
    Ok(report)
}

/// Sends every idle connection a heartbeat if the last round was
/// `HEARTBEAT` ago (the server closes connections silent for 60 s); the
/// replies wait unread in the sockets.
async fn keep_alive(
    conns: &mut [(Client, u64)],
    last: &mut tokio::time::Instant,
) -> anyhow::Result<()> {
    if last.elapsed() < HEARTBEAT {
        return Ok(());
    }
    for (client, _) in conns.iter_mut() {
        let (_, beat) = client.heartbeat();
        client.ws.send(beat).await?;
    }
    *last = tokio::time::Instant::now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_room_contexts;

    #[test]
    fn room_contexts_are_read_from_a_metrics_response() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text\r\n\r\n\
            # TYPE roomhost_room_contexts counter\n\
            roomhost_room_contexts_total{source=\"warm\"} 70\n\
            roomhost_room_contexts_total{source=\"built\"} 131\n# EOF\n";
        let c = parse_room_contexts(ok).expect("both samples");
        assert_eq!((c.warm, c.built), (70, 131));
        let denied = ok.replacen("200 OK", "401 Unauthorized", 1);
        assert!(parse_room_contexts(&denied).is_none());
        let other = "HTTP/1.1 200 OK\r\n\r\nsome_other_metric 1\n";
        assert!(parse_room_contexts(other).is_none());
    }
}
