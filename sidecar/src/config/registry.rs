//! Building a `Runtime` from a snapshot, off the request path. The state that must survive a
//! swap (balancer position, endpoint latency and ejections, and each resilience feature whose
//! settings did not change) is kept here by cluster name and endpoint address.

use super::runtime::{
    Outside, RtBackend, RtCluster, RtGatewayListener, RtGatewayRoute, RtListenerTls, RtPort,
    RtRule, RtService, Runtime, ServiceIndex,
};
use crate::config::delivery::{AppPorts, PortPolicies};
use crate::config::routing::{MatchError, Matcher};
use crate::http::headers::HeaderEdits;
use crate::resilience::client_limit::ClientLimiter;
use crate::resilience::policy::ClusterResilience;
use crate::telemetry::metrics::Metrics;
use crate::upstream::balance::Balancer;
use crate::upstream::cluster::Upstream;
use crate::upstream::endpoint::EndpointState;
use crate::upstream::outlier::Outlier;
use crate::upstream::pool::SharedName;
use crate::upstream::ring::Ring;
use rustls_pki_types::ServerName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use trellis_config::model::{LbPolicy, MtlsMode};
use trellis_config::snapshot::{
    Cluster, Filter, ListenerProtocol, ServiceEntry, Snapshot, TlsCertificate,
};
use trellis_config::sorted::{Side, join};
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
    state: Mutex<State>,
    /// Whether this proxy has a mesh identity, and so originates mTLS to sidecars that have
    /// one too.
    pub originate_mtls: std::sync::atomic::AtomicBool,
    /// The app's ports, which Service ports target on inbound.
    pub app_ports: AppPorts,
    /// Each route rule's ClientRateLimit buckets, by limit, route and rule: a rebuild whose
    /// limit settings are unchanged keeps counting where the last one was.
    client_limits: Mutex<HashMap<String, Arc<ClientLimiter>>>,
}

type ClientLimits = HashMap<String, Arc<ClientLimiter>>;

#[derive(Default)]
struct State {
    clusters: HashMap<String, ClusterShared>,
    /// Each identity's server name, so that the endpoints of one workload share one: 10,000
    /// endpoints of a few hundred workloads hold a few hundred names, not 10,000.
    names: Interned,
    /// A build failed part way: the next one starts from nothing.
    dirty: bool,
}

/// Server names by the identity they encode, held weakly: a name lives while an endpoint
/// holds it.
#[derive(Default)]
struct Interned {
    by_identity: HashMap<String, Weak<ServerName<'static>>>,
    /// Entries left after the last sweep of dead ones.
    swept: usize,
}

impl Interned {
    fn name(&mut self, identity: &str) -> Result<SharedName, trellis_identity::SpiffeIdError> {
        if let Some(name) = self.by_identity.get(identity).and_then(Weak::upgrade) {
            return Ok(name);
        }
        let name = Arc::new(SpiffeId::parse(identity).and_then(|id| id.server_name())?);
        if self.by_identity.len() >= 2 * self.swept + 64 {
            self.by_identity.retain(|_, n| n.strong_count() > 0);
            self.swept = self.by_identity.len();
        }
        (self.by_identity).insert(identity.to_string(), Arc::downgrade(&name));
        Ok(name)
    }
}

struct ClusterShared {
    name: Arc<String>,
    cursor: Arc<AtomicUsize>,
    /// The state of each endpoint address, sorted by address: what the next build carries
    /// over. A sorted `Vec` costs 8 bytes an endpoint where a `HashMap` cost about 60.
    endpoints: Vec<Arc<EndpointState>>,
    resilience: ClusterResilience,
    outlier: Option<Arc<Outlier>>,
}

impl State {
    fn forget_cluster(&mut self, name: &str, metrics: &Metrics) {
        if let Some(c) = self.clusters.remove(name) {
            c.resilience.retire();
            metrics.forget_cluster(&c.name);
        }
    }
}

