//! Host configuration: directories, durability, timeouts and limits.
//!
//! One plain struct with documented defaults. The CLI fills it from flags and
//! `ROOMHOST_*` variables; embedders use [`crate::HostBuilder`].

use std::path::PathBuf;
use std::time::Duration;

/// How hard the host works to keep acknowledged events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Replies and broadcasts are released only after the event's journal
    /// record is on disk (fdatasync, group-committed).
    Strict,
    /// The record is written before release but fsynced in the background
    /// every ~10 ms: a process kill loses nothing, a power loss the last ~10 ms.
    Relaxed,
    /// Memory only: state survives room crashes inside this process, not a
    /// process restart.
    Off,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Durability::Strict),
            "relaxed" => Ok(Durability::Relaxed),
            "off" => Ok(Durability::Off),
            _ => Err(format!("unknown durability {s:?} (strict, relaxed or off)")),
        }
    }
}

/// Per-room JavaScript limits.
#[derive(Clone, Debug)]
pub struct ScriptLimits {
    /// QuickJS heap limit per room.
    pub memory: usize,
    /// CPU budget of one hook call (and of a script's top-level evaluation).
    pub cpu_per_call: Duration,
    /// QuickJS stack limit; must stay well below the thread's stack.
    pub stack: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            memory: 32 << 20,
            cpu_per_call: Duration::from_millis(100),
            stack: 512 << 10,
        }
    }
}

/// Everything a host needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where room kinds live: `<scripts_dir>/<kind>.js`.
    pub scripts_dir: PathBuf,
    /// Where journals and snapshots live, one directory per room.
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub script_limits: ScriptLimits,
    /// A room with no channels and no traffic for this long snapshots and stops.
    pub idle_timeout: Duration,
    /// Snapshot after this many journaled events...
    pub snapshot_every_events: u64,
    /// ...or this long after the first event not covered by a snapshot.
    pub snapshot_every: Duration,
    /// More than `max_restarts` crashes within `restart_window` marks a room failed.
    pub max_restarts: usize,
    pub restart_window: Duration,
    /// A WebSocket that sends no frame for this long is closed.
    pub heartbeat_timeout: Duration,
    /// How long a long-poll GET is held open waiting for messages before it
    /// answers 204 (Phoenix's `window_ms`).
    pub longpoll_window: Duration,
    /// A long-poll session with no request in flight for this long expires:
    /// its channels leave. Must exceed `longpoll_window` plus a round trip.
    pub longpoll_timeout: Duration,
    /// How often a quiet SSE stream gets a keep-alive comment.
    pub sse_keep_alive: Duration,
    /// Frames a connection may have queued before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Commands a room may have queued before senders wait.
    pub mailbox_capacity: usize,
    /// Largest accepted WebSocket message, in bytes.
    pub max_frame_bytes: usize,
    /// Channels one connection may have joined at once.
    pub max_channels_per_conn: usize,
    /// A presence meta's `typing: true` clears itself after this long without
    /// a refresh.
    pub typing_timeout: Duration,
    /// Watch the scripts directory and reload changed kinds in place.
    pub watch_scripts: bool,
    /// Threads that run room JavaScript (0 = one per CPU).
    pub js_threads: usize,
    /// `Authorization: Bearer` token for the admin API; without it the admin
    /// API is served to loopback peers only.
    pub admin_token: Option<String>,
    /// With a secret, every connection must present a token signed with it
    /// (JWT HS256, see [`crate::auth`]) and its user is the token's `sub`.
    pub auth_secret: Option<crate::auth::Secret>,
    /// Origins besides the host's own that browser pages may connect from
    /// (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scripts_dir: PathBuf::from("rooms-js"),
            data_dir: PathBuf::from("data"),
            durability: Durability::Strict,
            script_limits: ScriptLimits::default(),
            idle_timeout: Duration::from_secs(300),
            snapshot_every_events: 1000,
            snapshot_every: Duration::from_secs(60),
            max_restarts: 5,
            restart_window: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(60),
            longpoll_window: Duration::from_secs(10),
            longpoll_timeout: Duration::from_secs(20),
            sse_keep_alive: Duration::from_secs(15),
            outbound_queue: 1024,
            mailbox_capacity: 1024,
            max_frame_bytes: 64 << 10,
            max_channels_per_conn: 100,
            typing_timeout: crate::presence::TYPING_TIMEOUT,
            watch_scripts: true,
            js_threads: 0,
            admin_token: None,
            auth_secret: None,
            allowed_origins: Vec::new(),
        }
    }
}
