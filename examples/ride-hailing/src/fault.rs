//! The `/fault` switch every service has: a delay before answering, and a share of answers
//! that are 500s. `POST /fault?delayMs=800&errorPercent=50` sets it, `POST /fault` clears it.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Fault {
    delay_ms: AtomicU64,
    error_percent: AtomicU64,
}

impl Fault {
    /// Applies a `/fault` query string; absent keys reset to zero.
    pub fn set(&self, query: &str) -> String {
        let mut delay = 0;
        let mut errors = 0;
        for kv in query.split('&') {
            match kv.split_once('=') {
                Some(("delayMs", v)) => delay = v.parse().unwrap_or(0),
                Some(("errorPercent", v)) => errors = v.parse::<u64>().unwrap_or(0).min(100),
                _ => {}
            }
        }
        self.delay_ms.store(delay, Ordering::Relaxed);
        self.error_percent.store(errors, Ordering::Relaxed);
        format!("{{\"delayMs\":{delay},\"errorPercent\":{errors}}}\n")
    }

    /// Waits out the delay, then says whether this request should fail.
    pub async fn apply(&self) -> bool {
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let p = self.error_percent.load(Ordering::Relaxed);
        p > 0 && rand::rng().random_range(0..100) < p
    }
}
