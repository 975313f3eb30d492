//! Compiling a validated `MeshConfig` into the `Snapshot` of one proxy.
//!
//! Validation has already run, so lookups that fail here are skipped, never panicked on.

mod clusters;
mod context;
mod gateways;
mod routes;
mod scope;
mod services;

use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use crate::snapshot::*;
use context::{Ctx, selects};
use services::{compile_service, service_mtls_mode};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use crate::resources::fnv_hex;
pub use scope::in_scope;

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
    Common::new(cfg).into_snapshot(cfg, node)
}

/// What every proxy's snapshot shares: all Services with their routes, and all clusters.
/// Compiled once per config; only the node-specific part differs between proxies.
pub struct Common {
    pub services: BTreeMap<String, ServiceEntry>,
    pub clusters: BTreeMap<String, Cluster>,
    pub gateways: BTreeMap<String, GatewayEntry>,
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
        let gateways = gateways::compile_all(cx, &mut clusters);
        Common {
            services,
            clusters,
            gateways,
        }
    }

    /// The node-specific part of a snapshot: its namespace, the mesh settings, and the
    /// Services it serves.
    pub fn mesh_resource(cfg: &MeshConfig, node: &NodeIdentity) -> MeshResource {
        let serving: Vec<&Doc<ServiceSpec>> = cfg
            .services
            .iter()
            .filter(|s| {
                s.object.metadata.namespace == node.namespace
                    && selects(&s.object.spec.selector, &node.labels)
            })
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
        let authorization = cfg
            .authorization_policies
            .iter()
            .filter_map(|p| {
                let ns = &p.object.metadata.namespace;
                let service = format!("{ns}/{}", p.object.spec.target_ref.name.value);
                inbound_services.contains(&service).then(|| InboundPolicy {
                    name: p.key(),
                    service,
                    action: p.object.spec.action,
                    rules: p.object.spec.rules.clone(),
                })
            })
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
                scope: scope::scope_info(&scope::scopes_for(cfg, &node.namespace, &node.labels)),
            },
            inbound_services,
        }
    }

    /// Every Service of the mesh by name and address: the resource every scoped proxy holds.
    pub fn service_names(cfg: &MeshConfig) -> ServiceNames {
        scope::service_names(cfg)
    }

    /// The whole snapshot for `node`, taking the shared parts rather than copying them; a
    /// scoped node's holds only the Services it may call and the clusters they use.
    pub fn into_snapshot(self, cfg: &MeshConfig, node: &NodeIdentity) -> Snapshot {
        let m = Self::mesh_resource(cfg, node);
        let service_names = (m.mesh.scope.is_some()).then(|| Arc::new(Self::service_names(cfg)));
        let (services, clusters) = match &m.mesh.scope {
            None => (self.services, self.clusters),
            Some(scope) => {
                let (keep_services, keep_clusters) =
                    in_scope(cfg, &self.services, &self.gateways, scope);
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
