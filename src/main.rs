//! The `roomhost` command: a thin CLI over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use roomhost::{Config, Durability, Host};

mod bench;

#[derive(Parser)]
#[command(
    name = "roomhost",
    version,
    about = "One small JavaScript runtime per chat room, behind a Phoenix Channels hub"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the chat UI, the WebSocket hub and the admin API (the default).
    Serve(ServeArgs),
    /// Compile and load a room script as the server would; exit 1 on error.
    Check {
        /// The script, e.g. rooms-js/chat.js.
        file: PathBuf,
    },
    /// Print a room's durable state and a summary of its journal (read-only).
    Inspect {
        /// The room, e.g. chat:lobby.
        topic: String,
        #[arg(long, env = "ROOMHOST_ROOMS", default_value = "rooms-js")]
        rooms: PathBuf,
        #[arg(long, env = "ROOMHOST_DATA", default_value = "data")]
        data: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load-test a running server over WebSockets (see README, Performance).
    Bench(bench::BenchArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "ROOMHOST_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "ROOMHOST_PORT", default_value_t = 4000)]
    port: u16,
    /// Directory of room kinds (<kind>.js).
    #[arg(long, env = "ROOMHOST_ROOMS", default_value = "rooms-js")]
    rooms: PathBuf,
    /// Directory for journals and snapshots.
    #[arg(long, env = "ROOMHOST_DATA", default_value = "data")]
    data: PathBuf,
    /// strict (fsync before replying), relaxed (fsync within ~10 ms) or off (memory only).
    #[arg(long, env = "ROOMHOST_DURABILITY", default_value = "strict")]
    durability: Durability,
    /// Seconds without channels or traffic before a room snapshots and stops.
    #[arg(long, env = "ROOMHOST_IDLE_TIMEOUT", default_value_t = 300.0)]
    idle_timeout: f64,
    /// Snapshot after this many events...
    #[arg(long, env = "ROOMHOST_SNAPSHOT_EVENTS", default_value_t = 1000)]
    snapshot_events: u64,
    /// ...or this many seconds after the first event not in a snapshot.
    #[arg(long, env = "ROOMHOST_SNAPSHOT_SECS", default_value_t = 60.0)]
    snapshot_secs: f64,
    /// Threads that run room JavaScript (0 = one per CPU).
    #[arg(long, env = "ROOMHOST_JS_THREADS", default_value_t = 0)]
    js_threads: usize,
    /// Seconds a long-poll session may go without a request before it
    /// expires and its channels leave.
    #[arg(long, env = "ROOMHOST_LONGPOLL_TIMEOUT", default_value_t = 20.0)]
    longpoll_timeout: f64,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s)
                .with_context(|| format!("--{what} must be a number of seconds"))
        };
        Ok(Config {
            scripts_dir: self.rooms.clone(),
            data_dir: self.data.clone(),
            durability: self.durability,
            idle_timeout: seconds(self.idle_timeout, "idle-timeout")?,
            snapshot_every_events: self.snapshot_events.max(1),
            snapshot_every: seconds(self.snapshot_secs, "snapshot-secs")?,
            js_threads: self.js_threads,
            longpoll_timeout: seconds(self.longpoll_timeout, "longpoll-timeout")?,
            admin_token: std::env::var("ROOMHOST_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            ..Config::default()
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check { file }) => check(&file),
        Some(Command::Inspect {
            topic,
            rooms,
            data,
            json,
        }) => inspect(&topic, &rooms, &data, json),
        Some(Command::Bench(args)) => bench::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let host = Host::builder()
            .config(config)
            .build()
            .await
            .context("starting the host")?;
        let addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        println!("roomhost listening on http://{local}");
        tracing::info!(%local, rooms = %args.rooms.display(), data = %args.data.display(), durability = ?args.durability, "serving");
        host.serve(listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let path = file
        .canonicalize()
        .with_context(|| format!("reading {}", file.display()))?;
    let root = path
        .parent()
        .context("the script has no parent directory")?;
    let entry = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the script's name is not UTF-8")?;
    let kind = entry.trim_end_matches(".mjs").trim_end_matches(".js");
    match roomhost::scripts::compile_file(root, entry, kind, &roomhost::ScriptLimits::default()) {
        Ok(compiled) => {
            let modules: Vec<&str> = compiled.modules.keys().map(String::as_str).collect();
            println!(
                "ok: {entry} (version {}, modules: {}, snapshot/restore: {})",
                compiled.version,
                modules.join(", "),
                if compiled.has_snapshot {
                    "yes"
                } else {
                    "no: the journal is never compacted"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn inspect(
    topic: &str,
    rooms: &std::path::Path,
    data: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let topic = roomhost::topic::Topic::parse(topic)?;
    let report = roomhost::room::inspect::inspect(rooms, data, &topic)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("room      {}  ({})", report.topic, report.dir);
    match &report.snapshot {
        Some(s) => println!(
            "snapshot  seq {} at {} ms, code version {}, {} bytes",
            s.seq, s.at, s.version, s.bytes
        ),
        None => println!("snapshot  none (every event is replayed from the journal)"),
    }
    let j = &report.journal;
    let kinds: Vec<String> = j.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "journal   {} events after the snapshot{} (last seq {}), {} bytes on disk{}",
        j.events,
        j.first_seq
            .map(|f| format!(", seq {f}.."))
            .unwrap_or_default(),
        j.last_seq,
        j.bytes_on_disk,
        if kinds.is_empty() {
            String::new()
        } else {
            format!("; {}", kinds.join(", "))
        }
    );
    for damage in &report.damage {
        println!("damage    {damage} (repaired when the server next starts the room)");
    }
    let members: Vec<&str> = report
        .members
        .iter()
        .map(|(_, user)| user.as_str())
        .collect();
    println!(
        "members   {}",
        if members.is_empty() {
            "none".to_string()
        } else {
            members.join(", ")
        }
    );
    match (&report.state, &report.error) {
        (Some(state), _) => println!(
            "state     {}",
            serde_json::to_string_pretty(&state["state"])?
        ),
        (None, Some(e)) => println!("state     unavailable: {e}"),
        (None, None) => println!("state     unavailable"),
    }
    Ok(ExitCode::SUCCESS)
}
