//! Why a room task ended. The supervisor, the log, the metrics' `reason`
//! label and the API's `last_error` all read the same value: what happened
//! is its variant, not a string others search. [`Failure`] is why a room
//! stopped restarting, [`Revival`] why it got another chance.

use std::time::Duration;

use crate::engine::Fatal;

/// How a room task ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Idle stop or shutdown; the slot is already updated.
    Stopped,
    /// The room must be restarted from its durable state.
    Crashed(Crash),
}

/// Why a room crashed. The `Display` text is what the log and the API's
/// `last_error` show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Crash {
    /// The room's JavaScript hit a fatal limit (CPU budget, memory): its
    /// heap cannot be trusted. `context` says where, e.g. during a replay.
    #[error("{}{fatal}", context.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Js {
        fatal: Fatal,
        context: Option<String>,
    },
    /// The kind's code could not be loaded, or could not rebuild the state
    /// (`restore()` threw, an unknown kind).
    #[error("{0}")]
    Script(String),
    /// The room's store failed: `what` (e.g. "journal sync failed") with the
    /// error it gave.
    #[error("{what}: {error}")]
    Storage { what: &'static str, error: String },
    /// Cluster mode: another node owns the room, or took it from this one
    /// (a fenced append was refused, the lease ran out). Not restarted here.
    #[error("{0}")]
    Ownership(crate::store::OwnershipError),
    /// A bug: the room task panicked.
    #[error("panic: {0}")]
    Panic(String),
    /// An admin (or [`crate::RoomHandle::kill`]) aborted the task.
    #[error("killed")]
    Killed,
}

impl Crash {
    pub(crate) fn storage(what: &'static str, error: impl std::fmt::Display) -> Crash {
        Crash::Storage {
            what,
            error: error.to_string(),
        }
    }

    /// The ownership refusal `error` carries (see
    /// [`crate::store::OwnershipError`]).
    pub(crate) fn ownership(error: &std::io::Error) -> Crash {
        match crate::store::ownership_error(error) {
            Some(refusal) => Crash::Ownership(refusal.clone()),
            None => Crash::Ownership(crate::store::OwnershipError::Lost(error.to_string())),
        }
    }

    pub(crate) fn script(error: impl std::fmt::Display) -> Crash {
        Crash::Script(error.to_string())
    }

    /// The metrics' `reason` label (one of [`crate::metrics::CRASH_REASONS`]).
    pub fn label(&self) -> &'static str {
        match self {
            Crash::Js {
                fatal: Fatal::CpuBudget,
                ..
            } => "cpu",
            Crash::Js {
                fatal: Fatal::OutOfMemory,
                ..
            } => "memory",
            Crash::Killed => "killed",
            Crash::Panic(_) => "panic",
            Crash::Storage { .. } => "storage",
            Crash::Ownership(_) => "ownership",
            Crash::Script(_) => "other",
        }
    }
}

impl From<Fatal> for Crash {
    fn from(fatal: Fatal) -> Crash {
        Crash::Js {
            fatal,
            context: None,
        }
    }
}

/// Why a room was marked failed: it crashed more often than the restart
/// intensity allows. The `Display` text is the failure without advice, so a
/// failed room and a revived one can both quote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("crashed {crashes} times within {window:?}; last: {last}")]
pub struct Failure {
    pub crashes: usize,
    pub window: Duration,
    pub last: Crash,
}

/// Why a failed room was brought back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Revival {
    /// `POST /api/rooms/{topic}/reset`.
    #[error("reset by an admin")]
    Admin,
    /// Its kind's code changed (hot reload).
    #[error("reset because its code changed")]
    CodeChanged,
}

impl Failure {
    /// The API's `last_error` while the room is failed.
    pub fn while_failed(&self) -> String {
        format!("{self}. An admin must reset it, or its code must change.")
    }

    /// The API's `last_error` once the room was revived: what happened, and
    /// that it is over.
    pub fn after(&self, revival: Revival) -> String {
        format!("{revival}; it had {self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CRASH_REASONS;

    #[test]
    fn crash_reasons_are_bounded() {
        let cases = [
            (Crash::from(Fatal::CpuBudget), "cpu", "CPU budget exceeded"),
            (Crash::from(Fatal::OutOfMemory), "memory", "out of memory"),
            (Crash::Killed, "killed", "killed"),
            (Crash::Panic("oops".into()), "panic", "panic: oops"),
            (
                Crash::storage("journal sync failed", "EIO"),
                "storage",
                "journal sync failed: EIO",
            ),
            (Crash::script("anything else"), "other", "anything else"),
            (
                Crash::Ownership(crate::store::OwnershipError::Lost(
                    "journal moved on".into(),
                )),
                "ownership",
                "ownership lost: journal moved on",
            ),
            (
                Crash::Js {
                    fatal: Fatal::CpuBudget,
                    context: Some("replaying seq 7".into()),
                },
                "cpu",
                "replaying seq 7: CPU budget exceeded",
            ),
        ];
        for (crash, label, text) in cases {
            assert_eq!(crash.label(), label, "{crash:?}");
            assert!(CRASH_REASONS.contains(&crash.label()));
            assert_eq!(crash.to_string(), text);
        }
    }

    #[test]
    fn a_failure_reads_differently_once_revived() {
        let failure = Failure {
            crashes: 6,
            window: Duration::from_secs(10),
            last: Crash::from(Fatal::CpuBudget),
        };
        assert_eq!(
            failure.while_failed(),
            "crashed 6 times within 10s; last: CPU budget exceeded. An admin must reset it, or its code must change."
        );
        assert_eq!(
            failure.after(Revival::Admin),
            "reset by an admin; it had crashed 6 times within 10s; last: CPU budget exceeded"
        );
        assert_eq!(
            failure.after(Revival::CodeChanged),
            "reset because its code changed; it had crashed 6 times within 10s; last: CPU budget exceeded"
        );
    }
}
