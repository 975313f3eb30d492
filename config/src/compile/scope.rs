//! Scoping a snapshot: the Scopes that apply to a node, the Services they let it call, and
//! the clusters those Services' routes (and every Gateway's) send to.

use super::context::selects;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::{Call, ScopeSpec};
use crate::snapshot::{Filter, GatewayEntry, OutsideService, RouteRule, ScopeInfo, ServiceEntry};
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

/// What `scopes` tell the node's proxy: which Scopes apply and which Services it may not
/// call. `None` when no Scope applies: the proxy holds every Service.
pub(super) fn scope_info(cfg: &MeshConfig, scopes: &[&Doc<ScopeSpec>]) -> Option<ScopeInfo> {
    if scopes.is_empty() {
        return None;
    }
    // Parsed once into sets: this runs for every kind of proxy at every generation, against
    // every Service of the mesh.
    let (mut services, mut namespaces) = (HashSet::new(), HashSet::new());
    for s in scopes {
        for c in s.object.spec.calls(&s.object.metadata.namespace).flatten() {
            match c {
                Call::Service { namespace, name } => services.insert((namespace, name)),
                Call::Namespace(n) => namespaces.insert(n),
            };
        }
    }
    let allowed = |ns: &str, name: &str| namespaces.contains(ns) || services.contains(&(ns, name));
    let mut outside: Vec<OutsideService> = cfg
        .services
        .iter()
        .map(|s| &s.object)
        .filter(|o| !allowed(&o.metadata.namespace, &o.metadata.name))
        .map(|o| OutsideService {
            name: o.metadata.name.clone(),
            namespace: o.metadata.namespace.clone(),
            cluster_ip: o.spec.cluster_ip(),
        })
        .collect();
    // Versions must not depend on the order documents were loaded in.
    outside.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut by: Vec<String> = scopes.iter().map(|s| s.key()).collect();
    by.sort();
    Some(ScopeInfo { by, outside })
}

/// The Services (by `namespace/name`) and clusters a proxy with `scope` holds: the Services
/// it may call, every cluster their routes and mirrors send to, and every Gateway's clusters
/// (a gateway proxy routes by its Gateways, whatever its scope).
pub fn in_scope<'a>(
    services: &'a BTreeMap<String, ServiceEntry>,
    gateways: &'a BTreeMap<String, GatewayEntry>,
    scope: &ScopeInfo,
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    let outside: BTreeSet<(&str, &str)> = scope
        .outside
        .iter()
        .map(|o| (o.namespace.as_str(), o.name.as_str()))
        .collect();
    let kept: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| !outside.contains(&(s.namespace.as_str(), s.name.as_str())))
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
