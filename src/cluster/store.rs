//! [`JetStreamStore`]: one room's journal and snapshots on its subject of
//! the journal stream, behind the [`Store`] seam.
//!
//! Messages on a room's subject, each with an `Rh-Kind` header:
//! - `events`: a group-commit batch, the framed records as the disk
//!   journal writes them (one message per sync job);
//! - `snapshot`: a snapshot; once it is stored, everything before the
//!   previous snapshot is purged from the subject (so it stays bounded; see
//!   `stored` for why not a rollup);
//! - `owner`: written by a node that takes the room, after its replay.
//!
//! **Fencing.** Every publish carries `Nats-Expected-Last-Subject-Sequence`
//! = the subject's last sequence this store knows (read at recovery, then
//! each PubAck's). Only one publish is in flight per room. A node that took
//! the room appends its owner record fenced at the head it replayed, so an
//! old owner's next append is refused (JetStream error 10071): that is
//! [`OwnershipError::Lost`], and the room stops. Each publish has a
//! `Nats-Msg-Id`, so a retry after a lost ack is deduplicated; a refusal
//! whose subject ends with our own message id is our retry, not a loss.
//!
//! **Durability.** A sync job returns once the engine acknowledged the
//! batch: stored on a quorum of replicas, each fsyncing every write
//! (`sync_interval: always`). The output gate releases after that.
//!
//! The [`Store`] trait is synchronous: jobs run on blocking threads and
//! block on the NATS client's runtime; recovery runs in the room task under
//! `block_in_place`.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::lease::{self, Lease};
use super::{MAX_MESSAGE, Shared};
use crate::store::{Event, Job, OwnershipError, Recovered, Snapshot, Store, frame};
use crate::topic::Topic;

/// The header naming what a message holds.
const KIND: &str = "Rh-Kind";
/// How long one publish keeps retrying (a NATS server's loss: the engine
/// elects a new stream leader in 4–9 s) before it is a storage fault.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between retries of a publish.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What waits to be published, in the order the room asked for it.
enum Item {
    /// Framed event records of consecutive events.
    Events(Vec<u8>),
    /// A snapshot (its JSON, unframed).
    Snapshot(Vec<u8>),
    /// The owner record of a node that took the room.
    Owner,
}

/// The head of the room's subject as this store knows it.
struct Head {
    /// Stream sequence of the subject's last message (0: none).
    last: u64,
    /// Unique per recovery: message ids are `<epoch>-<n>`.
    epoch: String,
    published: u64,
    /// Stream sequence of the newest snapshot message (None: none known).
    snapshot_at: Option<u64>,
}

/// State the room task and the blocking jobs share.
struct Pending {
    /// Items not yet published (a short lock: the room appends here).
    queue: Mutex<VecDeque<Item>>,
    /// Held by whoever publishes, across the publish: one in flight.
    head: Mutex<Head>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks completes or is put back.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct JetStreamStore {
    shared: Arc<Shared>,
    subject: String,
    key: String,
    pending: Arc<Pending>,
    /// The room's lease, taken by the first recovery.
    lease: Option<Lease>,
    bytes: u64,
}

impl JetStreamStore {
    pub(super) fn new(shared: Arc<Shared>, topic: &Topic) -> JetStreamStore {
        JetStreamStore {
            subject: super::subject(topic),
            key: super::token(topic),
            shared,
            pending: Arc::new(Pending {
                queue: Mutex::new(VecDeque::new()),
                head: Mutex::new(Head {
                    last: 0,
                    epoch: String::new(),
                    published: 0,
                    snapshot_at: None,
                }),
            }),
            lease: None,
            bytes: 0,
        }
    }

