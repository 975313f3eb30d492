//! Outlier detection with Envoy's semantics: `consecutive5xx` failures in a row eject an
//! endpoint for a growing time, never more than `maxEjectionPercent` of the cluster at once.
//! The balancer skips ejected endpoints.

// An ejection lasts `baseEjectionTime` × the number of times the endpoint has been ejected,
// capped at `maxEjectionTime`; one endpoint can always be ejected, whatever the percent.
//
// Counting is lock-free (atomics on each endpoint); deciding an ejection takes a per-cluster
// mutex, so that two ejections at once cannot both pass the percent check.

use super::endpoint::{EndpointHealth, EndpointState};
use crate::clock;
use crate::telemetry::metrics::{Count, Metrics};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trellis_config::model::OutlierDetection;

/// The outlier detection of one cluster.
pub struct Outlier {
    pub cfg: OutlierDetection,
    cluster: Arc<String>,
    ejected_total: Counter,
    deciding: Mutex<()>,
}

impl Outlier {
    /// The outlier detection `cfg` asks for: `prev` itself while its settings are unchanged,
    /// so that standing ejections hold across a config swap; otherwise a fresh one.
    pub fn carry(
        prev: &Option<Arc<Outlier>>,
        cfg: &Option<OutlierDetection>,
        cluster: &Arc<String>,
        metrics: &Metrics,
    ) -> Option<Arc<Outlier>> {
        let cfg = cfg.as_ref()?;
        match prev {
            Some(p) if p.cfg == *cfg => Some(p.clone()),
            _ => Some(Arc::new(Outlier::new(
                cluster.clone(),
                cfg.clone(),
                metrics.counter(Count::Ejections, cluster),
            ))),
        }
    }

    pub fn new(cluster: Arc<String>, cfg: OutlierDetection, ejected_total: Counter) -> Outlier {
        Outlier {
            cfg,
            cluster,
            ejected_total,
            deciding: Mutex::new(()),
        }
    }

    /// Records one answer of `ep`, one of the cluster's `endpoints`.
    pub fn record(
        &self,
        ep: &EndpointState,
        endpoints: &[Arc<EndpointState>],
        failed: bool,
        now: Duration,
    ) {
        let h = &ep.health;
        if !failed {
            // Skip the write when already 0: the common case then leaves the cache line shared.
            if h.consecutive.load(Ordering::Relaxed) != 0 {
                h.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = h.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        // Every `consecutive5xx` failures in a row, not every failure past it: an endpoint
        // that max ejection percent keeps in service must not take the lock per request.
        if n.is_multiple_of(self.cfg.consecutive5xx.max(1)) {
            self.eject(ep, endpoints, n, now);
        }
    }

    fn eject(&self, ep: &EndpointState, endpoints: &[Arc<EndpointState>], n: u32, now: Duration) {
        let _deciding = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
        let now_ns = clock::nanos(now);
        let h = &ep.health;
        if h.is_ejected(now_ns) {
            return;
        }
        let ejected = endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now_ns))
            .count();
        // Envoy: eject while the ejected share stays within the percent, or when none is
        // ejected yet, so that a small cluster can still lose its one bad endpoint.
        let within =
            (ejected + 1) as f64 * 100.0 <= self.cfg.max_ejection_percent * endpoints.len() as f64;
        if ejected > 0 && !within {
            return;
        }
        let base = self
            .cfg
            .base_ejection_time
            .unwrap_or(Duration::from_secs(30));
        let cap = self
            .cfg
            .max_ejection_time
            .unwrap_or(Duration::from_secs(300))
            .max(base);
        let multiplier = self.decayed_multiplier(h, now_ns) + 1;
        let duration = base.saturating_mul(multiplier).min(cap);
        h.ejections.store(multiplier, Ordering::Relaxed);
        h.consecutive.store(0, Ordering::Relaxed);
        h.until_ns
            .store(clock::nanos(now + duration), Ordering::Release);
        self.ejected_total.inc();
        tracing::warn!(
            cluster = %self.cluster,
            endpoint = %ep.addr,
            ejections = multiplier,
            "endpoint ejected for {duration:?} after {n} consecutive failures"
        );
    }

