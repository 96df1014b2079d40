//! The room API's scenarios: `wake` (a push to a hibernated room until its
//! reply), `tick` (how late a room's re-armed timer fires, and whether one
//! is missed) and `hop` (one message from a room to another, from the push
//! to the target's broadcast).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, Frame, classify, now_us};
use super::costs::metric;
use super::report::{Latency, Report, RoomApi, proc_status_kib};
use super::{BenchArgs, histogram, open_all, run_id};

/// Ticks of a `tick` run wait this long for the first one.
const FIRST_TICK: Duration = Duration::from_secs(5);

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// R rooms with one client each; each round waits `--nap` seconds for the
/// rooms to hibernate, then pushes to each in turn and times the reply.
pub(super) async fn wake(args: &BenchArgs) -> anyhow::Result<Report> {
    let rooms = args.rooms.unwrap_or(200);
    let rounds = args.rounds.max(1);
    let run = run_id();
    let specs = (0..rooms)
        .map(|r| {
            (
                format!("bwake{r}"),
                Some(format!("{}:bench-{run}-{r}", args.kind)),
            )
        })
        .collect();
    let mut clients = open_all(&args.url, specs).await?;
    let topics: Vec<String> = (0..rooms)
        .map(|r| format!("{}:bench-{run}-{r}", args.kind))
        .collect();
    let wakes_before = metric(args.url(), "roomhost_room_wakes_total").await;
    let mut took = histogram();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_secs_f64(args.nap)).await;
        let asleep = metric(args.url(), "roomhost_rooms{state=\"hibernated\"}").await;
        if asleep.is_some_and(|n| (n as usize) < rooms) {
            bail!(
                "only {} of {rooms} rooms hibernated within --nap {} s: start the server with a shorter --hibernate-after",
                asleep.unwrap_or(0.0),
                args.nap
            );
        }
        for ((client, join_ref), topic) in clients.iter_mut().zip(&topics) {
            let (msg_ref, push) = client.push_stamp(topic, *join_ref, now_us());
            let started = Instant::now();
            client.ws.send(push).await?;
            if !client.await_reply(msg_ref).await? {
                bail!("a push to {topic} was refused");
            }
            let _ = took.record((started.elapsed().as_micros() as u64).max(1));
        }
    }
    let mut report = Report::new("wake", args.label.clone());
    report.connections = clients.len();
    report.rooms = rooms;
    report.latency_ms = Latency::from_us(&took);
    let wakes_after = metric(args.url(), "roomhost_room_wakes_total").await;
    report.room_api = Some(RoomApi {
        samples: took.len(),
        wakes: match (wakes_before, wakes_after) {
            (Some(a), Some(b)) => Some((b - a) as u64),
            _ => None,
        },
        ..RoomApi::default()
    });
    if let Some(pid) = args.pid {
        report.server_rss_kib = Some(proc_status_kib(pid, "VmRSS")?);
    }
    Ok(report)
}

/// One `ticker` room ticking every `--every` ms for `--duration` seconds:
/// how late each tick reaches a joined client after it was due.
pub(super) async fn tick(args: &BenchArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let topic = format!("ticker:bench-{run}");
    let mut client = Client::connect(args.url(), "btick").await?;
    let (join_ref, _) = client.join(&topic).await?;
    let every = args.every;
    let start = format!(r#"["{join_ref}","s","{topic}","start",{{"ms":{every}}}]"#);
    client.ws.send(Message::text(start)).await?;
    let mut late = histogram();
    let (mut first, mut last, mut ticks) = (None::<u64>, 0u64, 0u64);
    let end = Instant::now() + FIRST_TICK + Duration::from_secs_f64(args.duration);
    let measure_until = Instant::now() + Duration::from_secs_f64(args.duration);
    while Instant::now() < end {
        let next = tokio::time::timeout_at(end.into(), client.ws.next()).await;
        let Ok(Some(Ok(Message::Text(text)))) = next else {
            break;
        };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        if frame[3] != "tick" {
            continue;
        }
        let (Some(n), Some(due)) = (frame[4]["n"].as_u64(), frame[4]["due"].as_u64()) else {
            bail!("a tick without n and due: {frame}");
        };
        first.get_or_insert(n);
        last = n;
        ticks += 1;
        let _ = late.record(wall_us().saturating_sub(due * 1000).max(1));
        if Instant::now() >= measure_until {
            break;
        }
    }
    let stop = format!(r#"["{join_ref}","e","{topic}","stop",{{}}]"#);
    client.ws.send(Message::text(stop)).await?;
    let Some(first) = first else {
        bail!("no tick arrived: is rooms-js/ticker.js there?");
    };
    let mut report = Report::new("tick", args.label.clone());
    report.connections = 1;
    report.rooms = 1;
    report.duration_s = args.duration;
    report.latency_ms = Latency::from_us(&late);
    report.room_api = Some(RoomApi {
        samples: ticks,
        // Ticks are numbered by the room: a gap is a tick that never came.
        missed: Some((last - first + 1).saturating_sub(ticks)),
        ..RoomApi::default()
    });
    Ok(report)
}

/// A `hop` room forwarding each push to a `chat` room (benches/kinds/hop.js),
/// `--inflight` pushes at a time: push to broadcast, and hops per second.
pub(super) async fn hop(args: &BenchArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let target = format!("chat:bench-{run}-to");
    let source = format!("hop:bench-{run}-from");
    let mut client = Client::connect(args.url(), "bhop").await?;
    let (to_ref, _) = client.join(&target).await?;
    let _ = to_ref;
    let (from_ref, _) = client
        .join(&source)
        .await
        .context("joining the hop room (is benches/kinds/hop.js among the server's kinds?)")?;
    let inflight = args.inflight.unwrap_or(1).max(1);
    let push = |client: &mut Client| {
        let msg_ref = client.next_ref();
        let frame = format!(
            r#"["{from_ref}","{msg_ref}","{source}","hop",{{"to":"{target}","text":"{}"}}]"#,
            now_us()
        );
        Message::text(frame)
    };
    let warmup_until = now_us() + (args.warmup * 1e6) as u64;
    let end = warmup_until + (args.duration * 1e6) as u64;
    for _ in 0..inflight {
        let message = push(&mut client);
        client.ws.send(message).await?;
    }
    let mut took = histogram();
    let mut hops = 0u64;
    let mut errors = 0u64;
    while now_us() < end {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout_at(deadline, client.ws.next()).await
        else {
            bail!("the hop stalled: no frame within 10 s");
        };
        match classify(text.as_str()) {
            Frame::Stamp(stamp) => {
                if stamp >= warmup_until {
                    let _ = took.record(now_us().saturating_sub(stamp).max(1));
                    hops += 1;
                }
                let message = push(&mut client);
                client.ws.send(message).await?;
            }
            Frame::Reply { ok: false, .. } | Frame::ChannelEnded => errors += 1,
            _ => {}
        }
    }
    let mut report = Report::new("hop", args.label.clone());
    report.connections = 1;
    report.rooms = 2;
    report.duration_s = args.duration;
    report.sent = hops;
    report.received = hops;
    report.deliveries_per_s = hops as f64 / args.duration;
    report.latency_ms = Latency::from_us(&took);
    report.errors = errors;
    Ok(report)
}
