//! The host's metrics, served at `GET /metrics` in the OpenMetrics text
//! format (which Prometheus scrapes) by the `prometheus-client` crate.
//!
//! One registry per [`crate::Host`], no global statics: several hosts in one
//! process keep separate numbers. Event counters are bumped where things
//! happen (a connection opens, a room crashes, a journal fsync completes);
//! gauges that describe the current state of the rooms (rooms by state,
//! channels, JS memory) are computed when `/metrics` is scraped.
//!
//! Every count the host shows lives here once: the admin API's totals read
//! these metrics, they keep no twin atomics. A connection is counted by an
//! [`OpenConnection`] guard, so every way a transport ends uncounts it.
//!
//! A leaf: labels are plain strings chosen by the callers (a crash's
//! reason label, a room's state), never types of the layers above.
//!
//! Besides the `roomhost_*` families, `/metrics` carries the standard
//! `process_*` families and `roomhost_build_info` ([`process`]).

mod float_text;
pub mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Labels1 = [(&'static str, &'static str); 1];
type HookLabels = [(&'static str, String); 2];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Values of the `reason` label of crashes and restarts.
pub const CRASH_REASONS: [&str; 7] = [
    "cpu",
    "memory",
    "killed",
    "panic",
    "storage",
    "ownership",
    "other",
];
/// Values of the `state` label of `roomhost_rooms`.
pub const ROOM_STATES: [&str; 6] = [
    "starting",
    "running",
    "restarting",
    "stopped",
    "failed",
    "hibernated",
];
/// Values of the `op` label of `roomhost_cluster_forwarded_total`.
pub const FORWARDED_OPS: [&str; 3] = ["join", "push", "leave"];
/// Values of the `reason` label of `roomhost_cluster_rejoins_total`.
pub const REJOIN_REASONS: [&str; 5] = [
    "gap",
    "owner_changed",
    "owner_silent",
    "owner_unavailable",
    "owner_gone",
];
/// Values of the `transport` label.
const TRANSPORTS: [&str; 3] = ["websocket", "longpoll", "http"];
/// Values of the `reason` label of auth failures ([`crate::auth::AuthError::label`]).
const AUTH_FAILURES: [&str; 7] = [
    "missing",
    "malformed",
    "algorithm",
    "signature",
    "expired",
    "not_yet_valid",
    "subject",
];

/// How many rooms `roomhost_room_js_memory_bytes` lists (the largest ones).
pub const JS_MEMORY_TOP_ROOMS: usize = 10;

/// Every metric of one host.
pub struct Metrics {
    registry: Registry,
    /// The unprefixed `process_*` families: a registry of their own, since
    /// `registry` prefixes every name with `roomhost_`.
    process: Registry,
    rooms: Family<Labels1, Gauge>,
    room_starts: Counter,
    room_contexts: Family<Labels1, Counter>,
    room_crashes: Family<Labels1, Counter>,
    room_restarts: Family<Labels1, Counter>,
    channels: Gauge,
    connections: Family<Labels1, Gauge>,
    messages_in: Family<Labels1, Counter>,
    messages_out: Family<Labels1, Counter>,
    fanout: Counter,
    hook_seconds: HistogramFamily<HookLabels>,
    fsync_seconds: Histogram,
    fsync_group: Histogram,
    js_memory: Gauge,
    js_memory_top: Family<[(&'static str, String); 1], Gauge>,
    slow_consumers: Counter,
    storage_faults: Family<Labels1, Counter>,
    storage_unavailable_seconds: Family<Labels1, Counter<f64, AtomicU64>>,
    rooms_storage_unavailable: Gauge,
    cluster_connected: Gauge,
    cluster_nodes_alive: Gauge,
    hibernations: Counter,
    wakes: Counter,
    wake_seconds: Histogram,
    rate_limited: Counter,
    auth_failures: Family<Labels1, Counter>,
    refused: Family<Labels1, Counter>,
    /// Cluster mode: commands this node forwarded to a room's owner.
    forwarded: Family<Labels1, Counter>,
    /// Cluster mode: times this node told its channels of a room run
    /// elsewhere to rejoin.
    cluster_rejoins: Family<Labels1, Counter>,
    /// Client messages per second over the last second (the dashboard's
    /// rate), and the `messages_in` total it was computed from.
    messages_per_sec: AtomicU64,
    messages_in_at_tick: AtomicU64,
}

/// One open client connection, counted in `roomhost_connections` from its
/// creation until it is dropped.
#[must_use = "the connection is uncounted when this is dropped"]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("roomhost");
        let m = Metrics {
            rooms: Family::default(),
            room_starts: Counter::default(),
            room_contexts: Family::default(),
            room_crashes: Family::default(),
            room_restarts: Family::default(),
            channels: Gauge::default(),
            connections: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            fanout: Counter::default(),
            hook_seconds: Family::new_with_constructor(latency_histogram),
            fsync_seconds: latency_histogram(),
            fsync_group: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            js_memory: Gauge::default(),
            js_memory_top: Family::default(),
            slow_consumers: Counter::default(),
            storage_faults: Family::default(),
            storage_unavailable_seconds: Family::default(),
            rooms_storage_unavailable: Gauge::default(),
            cluster_connected: Gauge::default(),
            cluster_nodes_alive: Gauge::default(),
            hibernations: Counter::default(),
            wakes: Counter::default(),
            wake_seconds: latency_histogram(),
            rate_limited: Counter::default(),
            auth_failures: Family::default(),
            refused: Family::default(),
            forwarded: Family::default(),
            cluster_rejoins: Family::default(),
            messages_per_sec: AtomicU64::new(0),
            messages_in_at_tick: AtomicU64::new(0),
            registry: Registry::default(),
            process: Registry::default(),
        };
        let mut process = Registry::default();
        process.register_collector(Box::new(process::ProcessCollector));
        registry.register_collector(Box::new(process::BuildInfoCollector));
        registry.register(
            "rooms",
            "Rooms by lifecycle state, as /api/rooms lists them (stopped: durable state, no task)",
            m.rooms.clone(),
        );
        registry.register(
            "room_starts",
            "Room tasks started (first starts and restarts)",
            m.room_starts.clone(),
        );
        registry.register(
            "room_contexts",
            "JavaScript contexts taken by rooms (starts, restarts, reloads), by source: \
             warm (ready in the warm pool) or built (on the spot)",
            m.room_contexts.clone(),
        );
        registry.register(
            "room_crashes",
            "Room crashes by reason",
            m.room_crashes.clone(),
        );
        registry.register(
            "room_restarts",
            "Restarts scheduled after a crash, by the crash's reason",
            m.room_restarts.clone(),
        );
        registry.register(
            "channels",
            "Channels joined to running rooms",
            m.channels.clone(),
        );
        registry.register(
            "connections",
            "Open client connections by transport",
            m.connections.clone(),
        );
        registry.register(
            "messages_in",
            "Frames and posts received from clients, by transport",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Frames and events written to clients, by transport",
            m.messages_out.clone(),
        );
        registry.register(
            "fanout_deliveries",
            "Broadcast frames queued to channels",
            m.fanout.clone(),
        );
        registry.register_with_unit(
            "hook_duration",
            "Room hook call latency by room kind and hook",
            Unit::Seconds,
            m.hook_seconds.clone(),
        );
        registry.register_with_unit(
            "journal_fsync_duration",
            "Journal fdatasync latency",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        registry.register(
            "journal_fsync_group_events",
            "Events made durable by one journal fsync (group commit size)",
            m.fsync_group.clone(),
        );
        registry.register_with_unit(
            "js_memory",
            "QuickJS heap in use, summed over running rooms",
            Unit::Bytes,
            m.js_memory.clone(),
        );
        registry.register_with_unit(
            "room_js_memory",
            "QuickJS heap in use of the largest running rooms",
            Unit::Bytes,
            m.js_memory_top.clone(),
        );
        registry.register(
            "storage_faults",
            "Times a room's storage stopped taking writes, by what failed: \
             write (journal write), sync (journal fsync), stall (an fsync past \
             the stall threshold)",
            m.storage_faults.clone(),
        );
        registry.register_with_unit(
            "storage_unavailable",
            "Time rooms spent refusing events because their storage did not \
             take writes, by state (fault, stalled), counted when it ends",
            Unit::Seconds,
            m.storage_unavailable_seconds.clone(),
        );
        registry.register(
            "rooms_storage_unavailable",
            "Running rooms whose storage refuses writes now",
            m.rooms_storage_unavailable.clone(),
        );
        registry.register(
            "room_hibernations",
            "Times a room with quiet channels freed its JavaScript",
            m.hibernations.clone(),
        );
        registry.register(
            "room_wakes",
            "Times a hibernated room loaded its JavaScript again for an event",
            m.wakes.clone(),
        );
        registry.register_with_unit(
            "room_wake_duration",
            "Time a hibernated room took to load its JavaScript again",
            Unit::Seconds,
            m.wake_seconds.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Connections closed because their outbound queue overflowed",
            m.slow_consumers.clone(),
        );
        registry.register(
            "rate_limited",
            "Client messages refused by the rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "auth_failures",
            "Connections refused for a missing or invalid token, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connection attempts refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "cluster_forwarded",
            "Cluster mode: commands forwarded to the node that runs their room, by op",
            m.forwarded.clone(),
        );
        registry.register(
            "cluster_rejoins",
            "Cluster mode: rooms run elsewhere whose channels here were sent phx_error, by reason",
            m.cluster_rejoins.clone(),
        );
        // Known label values start at zero, so every series exists from the
        // first scrape (rate() and absent() need no special cases).
        for reason in CRASH_REASONS {
            let _ = m.room_crashes.get_or_create(&[("reason", reason)]);
            let _ = m.room_restarts.get_or_create(&[("reason", reason)]);
        }
        for op in FORWARDED_OPS {
            let _ = m.forwarded.get_or_create(&[("op", op)]);
        }
        for reason in REJOIN_REASONS {
            let _ = m.cluster_rejoins.get_or_create(&[("reason", reason)]);
        }
        for source in ["warm", "built"] {
            let _ = m.room_contexts.get_or_create(&[("source", source)]);
        }
        for transport in TRANSPORTS {
            let _ = m.connections.get_or_create(&[("transport", transport)]);
            let _ = m.messages_in.get_or_create(&[("transport", transport)]);
            let _ = m.messages_out.get_or_create(&[("transport", transport)]);
        }
        for what in ["write", "sync", "stall"] {
            let _ = m.storage_faults.get_or_create(&[("what", what)]);
        }
        for state in ["fault", "stalled"] {
            let _ = m
                .storage_unavailable_seconds
                .get_or_create(&[("state", state)]);
        }
        for reason in AUTH_FAILURES {
            let _ = m.auth_failures.get_or_create(&[("reason", reason)]);
        }
        for reason in ["auth", "origin", "bad_request"] {
            let _ = m.refused.get_or_create(&[("reason", reason)]);
        }
        Metrics {
            registry,
            process,
            ..m
        }
    }

    pub fn room_started(&self) {
        self.room_starts.inc();
    }

    /// A room took a JavaScript context: `warm` from the pool, or built.
    pub fn room_context(&self, warm: bool) {
        let source = if warm { "warm" } else { "built" };
        self.room_contexts
            .get_or_create(&[("source", source)])
            .inc();
    }

    /// Room tasks started so far.
    pub fn room_starts_total(&self) -> u64 {
        self.room_starts.get()
    }

    /// A room task ended abnormally; `reason` is one of [`CRASH_REASONS`].
    pub fn room_crashed(&self, reason: &'static str) {
        self.room_crashes.get_or_create(&[("reason", reason)]).inc();
    }

    /// A crashed room is scheduled to restart; `reason` as for crashes.
    pub fn room_restarted(&self, reason: &'static str) {
        self.room_restarts
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a connection over `transport` until the guard drops.
    pub fn connection_opened(&self, transport: &'static str) -> OpenConnection {
        let gauge = self
            .connections
            .get_or_create(&[("transport", transport)])
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Open connections over every transport.
    pub fn connections_open(&self) -> u64 {
        TRANSPORTS
            .iter()
            .map(|t| self.connections.get_or_create(&[("transport", *t)]).get())
            .sum::<i64>()
            .max(0) as u64
    }

    /// Cluster mode's families, registered only by a host in cluster mode.
    pub fn register_cluster(&mut self) {
        self.registry.register(
            "cluster_nats_connected",
            "Cluster mode: 1 while the connection to NATS is up, else 0",
            self.cluster_connected.clone(),
        );
        self.registry.register(
            "cluster_nodes_alive",
            "Cluster mode: nodes (this one included) whose record is fresh",
            self.cluster_nodes_alive.clone(),
        );
    }

    /// Cluster mode: whether the NATS connection is up.
    pub fn cluster_connected(&self, up: bool) {
        self.cluster_connected.set(i64::from(up));
    }

    /// Cluster mode: nodes heard from within the liveness window.
    pub fn cluster_nodes_alive(&self, alive: usize) {
        self.cluster_nodes_alive.set(alive as i64);
    }

    /// Client messages received over every transport.
    pub fn messages_in_total(&self) -> u64 {
        TRANSPORTS
            .iter()
            .map(|t| self.messages_in.get_or_create(&[("transport", *t)]).get())
            .sum()
    }

    /// Called once a second: the client messages of the last second become
    /// [`Metrics::messages_per_sec`].
    pub fn tick_message_rate(&self) {
        let now = self.messages_in_total();
        let before = self.messages_in_at_tick.swap(now, Ordering::Relaxed);
        self.messages_per_sec
            .store(now.saturating_sub(before), Ordering::Relaxed);
    }

    /// Client messages received in the last second.
    pub fn messages_per_sec(&self) -> u64 {
        self.messages_per_sec.load(Ordering::Relaxed)
    }

    pub fn messages_in(&self, transport: &'static str, n: usize) {
        if n > 0 {
            self.messages_in
                .get_or_create(&[("transport", transport)])
                .inc_by(n as u64);
        }
    }

    pub fn messages_out(&self, transport: &'static str, n: usize) {
        if n > 0 {
            self.messages_out
                .get_or_create(&[("transport", transport)])
                .inc_by(n as u64);
        }
    }

    pub fn fanout(&self, deliveries: usize) {
        self.fanout.inc_by(deliveries as u64);
    }

    pub fn hook(&self, kind: &str, hook: &'static str, took: Duration) {
        self.hook_seconds
            .get_or_create(&[("hook", hook.to_string()), ("kind", kind.to_string())])
            .observe(took.as_secs_f64());
    }

    /// One journal fsync: how long it took and how many events it covered.
    pub fn fsync(&self, took: Duration, events: u64) {
        self.fsync_seconds.observe(took.as_secs_f64());
        self.fsync_group.observe(events as f64);
    }

    /// A room's storage failed; `what` is the failed operation as the
    /// journal names it ("journal write failed", "journal sync failed").
    pub fn storage_fault(&self, what: &str) {
        let label = if what.contains("sync") {
            "sync"
        } else {
            "write"
        };
        self.storage_faults.get_or_create(&[("what", label)]).inc();
    }

    /// A room's journal fsync passed the stall threshold.
    pub fn storage_stall(&self) {
        self.storage_faults
            .get_or_create(&[("what", "stall")])
            .inc();
    }

    /// A room's storage takes writes again after `lasted` in `state`
    /// (`fault` or `stalled`).
    pub fn storage_recovered(&self, state: &'static str, lasted: Duration) {
        self.storage_unavailable_seconds
            .get_or_create(&[("state", state)])
            .inc_by(lasted.as_secs_f64());
    }

    /// A room hibernated.
    pub fn room_hibernated(&self) {
        self.hibernations.inc();
    }

    /// A hibernated room woke, in `took`.
    pub fn room_woke(&self, took: Duration) {
        self.wakes.inc();
        self.wake_seconds.observe(took.as_secs_f64());
    }

    pub fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// A client message was refused by the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A token was missing or invalid (`reason` is [`crate::auth::AuthError::label`]).
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// A connection attempt was refused: `auth`, `origin`, `bad_request`, or
    /// a limit's name.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// Cluster mode: a command went to its room's owner (`op`: one of
    /// [`FORWARDED_OPS`]).
    pub fn forwarded(&self, op: &'static str) {
        self.forwarded.get_or_create(&[("op", op)]).inc();
    }

    /// Cluster mode: this node's channels of a room run elsewhere were told
    /// to rejoin (`reason`: one of [`REJOIN_REASONS`]).
    pub fn cluster_rejoin(&self, reason: &'static str) {
        self.cluster_rejoins
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// The current picture of the rooms, set just before encoding.
    pub fn set_rooms(&self, rooms: &[RoomSample]) {
        for state in ROOM_STATES {
            let n = rooms.iter().filter(|r| r.state == state).count();
            self.rooms.get_or_create(&[("state", state)]).set(n as i64);
        }
        self.channels
            .set(rooms.iter().map(|r| r.channels as i64).sum());
        self.rooms_storage_unavailable
            .set(rooms.iter().filter(|r| r.storage_unavailable).count() as i64);
        let mut running: Vec<&RoomSample> = rooms.iter().filter(|r| r.state == "running").collect();
        let total: u64 = running.iter().map(|r| r.js_memory).sum();
        self.js_memory.set(i64::try_from(total).unwrap_or(i64::MAX));
        running.sort_by_key(|r| std::cmp::Reverse(r.js_memory));
        self.js_memory_top.clear();
        for room in running.iter().take(JS_MEMORY_TOP_ROOMS) {
            self.js_memory_top
                .get_or_create(&[("topic", room.topic.clone())])
                .set(i64::try_from(room.js_memory).unwrap_or(i64::MAX));
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        float_text::shortest_floats(&out)
    }
}

/// What `/metrics` needs to know about one registered room.
pub struct RoomSample {
    pub topic: String,
    /// One of [`ROOM_STATES`].
    pub state: &'static str,
    pub channels: usize,
    pub js_memory: u64,
    /// Its storage refuses writes now (a fault or a stall).
    pub storage_unavailable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_names_and_labels() {
        let m = Metrics::new();
        m.room_started();
        m.room_context(true);
        m.room_crashed("killed");
        let _open = m.connection_opened("websocket");
        m.auth_failed("expired");
        m.refused("auth");
        m.rate_limited();
        m.hook("chat", "message", Duration::from_millis(2));
        m.fsync(Duration::from_millis(3), 4);
        m.set_rooms(&[RoomSample {
            topic: "chat:a".into(),
            state: "running",
            channels: 2,
            js_memory: 100_000,
            storage_unavailable: false,
        }]);
        let text = m.encode();
        for line in [
            "roomhost_room_starts_total 1",
            "roomhost_room_contexts_total{source=\"warm\"} 1",
            "roomhost_room_contexts_total{source=\"built\"} 0",
            "roomhost_room_crashes_total{reason=\"killed\"} 1",
            "roomhost_connections{transport=\"websocket\"} 1",
            "roomhost_auth_failures_total{reason=\"expired\"} 1",
            "roomhost_connections_refused_total{reason=\"auth\"} 1",
            "roomhost_rate_limited_total 1",
            "roomhost_rooms{state=\"running\"} 1",
            "roomhost_channels 2",
            "roomhost_room_js_memory_bytes{topic=\"chat:a\"} 100000",
            "roomhost_js_memory_bytes 100000",
            "roomhost_journal_fsync_group_events_count 1",
            "roomhost_hook_duration_seconds_count{hook=\"message\",kind=\"chat\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Separate hosts keep separate numbers.
        assert!(
            Metrics::new()
                .encode()
                .contains("roomhost_room_starts_total 0")
        );
    }

    #[test]
    fn a_connection_is_counted_while_its_guard_lives_and_totals_sum_the_transports() {
        let m = Metrics::new();
        let ws = m.connection_opened("websocket");
        let poll = m.connection_opened("longpoll");
        assert_eq!(m.connections_open(), 2);
        drop(ws);
        assert_eq!(m.connections_open(), 1);
        assert!(
            m.encode()
                .contains("roomhost_connections{transport=\"websocket\"} 0")
        );
        drop(poll);
        assert_eq!(m.connections_open(), 0);
        m.messages_in("websocket", 3);
        m.messages_in("http", 2);
        assert_eq!(m.messages_in_total(), 5);
        m.tick_message_rate();
        assert_eq!(m.messages_per_sec(), 5);
        m.messages_in("longpoll", 1);
        m.tick_message_rate();
        assert_eq!(m.messages_per_sec(), 1, "only the last second's");
    }
}
