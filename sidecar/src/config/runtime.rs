//! The request-path form of a `Snapshot`: host index, compiled matchers, and clusters with
//! live balancer state, and the lookups a request makes in it. `registry.rs` builds it off
//! the request path; it is then swapped in whole.

use crate::config::delivery::PortPolicies;
use crate::config::routing::Matcher;
use crate::http::errors::ProxyError;
use crate::http::headers::HeaderEdits;
use crate::resilience::policy::ClusterResilience;
use crate::upstream::cluster::Upstream;
use http::{HeaderMap, Method, Uri};
use rand::Rng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use trellis_config::model::AppProtocol;
use trellis_config::snapshot::{Filter, Snapshot, TargetPort, Timeouts};

#[cfg(test)]
mod tests;

pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    /// How a request finds its Service; shared with the runtime before while no Service
    /// changes.
    pub(super) index: Arc<ServiceIndex>,
    /// In `snapshot.services` order. Each is shared with the runtime before while neither
    /// the Service nor a cluster it sends to changes.
    pub services: Vec<Arc<RtService>>,
    /// Each shared with the runtime before while its cluster does not change.
    pub clusters: HashMap<Arc<str>, Arc<RtCluster>>,
    /// Every Gateway's listeners by `namespace/name`, then by listener name.
    pub gateways: HashMap<String, HashMap<String, RtGatewayListener>>,
    /// Which AuthorizationPolicies protect each app port.
    pub port_policies: PortPolicies,
    /// For a scoped proxy, the mesh Services its Scope leaves out.
    pub outside: Option<Arc<Outside>>,
    /// Whether the clusters were built to originate mTLS.
    pub(super) originate_mtls: bool,
}

/// The Services by each name a `Host` may call them by, and by `clusterIP:port`.
pub(super) struct ServiceIndex {
    /// Lowercase names to indexes into `Runtime::services`.
    pub(super) hosts: HashMap<String, usize>,
    /// `clusterIP:port` to (service, port) indexes, for intercepted connections.
    pub(super) by_addr: HashMap<SocketAddr, (usize, usize)>,
    /// Each cluster to the Services whose routes send to it, so that a build that rebuilds
    /// one cluster finds the Services to rebuild without asking every Service.
    pub(super) senders: HashMap<String, Vec<usize>>,
}

/// The mesh Services a Scope leaves out, so that a call to one is refused with a reason
/// instead of passed through: by each name `Runtime::service` would know them by, and by
/// clusterIP. Values are `name.namespace`.
pub struct Outside {
    pub(super) hosts: HashMap<String, Arc<String>>,
    pub(super) ips: HashMap<IpAddr, Arc<String>>,
    /// The Scopes that apply, for the error: `rides/trip, rides/default`.
    pub scopes: Arc<String>,
}

/// A Gateway listener: its routes in precedence order and, for HTTPS, its TLS.
pub struct RtGatewayListener {
    pub routes: Vec<RtGatewayRoute>,
    pub tls: Option<RtListenerTls>,
}

/// An HTTPS listener's server config, and the certificates it was built from: a build whose
/// certificates are the same keeps the config, and with it the session tickets and cache
/// that let clients resume.
pub struct RtListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub(super) built_from: Vec<Arc<trellis_config::snapshot::TlsCertificate>>,
}

/// A route rule as a gateway listener serves it: a `Host` requirement, then the rule.
pub struct RtGatewayRoute {
    /// Lowercase; `*.suffix` is a wildcard. `None` takes any host.
    pub hostname: Option<String>,
    pub rule: RtRule,
}

pub struct RtService {
    /// `name.namespace`, the `destination_service` metric label.
    pub label: Arc<String>,
    /// This workload is one of the Service's endpoints (it selects this proxy's labels).
    pub serves: bool,
    pub ports: Vec<RtPort>,
}

pub struct RtPort {
    pub port: u16,
    pub protocol: AppProtocol,
    /// Where the app listens for this port, for requests arriving inbound.
    pub target_port: Option<TargetPort>,
    pub rules: Vec<RtRule>,
}

pub struct RtRule {
    /// `namespace/name` of the route, the `route` metric label.
    pub route: Arc<String>,
    pub matcher: Matcher,
    pub filters: Vec<Filter>,
    /// The header modifiers among `filters`, parsed once.
    pub headers: HeaderEdits,
    pub backends: Vec<RtBackend>,
    pub total_weight: u64,
    pub timeouts: Timeouts,
    /// The rule's ClientRateLimit, if a filter names one.
    pub client_limit: Option<Arc<crate::resilience::client_limit::ClientLimiter>>,
    /// The request series of the mesh requests this rule routes (its Service and route
    /// labels), made by the first one (`telemetry/series.rs`).
    pub series: std::sync::OnceLock<Arc<crate::telemetry::series::RequestSeries>>,
}