    /// A job publishing everything queued, in order.
    fn publish_job(&self) -> Job {
        let shared = self.shared.clone();
        let pending = self.pending.clone();
        let subject = self.subject.clone();
        Box::new(move || {
            let mut head = lock(&pending.head);
            loop {
                let Some(item) = lock(&pending.queue).pop_front() else {
                    return Ok(());
                };
                let published = block(&shared.rt, publish(&shared, &subject, &mut head, &item));
                if let Err(e) = published {
                    lock(&pending.queue).push_front(item);
                    return Err(e);
                }
            }
        })
    }

    /// Reads the subject: the newest snapshot and the events after it.
    fn read_subject(&self, keep_upto: Option<u64>) -> io::Result<(Recovered, Head)> {
        block(
            &self.shared.rt,
            read_subject(&self.shared, &self.subject, keep_upto),
        )
    }
}

impl Drop for JetStreamStore {
    fn drop(&mut self) {
        // The lease's renewal stops and releases it (see `lease`).
        self.lease.take();
    }
}

/// Runs `f` to completion on the NATS client's runtime from synchronous
/// code: a blocking thread, or a room task (handing its worker over first).
fn block<F: Future>(rt: &tokio::runtime::Handle, f: F) -> F::Output {
    tokio::task::block_in_place(|| rt.block_on(f))
}

/// Publishes `item` as the next message of `subject`, fenced at `head`,
/// retrying transient failures until [`PUBLISH_DEADLINE`].
async fn publish(shared: &Shared, subject: &str, head: &mut Head, item: &Item) -> io::Result<()> {
    head.published += 1;
    let id = format!("{}-{}", head.epoch, head.published);
    let (kind, payload) = match item {
        Item::Events(framed) => ("events", Bytes::copy_from_slice(framed)),
        Item::Snapshot(json) => ("snapshot", Bytes::copy_from_slice(json)),
        Item::Owner => ("owner", Bytes::from(shared.node.as_bytes().to_vec())),
    };
    if payload.len() > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "a journal message of {} bytes exceeds the cluster's {} bytes",
            payload.len(),
            MAX_MESSAGE
        )));
    }
    let deadline = Instant::now() + PUBLISH_DEADLINE;
    loop {
        let message = Publish::build()
            .payload(payload.clone())
            .message_id(&id)
            .expected_last_subject_sequence(head.last)
            .header(KIND, kind);
        let attempt = async {
            shared
                .js
                .send_publish(subject.to_string(), message)
                .await?
                .await
        };
        let error = match attempt.await {
            Ok(ack) => {
                head.last = ack.sequence;
                stored(shared, subject, head, item).await;
                return Ok(());
            }
            Err(e)
                if e.kind() == PublishErrorKind::WrongLastSequence
                    || super::wrong_last_sequence(&e) =>
            {
                // Refused: another node appended, unless the subject ends
                // with this very message (a retry of one that landed).
                match last_message(shared, subject).await {
                    Ok(Some((seq, last_id))) if last_id.as_deref() == Some(id.as_str()) => {
                        head.last = seq;
                        stored(shared, subject, head, item).await;
                        return Ok(());
                    }
                    Ok(_) => {
                        return Err(OwnershipError::Lost(format!(
                            "the journal moved on past sequence {} (another node appended)",
                            head.last
                        ))
                        .into_io());
                    }
                    Err(e) => e.to_string(),
                }
            }
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(io::Error::other(format!("publishing to the journal: {e}")));
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the journal did not acknowledge within {PUBLISH_DEADLINE:?}: {error}"),
            ));
        }
        tracing::debug!(subject, error, "journal publish failed; retrying");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// After `item` was stored at `head.last`: a snapshot makes everything
