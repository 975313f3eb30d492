//! Building a `Runtime` from a snapshot, off the request path. The state that must survive a
//! swap (balancer position, endpoint latency and ejections, and each resilience feature whose
//! settings did not change) is kept here by cluster name and endpoint address.

use super::runtime::{
    Outside, RtBackend, RtCluster, RtGatewayRoute, RtPort, RtRule, RtService, Runtime,
};
use crate::config::delivery::{AppPorts, PortPolicies};
use crate::config::routing::{MatchError, Matcher};
use crate::resilience::policy::ClusterResilience;
use crate::telemetry::metrics::Metrics;
use crate::upstream::balance::Balancer;
use crate::upstream::cluster::Upstream;
use crate::upstream::endpoint::EndpointState;
use crate::upstream::outlier::Outlier;
use crate::upstream::pool::TlsNames;
use crate::upstream::ring::Ring;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use trellis_config::model::{LbPolicy, MtlsMode};
use trellis_config::snapshot::Snapshot;
use trellis_identity::SpiffeId;

/// A snapshot the proxy cannot run; the control plane hears it in the NACK.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("route {route} sends to cluster {cluster:?}, which the snapshot lacks")]
    MissingCluster { route: String, cluster: String },
    #[error("route {route}: {source}")]
    Match { route: String, source: MatchError },
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

struct ClusterShared {
    name: Arc<String>,
    cursor: Arc<AtomicUsize>,
    endpoints: HashMap<SocketAddr, Arc<EndpointState>>,
    resilience: ClusterResilience,
    outlier: Option<Arc<Outlier>>,
}

impl StateRegistry {
    /// Builds the runtime for `snapshot`, reusing the state of unchanged clusters and endpoints.
    pub fn build(&self, snapshot: Arc<Snapshot>, metrics: &Metrics) -> Result<Runtime, BuildError> {
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
                outlier: None,
            });
            // A scan per endpoint is quadratic: 10,000 endpoints would cost 10^8 compares.
            if c.endpoints.len() <= 16 {
                let listed = |a: &SocketAddr| c.endpoints.iter().any(|e| e.address == *a);
                state.endpoints.retain(|a, _| listed(a));
            } else {
                let listed: HashSet<SocketAddr> = c.endpoints.iter().map(|e| e.address).collect();
                state.endpoints.retain(|a, _| listed.contains(a));
            }
            let resilience =
                ClusterResilience::build(&state.name, &c.resilience, &state.resilience, metrics);
            let outlier = Outlier::carry(
                &state.outlier,
                &c.resilience.outlier_detection,
                &state.name,
                metrics,
            );
            let same_outlier = match (&outlier, &state.outlier) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            if !same_outlier {
                // New or changed outlier settings judge every endpoint afresh.
                for ep in state.endpoints.values() {
                    ep.health.reset();
                }
            }
            state.resilience = resilience.clone();
            state.outlier = outlier.clone();
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
                    let fresh = || {
                        let mut fresh = EndpointState::new(e.address, e.workload.clone());
                        fresh.tls = tls.clone();
                        fresh.sidecar = e.sidecar;
                        Arc::new(fresh)
                    };
                    let slot = state.endpoints.entry(e.address).or_insert_with(fresh);
                    // Another identity (or another kind of peer) at the same address is
                    // another endpoint: fresh state.
                    if slot.tls != tls || slot.sidecar != e.sidecar {
                        *slot = fresh();
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
                upstream: Upstream {
                    name: state.name.clone(),
                    protocol: c.protocol,
                    balancer,
                    hash_key: lb.hash_key.clone(),
                    outlier,
                },
                service_label: Arc::new(match c.service.split_once('/') {
                    Some((ns, n)) => format!("{n}.{ns}"),
                    None => c.service.clone(),
                }),
                service: c.service.clone(),
                port: c.port,
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
            for form in host_forms(n, ns, &snapshot.node.namespace) {
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
                    .collect::<Result<Vec<_>, BuildError>>()?;
                listeners.insert(l.name.clone(), routes);
            }
            gateways.insert(key.clone(), listeners);
        }
        let port_policies = PortPolicies::build(&snapshot, &self.app_ports);
        let outside = snapshot.mesh.scope.as_ref().map(|scope| {
            let mut out = Outside {
                hosts: HashMap::new(),
                ips: HashMap::new(),
                scopes: Arc::new(scope.by.join(", ")),
            };
            for o in &scope.outside {
                let label = Arc::new(format!("{}.{}", o.name, o.namespace));
                for form in host_forms(&o.name, &o.namespace, &snapshot.node.namespace) {
                    out.hosts.insert(form, label.clone());
                }
                if let Some(ip) = o.cluster_ip {
                    out.ips.insert(ip, label);
                }
            }
            out
        });
        Ok(Runtime {
            outside,
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

/// The names a `Host` may call Service `n` of namespace `ns` by: `n` itself only from the
/// proxy's own namespace `here`.
fn host_forms(n: &str, ns: &str, here: &str) -> impl Iterator<Item = String> {
    let short = (ns == here).then(|| n.to_string());
    short.into_iter().chain([
        format!("{n}.{ns}"),
        format!("{n}.{ns}.svc"),
        format!("{n}.{ns}.svc.cluster.local"),
    ])
}

fn compile_rule(
    r: &trellis_config::snapshot::RouteRule,
    clusters: &HashMap<String, Arc<RtCluster>>,
) -> Result<RtRule, BuildError> {
    let mut backends = Vec::with_capacity(r.backends.len());
    for b in &r.backends {
        let cluster = clusters
            .get(&b.cluster)
            .ok_or_else(|| BuildError::MissingCluster {
                route: r.route.clone(),
                cluster: b.cluster.clone(),
            })?;
        backends.push(RtBackend {
            cluster: cluster.clone(),
            weight: b.weight,
            filters: b.filters.clone(),
        });
    }
    Ok(RtRule {
        route: Arc::new(r.route.clone()),
        matcher: Matcher::new(&r.matches).map_err(|source| BuildError::Match {
            route: r.route.clone(),
            source,
        })?,
        filters: r.filters.clone(),
        total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
        backends,
        timeouts: r.timeouts.clone(),
    })
}
