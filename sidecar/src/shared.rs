//! What every connection and request of a proxy reads: its bootstrap, config, metrics,
//! upstream pools, drain and identity. Read-only after start-up except through atomics and
//! the `ArcSwap` in `config`.

use crate::config::app_clusters::AppClusters;
use crate::config::bootstrap::Bootstrap;
use crate::config::store::ConfigStore;
use crate::drain::Drain;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::observe::Labels;
use crate::tls::MeshTls;
use crate::upstream::pool::Upstreams;
use std::sync::Arc;
use trellis_config::NodeIdentity;

/// Everything the request path shares. Read-only after start-up except through atomics and
/// the `ArcSwap` in `config`.
pub struct Shared {
    pub bootstrap: Bootstrap,
    pub node: NodeIdentity,
    pub config: ConfigStore,
    pub metrics: Metrics,
    pub upstreams: Arc<Upstreams>,
    pub drain: Drain,
    pub app: AppClusters,
    pub labels: Labels,
    /// The queue to the span exporter (`telemetry/export.rs`).
    pub spans: crate::telemetry::export::Spans,
    /// Where access-log lines go, without waiting (`telemetry/access_log.rs`).
    pub access_log: crate::telemetry::access_log::AccessLog,
    /// Where config comes from, for `/config_dump`.
    pub source: String,
    /// The mesh identity, when the proxy has a join token (control-plane mode).
    pub tls: Option<Arc<MeshTls>>,
}

impl Shared {
    /// Records a finished request: metrics, span and access-log line (`telemetry/observe.rs`).
    pub fn finish(
        &self,
        obs: crate::telemetry::observe::Observation,
        res: http::Response<crate::http::body::Body>,
    ) -> http::Response<crate::http::body::Body> {
        obs.finish(
            &self.metrics,
            &self.labels,
            &self.spans,
            &self.access_log,
            res,
        )
    }

    /// The percentage of traces sampled that start at this proxy, or `None` when no collector
    /// is configured (tracing off). At a Gateway, the Gateway's own override applies.
    pub fn sample_percent(
        &self,
        rt: &crate::config::runtime::Runtime,
        gateway: Option<&str>,
    ) -> Option<f64> {
        let t = &rt.snapshot.mesh.tracing;
        t.collector.as_ref()?;
        let own = gateway
            .and_then(|g| rt.snapshot.gateways.get(g))
            .and_then(|g| g.sampling_percentage);
        Some(own.unwrap_or(t.sampling_percentage))
    }

    /// This proxy's SPIFFE ID, once it holds a certificate.
    pub fn identity(&self) -> Option<String> {
        let info = self.tls.as_ref()?.info.load_full()?;
        Some(info.id.to_string())
    }
}
