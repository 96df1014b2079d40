//! The `roomhost` command: a thin CLI over the library.

use std::io::IsTerminal;
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
    /// Log lines as plain text (for a terminal or journald) or as one JSON
    /// object a line (for log shippers).
    #[arg(long, global = true, env = "ROOMHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the chat UI, the WebSocket hub and the admin API (the default).
    Serve(Box<ServeArgs>),
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
    /// Mint a connection token (JWT HS256) for a user, signed with
    /// ROOMHOST_SECRET or --secret-file; prints it to stdout.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// How long the token is valid: 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Read the secret from this file instead of ROOMHOST_SECRET.
        #[arg(long, env = "ROOMHOST_SECRET_FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Load-test a running server over WebSockets (see docs/performance.md, Commands).
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
    /// Cluster mode: comma-separated NATS server URLs (JetStream); rooms'
    /// journals and leases live there and each room runs on one node.
    #[arg(long, env = "ROOMHOST_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster (default: bind address:port).
    #[arg(long, env = "ROOMHOST_NODE")]
    node: Option<String>,
    /// Cluster mode: this node's HTTP base URL as the other nodes and
    /// clients reach it, listed by `GET /api/cluster` (default:
    /// http://<bind address>:<port>, with this host's name for 0.0.0.0/::).
    #[arg(long, env = "ROOMHOST_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Cluster mode: seconds a room's lease lasts without renewal (another
    /// node takes the room this long after its owner died). Keep it above
    /// the engine's leader election (4-9 s).
    #[arg(long, env = "ROOMHOST_LEASE", default_value_t = 10.0)]
    lease: f64,
    /// Cluster mode: replicas of the journal stream and the lease bucket
    /// (3 for a 3-server NATS cluster, 1 with a single server).
    #[arg(long, env = "ROOMHOST_CLUSTER_REPLICAS", default_value_t = 3)]
    cluster_replicas: usize,
    /// strict (fsync before replying), relaxed (fsync within ~10 ms) or off (memory only).
    #[arg(long, env = "ROOMHOST_DURABILITY", default_value = "strict")]
    durability: Durability,
    /// Seconds without channels or traffic before a room snapshots and stops.
    #[arg(long, env = "ROOMHOST_IDLE_TIMEOUT", default_value_t = 300.0)]
    idle_timeout: f64,
    /// Seconds a room whose channels are joined but quiet keeps its
    /// JavaScript before it hibernates (0 = never).
    #[arg(long, env = "ROOMHOST_HIBERNATE_AFTER", default_value_t = 30.0)]
    hibernate_after: f64,
    /// A journal fsync in flight longer than this many seconds is a stalled
    /// disk: the room refuses new events until it finishes.
    #[arg(long, env = "ROOMHOST_FSYNC_STALL", default_value_t = 5.0)]
    fsync_stall: f64,
    /// Snapshot after this many events...
    #[arg(long, env = "ROOMHOST_SNAPSHOT_EVENTS", default_value_t = 10_000)]
    snapshot_events: u64,
    /// ...or once replaying them would take this many milliseconds (their
    /// hooks' time, or 20 times the last snapshot's if more)...
    #[arg(long, env = "ROOMHOST_SNAPSHOT_REPLAY_MS", default_value_t = 50.0)]
    snapshot_replay_ms: f64,
    /// ...or this many seconds after the first event not in a snapshot.
    #[arg(long, env = "ROOMHOST_SNAPSHOT_SECS", default_value_t = 60.0)]
    snapshot_secs: f64,
    /// Threads that run room JavaScript (0 = one per CPU).
    #[arg(long, env = "ROOMHOST_JS_THREADS", default_value_t = 0)]
    js_threads: usize,
    /// QuickJS runtimes kept built ahead, at idle priority, so a new room's
    /// cold start skips building one (0 = none).
    #[arg(long, env = "ROOMHOST_WARM_CONTEXTS", default_value_t = 4)]
    warm_contexts: usize,
    /// Free heap kept faulted in, at idle priority, so a new room's memory
    /// takes no page faults (0 = none; at most 512KiB).
    #[arg(long, env = "ROOMHOST_WARM_HEAP", default_value = "512KiB", value_parser = parse_warm_heap)]
    warm_heap: usize,
    /// Seconds a long-poll session may go without a request before it
    /// expires and its channels leave.
    #[arg(long, env = "ROOMHOST_LONGPOLL_TIMEOUT", default_value_t = 20.0)]
    longpoll_timeout: f64,
    /// Seconds a WebSocket may go without sending a frame (a heartbeat, say)
    /// before the server closes it with `1000 heartbeat timeout`.
    #[arg(long, env = "ROOMHOST_HEARTBEAT_TIMEOUT", default_value_t = 60.0)]
    heartbeat_timeout: f64,
    /// Require connection tokens signed with the secret in this file
    /// (instead of the ROOMHOST_SECRET variable).
    #[arg(long, env = "ROOMHOST_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Origins besides the server's own that browser pages may connect
    /// from, comma-separated (https://app.example.com), or * for any.
    #[arg(
        long,
        env = "ROOMHOST_ALLOWED_ORIGINS",
        value_delimiter = ',',
        num_args = 1..
    )]
    allowed_origins: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For names the client, comma-separated
    /// addresses (127.0.0.1 for nginx on the same machine): the admin API's
    /// loopback rule, per-address limits and logs then use the browser's address.
    #[arg(
        long = "trusted-proxy",
        env = "ROOMHOST_TRUSTED_PROXIES",
        value_delimiter = ',',
        num_args = 1..
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// JS heap limit per room, e.g. 32MiB.
    #[arg(long, env = "ROOMHOST_SCRIPT_MEMORY", default_value = "32MiB", value_parser = roomhost::config::parse_bytes)]
    script_memory: usize,
    /// CPU time one hook call may use, e.g. 100ms (thread CPU time).
    #[arg(long, env = "ROOMHOST_SCRIPT_CPU", default_value = "100ms", value_parser = roomhost::config::parse_duration)]
    script_cpu: Duration,
    /// JS stack limit per room, e.g. 512KiB (at most 1MiB).
    #[arg(long, env = "ROOMHOST_SCRIPT_STACK", default_value = "512KiB", value_parser = roomhost::config::parse_bytes)]
    script_stack: usize,
    /// Per-kind script limits overriding the three above, e.g.
    /// `chat:memory=64MiB,cpu=200ms;game:cpu=50ms` (repeatable).
    #[arg(long, env = "ROOMHOST_KIND_LIMITS")]
    kind_limits: Vec<String>,
    /// Largest WebSocket message (and HTTP-posted frame), in bytes.
    #[arg(long, env = "ROOMHOST_MAX_FRAME", default_value = "64KiB", value_parser = roomhost::config::parse_bytes)]
    max_frame: usize,
    /// Deepest nesting of arrays/objects accepted in a payload.
    #[arg(long, env = "ROOMHOST_MAX_JSON_DEPTH", default_value_t = 32)]
    max_json_depth: usize,
    /// Channels one connection may join at once.
    #[arg(long, env = "ROOMHOST_MAX_CHANNELS", default_value_t = 100)]
    max_channels: usize,
    /// Messages per second per connection (token bucket refill; 0 = unlimited).
    #[arg(long, env = "ROOMHOST_MSG_RATE", default_value_t = 100)]
    msg_rate: u32,
    /// Messages a connection may send in a burst (token bucket size).
    #[arg(long, env = "ROOMHOST_MSG_BURST", default_value_t = 200)]
    msg_burst: u32,
    /// Channels one room accepts at once (0 = unlimited).
    #[arg(long, env = "ROOMHOST_MAX_CONNS_PER_ROOM", default_value_t = 10_000)]
    max_conns_per_room: usize,
    /// Rooms live at once; a join that would start one more is refused (0 = unlimited).
    #[arg(long, env = "ROOMHOST_MAX_ROOMS", default_value_t = 100_000)]
    max_rooms: usize,
    /// Connections (WebSocket, long-poll, SSE) from one IP address (0 = unlimited).
    #[arg(long, env = "ROOMHOST_MAX_CONNS_PER_IP", default_value_t = 1000)]
    max_conns_per_ip: usize,
    /// Apply --max-conns-per-ip to loopback clients too.
    #[arg(long, env = "ROOMHOST_LIMIT_LOOPBACK")]
    limit_loopback: bool,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s)
                .with_context(|| format!("--{what} must be a number of seconds"))
        };
        let script_limits = roomhost::ScriptLimits {
            memory: self.script_memory,
            cpu_per_call: self.script_cpu,
            stack: self.script_stack,
        };
        script_limits
            .check()
            .map_err(|e| anyhow::anyhow!("script limits: {e}"))?;
        let kind_limits =
            roomhost::config::parse_kind_limits(&self.kind_limits.join(";"), &script_limits)
                .map_err(|e| anyhow::anyhow!("--kind-limits: {e}"))?;
        if self.max_frame < 1024 {
            anyhow::bail!("--max-frame must be at least 1KiB");
        }
        Ok(Config {
            script_limits,
            kind_limits,
            max_frame_bytes: self.max_frame,
            max_json_depth: self.max_json_depth.max(1),
            max_channels_per_conn: self.max_channels,
            msg_rate: self.msg_rate,
            msg_burst: self.msg_burst.max(1),
            max_conns_per_room: self.max_conns_per_room,
            max_rooms: self.max_rooms,
            max_conns_per_ip: self.max_conns_per_ip,
            limit_loopback: self.limit_loopback,
            scripts_dir: self.rooms.clone(),
            data_dir: self.data.clone(),
            durability: self.durability,
            idle_timeout: seconds(self.idle_timeout, "idle-timeout")?,
            fsync_stall: seconds(self.fsync_stall, "fsync-stall")?,
            hibernate_after: seconds(self.hibernate_after, "hibernate-after")?,
            snapshot_every_events: self.snapshot_events.max(1),
            snapshot_replay: Duration::try_from_secs_f64(self.snapshot_replay_ms / 1000.0)
                .context("--snapshot-replay-ms must be a number of milliseconds")?,
            snapshot_every: seconds(self.snapshot_secs, "snapshot-secs")?,
            js_threads: self.js_threads,
            warm_contexts: self.warm_contexts,
            warm_heap: self.warm_heap,
            longpoll_timeout: seconds(self.longpoll_timeout, "longpoll-timeout")?,
            heartbeat_timeout: Some(seconds(self.heartbeat_timeout, "heartbeat-timeout")?)
                .filter(|t| !t.is_zero())
                .context("--heartbeat-timeout must be more than 0 seconds")?,
            admin_token: std::env::var("ROOMHOST_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            auth_secret: secret(self.secret_file.as_deref())?,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
            ..Config::default()
        })
    }
}

