//! `roomhost bench`: a load generator that speaks Phoenix V2 over real
//! WebSockets to a running server and measures what clients see.
//!
//! Load scenarios (`fanout`, `rooms`, `maxtp`) join R rooms × C clients of
//! the `chat` kind; S clients per room send `new_msg` pushes whose text is
//! the send time. In rate mode each sender is *open loop*: message k is due
//! at `start + k / rate` and carries that scheduled time, so a server (or a
//! generator) that falls behind shows up as latency instead of silently
//! lowering the rate. In in-flight mode (`maxtp`) each sender keeps N pushes
//! unanswered and sends the next one when a reply arrives. Every client
//! records the latency of every broadcast it receives. Messages scheduled in
//! the warm-up are not counted; after the window the generator waits (up to
//! 5 s) for the deliveries still in flight.
//!
//! `coldstart` joins never-used rooms one after another and compares the
//! join-to-reply time with joins of a room that is already running. `idle`
//! opens R × C idle connections, then joins them to R rooms, and reads the
//! server's RSS from `/proc/<pid>/status` after each step.
//!
//! The generator runs on one thread: pin it to a core of its own
//! (`taskset -c 1`), away from the server's.

mod client;
mod costs;
mod report;
mod room_api;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use client::{Client, Frame, instant_at, now_us};
use report::{Joins, Latency, Report, ServerCpu, proc_cpu_seconds, proc_status_kib};

/// Connections opened (and joined) at the same time during setup.
const SETUP_CONCURRENCY: usize = 32;
/// How long the generator waits after the window for deliveries in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// Idle connections send a heartbeat this often (the server closes
/// connections silent for 60 s).
const HEARTBEAT: Duration = Duration::from_secs(25);
/// Time for the server to settle before an RSS reading.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 1 room × 50 clients, 5 senders at 200 msg/s each.
    Fanout,
    /// 100 rooms × 10 clients, 1 sender per room at 20 msg/s.
    Rooms,
    /// 1 room × 20 clients, 5 senders each keeping 8 pushes in flight.
    Maxtp,
    /// 1,000 rooms × 5 clients, 1 sender per room at 2 msg/s.
    Big,
    /// 1 room × 1,000 clients, 2 senders at 25 msg/s each.
    Fan1k,
    /// Join never-used rooms one after another (join to reply).
    Coldstart,
    /// R rooms × C idle clients: server RSS per room and per connection.
    Idle,
    /// R rooms, pushed to after they hibernated: push to reply.
    Wake,
    /// One ticker room re-arming its timer: how late each tick arrives.
    Tick,
    /// One room's message to another: push to the target's broadcast.
    Hop,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Rooms => "rooms",
            Scenario::Maxtp => "maxtp",
            Scenario::Big => "big",
            Scenario::Fan1k => "fan1k",
            Scenario::Coldstart => "coldstart",
            Scenario::Idle => "idle",
            Scenario::Wake => "wake",
            Scenario::Tick => "tick",
            Scenario::Hop => "hop",
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The server's WebSocket endpoint. Several (comma-separated or the
    /// flag repeated), e.g. a cluster's nodes: the load scenarios spread
    /// their clients over them in turn (client i on URL i mod n); the other
    /// scenarios and the metrics they read use the first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:4000/socket/websocket"
    )]
    url: Vec<String>,
    /// The server's process id: reports its RSS (required by `idle`).
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rooms (default: per scenario).
    #[arg(long)]
    rooms: Option<usize>,
    /// Clients per room (default: per scenario).
    #[arg(long)]
    clients: Option<usize>,
    /// Sending clients per room (default: per scenario).
    #[arg(long)]
    senders: Option<usize>,
    /// Messages per second per sender (rate mode; fanout 200, rooms 20).
    #[arg(long)]
    rate: Option<f64>,
    /// Pushes each sender keeps unanswered (maxtp: 8). Overrides --rate.
    #[arg(long)]
    inflight: Option<usize>,
    /// coldstart: how many never-used rooms to join.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// coldstart: milliseconds to wait before each join, cold and warm. 0
    /// (the default) is a sustained stream of cold starts; a pause measures
    /// cold starts that arrive now and then, as first touches of rooms do.
    #[arg(long, default_value_t = 0.0)]
    pause: f64,
    /// Room kind; its `new_msg` must broadcast the pushed `text` back
    /// (as rooms-js/chat.js does).
    #[arg(long, default_value = "chat")]
    kind: String,
    /// idle: seconds to hold the joined connections before the last
    /// reading (rooms hibernate meanwhile if the server lets them).
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
    /// wake: rounds of pushes to every room.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// wake: seconds to wait before each round for the rooms to hibernate.
    #[arg(long, default_value_t = 2.0)]
    nap: f64,
    /// tick: milliseconds between ticks.
    #[arg(long, default_value_t = 50)]
    every: u32,
    /// Free text carried into the report (e.g. the durability mode).
    #[arg(long)]
    label: Option<String>,
}

