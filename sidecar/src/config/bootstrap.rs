//! The bootstrap file: who this proxy is, where it listens, and where its config comes from.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod load;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootstrap {
    pub workload: WorkloadInfo,
    #[serde(default)]
    pub listeners: Listeners,
    pub app: App,
    /// Standalone mode: compile this mesh YAML locally and watch it. Relative to the bootstrap file.
    #[serde(default)]
    pub mesh_file: Option<PathBuf>,
    /// Control-plane mode: subscribe to trellis-control at this address (docs/protocol.md).
    #[serde(default)]
    pub control_plane: Option<ControlPlane>,
    #[serde(default)]
    pub limits: Limits,
    /// How this proxy's connections to endpoints are made.
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// Opaque TCP forwards for local mode, where no original destination names the Service.
    #[serde(default)]
    pub tcp: Vec<TcpForward>,
    /// One JSON line per request on stdout.
    #[serde(default)]
    pub access_log: bool,
    #[serde(default)]
    pub protocol_detection: ProtocolDetection,
    /// Gateway mode: also serve this Gateway's listeners to clients outside the mesh.
    #[serde(default)]
    pub gateway: Option<GatewayMode>,
    /// The address other proxies reach this one's inbound listener at, announced to the
    /// control plane. Needed when the inbound listener binds a wildcard (0.0.0.0): in
    /// Kubernetes it is the pod IP.
    #[serde(default)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// The app's own HTTP probes, keyed `<container>/<liveness|readiness|startup>`, that the
    /// admin port replays at `/app-health/<container>/<kind>` (docs/kubernetes.md). The
    /// injector moves kubelet's probes there, since under STRICT mTLS kubelet cannot reach
    /// the app port.
    #[serde(default)]
    pub app_probes: BTreeMap<String, AppProbe>,
}

/// One of the app's HTTP or gRPC probes, as the pod spec had it before injection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub port: u16,
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// `HTTP`, `HTTPS` (not verified, as kubelet does not verify it) or `GRPC` (the gRPC
    /// health check, plaintext, as kubelet's).
    #[serde(default = "default_probe_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub http_headers: Vec<ProbeHeader>,
    /// `GRPC`: the service name the health check asks about ("" is the whole server).
    #[serde(default)]
    pub service: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ProbeHeader {
    pub name: String,
    pub value: String,
}

fn default_probe_path() -> String {
    "/".into()
}
fn default_probe_scheme() -> String {
    "HTTP".into()
}

/// How the outbound and inbound listeners tell HTTP from opaque TCP (docs/interception.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolDetection {
    /// How long to wait for a client's first bytes. A client that sends too little by then
    /// (server-speaks-first: MySQL, SMTP, a banner) is opaque TCP.
    #[serde(default = "default_detect_timeout", with = "duration")]
    pub timeout: Duration,
    /// Destination ports that are opaque TCP without detection, as if their Service port said
    /// `appProtocol: tcp`.
    #[serde(default = "default_opaque_ports")]
    pub opaque_ports: Vec<u16>,
    /// When the original destination is known and the client has sent nothing for this long,
    /// also connect upstream: a server that speaks first then decides opaque TCP at once, and
    /// its banner is not held back until `timeout`. A client that speaks first never causes
    /// such a connection. At `timeout` or above, it is off.
    #[serde(default = "default_early_connect", with = "duration")]
    pub early_connect: Duration,
}

impl Default for ProtocolDetection {
    fn default() -> Self {
        ProtocolDetection {
            timeout: default_detect_timeout(),
            opaque_ports: default_opaque_ports(),
            early_connect: default_early_connect(),
        }
    }
}

/// Long enough that an HTTP client, which writes its request as soon as it connects, has
/// spoken; short enough to keep a banner's first byte within a few milliseconds.
fn default_early_connect() -> Duration {
    Duration::from_millis(2)
}

fn default_detect_timeout() -> Duration {
    Duration::from_millis(200)
}

