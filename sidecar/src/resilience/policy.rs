//! A cluster's resilience state, built from its `ResiliencePolicy`. Each feature's state is
//! kept across config swaps while that feature's own settings are unchanged, so that editing
//! a rate limit does not close an open breaker; changed settings start that feature afresh.

use super::breaker::Breaker;
use super::breaker::state::State;
use super::bulkhead::Bulkhead;
use super::fault::Faults;
use super::rate_limit::RateLimiter;
use super::retry::RetryPolicy;
use crate::telemetry::metrics::{Count, Metrics};
use std::sync::Arc;
use std::time::Duration;
use trellis_config::model::Resilience;

/// Everything the layers of one cluster share. Absent parts are off.
#[derive(Clone, Default)]
pub struct ClusterResilience {
    pub fault: Option<Arc<Faults>>,
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub bulkhead: Option<Arc<Bulkhead>>,
    pub breaker: Option<Arc<Breaker>>,
    pub timeout: Option<Duration>,
    pub retry: Option<Arc<RetryPolicy>>,
    /// Opaque connections close after this long with no byte either way; `None`: never.
    pub tcp_idle: Option<Duration>,
}

/// Keeps `prev` when its settings equal `cfg`, else makes a new one from `cfg`.
fn keep<T, C: PartialEq + Clone>(
    prev: &Option<Arc<T>>,
    cfg: &Option<C>,
    settings: impl Fn(&T) -> &C,
    make: impl FnOnce(C) -> T,
) -> Option<Arc<T>> {
    let cfg = cfg.as_ref()?;
    match prev {
        Some(p) if settings(p) == cfg => Some(p.clone()),
        _ => Some(Arc::new(make(cfg.clone()))),
    }
}

impl ClusterResilience {
    /// The state for `cfg`, reusing what it can of `prev`, the same cluster's state in the
    /// config being replaced (default for a new cluster).
    pub fn build(
        name: &Arc<String>,
        cfg: &Resilience,
        prev: &ClusterResilience,
        metrics: &Metrics,
    ) -> ClusterResilience {
        let n = || name.clone();
        let count = |kind| metrics.counter(kind, name);
        let breaker = match (&prev.breaker, &cfg.circuit_breaker) {
            (Some(b), Some(c)) if b.cfg == *c => Some(b.clone()),
            (prev_breaker, Some(c)) => {
                // An operator's forced state outlives a change of the breaker's settings.
                let initial = match prev_breaker.as_ref().map(|b| b.state()) {
                    Some(s @ (State::Disabled | State::ForcedOpen)) => s,
                    _ => State::Closed,
                };
                if let Some(old) = prev_breaker {
                    old.retire();
                }
                Some(Breaker::new(n(), c.clone(), metrics.breaker(name), initial))
            }
            (Some(old), None) => {
                old.retire();
                metrics.forget_breaker(name);
                None
            }
            (None, None) => None,
        };
        ClusterResilience {
            fault: keep(
                &prev.fault,
                &cfg.fault_injection,
                |f| &f.cfg,
                |c| Faults::new(n(), c, count(Count::FaultDelays), count(Count::FaultAborts)),
            ),
            rate_limit: keep(
                &prev.rate_limit,
                &cfg.rate_limit,
                |r| &r.cfg,
                |c| RateLimiter::new(n(), c, count(Count::RateLimited)),
            ),
            bulkhead: keep(
                &prev.bulkhead,
                &cfg.bulkhead,
                |b| &b.cfg,
                |c| Bulkhead::new(n(), c, count(Count::BulkheadRejected)),
            ),
            breaker,
            timeout: cfg.timeout.filter(|t| !t.is_zero()),
            retry: keep(
                &prev.retry,
                &cfg.retry,
                |r| &r.cfg,
                |c| RetryPolicy::new(n(), c, count(Count::Retries)),
            ),
            tcp_idle: cfg.tcp_idle_timeout(),
        }
    }

    /// Whether any layer of the stack has work to do. Outlier detection and timeouts live in
    /// the endpoint call, so they need no layer.
    pub fn has_layers(&self) -> bool {
        self.fault.is_some()
            || self.rate_limit.is_some()
            || self.bulkhead.is_some()
            || self.breaker.is_some()
            || self.retry.is_some()
    }

    /// Stops the parts of a cluster that left the config from writing metrics.
    pub fn retire(&self) {
        if let Some(b) = &self.breaker {
            b.retire();
        }
    }
}
