//! Peak EWMA latency (as in Finagle and Linkerd): a slow response raises the estimate at
//! once, fast ones decay it with a time constant, and cost grows with in-flight requests.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Decay time constant: after this long without slow samples the estimate has fallen by ~63%.
const TAU: Duration = Duration::from_secs(10);
/// The estimate for an endpoint that has not answered yet, so new endpoints get tried.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Lock-free: a racing update may lose one sample, which costs accuracy, never safety.
#[derive(Debug)]
pub struct Ewma {
    rtt_ns: AtomicU64,
    stamp_ns: AtomicU64,
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma {
            rtt_ns: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp_ns: AtomicU64::new(0),
        }
    }
}

impl Ewma {
    pub fn observe(&self, rtt: Duration) {
        let now = EPOCH.elapsed().as_nanos() as u64;
        let rtt = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp_ns.swap(now, Ordering::Relaxed)) as f64;
        let next = if rtt > prev {
            rtt
        } else {
            let w = (-elapsed / TAU.as_nanos() as f64).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Expected cost of sending one more request: latency times (in-flight + 1).
    pub fn cost(&self, active: usize) -> f64 {
        f64::from_bits(self.rtt_ns.load(Ordering::Relaxed)) * (active as f64 + 1.0)
    }

    pub fn rtt(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.rtt_ns.load(Ordering::Relaxed)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_at_once_and_costs_more_when_busy() {
        let e = Ewma::default();
        e.observe(Duration::from_millis(50));
        assert_eq!(e.rtt(), Duration::from_millis(50));
        // A fast sample right after barely moves the estimate (little time has passed).
        e.observe(Duration::from_millis(1));
        assert!(e.rtt() > Duration::from_millis(45), "{:?}", e.rtt());
        assert!(e.cost(3) > e.cost(0));
    }
}
