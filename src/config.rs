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
#[derive(Clone, Debug, PartialEq, Eq)]
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

impl ScriptLimits {
    /// Applies `memory=64MiB,cpu=200ms,stack=1MiB` (any subset, any order)
    /// on top of `self`.
    pub fn with_overrides(&self, spec: &str) -> Result<ScriptLimits, String> {
        let mut limits = self.clone();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected key=value"))?;
            match key.trim() {
                "memory" => limits.memory = parse_bytes(value)?,
                "cpu" => limits.cpu_per_call = parse_duration(value)?,
                "stack" => limits.stack = parse_bytes(value)?,
                other => {
                    return Err(format!(
                        "unknown script limit {other:?} (memory, cpu or stack)"
                    ));
                }
            }
        }
        limits.check()?;
        Ok(limits)
    }

    /// Refuses limits no script could run under.
    pub fn check(&self) -> Result<(), String> {
        if self.memory < 1 << 20 {
            return Err("script memory limit must be at least 1MiB".into());
        }
        if self.cpu_per_call < Duration::from_millis(1) {
            return Err("script CPU budget must be at least 1ms".into());
        }
        if self.stack < 64 << 10 || self.stack > MAX_SCRIPT_STACK {
            return Err(format!(
                "script stack limit must be between 64KiB and {}KiB (the JS threads' stack leaves room for the host)",
                MAX_SCRIPT_STACK >> 10
            ));
        }
        Ok(())
    }
}

/// Largest accepted script stack limit: half the 2 MiB stack of a tokio
/// worker (scripts are compiled and run on them), so QuickJS reports an
/// overflow as an exception long before the thread's guard page is hit.
pub const MAX_SCRIPT_STACK: usize = 1 << 20;

/// `64MiB`, `512KiB`, `1GiB`, `4096` (bytes); also `kb`/`mb` spellings.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 64MiB"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown size unit (B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// `200ms`, `1s`, `1.5s`, `500us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 200ms"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1e3,
        "s" => number,
        "us" | "µs" => number / 1e6,
        "" => return Err(format!("{text:?}: give a unit (ms, s or us)")),
        other => return Err(format!("{text:?}: unknown duration unit {other:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?}: out of range"))
}

