//! Scoping a snapshot: the Scopes that apply to a node, the Services they let it call, and
//! the clusters those Services' routes (and every Gateway's) send to.

use super::context::selects;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::{Call, ScopeSpec};
use crate::snapshot::{
    Filter, GatewayEntry, RouteRule, ScopeInfo, ServiceEntry, ServiceName, ServiceNames,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The Scopes of a node's `namespace` that select it by its `labels`; if none does, those of
/// its namespace without a selector. Several apply together: the node may call what any
/// allows.
pub(super) fn scopes_for<'a>(
    cfg: &'a MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Doc<ScopeSpec>> {
    let in_ns = || {
        cfg.scopes
            .iter()
            .filter(|s| s.object.metadata.namespace == namespace)
    };
    let selecting: Vec<_> = in_ns()
        .filter(|s| (s.object.spec.selector.as_ref()).is_some_and(|sel| selects(sel, labels)))
        .collect();
    if !selecting.is_empty() {
        return selecting;
    }
    in_ns()
        .filter(|s| s.object.spec.selector.is_none())
        .collect()
}

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
pub fn in_scope<'a>(
    cfg: &MeshConfig,
    services: &'a BTreeMap<String, ServiceEntry>,
    gateways: &'a BTreeMap<String, GatewayEntry>,
    scope: &ScopeInfo,
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    // Parsed once into sets: this runs for every scoped kind of proxy at every generation,
    // against every Service of the mesh.
    let (mut named, mut namespaces) = (HashSet::new(), HashSet::new());
    let applying = (cfg.scopes.iter()).filter(|s| scope.by.binary_search(&s.key()).is_ok());
    for s in applying {
        for c in s.object.spec.calls(&s.object.metadata.namespace).flatten() {
            match c {
                Call::Service { namespace, name } => named.insert((namespace, name)),
                Call::Namespace(n) => namespaces.insert(n),
            };
        }
    }
    let kept: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| {
            namespaces.contains(s.namespace.as_str())
                || named.contains(&(s.namespace.as_str(), s.name.as_str()))
        })
        .map(|(k, _)| k.as_str())
        .collect();
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
