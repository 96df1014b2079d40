//! What a bench run measured: printed as a table for people and as one JSON
//! line for scripts (`--json`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds; `None` when it is empty.
    pub fn from_us(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        })
    }
}

/// Join-to-reply times of never-used rooms against an existing one.
#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub joins: usize,
    /// Milliseconds waited before each join, cold and warm (0: back to back).
    pub pause_ms: f64,
    /// Join of a never-used room.
    pub cold: Latency,
    /// Join of a room that is already running.
    pub warm: Latency,
    /// Cold start cost: the cold percentile minus the median warm join.
    pub net_p50_ms: f64,
    pub net_p99_ms: f64,
    /// Where the server's rooms got their JavaScript contexts during the run
    /// (from its `/metrics`, when the generator may read them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Contexts>,
}

/// Contexts the server's rooms took during a run (`roomhost_room_contexts_total`).
#[derive(Debug, Serialize)]
pub struct Contexts {
    /// Ready in the warm pool.
    pub warm: u64,
    /// Built on the room's start.
    pub built: u64,
}

/// What the room API scenarios count besides latency.
#[derive(Debug, Default, Serialize)]
pub struct RoomApi {
    /// Latencies measured.
    pub samples: u64,
    /// `wake`: wakes the server counted meanwhile (each push one, if every
    /// room was asleep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakes: Option<u64>,
    /// `tick`: ticks that never came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// What joining every client of a load scenario cost.
#[derive(Debug, Serialize)]
pub struct Joins {
    /// Clients joined (one channel each).
    pub clients: usize,
    /// Wall time from the first connect to the last join reply
    /// (connections opened `SETUP_CONCURRENCY` at a time).
    pub total_s: f64,
    /// Each join, from sending `phx_join` to its reply.
    pub latency_ms: Latency,
}

/// CPU time (user + system, `/proc/<pid>/stat`) the server spent.
#[derive(Debug, Serialize)]
pub struct ServerCpu {
    /// Opening and joining every connection.
    pub setup_s: f64,
    /// From the start of the measured window until the last delivery of the
    /// window's messages arrived (or the drain gave up).
    pub window_s: f64,
    /// `window_s` per message sent in the window, in µs.
    pub per_message_us: f64,
    /// The server's threads at the end of the window.
    pub threads: u64,
}

/// Server memory held by idle rooms and connections.
#[derive(Debug, Serialize)]
pub struct Idle {
    pub rooms: usize,
    pub clients_per_room: usize,
    pub rss_baseline_kib: u64,
    /// After opening every connection (none joined).
    pub rss_connected_kib: u64,
    /// After the first client of each room joined (every room started).
    pub rss_rooms_kib: u64,
    /// After the other clients joined too.
    pub rss_joined_kib: u64,
    /// After `--hold` seconds more (rooms may hibernate meanwhile).
    pub rss_held_kib: u64,
    /// Rooms the server counted hibernated then (if it says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hibernated: Option<u64>,
    /// (connected - baseline) / connections: a connection with no channel.
    pub per_conn_kib: f64,
    /// (rooms - connected) / rooms: a room with its script, its state and
    /// its first member.
    pub per_room_kib: f64,
    /// (joined - rooms) / later joins: one more member of a room (its
    /// channel, presence entry, the script's record of it).
    pub per_member_kib: f64,
    /// per_conn_kib + per_member_kib: an idle client joined to a room.
    pub per_joined_conn_kib: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub connections: usize,
    pub rooms: usize,
    /// Length of the measured window (warm-up excluded).
    pub duration_s: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Deliveries expected: every message sent in the window, to every
    /// client of its room.
    pub expected: u64,
    /// Deliveries of messages sent in the window.
    pub received: u64,
    pub deliveries_per_s: f64,
    pub delivery_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Rate mode: how late messages left the generator after their
    /// scheduled time (included in `latency_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<Latency>,
    /// Error replies, channels the server ended, connections lost.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joins: Option<Joins>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coldstart: Option<ColdStart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_api: Option<RoomApi>,
}

impl Report {
    pub fn new(scenario: &str, label: Option<String>) -> Report {
        Report {
            scenario: scenario.to_string(),
            label,
            connections: 0,
            rooms: 0,
            duration_s: 0.0,
            sent: 0,
            expected: 0,
            received: 0,
            deliveries_per_s: 0.0,
            delivery_ratio: 0.0,
            latency_ms: None,
            send_lag_ms: None,
            errors: 0,
            server_rss_kib: None,
            server_peak_rss_kib: None,
            joins: None,
            server_cpu: None,
            coldstart: None,
            idle: None,
            room_api: None,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// A two-column table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        row(
            "scenario",
            match &self.label {
                Some(l) => format!("{} ({l})", self.scenario),
                None => self.scenario.clone(),
            },
        );
        row("connections", self.connections.to_string());
        row("rooms", self.rooms.to_string());
        if self.duration_s > 0.0 {
            row("window", format!("{:.1} s", self.duration_s));
            row("sent", self.sent.to_string());
            row(
                "deliveries",
                format!("{} of {} expected", self.received, self.expected),
            );
            row("deliveries/s", format!("{:.0}", self.deliveries_per_s));
            row("delivery ratio", format!("{:.4}", self.delivery_ratio));
        }
        if let Some(l) = &self.latency_ms {
            row(
                "latency ms",
                format!(
                    "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
                    l.p50, l.p90, l.p99, l.max
                ),
            );
        }
        if let Some(l) = &self.send_lag_ms {
            row(
                "send lag ms",
                format!("p50 {:.3}  p99 {:.3}  max {:.3}", l.p50, l.p99, l.max),
            );
        }
        if let Some(j) = &self.joins {
            row(
                "joins",
                format!(
                    "{} in {:.2} s, each p50 {:.3}  p99 {:.3}  max {:.3} ms",
                    j.clients, j.total_s, j.latency_ms.p50, j.latency_ms.p99, j.latency_ms.max
                ),
            );
        }
        if let Some(c) = &self.server_cpu {
            row(
                "server CPU",
                format!(
                    "setup {:.3} s  window {:.3} s ({:.1} µs per message), {} threads",
                    c.setup_s, c.window_s, c.per_message_us, c.threads
                ),
            );
        }
        if let Some(c) = &self.coldstart {
            row(
                "joins",
                format!("{} (pause {} ms before each join)", c.joins, c.pause_ms),
            );
            row(
                "cold join ms",
                format!("p50 {:.3}  p99 {:.3}", c.cold.p50, c.cold.p99),
            );
            row(
                "warm join ms",
                format!("p50 {:.3}  p99 {:.3}", c.warm.p50, c.warm.p99),
            );
            row(
                "cold start ms",
                format!("p50 {:.3}  p99 {:.3}", c.net_p50_ms, c.net_p99_ms),
            );
            if let Some(x) = &c.contexts {
                row(
                    "contexts",
                    format!("{} warm, {} built on the join", x.warm, x.built),
                );
            }
        }
        if let Some(i) = &self.idle {
            row(
                "server RSS KiB",
                format!(
                    "baseline {}  connected {}  rooms {}  joined {}",
                    i.rss_baseline_kib, i.rss_connected_kib, i.rss_rooms_kib, i.rss_joined_kib
                ),
            );
            row(
                "after hold",
                format!(
                    "{} KiB, {} rooms hibernated",
                    i.rss_held_kib,
                    i.hibernated.map_or("?".into(), |n| n.to_string())
                ),
            );
            row("per connection", format!("{:.1} KiB", i.per_conn_kib));
            row("per room", format!("{:.1} KiB", i.per_room_kib));
            row("per extra member", format!("{:.1} KiB", i.per_member_kib));
            row(
                "per joined conn",
                format!("{:.1} KiB", i.per_joined_conn_kib),
            );
        }
        if let Some(r) = &self.room_api {
            row("samples", r.samples.to_string());
            if let Some(wakes) = r.wakes {
                row("wakes", wakes.to_string());
            }
            if let Some(missed) = r.missed {
                row("missed", missed.to_string());
            }
        }
        row("errors", self.errors.to_string());
        if let Some(rss) = self.server_rss_kib {
            row("server RSS", format!("{:.1} MiB", rss as f64 / 1024.0));
        }
        if let Some(peak) = self.server_peak_rss_kib {
            row(
                "server peak RSS",
                format!("{:.1} MiB", peak as f64 / 1024.0),
            );
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {path} (is --pid the server's?): {e}"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .ok_or_else(|| anyhow::anyhow!("{path} has no {field}"))
}

/// The CPU time (user + system) process `pid` has used so far, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> anyhow::Result<(f64, u64)> {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let sample = roomhost::metrics::process::ProcessSample::read_from(&dir).ok_or_else(|| {
        anyhow::anyhow!("reading {}/stat (is --pid the server's?)", dir.display())
    })?;
    Ok((sample.cpu_seconds, sample.threads))
}