/// before the *previous* snapshot obsolete, and that is purged.
///
/// Not a rollup at the new snapshot: a snapshot as of event S is written
/// once S is durable, so batches of events after S may precede it on the
/// subject, and recovery needs them. Everything before the previous
/// snapshot is covered by this one: a snapshot is taken only after the
/// previous one was written, so every event published before that write
/// is at most this snapshot's seq. A failed purge only leaves the subject
/// longer until the next snapshot.
async fn stored(shared: &Shared, subject: &str, head: &mut Head, item: &Item) {
    if !matches!(item, Item::Snapshot(_)) {
        return;
    }
    let Some(previous) = head.snapshot_at.replace(head.last) else {
        return;
    };
    let purged = shared
        .stream
        .purge()
        .filter(subject)
        .sequence(previous)
        .await;
    if let Err(e) = purged {
        tracing::warn!(subject, error = %e, "purging the journal behind a snapshot failed; it stays until the next one");
    }
}

/// The sequence and message id of `subject`'s last message, if any (from
/// the stream leader).
async fn last_message(shared: &Shared, subject: &str) -> io::Result<Option<(u64, Option<String>)>> {
    match shared.stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some((
            m.sequence,
            m.headers
                .get(NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string()),
        ))),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(io::Error::other(format!("reading the journal: {e}"))),
    }
}

/// Reads `subject` from its first message (each from the stream leader)
/// through a [`SubjectReader`].
async fn read_subject(
    shared: &Shared,
    subject: &str,
    keep_upto: Option<u64>,
) -> io::Result<(Recovered, Head)> {
    let mut reader = SubjectReader::new(subject);
    let mut next = 1;
    loop {
        let message = match shared
            .stream
            .get_first_raw_message_by_subject(subject, next)
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(io::Error::other(format!("reading the journal: {e}"))),
        };
        next = message.sequence + 1;
        let kind = message.headers.get(KIND).map(|v| v.as_str().to_string());
        reader.message(message.sequence, kind.as_deref(), &message.payload);
    }
    Ok(reader.finish(keep_upto))
}

/// What a room's subject holds, message by message in stream order: the
/// newest readable snapshot, and the events after it.
///
/// The events are checked for gaps only at the end, against the newest
/// snapshot: after a purge the subject starts at an older snapshot, and the
/// batches between it and the newest one may lack events that the newest
/// covers (a batch with events on both sides of the older snapshot was
/// written before it and is gone). A batch that starts at or before events
/// already read supersedes them: it was written after a cut back to the
/// durable events.
struct SubjectReader<'a> {
    subject: &'a str,
    out: Recovered,
    /// Events after `base`, ascending.
    events: Vec<(u64, Vec<u8>)>,
    /// The newest snapshot's seq (0: none).
    base: u64,
    snapshot_at: Option<u64>,
    last_stream_seq: u64,
}

