//! The request-path form of a `Snapshot`: host index, compiled matchers, and clusters with
//! live balancer state. Built off the request path, then swapped in whole.

use crate::balance::{Balancer, EndpointState, Ring};
use crate::delivery::{AppPorts, PortPolicies};
use crate::metrics::Metrics;
use crate::resilience::ClusterResilience;
use crate::routing::Matcher;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use trellis_config::model::{AppProtocol, HashKey, LbPolicy, MtlsMode};
use trellis_config::snapshot::{Cluster, Filter, Snapshot, TargetPort, Timeouts};
use trellis_identity::SpiffeId;

pub struct Runtime {
    pub snapshot: Arc<Snapshot>,
    hosts: HashMap<String, usize>,
    /// `clusterIP:port` to (service, port) indexes, for intercepted connections.
    by_addr: HashMap<SocketAddr, (usize, usize)>,
    pub services: Vec<RtService>,
    pub clusters: HashMap<String, Arc<RtCluster>>,
    /// Every Gateway's listeners by `namespace/name`, then by listener name.
    pub gateways: HashMap<String, HashMap<String, Vec<RtGatewayRoute>>>,
    /// Which AuthorizationPolicies protect each app port.
    pub port_policies: PortPolicies,
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
    pub has_http_route: bool,
    pub rules: Vec<RtRule>,
}

pub struct RtRule {
    /// `namespace/name` of the route, the `route` metric label.
    pub route: Arc<String>,
    pub matcher: Matcher,
    pub filters: Vec<Filter>,
    pub backends: Vec<RtBackend>,
    pub total_weight: u64,
    pub timeouts: Timeouts,
}

pub struct RtBackend {
    pub cluster: Arc<RtCluster>,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

pub struct RtCluster {
    pub name: Arc<String>,
    /// `name.namespace` of the cluster's Service, the `destination_service` label at a gateway.
    pub service_label: Arc<String>,
    pub config: Cluster,
    pub balancer: Balancer,
    pub hash_key: Option<HashKey>,
    pub resilience: ClusterResilience,
}

/// Stateful parts keyed by cluster name and endpoint address, so they survive swaps:
/// balancer position, endpoint stats and ejections, and the resilience state of each
/// feature whose settings did not change.
#[derive(Default)]
pub struct StateRegistry {
    clusters: Mutex<HashMap<String, ClusterShared>>,
    /// Whether this proxy has a mesh identity, and so originates mTLS to sidecars that have
    /// one too.
    pub originate_mtls: std::sync::atomic::AtomicBool,
    /// The TLS server name of every mTLS endpoint, by address, for the upstream connector
    /// (hyper's pool hands it only the URI).
    pub tls_names: TlsNames,
    /// The app's ports, which Service ports target on inbound.
    pub app_ports: AppPorts,
}

pub type TlsNames =
    Arc<arc_swap::ArcSwap<HashMap<SocketAddr, rustls_pki_types::ServerName<'static>>>>;

struct ClusterShared {
    name: Arc<String>,
    cursor: Arc<AtomicUsize>,
    endpoints: HashMap<SocketAddr, Arc<EndpointState>>,
    resilience: ClusterResilience,
}

impl StateRegistry {
    /// Builds the runtime for `snapshot`, reusing the state of unchanged clusters and endpoints.
    pub fn build(&self, snapshot: Arc<Snapshot>, metrics: &Metrics) -> Result<Runtime, String> {
        // Build-time only; the request path never touches this lock.
        let mut shared = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|name, state| {
            let keep = snapshot.clusters.contains_key(name);
            if !keep {
                state.resilience.retire();
                metrics.forget_cluster(&state.name);
            }
            keep
        });
        let originate = self
            .originate_mtls
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut clusters = HashMap::new();
        for (name, c) in &snapshot.clusters {
            let mtls = originate
                && snapshot
                    .services
                    .get(&c.service)
                    .is_some_and(|s| s.mtls_mode != MtlsMode::Disabled);
            let state = shared.entry(name.clone()).or_insert_with(|| ClusterShared {
                name: Arc::new(name.clone()),
                cursor: Arc::default(),
                endpoints: HashMap::new(),
                resilience: ClusterResilience::default(),
            });
            state
                .endpoints
                .retain(|addr, _| c.endpoints.iter().any(|e| e.address == *addr));
            let resilience =
                ClusterResilience::build(&state.name, &c.resilience, &state.resilience, metrics);
            if !resilience.same_outlier(&state.resilience) {
                // New or changed outlier settings judge every endpoint afresh.
                for ep in state.endpoints.values() {
                    ep.health.reset();
                }
            }
            state.resilience = resilience.clone();
            let endpoints: Vec<Arc<EndpointState>> = c
                .endpoints
                .iter()
                .filter_map(|e| {
                    let tls = match e.identity.as_deref().filter(|_| mtls) {
                        None => None,
                        Some(id) => match SpiffeId::parse(id).and_then(|id| id.server_name()) {
                            Ok(name) => Some(name),
                            Err(error) => {
                                // Skipped, not called in plaintext: the control plane says
                                // this endpoint runs as `id`, and without a server name that
                                // identity cannot be checked, so plaintext would be a silent
                                // downgrade. The rest of the cluster keeps serving, and the
                                // validator refuses such names in mesh files up front.
                                tracing::warn!(
                                    cluster = %name,
                                    endpoint = %e.address,
                                    workload = %e.workload,
                                    identity = %id,
                                    %error,
                                    "endpoint skipped: its identity has no TLS server name, so mTLS to it cannot be verified"
                                );
                                // Forget any earlier state, so its old server name leaves
                                // `tls_names` too.
                                state.endpoints.remove(&e.address);
                                return None;
                            }
                        },
                    };
                    let slot = state.endpoints.entry(e.address).or_insert_with(|| {
                        Arc::new(EndpointState::new(e.address, e.workload.clone()))
                    });
                    // Another identity at the same address is another endpoint: fresh state.
                    if slot.tls != tls {
                        let mut fresh = EndpointState::new(e.address, e.workload.clone());
                        fresh.tls = tls;
                        *slot = Arc::new(fresh);
                    }
                    Some(slot.clone())
                })
                .collect();
            let lb = &c.resilience.load_balancer;
            let ring = (lb.policy == LbPolicy::RingHash)
                .then(|| Ring::new(&endpoints.iter().map(|e| e.addr).collect::<Vec<_>>()));
            let balancer = Balancer {
                policy: lb.policy,
                endpoints,
                cursor: state.cursor.clone(),
                ring,
            };
            let rt = RtCluster {
                name: state.name.clone(),
                service_label: Arc::new(match c.service.split_once('/') {
                    Some((ns, n)) => format!("{n}.{ns}"),
                    None => c.service.clone(),
                }),
                config: c.clone(),
                balancer,
                hash_key: lb.hash_key.clone(),
                resilience,
            };
            clusters.insert(name.clone(), Arc::new(rt));
        }
        let names = shared
            .values()
            .flat_map(|c| c.endpoints.values())
            .filter_map(|e| Some((e.addr, e.tls.clone()?)))
            .collect();
        self.tls_names.store(Arc::new(names));
        drop(shared);

