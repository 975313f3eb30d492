//! Compiling a validated `MeshConfig` into the `Snapshot` of one proxy.
//!
//! Validation has already run, so lookups that fail here are skipped, never panicked on.

mod clusters;
mod context;
mod gateways;
mod index;
mod routes;
mod scope;
mod services;

use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use crate::snapshot::*;
use context::Ctx;
use index::Index;
use services::{compile_service, service_mtls_mode, service_sampling_percentage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use crate::resources::fnv_hex;

/// The Services of `namespace` that select a workload with `labels`, as `name.namespace`
/// (the metric label form), in config order: the control plane's name for where a proxy's
/// calls come from.
pub fn services_selecting(
    cfg: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    (cfg.services.iter())
        .filter(|s| s.object.metadata.namespace == namespace)
        .filter(|s| context::selects(&s.object.spec.selector, labels))
        .map(|s| format!("{}.{namespace}", s.object.metadata.name))
        .collect()
}

/// Who the snapshot is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
}

/// Builds the snapshot for `node`. Deterministic: equal inputs give equal versions.
pub fn compile(cfg: &MeshConfig, node: &NodeIdentity) -> Snapshot {
    Common::new(cfg).into_snapshot(cfg, node, None)
}

/// What every proxy's snapshot shares: all Services with their routes, and all clusters.
/// Compiled once per config; only the node-specific part differs between proxies.
pub struct Common {
    pub services: BTreeMap<String, ServiceEntry>,
    pub clusters: BTreeMap<String, Cluster>,
    pub gateways: BTreeMap<String, GatewayEntry>,
    /// Every HTTPS listener's certificates, checked once; a snapshot holds only those of the
    /// Gateway its proxy serves (`into_snapshot`).
    pub certificates: crate::gateway_tls::ResolvedCertificates,
    /// What each kind of proxy looks up in the config, by key.
    index: Index,
}

impl Common {
    pub fn new(cfg: &MeshConfig) -> Common {
        let cx = &Ctx::new(cfg);
        let mut clusters = BTreeMap::new();
        let mut services = BTreeMap::new();
        for svc in &cfg.services {
            let entry = compile_service(cx, svc, &mut clusters);
            services.insert(svc.key(), entry);
        }
        let certificates = crate::gateway_tls::resolve(cfg, trellis_identity::cert::unix_now());
        let gateways = gateways::compile_all(cx, &certificates, &mut clusters);
        Common {
            services,
            clusters,
            gateways,
            certificates,
            index: Index::new(cfg),
        }
    }

    /// The node-specific part of a snapshot: its namespace, the mesh settings, and the
    /// Services it serves. `cfg` is the config this was built from.
    pub fn mesh_resource(&self, cfg: &MeshConfig, node: &NodeIdentity) -> MeshResource {
        let (ns, labels) = (&node.namespace, &node.labels);
        let serving: Vec<&Doc<ServiceSpec>> = (self.index.serving(cfg, ns, labels).into_iter())
            .map(|i| &cfg.services[i])
            .collect();
        let inbound_services: Vec<String> = serving.iter().map(|s| s.key()).collect();
        let mesh = cfg
            .mesh
            .as_ref()
            .map(|m| m.object.spec.clone())
            .unwrap_or_default();
        let inbound_mtls_mode = match serving.as_slice() {
            [] => mesh.mtls.mode,
            some => some
                .iter()
                .map(|s| service_mtls_mode(cfg, s))
                .fold(MtlsMode::Disabled, MtlsMode::strictest),
        };
        let authorization = (self.index.policies_of(&inbound_services).into_iter())
            .map(|i| {
                let p = &cfg.authorization_policies[i];
                let ns = &p.object.metadata.namespace;
                InboundPolicy {
                    name: p.key(),
                    service: format!("{ns}/{}", p.object.spec.target_ref.name.value),
                    action: p.object.spec.action,
                    rules: p.object.spec.rules.clone(),
                }
            })
            .collect();
        let scopes: Vec<&Doc<ScopeSpec>> = (self.index.scopes_for(cfg, ns, labels).into_iter())
            .map(|i| &cfg.scopes[i])
            .collect();
        MeshResource {
            node: NodeInfo {
                namespace: node.namespace.clone(),
            },
            mesh: MeshInfo {
                trust_domain: mesh.trust_domain,
                mtls_mode: mesh.mtls.mode,
                inbound_mtls_mode,
                authorization,
                outbound_traffic_policy: mesh.outbound_traffic_policy.mode,
                path_normalization: mesh.path_normalization,
                tracing: TracingSettings {
                    sampling_percentage: (serving.iter())
                        .filter_map(|s| service_sampling_percentage(s))
                        .reduce(f64::max)
                        .unwrap_or(mesh.tracing.sampling_percentage),
                    collector: mesh.tracing.collector,
                },
                scope: scope::scope_info(&scopes),
            },
            inbound_services,
        }
    }

