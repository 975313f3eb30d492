//! Lock-free sliding windows of call outcomes, as resilience4j's circuit breaker keeps them:
//! COUNT (the last N calls) and TIME (the calls of the last N seconds, one bucket a second).

// Concurrent recorders never block each other. The price is that a reader may see a
// window that is off by the few calls being recorded at that instant, which moves a rate by
// a fraction of a percent; it never sees calls from outside the window.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use trellis_config::model::{SlidingWindow, SlidingWindowType};

/// The largest window, in calls or seconds. Counts are packed 21 bits each in one word.
pub const MAX_SIZE: u32 = 1 << 20;

/// What one call did, for the breaker's rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub failed: bool,
    pub slow: bool,
}

/// Sums over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl Totals {
    /// Percent of calls that failed, or 0 with no calls.
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Percent of calls that were slow, or 0 with no calls.
    pub fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u32, all: u32) -> f64 {
    if all == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(all)
    }
}

pub enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub fn new(cfg: &SlidingWindow) -> Window {
        let size = cfg.size.clamp(1, MAX_SIZE);
        match cfg.kind {
            SlidingWindowType::Count => Window::Count(CountWindow::new(size)),
            SlidingWindowType::Time => Window::Time(TimeWindow::new(size)),
        }
    }

    pub fn record(&self, o: Outcome, now: Duration) {
        match self {
            Window::Count(w) => w.record(o),
            Window::Time(w) => w.record(o, now),
        }
    }

    pub fn totals(&self, now: Duration) -> Totals {
        match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now),
        }
    }
}

// === impl CountWindow ===

/// The last `size` calls in a ring; running sums make reading O(1).
pub struct CountWindow {
    /// 0 = empty; else CALL | FAILED? | SLOW?.
    slots: Box<[AtomicU8]>,
    cursor: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

const CALL: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

impl CountWindow {
    fn new(size: u32) -> CountWindow {
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            cursor: AtomicU64::new(0),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    fn record(&self, o: Outcome) {
        let new = CALL | if o.failed { FAILED } else { 0 } | if o.slow { SLOW } else { 0 };
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        let old = self.slots[i as usize].swap(new, Ordering::AcqRel);
        // Each swap's delta is applied exactly once, so the sums converge on the slots' contents
        // even when two recorders land on the same slot.
        let bit = |v: u8, b: u8| i64::from(v & b != 0);
        for (sum, b) in [
            (&self.calls, CALL),
            (&self.failures, FAILED),
            (&self.slow, SLOW),
        ] {
            let d = bit(new, b) - bit(old, b);
            if d != 0 {
                sum.fetch_add(d, Ordering::AcqRel);
            }
        }
    }

    fn totals(&self) -> Totals {
        let n = self.slots.len() as i64;
        let get = |a: &AtomicI64| a.load(Ordering::Acquire).clamp(0, n) as u32;
        let calls = get(&self.calls);
        Totals {
            calls,
            failures: get(&self.failures).min(calls),
            slow: get(&self.slow).min(calls),
        }
    }
}

// === impl TimeWindow ===

/// The calls of the last `size` whole seconds, the current partial second included.
pub struct TimeWindow {
    buckets: SecondBuckets,
}

const FIELD: u32 = 21;
const MASK: u64 = (1 << FIELD) - 1;

impl TimeWindow {
    fn new(seconds: u32) -> TimeWindow {
        TimeWindow {
            buckets: SecondBuckets::new(seconds as usize),
        }
    }

    fn record(&self, o: Outcome, now: Duration) {
        let word = 1 | u64::from(o.failed) << FIELD | u64::from(o.slow) << (2 * FIELD);
        self.buckets.add(now.as_secs(), word);
    }

