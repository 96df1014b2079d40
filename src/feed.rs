//! A room's recent broadcasts, numbered, for clients that resume by id: the
//! SSE stream and its `Last-Event-ID`.
//!
//! The hub records every broadcast of a room that has a feed, encoded once as
//! an SSE event (`id`, `event`, `data`) and shared by every stream. Streams
//! do not get their own queue: each keeps a cursor (the last id it wrote)
//! and copies what is newer out of the feed when woken. Live delivery and a
//! reconnect's replay are the same read, so nothing is delivered twice or
//! skipped between "replay" and "subscribe", and a slow stream costs the
//! room nothing: if it falls behind the buffer, it gets a `reset`.
//!
//! A feed belongs to the topic, not to a room task: it survives crashes,
//! kills and restarts (ids keep counting), and an idle stop while a stream
//! listens (the registry hands the same feed to the next room task).
//!
//! Ids start at the process's clock in microseconds, so an id from an
//! earlier process or an earlier feed of the topic is never mistaken for
//! one of this feed: it is below the floor (or above the newest id) and
//! gets a `reset`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

/// Broadcasts kept for resuming streams...
pub const FEED_EVENTS: usize = 512;
/// ...and at most this many bytes of them.
pub const FEED_BYTES: usize = 1 << 20;

/// One recorded broadcast.
struct Entry {
    id: u64,
    /// The complete SSE event, ready to write.
    frame: Bytes,
}

/// Events after the id a stream asked for are no longer (or were never)
/// here. `last` is the newest id, from which the stream can continue.
#[derive(Debug, PartialEq, Eq)]
pub struct Gap {
    pub last: u64,
}

pub struct Feed {
    /// A std mutex: held to append or to copy entries out, never across an
    /// await. Only the room task appends, so it is barely contended.
    log: Mutex<Log>,
    /// The newest id, for streams to wait on.
    latest: watch::Sender<u64>,
}

struct Log {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Every id up to `floor` is gone (evicted, or from before the feed).
    floor: u64,
    /// The newest id; entries hold `floor + 1 ..= last`.
    last: u64,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::starting_at(clock_micros())
    }
}

impl Feed {
    fn starting_at(base: u64) -> Feed {
        Feed {
            log: Mutex::new(Log {
                entries: VecDeque::new(),
                bytes: 0,
                floor: base,
                last: base,
            }),
            latest: watch::Sender::new(base),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        // Each update completes before the lock is released, except the
        // eviction loop, which leaves a consistent (shorter) log if cut short.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a broadcast (called by the hub, in the room's order).
    pub fn record(&self, event: &str, payload: &str) {
        let id = {
            let mut log = self.log();
            let id = log.last + 1;
            let frame = Bytes::from(sse_event(id, event, payload));
            log.bytes += frame.len();
            log.entries.push_back(Entry { id, frame });
            log.last = id;
            while log.entries.len() > FEED_EVENTS
                || (log.bytes > FEED_BYTES && log.entries.len() > 1)
            {
                let Some(old) = log.entries.pop_front() else {
                    break;
                };
                log.bytes -= old.frame.len();
                log.floor = old.id;
            }
            id
        };
        self.latest.send_replace(id);
    }

    /// Appends the events after `after` to `out`, oldest first, and returns
    /// the id of the last one (`after` if there is none yet).
    pub fn read_after(&self, after: u64, out: &mut VecDeque<Bytes>) -> Result<u64, Gap> {
        let log = self.log();
        if after < log.floor || after > log.last {
            return Err(Gap { last: log.last });
        }
        let skip = (after - log.floor) as usize;
        out.extend(log.entries.iter().skip(skip).map(|e| e.frame.clone()));
        Ok(log.last)
    }

    /// The newest id.
    pub fn last_id(&self) -> u64 {
        self.log().last
    }

    /// Wakes when a broadcast is recorded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

/// An SSE event. The event name loses line breaks (they would end the
/// field); the data is split into one `data:` line per line, which
/// `EventSource` joins back with `\n`.
pub fn sse_event(id: u64, event: &str, data: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(data.len() + event.len() + 48);
    let _ = write!(out, "id: {id}\nevent: ");
    out.extend(
        event
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
    );
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of the events after `after`.
    fn ids(feed: &Feed, after: u64) -> Result<Vec<u64>, Gap> {
        let mut out = VecDeque::new();
        let last = feed.read_after(after, &mut out)?;
        let ids: Vec<u64> = out
            .iter()
            .map(|f| {
                let text = std::str::from_utf8(f).unwrap();
                text[4..text.find('\n').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(ids.last().copied().unwrap_or(after), last);
        Ok(ids)
    }

    #[test]
    fn resumes_after_an_id_or_reports_a_gap() {
        let feed = Feed::starting_at(100);
        assert_eq!(ids(&feed, 100), Ok(vec![]));
        for i in 0..5 {
            feed.record("e", &format!("{{\"i\":{i}}}"));
        }
        assert_eq!(ids(&feed, 100), Ok(vec![101, 102, 103, 104, 105]));
        assert_eq!(ids(&feed, 103), Ok(vec![104, 105]));
        assert_eq!(ids(&feed, 105), Ok(vec![]));
        assert_eq!(ids(&feed, 99), Err(Gap { last: 105 }));
        assert_eq!(ids(&feed, 106), Err(Gap { last: 105 }));
        assert_eq!(*feed.subscribe().borrow(), 105);
    }

    #[test]
    fn old_events_are_evicted_by_count_and_bytes() {
        let feed = Feed::starting_at(0);
        for _ in 0..FEED_EVENTS + 10 {
            feed.record("e", "{}");
        }
        assert!(ids(&feed, 5).is_err());
        assert_eq!(ids(&feed, 10).unwrap().len(), FEED_EVENTS);
        let big = format!("\"{}\"", "x".repeat(FEED_BYTES / 4));
        for _ in 0..5 {
            feed.record("big", &big);
        }
        assert_eq!(ids(&feed, feed.last_id() - 3).unwrap().len(), 3);
        assert!(ids(&feed, feed.last_id() - 5).is_err());
    }

    #[test]
    fn sse_events_cannot_be_broken_by_their_content() {
        assert_eq!(
            sse_event(7, "new_msg", r#"{"a":1}"#),
            "id: 7\nevent: new_msg\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            sse_event(8, "bad\nevent: x", "{\r\n}"),
            "id: 8\nevent: bad event: x\ndata: {\ndata: }\n\n"
        );
    }
}
