//! Load balancing over a cluster's endpoints. Every policy reads lock-free per-endpoint
//! state (atomics), so picking an endpoint never takes a lock. Endpoints that outlier
//! detection ejected are skipped.

use super::endpoint::EndpointState;
use super::ring::Ring;
use crate::clock;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use trellis_config::model::LbPolicy;

/// Picks endpoints for one cluster.
#[derive(Debug)]
pub struct Balancer {
    pub policy: LbPolicy,
    pub endpoints: Vec<Arc<EndpointState>>,
    /// Shared with earlier snapshots of the same cluster, so round robin keeps its place.
    pub cursor: Arc<AtomicUsize>,
    pub ring: Option<Ring>,
}

impl Balancer {
    /// Picks an endpoint that is neither ejected nor in `exclude`. `hash` is the request's
    /// ring-hash key, if any.
    pub fn pick(&self, hash: Option<u64>, exclude: &[SocketAddr]) -> Option<&Arc<EndpointState>> {
        let eps = &self.endpoints;
        let now = clock::nanos(clock::now());
        let usable =
            |e: &&Arc<EndpointState>| !exclude.contains(&e.addr) && !e.health.is_ejected(now);
        match eps.len() {
            0 => return None,
            1 => return eps.first().filter(usable),
            _ => {}
        }
        let first = match self.policy {
            LbPolicy::RoundRobin => &eps[self.cursor.fetch_add(1, Ordering::Relaxed) % eps.len()],
            LbPolicy::Random => &eps[rand::rng().random_range(0..eps.len())],
            LbPolicy::LeastRequest => self.p2c(|e| e.active.load(Ordering::Relaxed) as f64),
            LbPolicy::PeakEwma => self.p2c(|e| e.ewma.cost(e.active.load(Ordering::Relaxed))),
            LbPolicy::RingHash => match (&self.ring, hash) {
                (Some(ring), Some(h)) => &eps[ring.lookup(h)],
                // No key on this request: any endpoint will do.
                _ => &eps[rand::rng().random_range(0..eps.len())],
            },
        };
        if usable(&first) {
            return Some(first);
        }
        // The preferred endpoint was already tried: take the next one that was not.
        let start = eps.iter().position(|e| Arc::ptr_eq(e, first)).unwrap_or(0);
        (1..eps.len())
            .map(|i| &eps[(start + i) % eps.len()])
            .find(usable)
    }

    /// How many endpoints outlier detection holds ejected now.
    pub fn ejected(&self) -> usize {
        let now = clock::nanos(clock::now());
        self.endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now))
            .count()
    }

    /// Power of two choices: sample two distinct endpoints, keep the cheaper.
    fn p2c(&self, cost: impl Fn(&EndpointState) -> f64) -> &Arc<EndpointState> {
        let n = self.endpoints.len();
        let mut rng = rand::rng();
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        if cost(eb) < cost(ea) { eb } else { ea }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Peak EWMA's rule on its own, with the latencies handed in: of two endpoints, the one
    /// that answered in 1 ms always wins over the one that took 100 ms, since power of two
    /// choices compares both. `tests/balancing.rs` checks the same through a proxy, learning
    /// the latencies from real answers.
    #[test]
    fn peak_ewma_picks_the_fast_endpoint_every_time() {
        let fast = Arc::new(EndpointState::new("127.0.0.1:1".parse().unwrap()));
        let slow = Arc::new(EndpointState::new("127.0.0.1:2".parse().unwrap()));
        fast.ewma.observe(Duration::from_millis(1));
        slow.ewma.observe(Duration::from_millis(100));
        let b = Balancer {
            policy: LbPolicy::PeakEwma,
            endpoints: vec![slow, fast.clone()],
            cursor: Arc::default(),
            ring: None,
        };
        for _ in 0..100 {
            let picked = b.pick(None, &[]).expect("two usable endpoints");
            assert!(Arc::ptr_eq(picked, &fast), "picked {}", picked.addr);
        }
    }
}
