//! The monotonic clock that resilience state reads: time since the process started. State
//! machines take readings as arguments, so unit tests can drive them with any clock.

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Time since the process started (strictly: since the clock was first read).
pub fn now() -> Duration {
    EPOCH.elapsed()
}

/// A reading of `now()` in nanoseconds, for atomics. Wraps after 584 years.
pub fn nanos(t: Duration) -> u64 {
    t.as_nanos() as u64
}

/// Wall-clock time of a reading, for humans (e.g. when an ejection ends).
pub fn wall(t: Duration) -> SystemTime {
    let n = now();
    if t >= n {
        SystemTime::now() + (t - n)
    } else {
        SystemTime::now() - (n - t)
    }
}

/// Milliseconds since the Unix epoch of a reading.
pub fn unix_millis(t: Duration) -> u64 {
    wall(t)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