    /// The multiplier less one for each whole `interval` the endpoint has been back, as Envoy
    /// lowers it at each interval sweep while the endpoint stays healthy.
    fn decayed_multiplier(&self, h: &EndpointHealth, now_ns: u64) -> u32 {
        let prev = h.ejections.load(Ordering::Relaxed);
        let until = h.until_ns.load(Ordering::Acquire);
        if prev == 0 || until == 0 {
            return 0;
        }
        let interval = self
            .cfg
            .interval
            .unwrap_or(Duration::from_secs(10))
            .as_nanos()
            .max(1) as u64;
        let intervals = now_ns.saturating_sub(until) / interval;
        prev.saturating_sub(u32::try_from(intervals).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(consecutive: u32, pct: f64) -> OutlierDetection {
        OutlierDetection {
            consecutive5xx: consecutive,
            interval: Some(Duration::from_secs(10)),
            base_ejection_time: Some(Duration::from_secs(30)),
            max_ejection_time: Some(Duration::from_secs(75)),
            max_ejection_percent: pct,
        }
    }

    fn endpoints(n: u16) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
                Arc::new(EndpointState::new(addr))
            })
            .collect()
    }

    fn fail(o: &Outlier, eps: &[Arc<EndpointState>], i: usize, times: u32, now: Duration) {
        for _ in 0..times {
            o.record(&eps[i], eps, true, now);
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_a_success_resets_the_count() {
        let eps = endpoints(2);
        let o = Outlier::new(Arc::new("c".into()), cfg(3, 50.0), Counter::default());
        let t0 = Duration::from_secs(100);
        fail(&o, &eps, 0, 2, t0);
        o.record(&eps[0], &eps, false, t0);
        fail(&o, &eps, 0, 2, t0);
        assert!(eps[0].health.ejected_until(t0).is_none());
        fail(&o, &eps, 0, 1, t0);
        assert_eq!(
            eps[0].health.ejected_until(t0),
            Some(t0 + Duration::from_secs(30))
        );
        // Back after its time.
        assert!(
            eps[0]
                .health
                .ejected_until(t0 + Duration::from_secs(30))
                .is_none()
        );
    }

    #[test]
    fn ejection_time_grows_with_ejections_up_to_the_cap_and_decays() {
        let eps = endpoints(1);
        let o = Outlier::new(Arc::new("c".into()), cfg(1, 10.0), Counter::default());
        let mut t = Duration::from_secs(100);
        let mut lengths = Vec::new();
        for _ in 0..3 {
            fail(&o, &eps, 0, 1, t);
            let until = eps[0].health.ejected_until(t).expect("ejected");
            lengths.push((until - t).as_secs());
            t = until;
        }
        assert_eq!(lengths, vec![30, 60, 75]);
        // Three healthy intervals (30s) bring the multiplier from 3 to 0: the next is 30s again.
        t += Duration::from_secs(30);
        fail(&o, &eps, 0, 1, t);
        assert_eq!(
            eps[0].health.ejected_until(t),
            Some(t + Duration::from_secs(30))
        );
    }

    #[test]
    fn max_ejection_percent_holds_but_one_can_always_go() {
        let eps = endpoints(4);
        // 10% of 4 is 0.4 endpoints: still one may be ejected, and no second.
        let o = Outlier::new(Arc::new("c".into()), cfg(1, 10.0), Counter::default());
        let t = Duration::from_secs(5);
        fail(&o, &eps, 0, 1, t);
        fail(&o, &eps, 1, 1, t);
        let now = clock::nanos(t);
        let ejected: Vec<bool> = eps.iter().map(|e| e.health.is_ejected(now)).collect();
        assert_eq!(ejected, vec![true, false, false, false]);
        // 50% of 4 allows two.
        let eps = endpoints(4);
        let o = Outlier::new(Arc::new("c".into()), cfg(1, 50.0), Counter::default());
        for i in 0..4 {
            fail(&o, &eps, i, 1, t);
        }
        let n = eps.iter().filter(|e| e.health.is_ejected(now)).count();
        assert_eq!(n, 2);
    }
}
