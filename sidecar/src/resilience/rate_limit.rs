//! The local rate limit of a cluster: a token bucket (as GCRA, one atomic word) per proxy and
//! cluster. A request over the limit is answered 429 `rate-limited` at once, with
//! `retry-after`.

use super::layer::Guard;
use crate::clock;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Reply};
use crate::http::future::LayerFuture;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::Service;
use trellis_config::model::RateLimit;

pub struct RateLimiter {
    pub cfg: RateLimit,
    cluster: Arc<String>,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far ahead of now the bucket may be spent: `burst` tokens.
    tolerance: u64,
    /// GCRA's theoretical arrival time: when the bucket would be full again, in clock nanos.
    tat: AtomicU64,
    limited: Counter,
}

impl RateLimiter {
    pub fn new(cluster: Arc<String>, cfg: RateLimit, limited: Counter) -> RateLimiter {
        let interval = (1e9 / cfg.requests_per_second).clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        RateLimiter {
            tolerance: interval.saturating_mul(u64::from(burst(&cfg))),
            interval,
            tat: AtomicU64::new(0),
            cluster,
            cfg,
            limited,
        }
    }

    /// Takes a token at `now`, or says how long until one is free.
    pub fn try_acquire(&self, now: Duration) -> Result<(), Duration> {
        let now = clock::nanos(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next - now > self.tolerance {
                return Err(Duration::from_nanos(next - now - self.tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// `burst`, or one second's worth of requests when it is not set (at least 1).
pub fn burst(cfg: &RateLimit) -> u32 {
    cfg.burst
        .unwrap_or(cfg.requests_per_second.ceil().min(f64::from(u32::MAX)) as u32)
        .max(1)
}

impl<'a, S> Guard<'a, S> for RateLimiter
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Future = LayerFuture<'a, S::Future>;

    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future {
        if let Err(retry_after) = self.try_acquire(clock::now()) {
            self.limited.inc();
            crate::http::exchange::note(&ex.notes, "rate_limited", || {
                vec![
                    ("trellis.cluster", self.cluster.to_string()),
                    (
                        "trellis.rate_limit.retry_after_ms",
                        retry_after.as_millis().to_string(),
                    ),
                ]
            });
            return LayerFuture::done(Err(ProxyError::RateLimited {
                cluster: self.cluster.to_string(),
                per_second: self.cfg.requests_per_second,
                retry_after,
            }));
        }
        LayerFuture::Inner {
            fut: inner.call(ex),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: Option<u32>) -> RateLimiter {
        RateLimiter::new(
            Arc::new("c".into()),
            RateLimit {
                requests_per_second: rps,
                burst,
            },
            Counter::default(),
        )
    }

    #[test]
    fn allows_the_burst_then_one_per_interval() {
        let l = limiter(10.0, Some(3));
        let t = Duration::from_secs(50);
        for _ in 0..3 {
            assert!(l.try_acquire(t).is_ok());
        }
        assert_eq!(l.try_acquire(t), Err(Duration::from_millis(100)));
        // One token comes back every 100 ms.
        assert!(l.try_acquire(t + Duration::from_millis(100)).is_ok());
        assert!(l.try_acquire(t + Duration::from_millis(100)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t + Duration::from_secs(10);
        let ok = (0..10).filter(|_| l.try_acquire(later).is_ok()).count();
        assert_eq!(ok, 3);
    }

    #[test]
    fn burst_defaults_to_one_second_of_requests() {
        let l = limiter(2.5, None);
        let t = Duration::from_secs(50);
        let ok = (0..10).filter(|_| l.try_acquire(t).is_ok()).count();
        assert_eq!(ok, 3);
    }
}
