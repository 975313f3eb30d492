//! Scoping a snapshot: which Scopes apply to a node (found with `index.rs`), the Services
//! they let it call, and the clusters those Services' routes (and every Gateway's) send to.

use super::index::Index;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::{Call, ScopeSpec};
use crate::snapshot::{
    Filter, GatewayEntry, RouteRule, ScopeInfo, ServiceEntry, ServiceName, ServiceNames,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// Which Scopes apply to the node, for its proxy; `None` when none does: the proxy holds
/// every Service.
pub(super) fn scope_info(scopes: &[&Doc<ScopeSpec>]) -> Option<ScopeInfo> {
    if scopes.is_empty() {
        return None;
    }
    let mut by: Vec<String> = scopes.iter().map(|s| s.key()).collect();
    by.sort();
    Some(ScopeInfo { by })
}

/// Every Service of the mesh, which a scoped proxy refuses to call unless it holds it.
pub(super) fn service_names(cfg: &MeshConfig) -> ServiceNames {
    let mut services: Vec<ServiceName> = (cfg.services.iter())
        .map(|s| &s.object)
        .map(|o| ServiceName {
            name: o.metadata.name.clone(),
            namespace: o.metadata.namespace.clone(),
            cluster_ip: o.spec.cluster_ip(),
        })
        .collect();
    // Its hash must not depend on the order documents were loaded in.
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    ServiceNames { services }
}

/// The Services (by `namespace/name`) and clusters a proxy with `scope` holds: the Services
/// its Scopes let it call, every cluster their routes and mirrors send to, and every
/// Gateway's clusters (a gateway proxy routes by its Gateways, whatever its scope).
/// This runs for every scoped kind of proxy at every generation, so it looks up what the
/// Scopes name and never walks every Service of the mesh.
pub(super) fn in_scope<'a>(
    cfg: &MeshConfig,
    index: &Index,
    services: &'a BTreeMap<String, ServiceEntry>,
    gateways: &'a BTreeMap<String, GatewayEntry>,
    scope: &ScopeInfo,
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    let mut kept: BTreeSet<&'a str> = BTreeSet::new();
    let applying = (scope.by.iter()).filter_map(|key| Some(&cfg.scopes[index.scope(key)?]));
    for s in applying {
        for c in s.object.spec.calls(&s.object.metadata.namespace).flatten() {
            match c {
                Call::Service { namespace, name } => {
                    if let Some((k, _)) = services.get_key_value(&format!("{namespace}/{name}")) {
                        kept.insert(k);
                    }
                }
                Call::Namespace(n) => {
                    // Keys are `namespace/name`: those of `n` sort together after `n/`.
                    let prefix = format!("{n}/");
                    kept.extend(
                        (services
                            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded)))
                        .map(|(k, _)| k.as_str())
                        .take_while(|k| k.starts_with(&prefix)),
                    );
                }
            }
        }
    }
    let mut clusters = BTreeSet::new();
    let rules = kept
        .iter()
        .flat_map(|k| &services[*k].ports)
        .flat_map(|p| &p.routes)
        .chain(
            gateways
                .values()
                .flat_map(|g| &g.listeners)
                .flat_map(|l| &l.routes)
                .map(|r| &r.rule),
        );
    for rule in rules {
        add_clusters(rule, &mut clusters);
    }
    (kept, clusters)
}

fn add_clusters<'a>(rule: &'a RouteRule, out: &mut BTreeSet<&'a str>) {
    let mirrors = |filters: &'a [Filter]| {
        filters.iter().filter_map(|f| match f {
            Filter::RequestMirror { cluster, .. } => Some(cluster.as_str()),
            _ => None,
        })
    };
    out.extend(mirrors(&rule.filters));
    for b in &rule.backends {
        out.insert(b.cluster.as_str());
        out.extend(mirrors(&b.filters));
    }
}
