//! Wall-clock time as the host records it: milliseconds since the Unix
//! epoch, the one time base of events, snapshots, console lines and the API.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The instant at which the wall clock reads `at_ms` (now, if that passed),
/// to the microsecond: a timer due at a millisecond does not wait for the
/// next whole one.
pub fn instant_of(at_ms: i64) -> Instant {
    let now = Instant::now();
    let wall_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let wait_us = at_ms.saturating_mul(1000).saturating_sub(wall_us).max(0);
    now + Duration::from_micros(wait_us as u64)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
