//! Cluster mode on NATS JetStream: several roomhost nodes share one
//! replicated engine, each room runs on exactly one of them, and a node's
//! death loses nothing acknowledged. See `docs/cluster.md`.
//!
//! A top layer beside `web`: it implements the [`Backend`] seam of `store`
//! and the [`Remote`] seam of `room` (rooms and the web below it never
//! import it). Its pieces:
//!
//! - [`Cluster`]: the NATS connection, the JetStream context, the journal
//!   stream and the lease bucket, made at host build.
//! - `lease`: one KV entry per room naming its owner, created by the node
//!   that takes the room and renewed at a third of its TTL.
//! - `store`: [`JetStreamStore`], a room's journal and snapshots on the
//!   room's subject, every append fenced by the subject's last sequence.
//! - `serve`: the owner's side of a room other nodes' channels use (their
//!   commands on `rh.r.<topic>`, the room's backplane on `rh.b.<topic>`).
//! - `proxy`: the other side, on a node that does not run the room.
//! - `wire`: what those subjects carry.

mod lease;
mod nodes;
mod proxy;
mod serve;
mod store;
mod wire;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use tokio::runtime::Handle;

use crate::metrics::Metrics;
use crate::room::remote::{NodeView, Proxied, Remote};
use crate::room::{RoomSlot, Rooms};
use crate::store::{Backend, Store};
use crate::topic::Topic;
pub use store::JetStreamStore;

/// The stream that holds every room's journal.
pub const STREAM: &str = "ROOMHOST";
/// Subjects of room journals: `rh.j.<escaped topic>`.
pub const SUBJECT_PREFIX: &str = "rh.j.";
/// The KV bucket of room leases: key = escaped topic, value = node name.
pub const LEASE_BUCKET: &str = "rh_owners";
/// The largest message the journal publishes (a snapshot, a batch): the
/// NATS servers' `max_payload` must be above this (headers come on top;
/// `scripts/cluster.sh` sets 9 MiB).
pub const MAX_MESSAGE: usize = 8 << 20;
/// How long one JetStream request (a publish's ack, a read) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the host waits for the engine at start (a fresh cluster elects
/// its meta leader first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What cluster mode needs (`roomhost serve --cluster ... --node ...`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS server URLs, e.g. `nats://127.0.0.1:14221`.
    pub urls: Vec<String>,
    /// This node's name: what leases and `GET /api/rooms/{topic}` say.
    pub node: String,
    /// A room's lease: another node takes the room this long after its
    /// owner stopped renewing. Longer than the engine's leader election.
    pub lease: Duration,
    /// Replicas of the journal stream and the lease bucket (3 for a
    /// cluster, 1 with a single NATS server).
    pub replicas: usize,
    /// This node's HTTP base URL as other nodes and clients reach it
    /// (`GET /api/cluster` lists it), e.g. `http://10.0.0.5:4000`.
    pub url: String,
}

impl ClusterConfig {
    pub fn new(urls: Vec<String>, node: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            urls,
            node: node.into(),
            lease: Duration::from_secs(10),
            replicas: 3,
            url: String::new(),
        }
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Config(String),
    #[error("cluster: connecting to NATS at {urls}: {error}")]
    Connect { urls: String, error: String },
    #[error("cluster: JetStream not ready within {timeout:?}: {error}")]
    NotReady { timeout: Duration, error: String },
}

/// The node's view of the cluster. Cheap to share.
pub struct Cluster {
    shared: Arc<Shared>,
}

impl Cluster {
    /// Connects, and creates the journal stream and the lease bucket if
    /// they do not exist yet. Call on the runtime the client should live on.
    pub async fn connect(config: ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        if config.urls.is_empty() {
            return Err(ClusterError::Config("no NATS url given".into()));
        }
        if config.node.is_empty() || config.node.contains(char::is_whitespace) {
            return Err(ClusterError::Config(format!(
                "node name {:?} must be non-empty, without spaces",
                config.node
            )));
        }
        if config.lease < Duration::from_secs(1) {
            return Err(ClusterError::Config(
                "the lease must be at least 1 s".into(),
            ));
        }
        if !(1..=5).contains(&config.replicas) {
            return Err(ClusterError::Config("replicas must be 1 to 5".into()));
        }
        let urls = config.urls.join(",");
        let connect_error = |error: String| ClusterError::Connect {
            urls: urls.clone(),
            error,
        };
        let addrs = config
            .urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(e.to_string()))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("roomhost {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(addrs)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client);
        js.set_timeout(REQUEST_TIMEOUT);
        let started = Instant::now();
        let (stream, leases, nodes) = loop {
            match Self::ensure(&js, &config).await {
                Ok(made) => break made,
                Err(error) if started.elapsed() < READY_TIMEOUT => {
                    tracing::debug!(%error, "JetStream not ready yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    return Err(ClusterError::NotReady {
                        timeout: READY_TIMEOUT,
                        error,
                    });
                }
            }
        };
        tracing::info!(node = %config.node, nats = %urls, lease_ms = config.lease.as_millis() as u64, replicas = config.replicas, "cluster mode: connected to JetStream");
        Ok(Arc::new(Cluster {
            shared: Arc::new(Shared {
                node: config.node.into(),
                lease: config.lease,
                client: js.client(),
                js,
                stream,
                leases,
                nodes,
                leases_held: AtomicUsize::new(0),
                url: config.url,
                rt: Handle::current(),
                next_channel: AtomicU64::new(REMOTE_CHANNEL_IDS),
            }),
        }))
    }

    /// The journal stream and the lease bucket, created if missing.
    async fn ensure(
        js: &jetstream::Context,
        config: &ClusterConfig,
    ) -> Result<(stream::Stream, kv::Store, kv::Store), String> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}>")],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                // Retries of a publish whose ack was lost are deduplicated
                // by message id within this window.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("journal stream {STREAM}: {e}"))?;
        let leases = match js.get_key_value(LEASE_BUCKET).await {
            Ok(leases) => leases,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: LEASE_BUCKET.into(),
                    history: 1,
                    max_age: config.lease,
                    storage: stream::StorageType::File,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("lease bucket {LEASE_BUCKET}: {e}"))?,
        };
        let nodes = nodes::bucket(js, config.replicas).await?;
        Ok((stream, leases, nodes))
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Writes this node's record to the cluster once a second (see
    /// `nodes`) until `stop`, then deletes it.
    pub fn beat(&self, metrics: Arc<Metrics>, stop: tokio_util::sync::CancellationToken) {
        let shared = self.shared.clone();
        let url = shared.url.clone();
        shared
            .rt
            .spawn(nodes::beat(shared.clone(), url, metrics, stop));
    }
}

