//! Warm contexts: QuickJS runtimes with a full context, the host functions
//! and the prelude, built ahead of need so a room's cold start only loads
//! its kind's bytecode.
//!
//! Building a runtime and its context (every intrinsic, fresh heap pages
//! faulted in) and evaluating the prelude is most of a room's load (in
//! `cargo bench --bench hook`, 60 µs of a 320 µs chat room load remain with
//! a warm context). One background thread keeps up to
//! `capacity` of them ready; it runs at `SCHED_IDLE` priority, so it only
//! uses a core nothing else wants, and a room that finds the pool empty
//! builds its own as before. Pooled contexts hold no room's data: a room
//! sets its limits, loader and host bridge after taking one.
//!
//! The same thread keeps `heap` bytes of free heap faulted in (see
//! [`crate::heap`]) before it builds: back-to-back cold starts leave it
//! gaps of 20–60 µs between the room and socket threads, too short to build
//! a context in but enough to fault in a few pages each, and a room whose
//! memory is already faulted in starts ~0.1 ms sooner.
//!
//! Nothing a room waits on may be held by the filler: an idle-priority
//! thread preempted while holding a lock may not run again for seconds on a
//! busy core (priority inversion). So `take` only tries the lock, and a drop
//! does not take it at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use super::Blank;

/// Up to `capacity` ready [`Blank`]s, refilled by a background thread that
/// ends when the pool is dropped.
pub struct WarmPool {
    shared: Option<Arc<Pool>>,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    wanted: Condvar,
    /// Set when the pool is dropped; the filler then ends (and drops what
    /// it holds).
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    ready: Vec<Blank>,
    capacity: usize,
    /// Free heap to keep faulted in (bytes).
    heap: usize,
}

/// How often a waiting filler looks at `closed` on its own: a drop never
/// takes the lock, so its wake-up can come just before the filler waits.
/// (A dropped pool's contexts are freed within this time.)
const CLOSED_CHECK: Duration = Duration::from_secs(1);

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WarmPool {
    /// A pool of `capacity` contexts that also keeps `heap` bytes of free
    /// heap faulted in (both 0: nothing, and no thread).
    pub fn new(capacity: usize, heap: usize) -> WarmPool {
        if capacity == 0 && heap == 0 {
            return WarmPool { shared: None };
        }
        let pool = Arc::new(Pool::default());
        *pool.lock() = State {
            ready: Vec::new(),
            capacity,
            heap,
        };
        let filler = pool.clone();
        let spawned = std::thread::Builder::new()
            .name("roomhost-warm".into())
            .spawn(move || fill(&filler));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no warm-context thread; rooms build their own");
            return WarmPool { shared: None };
        }
        WarmPool { shared: Some(pool) }
    }

    /// A ready context if one is waiting (and a refill is requested).
    ///
    /// Never waits for the lock: the filler runs at idle priority, and if it
    /// was preempted while holding it, a busy core may not give it back for
    /// seconds. A room that finds the lock taken builds its own context.
    pub fn take(&self) -> Option<Blank> {
        let pool = self.shared.as_ref()?;
        let blank = match pool.state.try_lock() {
            Ok(mut state) => state.ready.pop(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().ready.pop(),
            Err(TryLockError::WouldBlock) => None,
        };
        pool.wanted.notify_one();
        blank
    }

    /// Contexts ready now.
    pub fn ready(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, |pool| pool.lock().ready.len())
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Without the lock, for the same reason as `take`.
        if let Some(pool) = &self.shared {
            pool.closed.store(true, Ordering::Release);
            pool.wanted.notify_one();
        }
    }
}

fn fill(pool: &Pool) {
    crate::priority::idle();
    let heap = pool.lock().heap;
    let mut room_started = true;
    loop {
        // Every room start takes (or asks for) a context and so wakes this
        // thread: fault in what it allocated before building the next. (Not
        // otherwise: a heap that grows for other reasons is not kept ahead.)
        if room_started {
            crate::heap::prefault(heap);
        }
        let build = {
            let mut state = pool.lock();
            room_started = true;
            if !pool.closed.load(Ordering::Acquire) && state.ready.len() >= state.capacity {
                let (woken, wait) = pool
                    .wanted
                    .wait_timeout(state, CLOSED_CHECK)
                    .unwrap_or_else(|e| e.into_inner());
                state = woken;
                room_started = !wait.timed_out();
            }
            if pool.closed.load(Ordering::Acquire) {
                return;
            }
            state.ready.len() < state.capacity
        };
        if !build {
            continue;
        }
        // Built outside the lock: taking never waits for a build.
        let blank = match Blank::new() {
            Ok(blank) => blank,
            Err(e) => {
                tracing::warn!(error = %e, "building a warm context failed; stopping the pool");
                return;
            }
        };
        if pool.closed.load(Ordering::Acquire) {
            return;
        }
        pool.lock().ready.push(blank);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_ready(pool: &WarmPool, n: usize) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while pool.ready() < n {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    #[test]
    fn fills_to_capacity_and_refills_after_take() {
        let pool = WarmPool::new(2, 0);
        assert!(wait_ready(&pool, 2));
        assert!(pool.take().is_some(), "a warm context");
        assert!(wait_ready(&pool, 2), "refilled after a take");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.ready(), 2, "never more than capacity");
    }

    /// A room never waits on the idle-priority filler: while the filler
    /// holds the lock (here the test holds it), taking returns at once.
    #[test]
    fn taking_never_waits_for_the_lock() {
        let pool = WarmPool::new(1, 0);
        assert!(wait_ready(&pool, 1));
        let shared = pool.shared.as_ref().unwrap();
        let held = shared.lock();
        let started = Instant::now();
        assert!(pool.take().is_none(), "the lock is held: build instead");
        assert!(started.elapsed() < Duration::from_millis(100));
        drop(held);
        assert!(pool.take().is_some(), "the ready context is still there");
    }

    #[test]
    fn a_dropped_pool_stops_its_thread() {
        let pool = WarmPool::new(1, 0);
        assert!(wait_ready(&pool, 1));
        let shared = Arc::downgrade(pool.shared.as_ref().unwrap());
        drop(pool);
        // The filler ends within CLOSED_CHECK and drops the last reference.
        let until = Instant::now() + CLOSED_CHECK * 5;
        while shared.strong_count() > 0 {
            assert!(Instant::now() < until, "the filler is still running");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_heap_only_pool_has_a_thread_but_no_contexts() {
        let pool = WarmPool::new(0, 64 << 10);
        assert!(pool.shared.is_some(), "a thread keeps the heap");
        assert!(pool.take().is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.ready(), 0, "and builds nothing");
    }

    #[test]
    fn an_empty_pool_has_nothing() {
        let pool = WarmPool::new(0, 0);
        assert!(pool.take().is_none());
        assert_eq!(pool.ready(), 0);
    }
}