/// Lets the process hold as many sockets as the system allows: the soft
/// limit on open files goes to the hard one, and (for root, e.g. a bench of
/// 20,000 connections) both to the kernel's `nr_open` ceiling.
pub(crate) fn raise_fd_limit() {
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(0);
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: ceiling.max(limit.rlim_max),
            rlim_max: ceiling.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn parse_warm_heap(text: &str) -> Result<usize, String> {
    let bytes = roomhost::config::parse_bytes(text)?;
    if bytes > roomhost::heap::MAX_WARM_HEAP {
        return Err(format!(
            "at most {}KiB",
            roomhost::heap::MAX_WARM_HEAP >> 10
        ));
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    // Before any thread: one malloc arena, and a heap the warm thread can
    // keep faulted in ahead of new rooms (see `roomhost::heap`).
    let heap_tuned = roomhost::heap::tune_for_rooms();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colours only on a terminal: a log file or journald gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level of each object, as log shippers index them.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        None => serve(cli.serve, heap_tuned),
        Some(Command::Serve(args)) => serve(*args, heap_tuned),
        Some(Command::Check { file }) => check(&file),
        Some(Command::Inspect {
            topic,
            rooms,
            data,
            json,
        }) => inspect(&topic, &rooms, &data, json),
        Some(Command::Token {
            user,
            ttl,
            secret_file,
        }) => token(&user, &ttl, secret_file.as_deref()),
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

/// The token secret: `--secret-file`, else `ROOMHOST_SECRET`, else none.
fn secret(file: Option<&std::path::Path>) -> anyhow::Result<Option<roomhost::auth::Secret>> {
    let from_env = std::env::var("ROOMHOST_SECRET")
        .ok()
        .and_then(roomhost::auth::Secret::new);
    match file {
        Some(_) if from_env.is_some() => {
            anyhow::bail!("set ROOMHOST_SECRET or --secret-file, not both")
        }
        Some(path) => roomhost::auth::Secret::from_file(path)
            .map(Some)
            .with_context(|| format!("reading the secret from {}", path.display())),
        None => Ok(from_env),
    }
}

fn token(user: &str, ttl: &str, secret_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let secret =
        secret(secret_file)?.context("no secret: set ROOMHOST_SECRET or pass --secret-file")?;
    let ttl = roomhost::auth::parse_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
    let user = user.trim();
    if user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
        anyhow::bail!("--user must be 1 to 64 printable characters");
    }
    println!("{}", roomhost::auth::mint(&secret, user, ttl));
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs, heap_tuned: bool) -> anyhow::Result<ExitCode> {
    let mut config = args.config()?;
    raise_fd_limit();
    if !heap_tuned {
        config.warm_heap = 0; // another allocator: nothing to keep warm
    }
    if config.auth_secret.as_ref().is_some_and(|s| s.is_weak()) {
        tracing::warn!(
            "the token secret is shorter than 32 bytes; use a long random one (openssl rand -hex 32)"
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let addr = SocketAddr::new(args.bind, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let mut builder = Host::builder().config(config);
        if !args.cluster.is_empty() {
            let mut cluster = roomhost::cluster::ClusterConfig::new(
                args.cluster.clone(),
                args.node.clone().unwrap_or_else(|| local.to_string()),
            );
            cluster.lease = Duration::try_from_secs_f64(args.lease)
                .context("--lease must be a number of seconds")?;
            cluster.replicas = args.cluster_replicas;
            cluster.url = args
                .advertise_url
                .clone()
                .unwrap_or_else(|| advertised(&local));
            builder = builder.cluster(cluster);
        }
        let host = builder.build().await.context("starting the host")?;
        println!("roomhost listening on http://{local}");
        log_start(&local, &args, host.config());
        host.serve(listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `http://<addr>`, with this host's name for an unspecified address.
fn advertised(local: &SocketAddr) -> String {
    if !local.ip().is_unspecified() {
        return format!("http://{local}");
    }
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `name.len()` bytes into it.
    let ok = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0;
    let end = name.iter().position(|&b| b == 0).unwrap_or(0);
    let host = match std::str::from_utf8(&name[..end]) {
        Ok(host) if ok && !host.is_empty() => host.to_string(),
        _ => "localhost".to_string(),
    };
    format!("http://{host}:{}", local.port())
}

/// The one startup summary: what a client needs to connect and what the
/// operator set, stated as the host will enforce it.
fn log_start(local: &SocketAddr, args: &ServeArgs, config: &Config) {
    let origins = if config.allowed_origins.is_empty() {
        "same host only".to_string()
    } else {
        config.allowed_origins.join(",")
    };
    let admin = if config.admin_token.is_some() {
        "bearer token, any address"
    } else {
        "loopback only"
    };
    tracing::info!(
        %local,
        version = roomhost::metrics::process::VERSION,
        commit = roomhost::metrics::process::COMMIT,
        rooms = %args.rooms.display(),
        data = %args.data.display(),
        durability = ?config.durability,
        client_tokens = config.auth_secret.is_some(),
        admin = admin,
        origins = %origins,
        trusted_proxies = ?config.trusted_proxies,
        max_frame = config.max_frame_bytes,
        msg_rate = config.msg_rate,
        max_conns_per_ip = config.max_conns_per_ip,
        max_conns_per_room = config.max_conns_per_room,
        max_rooms = config.max_rooms,
        "serving"
    );
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
