//! Node liveness: every node puts a record of itself (its URL, the rooms it
//! owns, its connections) in the `rh_nodes` KV bucket once a second, and
//! deletes it when it stops. `GET /api/cluster` reads the bucket: a node
//! whose record is older than [`ALIVE_WITHIN`] is listed as not alive (it
//! died without deleting it), and after [`FORGET_AFTER`] it is gone.
//!
//! `alive` compares the record's time in the engine with this node's
//! clock: the nodes' clocks should agree to well under a second (NTP).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::metrics::Metrics;
use crate::room::remote::NodeView;

/// The KV bucket of node records: key = node name.
pub const NODES_BUCKET: &str = "rh_nodes";
/// How often a node writes its record.
const BEAT: Duration = Duration::from_secs(1);
/// A node whose record is older than this is not alive.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// A record not renewed for this long leaves the bucket (the bucket's
/// `max_age`): a dead node is listed, not alive, for an hour.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a node says of itself.
#[derive(Serialize, Deserialize)]
struct Record {
    url: String,
    rooms: usize,
    connections: u64,
    /// Milliseconds since the epoch.
    started_at: i64,
    version: String,
}

/// The node records' bucket, created if missing.
pub(super) async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, String> {
    match js.get_key_value(NODES_BUCKET).await {
        Ok(nodes) => Ok(nodes),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: NODES_BUCKET.into(),
                history: 1,
                max_age: FORGET_AFTER,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("node bucket {NODES_BUCKET}: {e}")),
    }
}

/// Writes this node's record every [`BEAT`] until `stop`, then deletes it.
/// `connections` counts the node's open client connections.
pub(super) async fn beat(
    shared: Arc<Shared>,
    url: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let started_at = now_ms();
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let connected =
            shared.client.connection_state() == async_nats::connection::State::Connected;
        metrics.cluster_connected(connected);
        let record = Record {
            url: url.clone(),
            rooms: shared.leases_held.load(Ordering::Relaxed),
            connections: metrics.connections_open(),
            started_at,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let Ok(value) = serde_json::to_vec(&record) else {
            continue;
        };
        let put = tokio::time::timeout(BEAT, shared.nodes.put(&*shared.node, value.into())).await;
        match put {
            Ok(Ok(_)) if failing => {
                failing = false;
                tracing::info!("cluster: this node's record is written again");
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cluster: writing this node's record failed; other nodes will see it as not alive until it works again");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!(
                    "cluster: writing this node's record timed out; other nodes will see it as not alive until it works again"
                );
            }
            _ => {}
        }
        if let Ok(views) = list(&shared).await {
            metrics.cluster_nodes_alive(views.iter().filter(|v| v.alive).count());
        }
    }
    // Leaving: the others need not wait for the record to age.
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.nodes.delete(&*shared.node)).await;
}

/// Every node's record, by name.
pub(super) async fn list(shared: &Shared) -> io::Result<Vec<NodeView>> {
    let mut keys = shared.nodes.keys().await.map_err(io::Error::other)?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        names.push(key.map_err(io::Error::other)?);
    }
    names.sort();
    let now = now_ms();
    let mut views = Vec::with_capacity(names.len());
    for name in names {
        let Some(entry) = shared.nodes.entry(&name).await.map_err(io::Error::other)? else {
            continue;
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(&entry.value) else {
            tracing::debug!(node = %name, "an unreadable node record; skipped");
            continue;
        };
        let last_seen = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
        views.push(NodeView {
            alive: now - last_seen < ALIVE_WITHIN.as_millis() as i64,
            name,
            url: record.url,
            rooms: record.rooms,
            connections: record.connections,
            last_seen,
            started_at: record.started_at,
            version: record.version,
        });
    }
    Ok(views)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
