//! Thread priorities inside the server's process.
//!
//! Threads inherit the policy of the thread that creates them, so under
//! `chrt -f` every thread of the server — room threads, socket threads, the
//! blocking threads that fsync — shares one real-time priority. At equal
//! real-time priority nothing preempts: a blocking thread woken to start an
//! fsync, or woken by its completion, waits until the busy room thread on its
//! core blocks, and under `maxtp --durability strict` that added ~0.5 ms to
//! each of the two wake-ups of every fsync. So the store's blocking jobs run
//! one step above the room threads (they submit I/O and wait; they use almost
//! no CPU), and the warm-context filler runs below everything.

use std::cell::Cell;

/// Raises the calling thread one real-time priority above the one it
/// inherited until the guard drops, if it has a real-time policy and may
/// raise it; otherwise (the normal policy, no permission) leaves it alone.
/// The pool's threads also run other blocking work (compiling a reloaded
/// script), which keeps the inherited priority.
pub(crate) fn above_rooms() -> Raised {
    thread_local!(static INHERITED: Cell<Option<Option<Rt>>> = const { Cell::new(None) });
    let inherited = INHERITED.with(|cell| {
        let rt = cell.get().unwrap_or_else(current_rt);
        cell.set(Some(rt));
        rt
    });
    let Some(rt) = inherited else {
        return Raised(None);
    };
    if set(Rt {
        priority: rt.priority + 1,
        ..rt
    }) {
        return Raised(Some(rt));
    }
    tracing::debug!(error = %std::io::Error::last_os_error(), "a store thread keeps the room threads' priority");
    INHERITED.with(|cell| cell.set(Some(None))); // not permitted: stop asking
    Raised(None)
}

/// Restores the inherited priority on drop.
pub(crate) struct Raised(Option<Rt>);

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some(rt) = self.0 {
            set(rt);
        }
    }
}

#[derive(Clone, Copy)]
struct Rt {
    policy: libc::c_int,
    priority: libc::c_int,
}

/// The calling thread's real-time policy and priority, if it has one below
/// the policy's maximum.
fn current_rt() -> Option<Rt> {
    // SAFETY: plain syscalls on the calling thread (pid 0) with a valid param.
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_FIFO && policy != libc::SCHED_RR {
            return None;
        }
        let mut param = libc::sched_param { sched_priority: 0 };
        if libc::sched_getparam(0, &mut param) != 0
            || param.sched_priority >= libc::sched_get_priority_max(policy)
        {
            return None;
        }
        Some(Rt {
            policy,
            priority: param.sched_priority,
        })
    }
}

fn set(rt: Rt) -> bool {
    let param = libc::sched_param {
        sched_priority: rt.priority,
    };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    unsafe { libc::sched_setscheduler(0, rt.policy, &param) == 0 }
}

/// `SCHED_IDLE` for the calling thread (it inherits the server's policy,
/// which may be a real-time one under `chrt`): the warm-context filler never
/// delays a room or a socket.
pub(crate) fn idle() {
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let param = libc::sched_param { sched_priority: 0 };
    let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "warm thread keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> (libc::c_int, libc::c_int) {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscalls on the calling thread with a valid param.
        unsafe {
            assert_eq!(libc::sched_getparam(0, &mut param), 0);
            (libc::sched_getscheduler(0), param.sched_priority)
        }
    }

    #[test]
    fn a_normal_thread_is_left_alone() {
        std::thread::spawn(|| {
            assert_eq!(current().0, libc::SCHED_OTHER);
            let raised = above_rooms();
            assert_eq!(current(), (libc::SCHED_OTHER, 0));
            drop(raised);
            assert_eq!(current(), (libc::SCHED_OTHER, 0));
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn a_real_time_thread_is_raised_one_step_while_the_guard_lives() {
        std::thread::spawn(|| {
            if !set(Rt {
                policy: libc::SCHED_FIFO,
                priority: 3,
            }) {
                eprintln!("skipped: no permission for a real-time policy");
                return;
            }
            for _ in 0..2 {
                let raised = above_rooms();
                assert_eq!(current(), (libc::SCHED_FIFO, 4));
                drop(raised);
                assert_eq!(current(), (libc::SCHED_FIFO, 3));
            }
            set(Rt {
                policy: libc::SCHED_OTHER,
                priority: 0,
            });
        })
        .join()
        .expect("test thread");
    }
}
