//! The CPU budget of one call into a room's JavaScript: a deadline in the
//! calling thread's CPU time, checked by the runtime's interrupt handler.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Per-call CPU deadline, checked by the interrupt handler. Measured in CPU
/// time of the thread running the JS, so a busy machine (or a descheduled
/// worker) never makes a well-behaved hook look like a runaway one.
///
/// Reading the thread's CPU clock is a system call (no vDSO for it), ~1 µs
/// on a VM, and every hook arms and checks the budget: 4–5% of the server's
/// CPU under `maxtp`. So neither reads it on the common path:
/// - `arm` takes the thread's last reading plus the wall time since, which
///   is never less than the CPU time now (a thread cannot run longer than
///   the wall clock), so a call is never charged for more than it used; it
///   reads the clock afresh when the last reading is over [`REREAD`] old, so
///   a runaway call gets at most that much extra.
/// - `expired` cannot be true while the wall time since `arm` is within the
///   allowance, and only reads the clock after that.
pub(super) struct Budget {
    /// CPU nanoseconds the armed call may use; `u64::MAX` while idle.
    allowance: AtomicU64,
    /// Wall clock at `arm` (nanoseconds since `origin`).
    armed_at: AtomicU64,
    /// Thread CPU time at `arm`, or slightly more (see above).
    cpu_at_arm: AtomicU64,
    origin: std::time::Instant,
    /// Set when the handler interrupted JS, so the error can be told apart
    /// from an ordinary exception.
    fired: AtomicBool,
}

/// How old a thread's CPU clock reading may be for [`Budget::arm`] to build
/// on it instead of reading the clock.
pub(super) const REREAD: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's last CPU clock reading and the wall clock then.
    static LAST_CPU_READ: Cell<Option<(u64, std::time::Instant)>> = const { Cell::new(None) };
}

impl Budget {
    pub(super) fn new() -> Budget {
        Budget {
            allowance: AtomicU64::new(u64::MAX),
            armed_at: AtomicU64::new(0),
            cpu_at_arm: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            fired: AtomicBool::new(false),
        }
    }

    fn wall(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub(super) fn arm(&self, allowance: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let cpu = match LAST_CPU_READ.get() {
            Some((cpu, at)) if now.duration_since(at) <= REREAD => {
                cpu + now.duration_since(at).as_nanos() as u64
            }
            _ => read_thread_cpu(),
        };
        self.cpu_at_arm.store(cpu, Ordering::Relaxed);
        let armed_at = now.saturating_duration_since(self.origin).as_nanos() as u64;
        self.armed_at.store(armed_at, Ordering::Relaxed);
        self.allowance
            .store(allowance.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn expired(&self) -> bool {
        let allowance = self.allowance.load(Ordering::Relaxed);
        let wall = self
            .wall()
            .saturating_sub(self.armed_at.load(Ordering::Relaxed));
        if wall <= allowance {
            return false; // the thread cannot have run longer than this
        }
        let used = read_thread_cpu().saturating_sub(self.cpu_at_arm.load(Ordering::Relaxed));
        let expired = used > allowance;
        if expired {
            self.fired.store(true, Ordering::Relaxed);
        }
        expired
    }

    pub(super) fn disarm(&self) -> bool {
        self.allowance.store(u64::MAX, Ordering::Relaxed);
        self.fired.load(Ordering::Relaxed)
    }
}

/// CPU time consumed by the calling thread, remembered for [`Budget::arm`].
pub(super) fn read_thread_cpu() -> u64 {
    let cpu = thread_cpu_nanos();
    LAST_CPU_READ.set(Some((cpu, std::time::Instant::now())));
    cpu
}

/// CPU time consumed by the calling thread.
pub(super) fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