/// How senders send.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Open loop, messages per second per sender.
    Rate(f64),
    /// Closed loop, pushes unanswered per sender.
    InFlight(usize),
}

/// The shape of a load scenario.
#[derive(Clone, Copy, Debug)]
struct Load {
    rooms: usize,
    clients: usize,
    senders: usize,
    mode: Mode,
}

/// Runs the bench; prints the report. The process exit code is non-zero only
/// when the bench could not run (setup failed), not when a target is missed.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let _ = now_us(); // start the clock
        match args.scenario {
            Scenario::Fanout
            | Scenario::Rooms
            | Scenario::Maxtp
            | Scenario::Big
            | Scenario::Fan1k => run_load(&args, load_of(&args)?).await,
            Scenario::Coldstart => costs::coldstart(&args).await,
            Scenario::Idle => costs::idle(&args).await,
            Scenario::Wake => room_api::wake(&args).await,
            Scenario::Tick => room_api::tick(&args).await,
            Scenario::Hop => room_api::hop(&args).await,
        }
    })?;
    if args.json {
        eprint!("{}", report.table());
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn load_of(args: &BenchArgs) -> anyhow::Result<Load> {
    let (rooms, clients, senders, mode) = match args.scenario {
        Scenario::Fanout => (1, 50, 5, Mode::Rate(200.0)),
        Scenario::Rooms => (100, 10, 1, Mode::Rate(20.0)),
        Scenario::Big => (1000, 5, 1, Mode::Rate(2.0)),
        Scenario::Fan1k => (1, 1000, 2, Mode::Rate(25.0)),
        _ => (1, 20, 5, Mode::InFlight(8)),
    };
    let mode = match (args.inflight, args.rate, mode) {
        (Some(n), _, _) => Mode::InFlight(n),
        (None, Some(r), _) => Mode::Rate(r),
        (None, None, m) => m,
    };
    let load = Load {
        rooms: args.rooms.unwrap_or(rooms),
        clients: args.clients.unwrap_or(clients),
        senders: args.senders.unwrap_or(senders),
        mode,
    };
    if load.rooms == 0 || load.clients == 0 || load.senders == 0 {
        bail!("--rooms, --clients and --senders must be at least 1");
    }
    if load.senders > load.clients {
        bail!(
            "--senders ({}) exceeds --clients ({})",
            load.senders,
            load.clients
        );
    }
    match load.mode {
        Mode::Rate(r) if !(r.is_finite() && r > 0.0) => bail!("--rate must be positive"),
        Mode::InFlight(0) => bail!("--inflight must be at least 1"),
        _ => {}
    }
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !positive(args.duration) || !(positive(args.warmup) || args.warmup == 0.0) {
        bail!("--duration must be positive and --warmup not negative");
    }
    Ok(load)
}

/// A unique prefix, so every run uses rooms no earlier run touched.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos % (1 << 40))
}