/// `chat:memory=64MiB,cpu=200ms;game:cpu=50ms`: per-kind overrides of the
/// global script limits. Kinds are separated by `;` (or given by repeating
/// the flag).
pub fn parse_kind_limits(
    spec: &str,
    base: &ScriptLimits,
) -> Result<std::collections::BTreeMap<String, ScriptLimits>, String> {
    let mut kinds = std::collections::BTreeMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (kind, limits) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?}: expected kind:key=value,..."))?;
        let kind = kind.trim();
        if !crate::topic::is_valid_kind(kind) {
            return Err(format!("{kind:?} is not a valid room kind"));
        }
        let limits = base
            .with_overrides(limits)
            .map_err(|e| format!("kind {kind}: {e}"))?;
        kinds.insert(kind.to_string(), limits);
    }
    Ok(kinds)
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
    /// Per-kind overrides of `script_limits` (whole limit sets: a kind listed
    /// here uses its entry instead of the global limits).
    pub kind_limits: std::collections::BTreeMap<String, ScriptLimits>,
    /// A room with no channels and no traffic for this long snapshots and stops.
    pub idle_timeout: Duration,
    /// Snapshot after this many journaled events...
    pub snapshot_every_events: u64,
    /// ...or once replaying the events since the last snapshot would take
    /// about this long: the time their hooks took (or, if more, 20 times what
    /// the room's last snapshot took, so snapshots of a large state stay a
    /// small share of the room's time)...
    pub snapshot_replay: Duration,
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
    /// Deepest accepted nesting of arrays and objects in a client payload
    /// (the payload object itself is depth 1). Checked by a byte scan before
    /// anything parses the payload recursively.
    pub max_json_depth: usize,
    /// Messages per second one connection may send (token bucket refill;
    /// 0 = unlimited). Heartbeats are not counted.
    pub msg_rate: u32,
    /// Messages a connection may send in a burst (the bucket's size).
    pub msg_burst: u32,
    /// Channels one room accepts at once (0 = unlimited).
    pub max_conns_per_room: usize,
    /// Rooms registered (running, starting or failed) at once (0 = unlimited).
    pub max_rooms: usize,
    /// WebSockets, long-poll sessions and SSE streams from one IP address
    /// (0 = unlimited).
    pub max_conns_per_ip: usize,
    /// Apply `max_conns_per_ip` to loopback peers too (off by default:
    /// benchmarks, tests and a local reverse proxy all connect from loopback).
    pub limit_loopback: bool,
    /// A presence meta's `typing: true` clears itself after this long without
    /// a refresh.
    pub typing_timeout: Duration,
    /// While presence changes keep coming, a room sends at most one
    /// `presence_diff` per this long (longer in rooms of over 400 tabs: 50 µs
    /// per tab, up to 100 ms), with every change since the last (a change
    /// after a quiet spell goes out at once); zero sends one per mailbox
    /// batch. See `presence` for what a client sees.
    pub presence_interval: Duration,
    /// A room whose channels are joined but quiet for this long frees its
    /// JavaScript until the next event (hibernation); zero turns it off.
    pub hibernate_after: Duration,
    /// A journal fsync in flight for longer than this is a stalled disk: the
    /// room refuses new events (`storage unavailable`) until it finishes.
    pub fsync_stall: Duration,
    /// Watch the scripts directory and reload changed kinds in place.
    pub watch_scripts: bool,
    /// Threads that run room JavaScript (0 = one per CPU).
    pub js_threads: usize,
    /// QuickJS runtimes kept built ahead (by an idle-priority thread) so a
    /// new room skips building one; 0 = none.
    pub warm_contexts: usize,
    /// Bytes of free heap the same thread keeps faulted in, so a new room's
    /// memory takes no page faults; 0 = none. Only useful with glibc tuned by
    /// [`crate::heap::tune_for_rooms`] (the `roomhost` binary does, and sets
    /// 512 KiB); at most [`crate::heap::MAX_WARM_HEAP`].
    pub warm_heap: usize,
    /// `Authorization: Bearer` token for the admin API; without it the admin
    /// API is served to loopback peers only.
    pub admin_token: Option<String>,
    /// With a secret, every connection must present a token signed with it
    /// (JWT HS256, see [`crate::auth`]) and its user is the token's `sub`.
    pub auth_secret: Option<crate::auth::Secret>,
    /// Origins besides the host's own that browser pages may connect from
    /// (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see
    /// `web::proxy`): behind one, the admin API's loopback rule, the
    /// per-address limits and the logs apply to the browser's address. Empty:
    /// the TCP peer is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scripts_dir: PathBuf::from("rooms-js"),
            data_dir: PathBuf::from("data"),
            durability: Durability::Strict,
            script_limits: ScriptLimits::default(),
            kind_limits: Default::default(),
            idle_timeout: Duration::from_secs(300),
            snapshot_every_events: 10_000,
            snapshot_replay: Duration::from_millis(50),
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
            max_json_depth: 32,
            msg_rate: 100,
            msg_burst: 200,
            max_conns_per_room: 10_000,
            max_rooms: 100_000,
            max_conns_per_ip: 1_000,
            limit_loopback: false,
            typing_timeout: crate::presence::TYPING_TIMEOUT,
            presence_interval: crate::presence::DIFF_INTERVAL,
            fsync_stall: Duration::from_secs(5),
            hibernate_after: Duration::from_secs(30),
            watch_scripts: true,
            js_threads: 0,
            warm_contexts: 4,
            warm_heap: 0,
            admin_token: None,
            auth_secret: None,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1PiB").is_err());
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("200").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn kind_limits_override_the_global_ones() {
        let base = ScriptLimits::default();
        let kinds =
            parse_kind_limits("chat:memory=64MiB,cpu=200ms; game:stack=1MiB", &base).unwrap();
        assert_eq!(kinds["chat"].memory, 64 << 20);
        assert_eq!(kinds["chat"].cpu_per_call, Duration::from_millis(200));
        assert_eq!(kinds["chat"].stack, base.stack);
        assert_eq!(kinds["game"].stack, 1 << 20);
        assert!(parse_kind_limits("chat:memory=1KiB", &base).is_err());
        assert!(parse_kind_limits("chat:heap=1MiB", &base).is_err());
        assert!(parse_kind_limits("Chat:cpu=1ms", &base).is_err());
        assert!(parse_kind_limits("chat:stack=64MiB", &base).is_err());
    }
}
