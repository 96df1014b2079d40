//! A room's storage health: whether its journal takes writes.
//!
//! - **Fault**: a write or an fsync failed (a full disk, a quota, a
//!   read-only file system, an I/O error). Everything not durable was
//!   refused and the room was rebuilt from what is; until a probe (a write
//!   and an fsync where the journal lives) succeeds, every event that needs
//!   the journal is refused at once with `storage unavailable: <cause>`.
//!   Probes back off from [`PROBE_FIRST`] to [`PROBE_MAX`].
//! - **Stall**: an fsync has been in flight longer than the configured
//!   threshold. It may still succeed, so nothing is refused that was
//!   accepted, but new events get the same error instead of piling up
//!   behind it; the stall ends when the fsync does.
//!
//! Entering and leaving either state is logged once, counted, shown on the
//! dashboard and told to every channel (`storage`).

use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::journal::join;
use crate::clock::now_ms;

/// The first probe after a fault comes this long after it...
pub(super) const PROBE_FIRST: Duration = Duration::from_secs(1);
/// ...and each next one twice as long after the last, up to this.
pub(super) const PROBE_MAX: Duration = Duration::from_secs(30);

/// What the API and the dashboard show of a room whose storage is not
/// healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StorageStatus {
    /// `fault` (writes refused until a probe succeeds) or `stalled` (an
    /// fsync is taking too long).
    pub state: &'static str,
    pub cause: String,
    /// Since when, in ms since the epoch.
    pub since: i64,
}

struct Fault {
    cause: String,
    since: Instant,
    since_ms: i64,
    /// When the next probe starts (none while one runs).
    probe_at: Instant,
    backoff: Duration,
    probe: Option<JoinHandle<io::Result<()>>>,
}

struct Stall {
    cause: String,
    since: Instant,
    since_ms: i64,
}

/// Why an operation left the storage healthy again, for the log.
pub(super) struct Healed {
    pub(super) state: &'static str,
    pub(super) lasted: Duration,
}

pub(super) struct StorageHealth {
    fault: Option<Fault>,
    stall: Option<Stall>,
    /// An fsync longer than this is a stall.
    stall_after: Duration,
}