/// Opens `users.len()` connections, `SETUP_CONCURRENCY` at a time, each
/// joined to its topic when one is given. Keeps the order of `users`.
async fn open_all(
    urls: &[String],
    specs: Vec<(String, Option<String>)>,
) -> anyhow::Result<Vec<(Client, u64)>> {
    let opened = open_all_timed(urls, specs).await?;
    Ok(opened
        .into_iter()
        .map(|(client, join_ref, _)| (client, join_ref))
        .collect())
}

/// [`open_all`], each joined client with how long its join took (from
/// `phx_join` to its reply; zero for a client not joined). Client `i`
/// connects to `urls[i % urls.len()]`.
async fn open_all_timed(
    urls: &[String],
    specs: Vec<(String, Option<String>)>,
) -> anyhow::Result<Vec<(Client, u64, Duration)>> {
    let total = specs.len();
    let mut specs = specs.into_iter().enumerate();
    let mut running = JoinSet::new();
    let mut opened: Vec<Option<(Client, u64, Duration)>> = (0..total).map(|_| None).collect();
    loop {
        while running.len() < SETUP_CONCURRENCY {
            let Some((i, (user, topic))) = specs.next() else {
                break;
            };
            let url = urls[i % urls.len()].clone();
            running.spawn(async move {
                let mut client = Client::connect(&url, &user).await?;
                let (join_ref, took) = match &topic {
                    Some(topic) => client.join(topic).await?,
                    None => (0, Duration::ZERO),
                };
                anyhow::Ok((i, client, join_ref, took))
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (i, client, join_ref, took) = done.context("a setup task panicked")??;
        opened[i] = Some((client, join_ref, took));
    }
    Ok(opened.into_iter().flatten().collect())
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Counters every connection task adds to, read while draining.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
}

/// When the load runs, in generator µs.
#[derive(Clone, Copy)]
struct Window {
    start: u64,
    measure_from: u64,
    end: u64,
}

impl Window {
    fn counts(&self, stamp: u64) -> bool {
        stamp >= self.measure_from && stamp < self.end
    }
}

/// What one connection saw.
struct ConnStats {
    latency: Samples,
    /// Rate mode: how late each message was sent after its scheduled time
    /// (already inside `latency`; reported to show the generator kept up).
    send_lag: Samples,
    received: u64,
    errors: u64,
}

/// One connection's samples, added in batches to a histogram all
/// connections share. A histogram of its own per connection (172 KiB at
/// these bounds) cost `big`'s 5,000 connections 1.7 GB of zeroed pages as
/// the load began: 45% of the generator's CPU in a profile, and seconds of
/// send lag.
struct Samples {
    batch: Vec<u64>,
    into: Arc<Mutex<Histogram<u64>>>,
}

impl Samples {
    const BATCH: usize = 256;

    fn new(into: &Arc<Mutex<Histogram<u64>>>) -> Samples {
        Samples {
            batch: Vec::new(),
            into: into.clone(),
        }
    }

    fn record(&mut self, us: u64) {
        self.batch.push(us);
        if self.batch.len() == Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut histogram = self.into.lock().unwrap_or_else(|e| e.into_inner());
        for us in self.batch.drain(..) {
            let _ = histogram.record(us);
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.flush();
    }
}

impl BenchArgs {
    /// The first `--url`: where the single-connection scenarios and the
    /// metrics go.
    fn url(&self) -> &str {
        &self.url[0]
    }
}

/// Sending role of a connection: its index among its room's senders.
struct Sender {
    index: usize,
    of: usize,
}

async fn run_load(args: &BenchArgs, load: Load) -> anyhow::Result<Report> {
    let run = run_id();
    let topics: Vec<String> = (0..load.rooms)
        .map(|r| format!("{}:bench-{run}-{r}", args.kind))
        .collect();
    let specs = (0..load.rooms)
        .flat_map(|r| (0..load.clients).map(move |c| (r, c)))
        .map(|(r, c)| (format!("b{r}x{c}"), Some(topics[r].clone())))
        .collect();
    let cpu_at_start = args.pid.map(proc_cpu_seconds).transpose()?;
    let setup_started = std::time::Instant::now();
    let clients = open_all_timed(&args.url, specs).await?;
    let setup_took = setup_started.elapsed();
    let cpu_after_setup = args.pid.map(proc_cpu_seconds).transpose()?;
    let connections = clients.len();
    let mut join_latency = histogram();
    for (_, _, took) in &clients {
        let _ = join_latency.record((took.as_micros() as u64).max(1));
    }

    let start = now_us() + 200_000;
    let measure_from = start + (args.warmup * 1e6) as u64;
    let window = Window {
        start,
        measure_from,
        end: measure_from + (args.duration * 1e6) as u64,
    };
    let totals = Arc::new(Totals::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let send_lag = Arc::new(Mutex::new(histogram()));
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (i, (client, join_ref, _)) in clients.into_iter().enumerate() {
        let (room, c) = (i / load.clients, i % load.clients);
        let sender = (c < load.senders).then_some(Sender {
            index: room * load.senders + c,
            of: load.rooms * load.senders,
        });
        tasks.spawn(drive(
            client,
            topics[room].clone(),
            join_ref,
            sender,
            load.mode,
            window,
            totals.clone(),
            ConnStats {
                latency: Samples::new(&latency),
                send_lag: Samples::new(&send_lag),
                received: 0,
                errors: 0,
            },
            stop.clone(),
        ));
    }

    sleep_until(instant_at(window.measure_from).into()).await;
    let cpu_at_window = args.pid.map(proc_cpu_seconds).transpose()?;
    sleep_until(instant_at(window.end).into()).await;
    let drain_until = tokio::time::Instant::now() + DRAIN;
    while tokio::time::Instant::now() < drain_until {
        let expected = totals.sent.load(Ordering::Relaxed) * load.clients as u64;
        if totals.received.load(Ordering::Relaxed) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_at_end = args.pid.map(proc_cpu_seconds).transpose()?;
    stop.cancel();

    let (mut received, mut errors) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let stats = done.context("a connection task panicked")?;
        received += stats.received;
        errors += stats.errors;
    }
    let taken = |h: Arc<Mutex<Histogram<u64>>>| {
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *h, histogram())
    };
    let (latency, send_lag) = (taken(latency), taken(send_lag));
    let sent = totals.sent.load(Ordering::Relaxed);
    let expected = sent * load.clients as u64;
    let mut report = Report::new(args.scenario.name(), args.label.clone());
    report.connections = connections;
    report.rooms = load.rooms;
    report.duration_s = args.duration;
    report.sent = sent;
    report.expected = expected;
    report.received = received;
    report.deliveries_per_s = received as f64 / args.duration;
    report.delivery_ratio = if expected == 0 {
        0.0
    } else {
        received as f64 / expected as f64
    };
    report.latency_ms = Latency::from_us(&latency);
    report.send_lag_ms = Latency::from_us(&send_lag);
    report.errors = errors;
    report.joins = Latency::from_us(&join_latency).map(|latency_ms| Joins {
        clients: connections,
        total_s: setup_took.as_secs_f64(),
        latency_ms,
    });
    if let (Some(start), Some(setup), Some(window), Some((end, threads))) =
        (cpu_at_start, cpu_after_setup, cpu_at_window, cpu_at_end)
    {
        let window_s = end - window.0;
        report.server_cpu = Some(ServerCpu {
            setup_s: setup.0 - start.0,
            window_s,
            per_message_us: if sent == 0 {
                0.0
            } else {
                window_s * 1e6 / sent as f64
            },
            threads,
        });
    }
    if let Some(pid) = args.pid {
        report.server_rss_kib = Some(proc_status_kib(pid, "VmRSS")?);
        report.server_peak_rss_kib = Some(proc_status_kib(pid, "VmHWM")?);
    }
    Ok(report)
}

/// One connection of a load scenario: sends (if a sender), receives and
/// measures until `stop`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut client: Client,
    topic: String,
    join_ref: u64,
    sender: Option<Sender>,
    mode: Mode,
    window: Window,
    totals: Arc<Totals>,
    mut stats: ConnStats,
    stop: CancellationToken,
) -> ConnStats {
    // Rate mode: message k is due at `first + k * interval`; senders are
    // spread evenly over one interval so they do not fire together.
    let (interval_us, mut next_due) = match (&sender, mode) {
        (Some(s), Mode::Rate(rate)) => {
            let interval = (1e6 / rate).max(1.0);
            let offset = interval * s.index as f64 / s.of as f64;
            (interval as u64, Some(window.start + offset as u64))
        }
        // In-flight senders fill their window at the start.
        (Some(_), Mode::InFlight(_)) => (0, Some(window.start)),
        (None, _) => (0, None),
    };
    let mut interval_k: u64 = 0;
    let first_due = next_due.unwrap_or(0);
    let mut in_flight = 0usize;
    let mut heartbeat_ref = 0;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);

    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // A due send goes before reading: a sender that first read every
            // frame waiting on its socket (1,000/s in fanout) sent late, and
            // its lateness counts in every latency (open loop). Frames left
            // waiting meanwhile are stamped when read, so nothing is hidden.
            _ = sleep_precise(next_due.unwrap_or(0)), if next_due.is_some() => {
                let result = match mode {
                    Mode::Rate(_) => {
                        // Send every message that is due, each stamped with
                        // its scheduled time (open loop), then flush once.
                        let now = now_us();
                        let mut result = Ok(());
                        let mut k = interval_k;
                        let mut due_at = first_due + k * interval_us;
                        while due_at <= now && due_at < window.end && result.is_ok() {
                            if window.counts(due_at) {
                                stats.send_lag.record(now - due_at);
                            }
                            result = feed_stamp(&mut client, &topic, join_ref, due_at, &window, &totals).await;
                            k += 1;
                            due_at = first_due + k * interval_us;
                        }
                        interval_k = k;
                        next_due = (due_at < window.end).then_some(due_at);
                        if result.is_ok() { client.ws.flush().await.map_err(anyhow::Error::from) } else { result }
                    }
                    Mode::InFlight(n) => {
                        next_due = None;
                        let mut result = Ok(());
                        while in_flight < n && result.is_ok() {
                            result = feed_stamp(&mut client, &topic, join_ref, now_us(), &window, &totals).await;
                            in_flight += 1;
                        }
                        if result.is_ok() { client.ws.flush().await.map_err(anyhow::Error::from) } else { result }
                    }
                };
                if result.is_err() {
                    stats.errors += 1;
                    break;
                }
            }
            next = client.ws.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if !stop.is_cancelled() {
                            stats.errors += 1;
                        }
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                match client::classify(text.as_str()) {
                    Frame::Stamp(stamp) => {
                        if window.counts(stamp) {
                            let latency = now_us().saturating_sub(stamp).max(1);
                            stats.latency.record(latency);
                            stats.received += 1;
                            totals.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Frame::Reply { msg_ref, .. } if msg_ref == heartbeat_ref => {}
                    Frame::Reply { msg_ref, ok } => {
                        if msg_ref > join_ref && !ok {
                            stats.errors += 1;
                        }
                        if let (Some(_), Mode::InFlight(_)) = (&sender, mode) {
                            in_flight = in_flight.saturating_sub(1);
                            if now_us() < window.end {
                                let stamp = now_us();
                                if send_stamp(&mut client, &topic, join_ref, stamp, &window, &totals).await.is_err() {
                                    stats.errors += 1;
                                    break;
                                }
                                in_flight += 1;
                            }
                        }
                    }
                    Frame::ChannelEnded | Frame::Malformed => stats.errors += 1,
                    Frame::Other => {}
                }
            }
            _ = heartbeat.tick() => {
                let (beat_ref, beat) = client.heartbeat();
                heartbeat_ref = beat_ref;
                if client.ws.send(beat).await.is_err() {
                    stats.errors += 1;
                    break;
                }
            }
        }
    }
    stats
}

/// Sleeps until `due_us` (on the [`now_us`] clock) to within a few µs.
/// tokio's timer has 1 ms ticks and rounds deadlines up, which would add up
/// to 1 ms of the generator's own lateness to every rate-mode latency; so
/// this sleeps on the timer until 1 ms before and yields the rest of the way
/// (other connections' tasks, and this task's other `select!` branches, run
/// meanwhile).
async fn sleep_precise(due_us: u64) {
    const TIMER_TICK_US: u64 = 1_000;
    if due_us > now_us() + TIMER_TICK_US {
        sleep_until(instant_at(due_us - TIMER_TICK_US).into()).await;
    }
    while now_us() < due_us {
        tokio::task::yield_now().await;
    }
}

/// Queues one stamped push (no flush).
async fn feed_stamp(
    client: &mut Client,
    topic: &str,
    join_ref: u64,
    stamp: u64,
    window: &Window,
    totals: &Totals,
) -> anyhow::Result<()> {
    let (_, message) = client.push_stamp(topic, join_ref, stamp);
    client.ws.feed(message).await?;
    if window.counts(stamp) {
        totals.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends one stamped push now.
async fn send_stamp(
    client: &mut Client,
    topic: &str,
    join_ref: u64,
    stamp: u64,
    window: &Window,
    totals: &Totals,
) -> anyhow::Result<()> {
    feed_stamp(client, topic, join_ref, stamp, window, totals).await?;
    client.ws.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn load(argv: &[&str]) -> anyhow::Result<Load> {
        let cli = Cli::try_parse_from([&["bench"], argv].concat())?;
        load_of(&cli.args)
    }

    #[test]
    fn big_and_fan1k_have_the_issues_shapes_and_take_overrides() {
        let big = load(&["big"]).unwrap();
        assert_eq!((big.rooms, big.clients, big.senders), (1000, 5, 1));
        assert!(matches!(big.mode, Mode::Rate(r) if r == 2.0));
        let fan1k = load(&["fan1k"]).unwrap();
        assert_eq!((fan1k.rooms, fan1k.clients, fan1k.senders), (1, 1000, 2));
        assert!(matches!(fan1k.mode, Mode::Rate(r) if r == 25.0));
        let small = load(&["big", "--rooms", "3", "--clients", "2", "--rate", "9"]).unwrap();
        assert_eq!((small.rooms, small.clients, small.senders), (3, 2, 1));
        assert!(matches!(small.mode, Mode::Rate(r) if r == 9.0));
        let err = load(&["fan1k", "--clients", "1"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--senders (2) exceeds --clients (1)"),
            "{err}"
        );
    }

    #[test]
    fn several_urls_comma_separated_or_repeated() {
        let urls =
            |argv: &[&str]| Cli::try_parse_from([&["bench"], argv].concat()).map(|c| c.args.url);
        assert_eq!(
            urls(&["big"]).unwrap(),
            ["ws://127.0.0.1:4000/socket/websocket"]
        );
        let two = [
            "ws://127.0.0.1:4001/socket/websocket",
            "ws://127.0.0.1:4002/socket/websocket",
        ];
        assert_eq!(urls(&["big", "--url", &two.join(",")]).unwrap(), two);
        assert_eq!(
            urls(&["big", "--url", two[0], "--url", two[1]]).unwrap(),
            two
        );
    }
}
