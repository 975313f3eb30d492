//! How to run the control plane: the addresses, CA and certificate lifetimes `start` takes.

use crate::identity::ca::CaSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How often proxies send their golden-metrics Summary unless told otherwise.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// A mesh YAML file, or a folder of them.
    pub config: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long a proxy stays an endpoint after its stream ends (it may be reconnecting).
    pub registration_grace: Duration,
    /// The CA: operator files, or a root generated into a state directory.
    pub ca: CaSource,
    /// Lifetime of proxies' certificates.
    pub cert_ttl: Duration,
    /// Names (DNS or IP) in the control plane's own serving certificate.
    pub server_names: Vec<String>,
    /// Kubernetes mode: the namespaces whose `kubernetes.io/tls` Secrets Gateways may use,
    /// each watched on its own so that RBAC can be a Role per namespace; `None` watches
    /// them cluster-wide (a ClusterRole). docs/kubernetes.md.
    pub gateway_secret_namespaces: Option<Vec<String>>,
    /// The dashboard's own listener (docs/dashboard.md); `None` turns it off.
    pub dashboard_addr: Option<SocketAddr>,
    /// Whether the dashboard may shift traffic (`POST /api/shift`); read-only otherwise.
    pub dashboard_shift: bool,
    /// How often proxies send their golden-metrics Summary (`golden/`).
    pub summary_interval: Duration,
    /// The other replicas' HTTP ports (`host:port`; a name may resolve to several), whose
    /// golden-metrics windows the dashboard and `Stat` merge with this one's.
    pub peers: Vec<String>,
}

impl Options {
    /// Loopback ports, a generated CA under `state_dir`, 24 h certificates: what tests and
    /// local runs want.
    pub fn local(config: PathBuf, state_dir: PathBuf) -> Options {
        Options {
            config,
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            registration_grace: Duration::from_secs(10),
            ca: CaSource::StateDir(state_dir),
            cert_ttl: Duration::from_secs(24 * 3600),
            server_names: default_server_names(),
            gateway_secret_namespaces: None,
            dashboard_addr: Some(([127, 0, 0, 1], 0).into()),
            dashboard_shift: false,
            summary_interval: SUMMARY_INTERVAL,
            peers: Vec::new(),
        }
    }
}

/// `localhost` and the loopback addresses, plus the in-cluster names of the Service.
pub fn default_server_names() -> Vec<String> {
    [
        "localhost",
        "127.0.0.1",
        "::1",
        "trellis-control",
        "trellis-control.trellis-system",
        "trellis-control.trellis-system.svc",
        "trellis-control.trellis-system.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec()
}
