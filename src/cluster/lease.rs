//! Room leases: one entry per room in the lease bucket, its value the
//! owner's node name. The bucket's `max_age` is the lease: an entry not
//! renewed within it disappears and any node may create it again.
//!
//! Acquire = `create` (fails if another node's entry lives); renew =
//! `update` on the revision last written, every third of the lease. A lease
//! is only for liveness (who should run the room); safety rests on the
//! journal's fencing (see `store`): an owner that lost its lease without
//! noticing has its next append refused all the same.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::store::OwnershipError;

/// A lease this node holds, renewed in the background until dropped.
pub(super) struct Lease {
    /// Cancelled when the lease is lost: the room must stop at once.
    pub(super) lost: CancellationToken,
    /// Cancelled on drop: the renewal stops and releases the lease.
    dropped: CancellationToken,
    /// Counted in `leases_held` while it lives.
    shared: Arc<Shared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.dropped.cancel();
        self.shared.leases_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The node named by `key`'s live entry, if any.
pub(super) async fn holder(leases: &kv::Store, key: String) -> io::Result<Option<String>> {
    let entry = leases.entry(key).await.map_err(io::Error::other)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
}

/// Takes the lease of `key` for this node (or keeps the one it holds: a
/// room that restarts here after a crash). Another node's live entry is
/// [`OwnershipError::NotOwner`].
pub(super) async fn acquire(shared: &Arc<Shared>, key: &str) -> io::Result<Lease> {
    let leases = &shared.leases;
    let me = Bytes::from(shared.node.as_bytes().to_vec());
    let mut revision = None;
    for attempt in 0..8 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        let sent = Instant::now();
        // A refused create (another node's entry, or one being written
        // meanwhile) is sorted out by reading the entry.
        let created = leases.create(key, me.clone()).await;
        if let Ok(rev) = created {
            revision = Some((rev, sent));
            break;
        }
        let entry = match leases.entry(key).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(key, error = %e, "reading a room's lease failed; retrying");
                continue;
            }
        };
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            // None yet, or expired meanwhile: create again.
            continue;
        };
        let node = String::from_utf8_lossy(&entry.value).into_owned();
        if *node != *shared.node {
            return Err(OwnershipError::NotOwner { node }.into_io());
        }
        // Ours already (an earlier generation on this node).
        let sent = Instant::now();
        if let Ok(rev) = leases.update(key, me.clone(), entry.revision).await {
            revision = Some((rev, sent));
            break;
        }
    }
    let Some((revision, sent)) = revision else {
        return Err(io::Error::other(
            "could not take the room's lease (the lease bucket kept refusing)",
        ));
    };
    shared.leases_held.fetch_add(1, Ordering::Relaxed);
    let lease = Lease {
        lost: CancellationToken::new(),
        dropped: CancellationToken::new(),
        shared: shared.clone(),
    };
    shared.rt.spawn(renew(
        shared.clone(),
        key.to_string(),
        revision,
        sent + shared.lease,
        lease.lost.clone(),
        lease.dropped.clone(),
    ));
    Ok(lease)
}

/// Renews the lease every third of it until it is dropped (then releases
/// it) or lost: another node's entry replaced it, or no renewal succeeded
/// before it ran out (`expires`, counted from when the last successful
/// write was sent).
async fn renew(
    shared: Arc<Shared>,
    key: String,
    mut revision: u64,
    mut expires: Instant,
    lost: CancellationToken,
    dropped: CancellationToken,
) {
    let every = shared.lease / 3;
    let me = Bytes::from(shared.node.as_bytes().to_vec());
    loop {
        tokio::select! {
            _ = dropped.cancelled() => {
                // Best effort: the next owner need not wait for the TTL.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    shared.leases.delete_expect_revision(&key, Some(revision)),
                )
                .await;
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        if Instant::now() >= expires {
            tracing::error!(key, "room lease ran out before it could be renewed");
            lost.cancel();
            return;
        }
        let sent = Instant::now();
        let left = expires.saturating_duration_since(sent);
        match tokio::time::timeout(left, shared.leases.update(&key, me.clone(), revision)).await {
            Ok(Ok(rev)) => {
                revision = rev;
                expires = sent + shared.lease;
            }
            Ok(Err(e))
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision
                    || super::wrong_last_sequence(&e) =>
            {
                tracing::error!(key, "room lease taken by another node");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(key, error = %e, "renewing a room lease failed; retrying"),
            Err(_) => {}
        }
    }
}