impl StorageHealth {
    pub(super) fn new(stall_after: Duration) -> StorageHealth {
        StorageHealth {
            fault: None,
            stall: None,
            stall_after,
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.fault.is_none() && self.stall.is_none()
    }

    pub(super) fn is_faulted(&self) -> bool {
        self.fault.is_some()
    }

    /// Why events that need the journal are refused now, if they are.
    pub(super) fn refusal(&self) -> Option<String> {
        let cause = match (&self.fault, &self.stall) {
            (Some(fault), _) => &fault.cause,
            (None, Some(stall)) => &stall.cause,
            (None, None) => return None,
        };
        Some(format!("storage unavailable: {cause}"))
    }

    pub(super) fn status(&self) -> Option<StorageStatus> {
        match (&self.fault, &self.stall) {
            (Some(f), _) => Some(StorageStatus {
                state: "fault",
                cause: f.cause.clone(),
                since: f.since_ms,
            }),
            (None, Some(s)) => Some(StorageStatus {
                state: "stalled",
                cause: s.cause.clone(),
                since: s.since_ms,
            }),
            (None, None) => None,
        }
    }

    /// A write or fsync failed. Returns whether this starts a fault (a
    /// failure during one only updates its cause).
    pub(super) fn fault(&mut self, cause: String) -> bool {
        self.stall = None;
        match &mut self.fault {
            Some(fault) => {
                fault.cause = cause;
                false
            }
            None => {
                let now = Instant::now();
                self.fault = Some(Fault {
                    cause,
                    since: now,
                    since_ms: now_ms(),
                    probe_at: now + PROBE_FIRST,
                    backoff: PROBE_FIRST,
                    probe: None,
                });
                true
            }
        }
    }

    /// When the fsync that started at `started` becomes a stall, if it has
    /// not yet.
    pub(super) fn stall_at(&self, started: Option<Instant>) -> Option<Instant> {
        if self.stall.is_some() || self.fault.is_some() {
            return None;
        }
        started.map(|t| t + self.stall_after)
    }

    /// The fsync in flight passed the threshold.
    pub(super) fn stalled(&mut self) {
        let now = Instant::now();
        self.stall = Some(Stall {
            cause: format!(
                "disk stalled: a journal fsync has taken more than {:.1} s",
                self.stall_after.as_secs_f64()
            ),
            since: now,
            since_ms: now_ms(),
        });
    }

    /// The stalled fsync finished; returns how long the stall lasted.
    pub(super) fn unstall(&mut self) -> Option<Healed> {
        self.stall.take().map(|s| Healed {
            state: "stalled",
            lasted: s.since.elapsed(),
        })
    }

    /// When the next probe is due, while faulted and none runs.
    pub(super) fn probe_at(&self) -> Option<Instant> {
        self.fault
            .as_ref()
            .filter(|f| f.probe.is_none())
            .map(|f| f.probe_at)
    }

    pub(super) fn start_probe(&mut self, probe: JoinHandle<io::Result<()>>) {
        if let Some(fault) = &mut self.fault {
            fault.probe = Some(probe);
        }
    }

    pub(super) fn probing(&self) -> bool {
        self.fault.as_ref().is_some_and(|f| f.probe.is_some())
    }

    /// Waits for the probe in flight (pending forever when there is none:
    /// the loop polls it only while [`StorageHealth::probing`]).
    pub(super) async fn probe_done(&mut self) -> io::Result<()> {
        match &mut self.fault {
            Some(fault) => join(&mut fault.probe).await,
            None => std::future::pending().await,
        }
    }

    /// A probe (or what follows it) failed: back off, keep the fault.
    pub(super) fn probe_failed(&mut self) {
        if let Some(fault) = &mut self.fault {
            fault.probe = None;
            fault.backoff = (fault.backoff * 2).min(PROBE_MAX);
            fault.probe_at = Instant::now() + fault.backoff;
        }
    }

    /// The storage takes writes again.
    pub(super) fn heal(&mut self) -> Option<Healed> {
        self.fault.take().map(|f| Healed {
            state: "fault",
            lasted: f.since.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_refuses_until_healed_and_probes_back_off() {
        let mut health = StorageHealth::new(Duration::from_secs(5));
        assert!(health.is_healthy() && health.refusal().is_none());
        assert!(health.fault("journal write failed: disk full".into()));
        assert!(
            !health.fault("journal sync failed: EIO".into()),
            "one fault"
        );
        assert_eq!(
            health.refusal().as_deref(),
            Some("storage unavailable: journal sync failed: EIO")
        );
        let first = health.probe_at().unwrap();
        health.probe_failed();
        let second = health.probe_at().unwrap();
        assert!(second > first, "the next probe waits longer");
        for _ in 0..10 {
            health.probe_failed();
        }
        let last = health.probe_at().unwrap();
        assert!(last <= Instant::now() + PROBE_MAX, "bounded backoff");
        assert_eq!(health.status().unwrap().state, "fault");
        assert!(health.heal().is_some());
        assert!(health.is_healthy() && health.status().is_none());
    }

    #[test]
    fn a_long_fsync_is_a_stall_until_it_ends() {
        let mut health = StorageHealth::new(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(
            health.stall_at(Some(started)),
            Some(started + Duration::from_millis(300))
        );
        assert_eq!(health.stall_at(None), None, "no fsync in flight");
        health.stalled();
        assert_eq!(health.stall_at(Some(started)), None, "reported once");
        let refusal = health.refusal().unwrap();
        assert!(refusal.contains("disk stalled"), "{refusal}");
        assert_eq!(health.status().unwrap().state, "stalled");
        assert!(health.unstall().is_some());
        assert!(health.is_healthy());
    }
}