impl<'a> SubjectReader<'a> {
    fn new(subject: &'a str) -> SubjectReader<'a> {
        SubjectReader {
            subject,
            out: Recovered::default(),
            events: Vec::new(),
            base: 0,
            snapshot_at: None,
            last_stream_seq: 0,
        }
    }

    fn message(&mut self, stream_seq: u64, kind: Option<&str>, payload: &[u8]) {
        let subject = self.subject;
        self.last_stream_seq = stream_seq;
        match kind {
            Some("snapshot") => match Snapshot::decode(payload) {
                Ok(snapshot) => {
                    self.snapshot_at = Some(stream_seq);
                    self.base = snapshot.seq;
                    self.events.retain(|(seq, _)| *seq > snapshot.seq);
                    self.out.snapshot = Some(payload.to_vec());
                }
                Err(e) => self.out.repairs.push(format!(
                    "{subject}: snapshot at stream sequence {stream_seq} is unreadable ({e}); skipped"
                )),
            },
            Some("events") => {
                let (frames, damage) = frame::decode_all(payload);
                if let Some(damage) = damage {
                    self.out.repairs.push(format!(
                        "{subject}: batch at stream sequence {stream_seq} damaged at {} ({})",
                        damage.offset, damage.reason
                    ));
                }
                let mut previous = None;
                for (_, record) in frames {
                    let seq = match Event::decode(record) {
                        Ok(e) => e.seq,
                        Err(e) => {
                            self.out.repairs.push(format!(
                                "{subject}: unreadable record at stream sequence {stream_seq}: {e}"
                            ));
                            break;
                        }
                    };
                    match previous {
                        // Written after a cut: it replaces what it overlaps.
                        None => self.events.retain(|(s, _)| *s < seq),
                        Some(p) if seq != p + 1 => {
                            self.out.repairs.push(format!(
                                "{subject}: batch at stream sequence {stream_seq} jumps from seq {p} to {seq}; the rest of it is dropped"
                            ));
                            break;
                        }
                        Some(_) => {}
                    }
                    previous = Some(seq);
                    if seq > self.base {
                        self.events.push((seq, record.to_vec()));
                    }
                }
            }
            // Owner records, and anything newer this version does not know.
            _ => {}
        }
    }

    /// The recovery (events after `keep_upto` set aside, and everything
    /// after a gap dropped) and the subject's head.
    fn finish(mut self, keep_upto: Option<u64>) -> (Recovered, Head) {
        let subject = self.subject;
        let mut out = self.out;
        let base = self.base;
        let contiguous = self
            .events
            .iter()
            .zip(base + 1..)
            .take_while(|((seq, _), expected)| seq == expected)
            .count();
        if contiguous < self.events.len() {
            out.repairs.push(format!(
                "{subject}: expected seq {}, found {}; the {} events from there are dropped",
                base + 1 + contiguous as u64,
                self.events[contiguous].0,
                self.events.len() - contiguous
            ));
            self.events.truncate(contiguous);
        }
        if let Some(limit) = keep_upto {
            let before = self.events.len();
            self.events.retain(|(seq, _)| *seq <= limit);
            if self.events.len() < before {
                out.repairs.push(format!(
                    "{subject}: {} unacknowledged events of a crashed room set aside",
                    before - self.events.len()
                ));
            }
        }
        out.last_seq = self.events.last().map_or(base, |(s, _)| *s);
        out.events = self.events.into_iter().map(|(_, e)| e).collect();
        (
            out,
            Head {
                last: self.last_stream_seq,
                epoch: String::new(),
                published: 0,
                snapshot_at: self.snapshot_at,
            },
        )
    }
}

impl Store for JetStreamStore {
    /// Takes the room's lease (another node's is
    /// [`OwnershipError::NotOwner`]), reads the subject, and appends an
    /// owner record fenced at the head it read: from then on, any other
    /// writer's append is refused, and this store's are refused if another
    /// node appended since.
    fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        if self.lease.as_ref().is_some_and(|l| l.lost.is_cancelled()) {
            return Err(OwnershipError::Lost("the lease ran out".into()).into_io());
        }
        if self.lease.is_none() {
            let shared = self.shared.clone();
            let key = self.key.clone();
            self.lease = Some(block(&shared.rt, lease::acquire(&shared, &key))?);
        }
        let (recovered, read) = self.read_subject(keep_upto)?;
        let mut head = lock(&self.pending.head);
        lock(&self.pending.queue).clear();
        head.last = read.last;
        head.snapshot_at = read.snapshot_at;
        head.epoch = format!("{}-{:016x}", self.shared.node, rand::random::<u64>());
        head.published = 0;
        let owner = block(
            &self.shared.rt,
            publish(&self.shared, &self.subject, &mut head, &Item::Owner),
        );
        drop(head);
        owner?;
        self.bytes = recovered.snapshot.as_ref().map_or(0, |s| s.len() as u64)
            + recovered.events.iter().map(|e| e.len() as u64).sum::<u64>();
        Ok(recovered)
    }

    fn read(&self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        self.read_subject(keep_upto).map(|(recovered, _)| recovered)
    }

    /// Reads the subject's head: whether the engine answers again.
    fn probe_job(&mut self) -> Job {
        let shared = self.shared.clone();
        let subject = self.subject.clone();
        Box::new(move || block(&shared.rt, last_message(&shared, &subject)).map(|_| ()))
    }

