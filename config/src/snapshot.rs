//! The compiled, immutable config of one proxy. It is what `/config_dump` shows and what
//! the control plane streams; its `version` is a hash of its content.

use crate::model::{
    AppProtocol, AuthzAction, AuthzRule, HttpMethod, MtlsMode, OutboundMode, PathMatchType,
    PathNormalization, Resilience, TracingSettings, ValueMatchType,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Content hash of everything below; equal snapshots have equal versions.
    pub version: String,
    pub node: NodeInfo,
    pub mesh: MeshInfo,
    /// Every Service this proxy may call, by `namespace/name`. Shared, not copied, between
    /// the snapshots a proxy takes in one after another, so an update that changes one
    /// Service or cluster leaves the others' `Arc`s as they were.
    pub services: BTreeMap<String, Arc<ServiceEntry>>,
    /// Every cluster a route can send to, by cluster name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// The Services this workload serves (`namespace/name`), for inbound policy and metrics.
    pub inbound_services: Vec<String>,
    /// Every Gateway with the routes attached to it, by `namespace/name`; a proxy in gateway
    /// mode serves one of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateways: BTreeMap<String, GatewayEntry>,
    /// For a scoped proxy: every Service of the mesh, so that a call to one it does not hold
    /// is refused, never passed through. One resource shared by every scoped proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_names: Option<Arc<ServiceNames>>,
    /// For a proxy that serves a Gateway, and only for one that proved it may: the
    /// certificates its HTTPS listeners serve, by the `namespace/name` of their Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, Arc<TlsCertificate>>,
}

/// A Gateway listener's certificate. Serialized (`/config_dump`, `trellis proxy-config`)
/// without its key: what shows is what is public, the names and validity.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// The PEM chain, leaf first.
    #[serde(skip)]
    pub chain_pem: String,
    /// The PEM private key. Never serialized, never printed.
    #[serde(skip)]
    pub key_pem: String,
    /// The leaf's DNS names, lowercase (`*.example.com` for a wildcard).
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub serial: String,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("dns_names", &self.dns_names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// What a Gateway listener takes: plain HTTP, or TLS that it terminates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerProtocol {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

/// Every Service of the mesh by name and address, ordered by namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceNames {
    pub services: Vec<ServiceName>,
}

/// The snapshot-wide part: everything that is not a Service, a Cluster or a Gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshResource {
    pub node: NodeInfo,
    pub mesh: MeshInfo,
    pub inbound_services: Vec<String>,
}

/// A Gateway: its listeners, each with the HTTPRoute rules attached to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEntry {
    pub name: String,
    pub namespace: String,
    pub listeners: Vec<GatewayListenerEntry>,
    /// The Gateway's own sampling percentage for the traces that start at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_percentage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayListenerEntry {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// For HTTPS: the usable certificates (keys of `Snapshot::certificates`), the first the
    /// default for a client whose SNI none of them names. Empty when none is usable: the
    /// listener then fails every handshake, and its status says why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// In precedence order (most specific hostname first, then Gateway API match
    /// precedence): the first whose hostname and match both fit wins.
    pub routes: Vec<GatewayRoute>,
}

/// One route rule as a gateway listener serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRoute {
    /// The `Host` this rule requires: exact, or `*.suffix`; `None` takes any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub rule: RouteRule,
}

/// What of the proxy's identity shapes its snapshot. Only the namespace and labels do, so that
/// proxies of one kind share one snapshot (and one compilation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshInfo {
    pub trust_domain: String,
    pub mtls_mode: MtlsMode,
    /// Intercepted traffic to an address no Service's `clusterIP` names.
    #[serde(default)]
    pub outbound_traffic_policy: OutboundMode,
    /// How request paths are normalized, on every listener (the Mesh's `pathNormalization`).
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// The collector, and the sampling percentage of traces that start at this proxy: the
    /// highest override among the Services it serves, else the Mesh's.
    #[serde(default)]
    pub tracing: TracingSettings,
    /// What inbound accepts: the strictest mode among the Services this workload serves.
    pub inbound_mtls_mode: MtlsMode,
    /// AuthorizationPolicies that target a Service this workload serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<InboundPolicy>,
    /// Set when a Scope says what this proxy's workload calls: the snapshot then holds only
    /// those Services (and the clusters their routes use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeInfo>,
}

