//! What every connection and request of a proxy reads: its bootstrap, config, metrics,
//! upstream pools, drain and identity. Read-only after start-up except through atomics and
//! the `ArcSwap` in `config`.

use crate::config::bootstrap::Bootstrap;
use crate::config::store::ConfigStore;
use crate::inbound::clusters::AppClusters;
use crate::listen::drain::Drain;
use crate::telemetry::metrics::Metrics;
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
    pub upstreams: Upstreams,
    pub drain: Drain,
    pub app: AppClusters,
    pub labels: Labels,
    /// Where config comes from, for `/config_dump`.
    pub source: String,
    /// The mesh identity, when the proxy has a join token (control-plane mode).
    pub tls: Option<Arc<MeshTls>>,
}

/// Metric label values that never change, made once.
pub struct Labels {
    pub workload: Arc<String>,
    pub namespace: Arc<String>,
    pub unknown: Arc<String>,
    pub inbound_service: Arc<String>,
    /// `destination_service` of intercepted traffic passed through under `ALLOW_ANY`.
    pub passthrough: Arc<String>,
}
