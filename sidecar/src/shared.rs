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
    pub upstreams: Upstreams,
    pub drain: Drain,
    pub app: AppClusters,
    pub labels: Labels,
    /// Where config comes from, for `/config_dump`.
    pub source: String,
    /// The mesh identity, when the proxy has a join token (control-plane mode).
    pub tls: Option<Arc<MeshTls>>,
}
