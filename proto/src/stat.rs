//! What the control plane, its dashboard and `trellis stat` derive from summed golden
//! counts (a `Summary`'s `TrafficCounts`, or an `EdgeStat`): the latency quantiles.

use crate::LATENCY_BOUNDS;
use crate::v1::EdgeStat;

/// Edges' counts summed: one Service's, one route's, one backend's.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub successes: u64,
    pub mtls: u64,
    pub latency: Vec<u64>,
}

impl Totals {
    pub fn of<'a>(edges: impl IntoIterator<Item = &'a EdgeStat>) -> Totals {
        let mut t = Totals {
            latency: vec![0; LATENCY_BOUNDS.len() + 1],
            ..Totals::default()
        };
        for e in edges {
            t.requests += e.requests;
            t.successes += e.successes;
            t.mtls += e.mtls;
            for (a, b) in t.latency.iter_mut().zip(&e.latency) {
                *a += b;
            }
        }
        t
    }

    /// Of the requests, the share answered below 500; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.successes as f64 / self.requests as f64)
    }

    /// Requests per second over `covered` seconds.
    pub fn rps(&self, covered: f64) -> f64 {
        if covered > 0.0 {
            self.requests as f64 / covered
        } else {
            0.0
        }
    }

    /// The `q` latency quantile in milliseconds (`quantile`).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.latency, q).map(|s| s * 1000.0)
    }
}

/// The edges of one side summed by `key`, in key order: outbound (`inbound` false, as the
/// callers' proxies counted them) or inbound (as the callees' proxies did).
pub fn group_by<K: Ord>(
    edges: &[EdgeStat],
    inbound: bool,
    key: impl Fn(&EdgeStat) -> Option<K>,
) -> std::collections::BTreeMap<K, Totals> {
    let mut groups: std::collections::BTreeMap<K, Vec<&EdgeStat>> = Default::default();
    for e in edges.iter().filter(|e| e.inbound == inbound) {
        if let Some(k) = key(e) {
            groups.entry(k).or_default().push(e);
        }
    }
    (groups.into_iter())
        .map(|(k, v)| (k, Totals::of(v)))
        .collect()
}

/// The `q` quantile (0 < q ≤ 1) of the requests counted in `latency` (one count per bucket
/// of `LATENCY_BOUNDS`, then one above the last bound), in seconds: as Prometheus's
/// `histogram_quantile`, interpolated linearly within the bucket it falls in, the first
/// bucket from 0. A quantile in the bucket above the last bound is that bound. `None` when
/// nothing was counted.
pub fn quantile(latency: &[u64], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in latency.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = LATENCY_BOUNDS.get(i) else {
                return LATENCY_BOUNDS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    LATENCY_BOUNDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut latency = [0u64; LATENCY_BOUNDS.len() + 1];
        assert_eq!(quantile(&latency, 0.99), None);
        // 100 requests between 5ms and 10ms.
        latency[4] = 100;
        let p50 = quantile(&latency, 0.5).unwrap();
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        assert!((quantile(&latency, 0.99).unwrap() - 0.00995).abs() < 1e-9);
        // One slow request above the last bound: the p99 of 100 is still in the first bucket,
        // the p100 is the last bound.
        latency[4] = 99;
        latency[LATENCY_BOUNDS.len()] = 1;
        assert!(quantile(&latency, 0.99).unwrap() <= 0.01);
        assert_eq!(quantile(&latency, 1.0), Some(10.0));
    }
}