/// What changed between the runtime being served and the snapshot being built, found by
/// comparing the two snapshots' `Arc`s in one ordered walk.
struct Changes<'a> {
    /// Clusters that are new or whose content changed.
    clusters: HashSet<&'a str>,
    removed_clusters: Vec<&'a str>,
    /// Services that are new or whose content changed.
    services: HashSet<&'a str>,
    /// A Service was added or removed, so every index shifts.
    services_moved: bool,
}

impl<'a> Changes<'a> {
    fn between(prev: &'a Snapshot, next: &'a Snapshot) -> Changes<'a> {
        let mut clusters = HashSet::new();
        let mut removed_clusters = Vec::new();
        for d in diff(&prev.clusters, &next.clusters) {
            match d {
                Diff::Changed(name) => clusters.insert(name),
                Diff::Removed(name) => {
                    removed_clusters.push(name);
                    true
                }
            };
        }
        let mut services = HashSet::new();
        let mut services_moved = prev.services.len() != next.services.len();
        for d in diff(&prev.services, &next.services) {
            match d {
                Diff::Changed(name) => {
                    services_moved |= !prev.services.contains_key(name);
                    services.insert(name);
                }
                Diff::Removed(_) => services_moved = true,
            }
        }
        Changes {
            clusters,
            removed_clusters,
            services,
            services_moved,
        }
    }
}

enum Diff<'a> {
    /// In `next` and new or not the same `Arc` as in `prev`.
    Changed(&'a str),
    /// In `prev` only.
    Removed(&'a str),
}

/// The keys whose value differs between two maps of shared values, in one walk of both.
fn diff<'a, T>(
    prev: &'a BTreeMap<String, Arc<T>>,
    next: &'a BTreeMap<String, Arc<T>>,
) -> impl Iterator<Item = Diff<'a>> {
    join(prev, next).filter_map(|(k, side)| match side {
        Side::Left(_) => Some(Diff::Removed(k.as_str())),
        Side::Right(_) => Some(Diff::Changed(k.as_str())),
        Side::Both(a, b) => (!Arc::ptr_eq(a, b)).then_some(Diff::Changed(k.as_str())),
    })
}