    fn append(&mut self, framed: &[u8], _first_seq: u64) -> io::Result<()> {
        let mut queue = lock(&self.pending.queue);
        match queue.back_mut() {
            Some(Item::Events(batch)) if batch.len() + framed.len() <= MAX_MESSAGE => {
                batch.extend_from_slice(framed)
            }
            _ => queue.push_back(Item::Events(framed.to_vec())),
        }
        self.bytes += framed.len() as u64;
        Ok(())
    }

    fn sync_job(&mut self) -> Option<Job> {
        if lock(&self.pending.queue).is_empty() {
            return None;
        }
        Some(self.publish_job())
    }

    /// Queues the snapshot behind the events appended before it and
    /// publishes the queue.
    fn snapshot_job(&mut self, _seq: u64, snapshot: Vec<u8>) -> Job {
        self.bytes = snapshot.len() as u64;
        lock(&self.pending.queue).push_back(Item::Snapshot(snapshot));
        self.publish_job()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn lost(&self) -> Option<CancellationToken> {
        self.lease.as_ref().map(|l| l.lost.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::disk::tests::{event_bytes, snapshot_bytes};

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        seqs.flat_map(event_bytes).collect()
    }

    fn read(messages: &[(&str, Vec<u8>)], keep_upto: Option<u64>) -> (Recovered, Head) {
        let mut reader = SubjectReader::new("rh.j.t");
        for (i, (kind, payload)) in messages.iter().enumerate() {
            reader.message(i as u64 + 10, Some(kind), payload);
        }
        reader.finish(keep_upto)
    }

    fn seqs(r: &Recovered) -> Vec<u64> {
        r.events
            .iter()
            .map(|e| Event::decode(e).unwrap().seq)
            .collect()
    }

    #[test]
    fn a_purged_subject_recovers_from_the_newest_snapshot() {
        // The purge behind the snapshot as of 9 kept the one as of 5 and
        // what follows it; the batch 4..6, before that snapshot, is gone,
        // so 6 is missing between the two snapshots. The newest covers it.
        let subject = [
            ("snapshot", snapshot_bytes(5)),
            ("events", batch(7..=8)),
            ("events", batch(9..=11)),
            ("snapshot", snapshot_bytes(9)),
            ("events", batch(12..=13)),
        ];
        let (r, head) = read(&subject, None);
        assert_eq!(seqs(&r), vec![10, 11, 12, 13]);
        assert_eq!(r.last_seq, 13);
        assert!(r.repairs.is_empty(), "{:?}", r.repairs);
        assert_eq!(
            Snapshot::decode(r.snapshot.as_ref().unwrap()).unwrap().seq,
            9
        );
        assert_eq!(head.snapshot_at, Some(13));
        assert_eq!(head.last, 14);
    }

    #[test]
    fn a_gap_after_the_newest_snapshot_drops_what_follows_it() {
        let subject = [
            ("snapshot", snapshot_bytes(2)),
            ("events", batch(3..=4)),
            ("events", batch(6..=7)),
        ];
        let (r, _) = read(&subject, None);
        assert_eq!(seqs(&r), vec![3, 4]);
        assert_eq!(r.last_seq, 4);
        assert_eq!(r.repairs.len(), 1, "{:?}", r.repairs);
    }

    #[test]
    fn a_batch_after_a_cut_supersedes_what_it_overlaps() {
        let subject = [
            ("events", batch(1..=4)),
            ("events", batch(3..=5)),
            ("owner", b"n2".to_vec()),
            ("events", batch(6..=6)),
        ];
        let (r, _) = read(&subject, Some(5));
        assert_eq!(seqs(&r), vec![1, 2, 3, 4, 5]);
        assert_eq!(r.repairs.len(), 1, "the unacknowledged 6: {:?}", r.repairs);
        assert_eq!(r.last_seq, 5);
    }
}