impl Backend for Cluster {
    fn open(&self, topic: &Topic) -> Box<dyn Store> {
        Box::new(JetStreamStore::new(self.shared.clone(), topic))
    }

    fn node(&self) -> &str {
        &self.shared.node
    }

    fn owner<'a>(
        &'a self,
        topic: &'a Topic,
    ) -> Pin<Box<dyn Future<Output = io::Result<Option<String>>> + Send + 'a>> {
        Box::pin(lease::holder(&self.shared.leases, token(topic)))
    }
}

impl Remote for Cluster {
    fn nodes(&self) -> Pin<Box<dyn Future<Output = io::Result<Vec<NodeView>>> + Send + '_>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let rt = shared.rt.clone();
            rt.spawn(async move { nodes::list(&shared).await })
                .await
                .map_err(io::Error::other)?
        })
    }

    fn serve(&self, slot: &Arc<RoomSlot>) -> Box<dyn Send + Sync> {
        Box::new(serve::serve(&self.shared, slot))
    }

    fn proxy(
        &self,
        rooms: Rooms,
        slot: Arc<RoomSlot>,
        owner: String,
    ) -> Pin<Box<dyn Future<Output = Proxied> + Send>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            // On the cluster's runtime, like every other NATS call.
            let rt = shared.rt.clone();
            rt.spawn(proxy::proxy(shared, rooms, slot, owner))
                .await
                .unwrap_or(Proxied::OwnerGone)
        })
    }
}

/// Where ids of other nodes' channels start on a room's owner, far above
/// those of this node's own connections.
const REMOTE_CHANNEL_IDS: u64 = 1 << 62;

/// The cluster's handles, shared by the rooms' stores, leases and
/// forwarding.
struct Shared {
    /// This node's name.
    node: Arc<str>,
    lease: Duration,
    /// Core NATS: forwarded commands and the rooms' backplanes.
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
    /// Every node's record (see `nodes`).
    nodes: kv::Store,
    /// Leases this node holds: the rooms it owns.
    leases_held: AtomicUsize,
    /// This node's HTTP base URL.
    url: String,
    /// The runtime the NATS client runs on: store jobs block on it.
    rt: Handle,
    /// Ids of the channels other nodes' connections hold in rooms run here.
    next_channel: AtomicU64,
}

/// Whether `error` (or an error it wraps) is JetStream's refusal of a
/// publish whose expected last (subject) sequence did not match: 10071, or
/// 10164, its form in a clustered stream.
fn wrong_last_sequence(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(error);
    while let Some(e) = at {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            let code = js.error_code();
            if code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                || code == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            {
                return true;
            }
        }
        at = e.source();
    }
    false
}

/// `topic` as one NATS subject token and KV key: `[A-Za-z0-9_-]` only,
/// `_` escaping the rest (`_` → `__`, `.` → `_d`, `~` → `_t`, `:` → `_c`).
/// Injective over valid topics.
pub fn token(topic: &Topic) -> String {
    let mut out = String::with_capacity(topic.as_str().len() + 8);
    for c in topic.as_str().chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            '~' => out.push_str("_t"),
            ':' => out.push_str("_c"),
            c if c.is_ascii_alphanumeric() || c == '-' => out.push(c),
            // Not in a valid topic; kept distinct all the same.
            c => out.push_str(&format!("_u{:x}_", c as u32)),
        }
    }
    out
}

/// The journal subject of `topic`.
pub fn subject(topic: &Topic) -> String {
    format!("{SUBJECT_PREFIX}{}", token(topic))
}

/// The subject other nodes send `topic`'s joins, pushes and leaves to; its
/// owner answers (see `serve`).
pub fn request_subject(topic: &Topic) -> String {
    format!("rh.r.{}", token(topic))
}

/// The subject `topic`'s owner publishes the room's backplane on: its
/// broadcasts and what other nodes' channels get alone (see `wire`).
pub fn backplane_subject(topic: &Topic) -> String {
    format!("rh.b.{}", token(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_is_one_token_and_distinct() {
        let topics = [
            "chat:lobby",
            "chat:a.b",
            "chat:a_d",
            "chat:a~b",
            "chat:a_tb",
            "my_kind:x",
            "my-kind:x-y",
            "chat:A.Z~0_9-",
        ];
        let mut seen = std::collections::HashSet::new();
        for text in topics {
            let t = token(&Topic::parse(text).unwrap());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{text} -> {t}"
            );
            assert!(seen.insert(t.clone()), "{text} -> {t} collides");
        }
        assert_eq!(
            subject(&Topic::parse("chat:a.b").unwrap()),
            "rh.j.chat_ca_db"
        );
    }
}