/// Server-speaks-first and binary protocols on their well-known ports: SMTP (25, 587), MySQL
/// (3306), Galera (4444), PostgreSQL (5432), Redis (6379), Elasticsearch transport (9300),
/// memcached (11211).
fn default_opaque_ports() -> Vec<u16> {
    vec![25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
}

/// Which Gateway this proxy serves, and where each of its listeners binds locally.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayMode {
    /// `name` (in the workload's namespace) or `namespace/name` of a `Gateway` document.
    pub name: String,
    /// Gateway listener name (its `spec.listeners[].name`) to the local address it binds.
    pub listen: BTreeMap<String, SocketAddr>,
    /// How many proxies in front of the gateway (a cloud load balancer, a CDN) append to
    /// `X-Forwarded-For` and can be believed: the client is the address the first of them
    /// saw. `0`, the default, believes nothing a client sends (`outbound/forwarded.rs`).
    #[serde(default)]
    pub trusted_proxies: u8,
}

impl GatewayMode {
    /// `namespace/name` of the Gateway, the key of `Snapshot::gateways`.
    pub fn key(&self, workload_namespace: &str) -> String {
        if self.name.contains('/') {
            self.name.clone()
        } else {
            format!("{workload_namespace}/{}", self.name)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadInfo {
    pub name: String,
    #[serde(default = "trellis_config::model::default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Where the proxy listens. The defaults are DESIGN.md's ports; the admin port binds to
/// localhost unless told otherwise, since it can drain the proxy and force breakers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listeners {
    #[serde(default = "default_outbound")]
    pub outbound: SocketAddr,
    #[serde(default = "default_inbound")]
    pub inbound: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            outbound: default_outbound(),
            inbound: default_inbound(),
            admin: default_admin(),
        }
    }
}

fn default_outbound() -> SocketAddr {
    ([127, 0, 0, 1], 15001).into()
}
fn default_inbound() -> SocketAddr {
    ([0, 0, 0, 0], 15006).into()
}
fn default_admin() -> SocketAddr {
    ([127, 0, 0, 1], 15000).into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    pub address: std::net::IpAddr,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    pub address: String,
    /// PEM roots the control plane's serving certificate chains to. Required.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// The same roots given inline (Kubernetes mode takes them from `TRELLIS_CA_BUNDLE`);
    /// used instead of reading `ca_bundle`.
    #[serde(skip)]
    pub ca_bundle_pem: Option<String>,
    /// A join token (`trellis-control token create`): with it the proxy gets a mesh
    /// certificate and speaks mTLS; without it, it stays plaintext.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpForward {
    pub listen: SocketAddr,
    /// `name[.namespace][:port]` of a Service port with `appProtocol: tcp`.
    pub service: String,
}

/// How connections to endpoints are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamSettings {
    /// HTTP/1.1 requests to another sidecar over mTLS ride one multiplexed HTTP/2 connection
    /// to it, which the peer turns back into HTTP/1.1 for its app (docs/concepts.md).
    #[serde(default = "default_multiplex")]
    pub multiplex: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            multiplex: default_multiplex(),
        }
    }
}

fn default_multiplex() -> bool {
    true
}

/// Protective limits on downstream connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Total size of a request's header section before it is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How long a client may take to send a request's headers (slowloris guard).
    #[serde(default = "default_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM or `POST /drain`.
    #[serde(default = "default_drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Open connections per traffic listener (outbound, inbound, gateway, `tcp`) before it
    /// stops accepting and new ones wait in the kernel backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            drain_timeout: default_drain_timeout(),
            connect_timeout: default_connect_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
// A backstop against running out of descriptors, not a tuning knob: far above what one pod
// serves, and below the 1M LimitNOFILE that container runtimes commonly set.
fn default_max_connections() -> usize {
    100_000
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        trellis_config::duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The control plane's CA bundle cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error(
        "cannot read caBundle {path}: {source}; copy the ca.pem from trellis-control's --state-dir"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("caBundle is required: the mesh CA's ca.pem")]
    Missing,
}

impl ControlPlane {
    /// The PEM roots the control plane's certificate must chain to: inline, or read from the
    /// bootstrap's `caBundle` file.
    pub fn ca_pem(&self) -> Result<Vec<u8>, CaBundleError> {
        match (&self.ca_bundle_pem, &self.ca_bundle) {
            (Some(pem), _) => Ok(pem.clone().into_bytes()),
            (None, Some(path)) => std::fs::read(path).map_err(|source| CaBundleError::Read {
                path: path.clone(),
                source,
            }),
            (None, None) => Err(CaBundleError::Missing),
        }
    }
}