pub struct RtBackend {
    pub cluster: Arc<RtCluster>,
    pub weight: u32,
    pub filters: Vec<Filter>,
    pub headers: HeaderEdits,
    /// At a gateway, the request series of the requests this backend takes (its Service is
    /// the destination), made by the first one.
    pub series: std::sync::OnceLock<Arc<crate::telemetry::series::RequestSeries>>,
    /// The golden counts of the requests this backend takes (`telemetry/golden.rs`).
    pub golden: std::sync::OnceLock<Arc<crate::telemetry::golden::GoldenCounts>>,
}

pub struct RtCluster {
    /// Its name, endpoints, balancer and outlier detection: what one try of a request reads.
    pub upstream: Upstream,
    /// `name.namespace` of the cluster's Service, the `destination_service` label at a gateway.
    pub service_label: Arc<String>,
    /// The cluster's Service as `namespace/name`, and its port.
    pub service: String,
    pub port: u16,
    /// The layers around the tries: faults, rate limit, bulkhead, breaker, timeout, retry.
    pub resilience: ClusterResilience,
    /// Calls to its endpoints originate mTLS (to those with an identity).
    pub mtls: bool,
}

impl Runtime {
    /// Finds the Service a `Host` names: `name` (this proxy's namespace), `name.ns`,
    /// `name.ns.svc` or `name.ns.svc.cluster.local`, case-insensitively, trailing dot allowed.
    pub fn service(&self, host: &str) -> Option<&RtService> {
        lookup(&self.index.hosts, host).map(|&i| &*self.services[i])
    }
}

/// `host` in a map keyed by lowercase names, case-insensitively and with or without a
/// trailing dot; allocates only for a host with capitals.
fn lookup<'a, V>(map: &'a HashMap<String, V>, host: &str) -> Option<&'a V> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        map.get(&host.to_ascii_lowercase())
    } else {
        map.get(host)
    }
}

impl Runtime {
    /// For a destination this proxy has no Service for: the mesh Service (`name.namespace`)
    /// that the Host or the original destination names, if this proxy's Scope left it out.
    pub fn outside_scope(&self, host: Option<&str>, dst: Option<IpAddr>) -> Option<&Arc<String>> {
        let out = self.outside.as_ref()?;
        let by_host = host.and_then(|h| lookup(&out.hosts, h));
        by_host.or_else(|| dst.and_then(|ip| out.ips.get(&ip)))
    }

    /// The refusal of a call to `service`, which `outside_scope` found.
    pub fn not_in_scope(&self, service: &str) -> ProxyError {
        ProxyError::NotInScope {
            service: service.to_string(),
            scopes: self
                .outside
                .as_ref()
                .map(|o| o.scopes.to_string())
                .unwrap_or_default(),
        }
    }

    /// The Service port whose `clusterIP:port` is `dst`, an intercepted connection's original
    /// destination.
    pub fn by_original_dst(&self, dst: SocketAddr) -> Option<(&RtService, &RtPort)> {
        let &(s, p) = self.index.by_addr.get(&dst)?;
        let svc = &self.services[s];
        Some((svc, &svc.ports[p]))
    }
}

impl RtService {
    /// The port a request names; without one, port 80 if the Service has it, else its only port.
    pub fn port(&self, port: Option<u16>) -> Option<&RtPort> {
        match port {
            Some(p) => self.ports.iter().find(|e| e.port == p),
            None => self
                .ports
                .iter()
                .find(|e| e.port == 80)
                .or(match self.ports.as_slice() {
                    [only] => Some(only),
                    _ => None,
                }),
        }
    }
}

impl RtPort {
    /// The winning rule for a request, or `None` when no rule matches. Rules arrive sorted by
    /// Gateway API precedence, so the first match wins.
    pub fn route(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<&RtRule> {
        self.rules
            .iter()
            .find(|r| r.matcher.matches(method, uri, headers))
    }
}

impl RtRule {
    /// Chooses a backend by weight; `None` when every weight is zero.
    pub fn pick_backend(&self) -> Option<&RtBackend> {
        match self.backends.as_slice() {
            [only] if only.weight > 0 => Some(only),
            _ if self.total_weight == 0 => None,
            backends => {
                let mut n = rand::rng().random_range(0..self.total_weight);
                backends.iter().find(|b| {
                    let w = u64::from(b.weight);
                    if n < w {
                        true
                    } else {
                        n -= w;
                        false
                    }
                })
            }
        }
    }
}