impl StateRegistry {
    /// Builds the runtime for `snapshot`. With `prev`, the runtime being served, only what
    /// changed is built again: clusters whose content (or whose Service's mTLS mode)
    /// changed, the Services that changed or send to such a cluster, and the Service index
    /// only when a Service changed; everything else is shared with `prev`. Without it, or
    /// after a build that failed, everything is built.
    pub fn build(
        &self,
        snapshot: Arc<Snapshot>,
        prev: Option<&Runtime>,
        metrics: &Metrics,
    ) -> Result<Runtime, BuildError> {
        // Build-time only; the request path never touches this lock.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut limits = (self.client_limits.lock()).unwrap_or_else(|e| e.into_inner());
        let originate = self
            .originate_mtls
            .load(std::sync::atomic::Ordering::Relaxed);
        let prev = prev.filter(|p| !state.dirty && p.originate_mtls == originate);
        state.dirty = true;
        let changes = prev.map(|p| Changes::between(&p.snapshot, &snapshot));
        let mtls_of = |c: &Cluster| {
            originate
                && snapshot
                    .services
                    .get(&c.service)
                    .is_some_and(|s| s.mtls_mode != MtlsMode::Disabled)
        };

        let mut clusters: HashMap<Arc<str>, Arc<RtCluster>>;
        let mut rebuild: Vec<(&String, &Cluster)> = Vec::new();
        match (prev, &changes) {
            (Some(p), Some(ch)) => {
                for name in &ch.removed_clusters {
                    state.forget_cluster(name, metrics);
                }
                clusters = p.clusters.clone();
                for name in &ch.removed_clusters {
                    clusters.remove(*name);
                }
                // A cluster is built again when it changed, or when its Service's mTLS
                // mode changed whether calls to it originate mTLS.
                for name in &ch.clusters {
                    if let Some((name, c)) = snapshot.clusters.get_key_value(*name) {
                        rebuild.push((name, c));
                    }
                }
                if !ch.services.is_empty() {
                    for (name, c) in &snapshot.clusters {
                        let mtls_changed = ch.services.contains(c.service.as_str())
                            && !ch.clusters.contains(name.as_str())
                            && (clusters.get(name.as_str())).is_none_or(|rt| rt.mtls != mtls_of(c));
                        if mtls_changed {
                            rebuild.push((name, c));
                        }
                    }
                }
            }
            _ => {
                let gone: Vec<String> = (state.clusters.keys())
                    .filter(|n| !snapshot.clusters.contains_key(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    state.forget_cluster(&name, metrics);
                }
                clusters = HashMap::with_capacity(snapshot.clusters.len());
                rebuild.extend(snapshot.clusters.iter().map(|(n, c)| (n, &**c)));
            }
        }
        let mut rebuilt: Vec<&str> = Vec::new();
        for (name, c) in rebuild {
            let rt = build_cluster(&mut state, name, c, mtls_of(c), metrics);
            clusters.insert(Arc::from(name.as_str()), Arc::new(rt));
            rebuilt.push(name.as_str());
        }

        // Services: all of them, or those that changed or send to a rebuilt cluster.
        let same_mesh = prev.is_some_and(|p| {
            p.snapshot.node == snapshot.node
                && p.snapshot.inbound_services == snapshot.inbound_services
        });
        let reuse = match (prev, &changes) {
            (Some(p), Some(ch)) if same_mesh && !ch.services_moved => Some((p, ch)),
            _ => None,
        };
        // With the same Services in the same order, the index before says which of them
        // send to a rebuilt cluster (a Service whose routes changed is rebuilt anyway).
        let senders: HashSet<usize> = match reuse {
            Some((p, _)) => (rebuilt.iter())
                .filter_map(|c| p.index.senders.get(*c))
                .flatten()
                .copied()
                .collect(),
            None => HashSet::new(),
        };
        let mut services = Vec::with_capacity(snapshot.services.len());
        for (key, svc) in &snapshot.services {
            let idx = services.len();
            let kept = reuse.and_then(|(p, ch)| {
                let stale = (!ch.services.is_empty() && ch.services.contains(key.as_str()))
                    || senders.contains(&idx);
                (!stale).then(|| p.services[idx].clone())
            });
            let rt = match kept {
                Some(rt) => rt,
                None => Arc::new(build_service(&snapshot, svc, &clusters, &mut limits)?),
            };
            services.push(rt);
        }
        let index = match reuse {
            Some((p, ch)) if ch.services.is_empty() => p.index.clone(),
            _ => Arc::new(ServiceIndex::build(&snapshot)),
        };

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
                            rule: compile_rule(&r.rule, &clusters, &mut limits)?,
                        })
                    })
                    .collect::<Result<Vec<_>, BuildError>>()?;
                let held = prev.and_then(|p| p.gateways.get(key)?.get(&l.name)?.tls.as_ref());
                let tls = (l.protocol == ListenerProtocol::Https)
                    .then(|| listener_tls(&snapshot, key, l, held));
                listeners.insert(l.name.clone(), RtGatewayListener { routes, tls });
            }
            gateways.insert(key.clone(), listeners);
        }
        let port_policies = PortPolicies::build(&snapshot, &self.app_ports);
        // `reuse` means the same held Services (none added or removed), and an unchanged
        // names list is the same `Arc` (`Eq`, so compared by pointer).
        let outside = match reuse {
            Some((p, _))
                if p.snapshot.mesh.scope == snapshot.mesh.scope
                    && p.snapshot.service_names == snapshot.service_names =>
            {
                p.outside.clone()
            }
            _ => outside(&snapshot),
        };

        state.dirty = false;
        // Buckets no rule holds any more: the runtime being replaced holds the rest until it
        // goes, and a rule rebuilt with the same settings found its own above.
        limits.retain(|_, l| Arc::strong_count(l) > 1);
        Ok(Runtime {
            outside,
            port_policies,
            snapshot,
            index,
            services,
            clusters,
            gateways,
            originate_mtls: originate,
        })
    }
}

