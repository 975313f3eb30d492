//! Prometheus metrics with the names and labels of DESIGN.md's observability contract.
//! Label values are `Arc`s prepared at config build time, so recording allocates nothing.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub source_workload: Arc<String>,
    pub source_namespace: Arc<String>,
    pub destination_service: Arc<String>,
    pub route: Arc<String>,
    pub response_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    config_version: Family<VersionLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let config_version = Family::<VersionLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "trellis_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "trellis_request_duration_seconds",
            "Time from request received to response headers sent",
            durations.clone(),
        );
        registry.register(
            "trellis_config_version_info",
            "The config version being served (value 1)",
            config_version.clone(),
        );
        registry.register(
            "trellis_config_reloads",
            "Config loads, by result (applied or rejected)",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            config_version,
            reloads,
        }
    }
}

impl Metrics {
    pub fn record(&self, labels: &RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(labels).inc();
        self.durations
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn config_applied(&self, version: &str) {
        self.config_version.clear();
        self.config_version
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
        self.reloads
            .get_or_create(&ReloadLabels { result: "applied" })
            .inc();
    }

    pub fn config_rejected(&self) {
        self.reloads
            .get_or_create(&ReloadLabels { result: "rejected" })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
