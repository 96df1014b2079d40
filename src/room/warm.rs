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

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::js::Blank;

/// Up to `capacity` ready [`Blank`]s, refilled by a background thread that
/// ends when the pool is dropped.
pub struct WarmPool {
    shared: Option<Arc<Pool>>,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    wanted: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<Blank>,
    capacity: usize,
    closed: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WarmPool {
    /// A pool of `capacity` (0: none, and no thread).
    pub fn new(capacity: usize) -> WarmPool {
        if capacity == 0 {
            return WarmPool { shared: None };
        }
        let pool = Arc::new(Pool::default());
        pool.lock().capacity = capacity;
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
    pub fn take(&self) -> Option<Blank> {
        let pool = self.shared.as_ref()?;
        let blank = pool.lock().ready.pop();
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
        if let Some(pool) = &self.shared {
            let mut state = pool.lock();
            state.closed = true;
            state.ready.clear();
            drop(state);
            pool.wanted.notify_one();
        }
    }
}

fn fill(pool: &Pool) {
    lower_priority();
    loop {
        {
            let mut state = pool.lock();
            while !state.closed && state.ready.len() >= state.capacity {
                state = pool.wanted.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closed {
                return;
            }
        }
        // Built outside the lock: taking never waits for a build.
        let blank = match Blank::new() {
            Ok(blank) => blank,
            Err(e) => {
                tracing::warn!(error = %e, "building a warm context failed; stopping the pool");
                return;
            }
        };
        let mut state = pool.lock();
        if state.closed {
            return;
        }
        state.ready.push(blank);
    }
}

/// `SCHED_IDLE` for the calling thread (it inherits the server's policy,
/// which may be a real-time one under `chrt`): the filler never delays a
/// room or a socket.
fn lower_priority() {
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
        let pool = WarmPool::new(2);
        assert!(wait_ready(&pool, 2));
        assert!(pool.take().is_some(), "a warm context");
        assert!(wait_ready(&pool, 2), "refilled after a take");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.ready(), 2, "never more than capacity");
    }

    #[test]
    fn an_empty_pool_has_nothing() {
        let pool = WarmPool::new(0);
        assert!(pool.take().is_none());
        assert_eq!(pool.ready(), 0);
    }
}