/// One cluster's runtime, carrying over the state of its endpoints that stay.
fn build_cluster(
    state: &mut State,
    name: &str,
    c: &Cluster,
    mtls: bool,
    metrics: &Metrics,
) -> RtCluster {
    let mut shared = state
        .clusters
        .remove(name)
        .unwrap_or_else(|| ClusterShared {
            name: Arc::new(name.to_string()),
            cursor: Arc::default(),
            endpoints: Vec::new(),
            resilience: ClusterResilience::default(),
            outlier: None,
        });
    let resilience =
        ClusterResilience::build(&shared.name, &c.resilience, &shared.resilience, metrics);
    let outlier = Outlier::carry(
        &shared.outlier,
        &c.resilience.outlier_detection,
        &shared.name,
        metrics,
    );
    let same_outlier = match (&outlier, &shared.outlier) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    let held = std::mem::take(&mut shared.endpoints);
    if !same_outlier {
        // New or changed outlier settings judge every endpoint afresh.
        for ep in &held {
            ep.health.reset();
        }
    }
    shared.resilience = resilience.clone();
    shared.outlier = outlier.clone();
    let mut endpoints: Vec<Arc<EndpointState>> = Vec::with_capacity(c.endpoints.len());
    for e in &c.endpoints {
        let tls = match e.identity.as_deref().filter(|_| mtls) {
            None => None,
            Some(id) => match state.names.name(id) {
                Ok(name) => Some(name),
                Err(error) => {
                    // Skipped, not called in plaintext: the control plane says this
                    // endpoint runs as `id`, and without a server name that identity cannot
                    // be checked, so plaintext would be a silent downgrade. The rest of the
                    // cluster keeps serving, and the validator refuses such names in mesh
                    // files up front.
                    tracing::warn!(
                        cluster = %name,
                        endpoint = %e.address,
                        workload = %e.workload,
                        identity = %id,
                        %error,
                        "endpoint skipped: its identity has no TLS server name, so mTLS to it cannot be verified"
                    );
                    // Its earlier state is not carried over: its connections close.
                    continue;
                }
            },
        };
        let slot = match held.binary_search_by_key(&e.address, |ep| ep.addr) {
            // Another identity (or another kind of peer) at the same address is another
            // endpoint: fresh state.
            Ok(i) if held[i].tls == tls && held[i].sidecar == e.sidecar => held[i].clone(),
            _ => {
                let mut fresh = EndpointState::new(e.address);
                fresh.tls = tls;
                fresh.sidecar = e.sidecar;
                Arc::new(fresh)
            }
        };
        endpoints.push(slot);
    }
    shared.endpoints = endpoints.clone();
    shared.endpoints.sort_by_key(|ep| ep.addr);
    // One state per address: a snapshot that lists an address twice balances over both
    // entries, and the first one's state is what the next build carries over.
    shared.endpoints.dedup_by_key(|ep| ep.addr);
    let lb = &c.resilience.load_balancer;
    let ring = (lb.policy == LbPolicy::RingHash)
        .then(|| Ring::new(&endpoints.iter().map(|e| e.addr).collect::<Vec<_>>()));
    let balancer = Balancer {
        policy: lb.policy,
        endpoints,
        cursor: shared.cursor.clone(),
        ring,
    };
    let rt = RtCluster {
        upstream: Upstream {
            name: shared.name.clone(),
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
        mtls,
    };
    state.clusters.insert(name.to_string(), shared);
    rt
}

fn build_service(
    snapshot: &Snapshot,
    svc: &ServiceEntry,
    clusters: &HashMap<Arc<str>, Arc<RtCluster>>,
    limits: &mut ClientLimits,
) -> Result<RtService, BuildError> {
    let (n, ns) = (&svc.name, &svc.namespace);
    let mine = snapshot.node.namespace.as_str();
    let mut ports = Vec::with_capacity(svc.ports.len());
    for p in &svc.ports {
        // GEP-1426: this proxy's namespace's consumer routes, if it has any for the port,
        // replace the Service's own; otherwise the Service's own (producer) routes serve.
        let consumer = p
            .routes
            .iter()
            .any(|r| r.consumer_namespace.as_deref() == Some(mine));
        let wanted = |r: &&trellis_config::snapshot::RouteRule| match &r.consumer_namespace {
            Some(c) => consumer && c == mine,
            None => !consumer,
        };
        // Sized up front: a `Result` collect grows from room for four rules, and most ports
        // have one.
        let mut rules = Vec::with_capacity(p.routes.len());
        for r in p.routes.iter().filter(wanted) {
            rules.push(compile_rule(r, clusters, limits)?);
        }
        ports.push(RtPort {
            port: p.port,
            protocol: p.protocol,
            target_port: p.target_port.clone(),
            rules,
        });
    }
    Ok(RtService {
        label: Arc::new(format!("{n}.{ns}")),
        serves: snapshot.inbound_services.contains(&format!("{ns}/{n}")),
        ports,
    })
}

impl ServiceIndex {
    fn build(snapshot: &Snapshot) -> ServiceIndex {
        let mut hosts = HashMap::new();
        let mut by_addr = HashMap::new();
        let mut senders: HashMap<String, Vec<usize>> = HashMap::new();
        for (idx, svc) in snapshot.services.values().enumerate() {
            let backends = (svc.ports.iter())
                .flat_map(|p| &p.routes)
                .flat_map(|r| &r.backends);
            for b in backends {
                let to = senders.entry(b.cluster.clone()).or_default();
                if to.last() != Some(&idx) {
                    to.push(idx);
                }
            }
            for form in host_forms(&svc.name, &svc.namespace, &snapshot.node.namespace) {
                hosts.insert(form, idx);
            }
            if let Some(ip) = svc.cluster_ip {
                for (i, p) in svc.ports.iter().enumerate() {
                    by_addr.insert(SocketAddr::new(ip, p.port), (idx, i));
                }
            }
        }
        ServiceIndex {
            hosts,
            by_addr,
            senders,
        }
    }
}

/// For a scoped proxy, the mesh Services its Scope leaves out (those of `service_names` that
/// it does not hold), by every name and address a call could use.
fn outside(snapshot: &Snapshot) -> Option<Arc<Outside>> {
    let scope = snapshot.mesh.scope.as_ref()?;
    let mut out = Outside {
        hosts: HashMap::new(),
        ips: HashMap::new(),
        scopes: Arc::new(scope.by.join(", ")),
    };
    let names = snapshot.service_names.iter().flat_map(|n| &n.services);
    let mut key = String::new();
    for o in names {
        key.clear();
        key.push_str(&o.namespace);
        key.push('/');
        key.push_str(&o.name);
        if snapshot.services.contains_key(&key) {
            continue;
        }
        let label = Arc::new(format!("{}.{}", o.name, o.namespace));
        for form in host_forms(&o.name, &o.namespace, &snapshot.node.namespace) {
            out.hosts.insert(form, label.clone());
        }
        if let Some(ip) = o.cluster_ip {
            out.ips.insert(ip, label);
        }
    }
    Some(Arc::new(out))
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
    clusters: &HashMap<Arc<str>, Arc<RtCluster>>,
    limits: &mut ClientLimits,
) -> Result<RtRule, BuildError> {
    let mut backends = Vec::with_capacity(r.backends.len());
    for b in &r.backends {
        let cluster =
            clusters
                .get(b.cluster.as_str())
                .ok_or_else(|| BuildError::MissingCluster {
                    route: r.route.clone(),
                    cluster: b.cluster.clone(),
                })?;
        backends.push(RtBackend {
            cluster: cluster.clone(),
            weight: b.weight,
            filters: b.filters.clone(),
            headers: HeaderEdits::compile(&b.filters),
            series: Default::default(),
            golden: Default::default(),
        });
    }
    Ok(RtRule {
        route: Arc::new(r.route.clone()),
        matcher: Matcher::new(&r.matches).map_err(|source| BuildError::Match {
            route: r.route.clone(),
            source,
        })?,
        filters: r.filters.clone(),
        headers: HeaderEdits::compile(&r.filters),
        total_weight: backends.iter().map(|b| u64::from(b.weight)).sum(),
        backends,
        timeouts: r.timeouts.clone(),
        client_limit: client_limit(r, limits),
        series: Default::default(),
    })
}

/// The rule's ClientRateLimit: the one it had if the settings are the same, else new.
fn client_limit(
    r: &trellis_config::snapshot::RouteRule,
    limits: &mut ClientLimits,
) -> Option<Arc<ClientLimiter>> {
    let (name, per_second, burst) = r.filters.iter().find_map(|f| match f {
        Filter::ClientRateLimit {
            name,
            requests_per_second,
            burst,
        } => Some((name, *requests_per_second, *burst)),
        _ => None,
    })?;
    let key = format!("{name}|{}|{}", r.route, r.rule_index);
    let l = (limits.entry(key))
        .and_modify(|l| {
            if !l.same_settings(per_second, burst) {
                *l = Arc::new(ClientLimiter::new(name.clone(), per_second, burst));
            }
        })
        .or_insert_with(|| Arc::new(ClientLimiter::new(name.clone(), per_second, burst)));
    Some(l.clone())
}

#[cfg(test)]
mod tests;

/// An HTTPS listener's TLS: the previous build's when its certificates are the same, else a
/// new server config. Keeping it keeps its session-ticket key, so clients resume across
/// config changes. A certificate that no longer loads (it expired since the config
/// was compiled) is left out with a warning; it never fails the build, since one listener's
/// certificate must not refuse the whole config.
fn listener_tls(
    snapshot: &Snapshot,
    gateway: &str,
    l: &trellis_config::snapshot::GatewayListenerEntry,
    held: Option<&RtListenerTls>,
) -> RtListenerTls {
    let certs: Vec<Arc<TlsCertificate>> = (l.certificates.iter())
        .filter_map(|k| snapshot.certificates.get(k).cloned())
        .collect();
    if let Some(h) = held
        && h.built_from.len() == certs.len()
        // The same `Arc` from the discovery stream, or equal content from a reloaded mesh file.
        && (h.built_from.iter().zip(&certs)).all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    {
        return RtListenerTls {
            config: h.config.clone(),
            built_from: certs,
        };
    }
    if certs.len() < l.certificates.len() || certs.is_empty() {
        tracing::warn!(%gateway, listener = %l.name, "this HTTPS listener holds no certificate for some of its certificateRefs; clients it cannot serve fail the handshake (see trellis status, or the Gateway's listener status)");
    }
    let now = trellis_identity::cert::unix_now();
    let loaded: Vec<(Arc<rustls::sign::CertifiedKey>, &[String])> = (certs.iter())
        .filter_map(|c| {
            match trellis_identity::serving::load_serving_pair(
                c.chain_pem.as_bytes(),
                c.key_pem.as_bytes(),
                now,
            ) {
                Ok((key, _)) => Some((key, &c.dns_names[..])),
                Err(e) => {
                    tracing::warn!(%gateway, listener = %l.name, serial = %c.serial, "certificate left out: {e}");
                    None
                }
            }
        })
        .collect();
    let sni = Arc::new(crate::tls::gateway::SniCerts::new(loaded));
    let config = crate::tls::gateway::server_config(sni)
        .expect("aws-lc-rs supports TLS 1.2 and 1.3, and a ticketer");
    RtListenerTls {
        config,
        built_from: certs,
    }
}
