//! What the live view reads from the proxies: request counters and latency histograms from
//! `/metrics`, breaker states and endpoint health from `/clusters`, turned into per-second
//! rates, success rates and percentiles.

use super::client::Http;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Cumulative request figures of one proxy for one direction.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub total: f64,
    /// 2xx and 3xx answers.
    pub ok: f64,
    /// Cumulative histogram: `(le, count)` in ascending `le`.
    pub buckets: Vec<(f64, f64)>,
}

/// One cluster as a proxy's `/clusters` shows it.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// `namespace/name` of the backend Service.
    pub service: String,
    pub breaker: Option<String>,
    /// `(workload, health)` of each endpoint.
    pub endpoints: Vec<(String, String)>,
}

/// One proxy's state at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProxyScrape {
    pub counters: Counters,
    pub clusters: Vec<ClusterInfo>,
    pub ejections: f64,
    pub retries: f64,
}

/// `(name, labels, value)` of one line of Prometheus text.
pub type Series<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Splits `name{a="x",b="y"} value` into its parts; `None` for comments and other shapes.
pub fn sample(line: &str) -> Option<Series<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        // Label values here never hold an escaped quote: they are names, codes and numbers.
        let (val, after) = after.split_once('"')?;
        labels.push((key.trim_start_matches(','), val));
        rest = after;
    }
    Some((name, labels, value))
}

/// Sums the request counters and histogram of `direction` over every label set.
pub fn parse_counters(text: &str, direction: &str) -> Counters {
    let mut c = Counters::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if label("direction") != Some(direction) {
            continue;
        }
        match name {
            "trellis_requests_total" => {
                c.total += value;
                if label("response_code").is_some_and(|s| s.starts_with('2') || s.starts_with('3'))
                {
                    c.ok += value;
                }
            }
            "trellis_request_duration_seconds_bucket" => {
                let le = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                let e = buckets.entry(le.to_bits()).or_insert((le, 0.0));
                e.1 += value;
            }
            _ => {}
        }
    }
    c.buckets = buckets.into_values().collect();
    c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    c
}

fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter_map(sample)
        .filter(|(n, _, _)| *n == metric)
        .map(|(_, _, v)| v)
        .sum()
}

fn parse_clusters(json: &str) -> Vec<ClusterInfo> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let Some(cs) = v["clusters"].as_array() else {
        return Vec::new();
    };
    cs.iter()
        .map(|c| ClusterInfo {
            service: c["service"].as_str().unwrap_or("").to_string(),
            breaker: c["circuitBreaker"]["state"]
                .as_str()
                .map(|s| s.to_ascii_lowercase()),
            endpoints: c["endpoints"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| {
                            (
                                e["workload"].as_str().unwrap_or("").to_string(),
                                e["health"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Reads one proxy's admin port; a proxy that does not answer reads as empty.
pub async fn scrape(http: &Http, admin: SocketAddr, direction: &str) -> ProxyScrape {
    let metrics = http
        .get(admin, "/metrics")
        .await
        .map(|a| a.body)
        .unwrap_or_default();
    let clusters = http
        .get(admin, "/clusters")
        .await
        .map(|a| a.body)
        .unwrap_or_default();
    ProxyScrape {
        counters: parse_counters(&metrics, direction),
        clusters: parse_clusters(&clusters),
        ejections: metric_sum(&metrics, "trellis_outlier_ejections_total"),
        retries: metric_sum(&metrics, "trellis_upstream_retries_total"),
    }
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.total += other.total;
        self.ok += other.ok;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            total: self.total - earlier.total,
            ok: self.ok - earlier.ok,
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|b| b.0 == le)
                        .map_or(0.0, |b| b.1);
                    (le, n - before)
                })
                .collect(),
        }
    }

    pub fn success_percent(&self) -> Option<f64> {
        (self.total > 0.0).then(|| 100.0 * self.ok / self.total)
    }

    /// The `q` quantile in milliseconds, interpolated within its histogram bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.buckets.last()?.1;
        if count <= 0.0 {
            return None;
        }
        let rank = q * count;
        let mut prev = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some(prev.0 * 1000.0);
                }
                let share = if n > prev.1 {
                    (rank - prev.1) / (n - prev.1)
                } else {
                    1.0
                };
                return Some((prev.0 + (le - prev.0) * share) * 1000.0);
            }
            prev = (le, n);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP trellis_requests Requests handled by the proxy
trellis_requests_total{direction="inbound",source_workload="unknown",route="rides/x",response_code="200"} 90
trellis_requests_total{direction="inbound",source_workload="unknown",route="rides/x",response_code="503"} 10
trellis_requests_total{direction="outbound",source_workload="trip-0",route="rides/x",response_code="200"} 5
trellis_request_duration_seconds_bucket{direction="inbound",response_code="200",le="0.01"} 50
trellis_request_duration_seconds_bucket{direction="inbound",response_code="200",le="0.1"} 90
trellis_request_duration_seconds_bucket{direction="inbound",response_code="200",le="+Inf"} 90
trellis_request_duration_seconds_bucket{direction="inbound",response_code="503",le="0.01"} 0
trellis_request_duration_seconds_bucket{direction="inbound",response_code="503",le="0.1"} 0
trellis_request_duration_seconds_bucket{direction="inbound",response_code="503",le="+Inf"} 10
"#;

    #[test]
    fn counters_sum_one_direction_and_give_percentiles() {
        let c = parse_counters(TEXT, "inbound");
        assert_eq!(c.total, 100.0);
        assert_eq!(c.success_percent(), Some(90.0));
        // The median is the 50th of 100: the last request of the first bucket.
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(near(c.quantile_ms(0.5), 10.0), "{:?}", c.quantile_ms(0.5));
        // The 70th lies half way into the 10ms..100ms bucket.
        assert!(near(c.quantile_ms(0.7), 55.0), "{:?}", c.quantile_ms(0.7));
        let later = Counters {
            total: 150.0,
            ok: 140.0,
            buckets: c.buckets.iter().map(|&(le, n)| (le, n + 50.0)).collect(),
        };
        let d = later.since(&c);
        assert_eq!((d.total, d.ok), (50.0, 50.0));
        assert!(near(d.quantile_ms(0.99), 9.9), "{:?}", d.quantile_ms(0.99));
    }
}