    fn totals(&self, now: Duration) -> Totals {
        let mut t = Totals::default();
        for w in self.buckets.words(now.as_secs()) {
            t.calls += (w & MASK) as u32;
            t.failures += (w >> FIELD & MASK) as u32;
            t.slow += (w >> (2 * FIELD) & MASK) as u32;
        }
        t
    }
}

// === impl SecondBuckets ===

/// One counter word per second for the last N seconds. A word only grows within its second;
/// the first writer of a new second resets the bucket it reuses.
pub struct SecondBuckets {
    buckets: Box<[Bucket]>,
}

struct Bucket {
    /// The second this bucket counts, plus one (0 = never used), or `RESETTING`.
    tag: AtomicU64,
    word: AtomicU64,
}

const RESETTING: u64 = u64::MAX;

impl SecondBuckets {
    pub fn new(seconds: usize) -> SecondBuckets {
        SecondBuckets {
            buckets: (0..seconds.max(1))
                .map(|_| Bucket {
                    tag: AtomicU64::new(0),
                    word: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Adds `delta` to the word of second `sec`.
    pub fn add(&self, sec: u64, delta: u64) {
        let tag = sec + 1;
        let b = &self.buckets[(sec % self.buckets.len() as u64) as usize];
        // The reset below is three stores; a writer that finds one under way spins briefly,
        // and drops its sample rather than wait on a preempted thread.
        for _ in 0..64 {
            let cur = b.tag.load(Ordering::Acquire);
            if cur == tag {
                b.word.fetch_add(delta, Ordering::AcqRel);
                return;
            }
            if cur == RESETTING {
                std::hint::spin_loop();
                continue;
            }
            if cur > tag {
                // A later second owns the bucket: this sample is a whole window late.
                return;
            }
            if b.tag
                .compare_exchange(cur, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                b.word.store(delta, Ordering::Release);
                b.tag.store(tag, Ordering::Release);
                return;
            }
        }
    }

    /// The words of the buckets inside the window that ends at second `sec`.
    pub fn words(&self, sec: u64) -> impl Iterator<Item = u64> + '_ {
        let tag = sec + 1;
        let n = self.buckets.len() as u64;
        self.buckets.iter().filter_map(move |b| {
            let before = b.tag.load(Ordering::Acquire);
            if before == 0 || before == RESETTING || before > tag || before + n <= tag {
                return None;
            }
            let w = b.word.load(Ordering::Acquire);
            // Seqlock-style check: a reset between the two loads makes `w` untrustworthy.
            (b.tag.load(Ordering::Acquire) == before).then_some(w)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAIL: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const SLOW_OK: Outcome = Outcome {
        failed: false,
        slow: true,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = Window::new(&SlidingWindow {
            kind: SlidingWindowType::Count,
            size: 4,
        });
        for o in [FAIL, FAIL, OK, SLOW_OK] {
            w.record(o, secs(0));
        }
        let t = w.totals(secs(0));
        assert_eq!((t.calls, t.failures, t.slow), (4, 2, 1));
        assert_eq!(t.failure_rate(), 50.0);
        // Two successes push both failures out.
        w.record(OK, secs(0));
        w.record(OK, secs(0));
        let t = w.totals(secs(0));
        assert_eq!((t.calls, t.failures, t.slow), (4, 0, 1));
    }

    #[test]
    fn time_window_forgets_calls_older_than_n_seconds() {
        let w = Window::new(&SlidingWindow {
            kind: SlidingWindowType::Time,
            size: 3,
        });
        w.record(FAIL, secs(10));
        w.record(OK, secs(11));
        w.record(SLOW_OK, secs(12));
        let t = w.totals(secs(12));
        assert_eq!((t.calls, t.failures, t.slow), (3, 1, 1));
        // At second 13 the call of second 10 has left the window.
        w.record(OK, secs(13));
        let t = w.totals(secs(13));
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 1));
        // Long idle: everything is forgotten, even buckets nobody reused.
        assert_eq!(w.totals(secs(100)), Totals::default());
    }

    #[test]
    fn concurrent_recorders_lose_nothing() {
        let w = std::sync::Arc::new(Window::new(&SlidingWindow {
            kind: SlidingWindowType::Count,
            size: 1000,
        }));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        w.record(if i % 2 == 0 { FAIL } else { OK }, secs(0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = w.totals(secs(0));
        assert_eq!((t.calls, t.failures), (1000, 500));
    }
}