/// Which Scopes apply to a scoped proxy. The Services they leave out are those of the
/// snapshot's `service_names` that it does not hold; a call to one is refused with an error
/// that names these Scopes, rather than passed through as plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeInfo {
    /// The Scopes that apply, `namespace/name`.
    pub by: Vec<String>,
}

/// A mesh Service by name and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceName {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
}

/// One AuthorizationPolicy, as inbound enforces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPolicy {
    /// `namespace/name` of the policy.
    pub name: String,
    /// `namespace/name` of the Service it targets.
    pub service: String,
    pub action: AuthzAction,
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub name: String,
    pub namespace: String,
    /// Whether callers originate mTLS to this Service's sidecars: the Service's
    /// `trellis.dev/mtls-mode` annotation, else the Mesh's mode.
    pub mtls_mode: MtlsMode,
    pub ports: Vec<PortEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortEntry {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: AppProtocol,
    /// Where an endpoint's sidecar delivers this port on the app: a number, or a port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    /// Route rules in precedence order: the first that matches wins.
    pub routes: Vec<RouteRule>,
    /// Set when an HTTPRoute is attached: a request that matches no rule gets 404.
    pub has_http_route: bool,
}

/// One `(rule, match)` pair of an HTTPRoute, flattened so that precedence is a plain order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// `namespace/name` of the HTTPRoute, or `namespace/service` for the implicit default route.
    pub route: String,
    pub rule_index: usize,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    pub backends: Vec<WeightedBackend>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// A consumer route's (GEP-1426): the namespace of the HTTPRoute, which is not the
    /// Service's. It applies only to clients in that namespace, and for them it replaces the
    /// Service's own (producer) routes. `None`: a producer route, for every other client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    pub path_type: PathMatchType,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// Header names are lowercase; query parameter names are case-sensitive.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueMatchType,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub request: Option<Duration>,
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_request: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedBackend {
    pub cluster: String,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    #[serde(rename_all = "camelCase")]
    UrlRewrite {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathRewrite>,
    },
    #[serde(rename_all = "camelCase")]
    RequestRedirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathRewrite>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        status_code: u16,
    },
    #[serde(rename_all = "camelCase")]
    RequestMirror {
        cluster: String,
        percent: u32,
    },
    Cors(CorsPolicy),
    /// A `ClientRateLimit`: a token bucket per client address, for this rule.
    #[serde(rename_all = "camelCase")]
    ClientRateLimit {
        /// `namespace/name` of the ClientRateLimit.
        name: String,
        requests_per_second: f64,
        burst: u32,
    },
}

/// A route's CORS filter, as the proxy applies it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Lowercase; `https://*.example.com` is a wildcard, `*` any origin.
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds.
    pub max_age: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum PathRewrite {
    ReplaceFullPath(String),
    /// Replaces the part of the path that the rule's `PathPrefix` matched.
    ReplacePrefixMatch(String),
}

/// A set of endpoints reached the same way and under the same policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    /// `namespace/name` of the backend Service.
    pub service: String,
    pub port: u16,
    pub protocol: AppProtocol,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub resilience: Resilience,
    /// An ExternalName Service's cluster: the proxy resolves this name and port itself, and
    /// its addresses replace `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsTarget {
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `namespace/name` of the Workload (or registered proxy) behind it. The strings are
    /// `Arc<str>` because a proxy holds one `Endpoint` per endpoint of every cluster it may
    /// call, and the endpoints of one workload share their service account and identity
    /// (see `wire::cluster`): three `String`s were 72 bytes and three allocations each.
    pub workload: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Arc<str>>,
    /// The SPIFFE ID of the endpoint's sidecar, when it accepts mTLS; callers check the
    /// server certificate against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Arc<str>>,
    /// The endpoint is a Trellis sidecar's inbound listener, so opaque TCP to it starts with
    /// the transport preface naming the Service port (sidecar/src/preface.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sidecar: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}