        let mut hosts = HashMap::new();
        let mut by_addr = HashMap::new();
        let mut services = Vec::new();
        for svc in snapshot.services.values() {
            let idx = services.len();
            let (n, ns) = (&svc.name, &svc.namespace);
            if *ns == snapshot.node.namespace {
                hosts.insert(n.clone(), idx);
            }
            for form in [
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc"),
                format!("{n}.{ns}.svc.cluster.local"),
            ] {
                hosts.insert(form, idx);
            }
            let mut ports = Vec::with_capacity(svc.ports.len());
            for (i, p) in svc.ports.iter().enumerate() {
                if let Some(ip) = svc.cluster_ip {
                    by_addr.insert(SocketAddr::new(ip, p.port), (idx, i));
                }
                let rules = p
                    .routes
                    .iter()
                    .map(|r| compile_rule(r, &clusters))
                    .collect::<Result<_, _>>()?;
                ports.push(RtPort {
                    port: p.port,
                    protocol: p.protocol,
                    target_port: p.target_port.clone(),
                    has_http_route: p.has_http_route,
                    rules,
                });
            }
            services.push(RtService {
                label: Arc::new(format!("{n}.{ns}")),
                serves: snapshot.inbound_services.contains(&format!("{ns}/{n}")),
                ports,
            });
        }
        let mut gateways = HashMap::new();
        for (key, g) in &snapshot.gateways {
            let mut listeners = HashMap::new();
            for l in &g.listeners {
                let routes = l
                    .routes
                    .iter()
                    .map(|r| {
                        Ok(RtGatewayRoute {
                            hostname: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                            rule: compile_rule(&r.rule, &clusters)?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                listeners.insert(l.name.clone(), routes);
            }
            gateways.insert(key.clone(), listeners);
        }
        let port_policies = PortPolicies::build(&snapshot, &self.app_ports);
        Ok(Runtime {
            port_policies,
            snapshot,
            hosts,
            by_addr,
            services,
            clusters,
            gateways,
        })
    }
}

fn compile_rule(
    r: &trellis_config::snapshot::RouteRule,
    clusters: &HashMap<String, Arc<RtCluster>>,
) -> Result<RtRule, String> {
    let mut backends = Vec::with_capacity(r.backends.len());
    for b in &r.backends {
        let cluster = clusters.get(&b.cluster).ok_or_else(|| {
            format!(
                "route {} sends to cluster {:?}, which the snapshot lacks",
                r.route, b.cluster
            )
        })?;
        backends.push(RtBackend {
            cluster: cluster.clone(),
            weight: b.weight,
            filters: b.filters.clone(),
        });
    }
    Ok(RtRule {
        route: Arc::new(r.route.clone()),
        matcher: Matcher::new(&r.matches).map_err(|e| format!("route {}: {e}", r.route))?,
        filters: r.filters.clone(),
        total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
        backends,
        timeouts: r.timeouts.clone(),
    })
}

impl Runtime {
    /// Finds the Service a `Host` names: `name` (this proxy's namespace), `name.ns`,
    /// `name.ns.svc` or `name.ns.svc.cluster.local`, case-insensitively, trailing dot allowed.
    pub fn service(&self, host: &str) -> Option<&RtService> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let idx = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(&host.to_ascii_lowercase())
        } else {
            self.hosts.get(host)
        };
        idx.map(|&i| &self.services[i])
    }
}

impl Runtime {
    /// The Service port whose `clusterIP:port` is `dst`, an intercepted connection's original
    /// destination.
    pub fn by_original_dst(&self, dst: SocketAddr) -> Option<(&RtService, &RtPort)> {
        let &(s, p) = self.by_addr.get(&dst)?;
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