    /// Whether a Service of `namespace` selects `labels`: whether a workload with them is
    /// some Service's endpoint. `cfg` is the config this was built from.
    pub fn is_endpoint(
        &self,
        cfg: &MeshConfig,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        !self.index.serving(cfg, namespace, labels).is_empty()
    }

    /// The Services (by `namespace/name`) and clusters that a proxy under `scope` holds: what
    /// its Scopes let it call, the clusters those Services' routes send to, and every
    /// Gateway's clusters. `cfg` is the config this was built from.
    pub fn in_scope(
        &self,
        cfg: &MeshConfig,
        scope: &ScopeInfo,
    ) -> (BTreeSet<&str>, BTreeSet<&str>) {
        scope::in_scope(cfg, &self.index, &self.services, &self.gateways, scope)
    }

    /// Every Service of the mesh by name and address: the resource every scoped proxy holds.
    pub fn service_names(cfg: &MeshConfig) -> ServiceNames {
        scope::service_names(cfg)
    }

    /// The whole snapshot for `node`, taking the shared parts rather than copying them; a
    /// scoped node's holds only the Services it may call and the clusters they use. A node
    /// that serves `gateway` (`namespace/name`), and has proved that it may, also holds that
    /// Gateway's certificates; no other snapshot holds a key.
    pub fn into_snapshot(
        self,
        cfg: &MeshConfig,
        node: &NodeIdentity,
        gateway: Option<&str>,
    ) -> Snapshot {
        let certificates = gateway
            .map(|g| self.certificates.of_gateway(g))
            .unwrap_or_default();
        let m = self.mesh_resource(cfg, node);
        let service_names = (m.mesh.scope.is_some()).then(|| Arc::new(Self::service_names(cfg)));
        let (services, clusters) = match &m.mesh.scope {
            None => (self.services, self.clusters),
            Some(scope) => {
                let (keep_services, keep_clusters) = self.in_scope(cfg, scope);
                let keep_services: BTreeSet<String> =
                    keep_services.into_iter().map(str::to_string).collect();
                let keep_clusters: BTreeSet<String> =
                    keep_clusters.into_iter().map(str::to_string).collect();
                let mut services = self.services;
                services.retain(|k, _| keep_services.contains(k));
                let mut clusters = self.clusters;
                clusters.retain(|k, _| keep_clusters.contains(k));
                (services, clusters)
            }
        };
        let mut snap = Snapshot {
            version: String::new(),
            node: m.node,
            mesh: m.mesh,
            services: services
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
            clusters: clusters
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
            inbound_services: m.inbound_services,
            gateways: self.gateways,
            service_names,
            certificates,
        };
        snap.version = content_version(&snap);
        // In a debug build, so in every test of every crate, each compiled snapshot also
        // proves that the discovery wire carries it whole.
        debug_assert_eq!(
            crate::resources::round_trip(&snap).ok().as_ref(),
            Some(&snap),
            "assemble(split(s)) must give s back"
        );
        snap
    }
}

/// The snapshot's version: a hash over its resources' keys and content hashes, so the
/// control plane can version a snapshot from shared, already-hashed parts.
pub fn content_version(snap: &Snapshot) -> String {
    let split = crate::resources::split(snap);
    crate::resources::version_of(split.iter().map(|(k, e)| (k, e.hash.as_str())))
}
