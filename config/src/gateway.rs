//! Gateways: checking `Gateway` documents and the HTTPRoute `parentRefs` that name them, and
//! compiling each Gateway listener's routes in Gateway API precedence order.

use crate::compile::{Ctx, compile_route, precedence};
use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig, find_gateway};
use crate::model::*;
use crate::snapshot::{Cluster, GatewayEntry, GatewayListenerEntry, GatewayRoute};
use crate::yaml::abs_line;
use std::collections::{BTreeMap, HashSet};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether a parentRef names a Gateway (`kind: Gateway`, group absent or the Gateway API's).
pub(crate) fn is_gateway_ref(p: &ParentRef) -> bool {
    p.kind.as_deref() == Some("Gateway") && p.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
}

/// Whether `host` (lowercase, no port) fits `pattern`: equal, or `*.suffix` with at least one
/// label in place of the `*`, as Gateway API listener hostnames match.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// The hostnames a route serves on a listener: the intersection of the listener's hostname
/// and the route's `hostnames`, each the more specific of the pair. `None` when they share
/// none (the route does not attach); `[None]` when neither constrains the host.
fn effective_hostnames(listener: Option<&str>, route: &[String]) -> Option<Vec<Option<String>>> {
    let out: Vec<Option<String>> = match listener {
        None if route.is_empty() => vec![None],
        None => route.iter().map(|h| Some(h.to_ascii_lowercase())).collect(),
        Some(l) if route.is_empty() => vec![Some(l.to_ascii_lowercase())],
        Some(l) => {
            let l = l.to_ascii_lowercase();
            route
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .filter_map(|r| {
                    if host_matches(&l, &r) {
                        Some(Some(r))
                    } else if host_matches(&r, &l) {
                        Some(Some(l.clone()))
                    } else {
                        None
                    }
                })
                .collect()
        }
    };
    (!out.is_empty()).then_some(out)
}

/// Exact hostnames beat wildcards, longer beats shorter, any hostname beats none.
fn hostname_rank(h: &Option<String>) -> (u8, usize) {
    match h {
        None => (0, 0),
        Some(h) if h.starts_with('*') => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

fn listener_attached(p: &ParentRef, l: &GatewayListener) -> bool {
    p.section_name.as_deref().is_none_or(|s| s == l.name.value)
        && p.port.is_none_or(|port| port == l.port)
}

/// Checks every Gateway and every HTTPRoute parentRef that names one.
pub(crate) fn validate(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    for g in &cfg.gateways {
        let at = |span: &serde_saphyr::Location| abs_line(g.line, span);
        if g.object.spec.listeners.is_empty() {
            errs.push(&g.file, g.line, "spec.listeners", "a Gateway needs at least one listener, e.g. [{name: http, port: 80, protocol: HTTP}]");
        }
        let mut names = HashSet::new();
        for (i, l) in g.object.spec.listeners.iter().enumerate() {
            let f = format!("spec.listeners[{i}]");
            let line = at(&l.name.referenced);
            if !names.insert(l.name.value.as_str()) {
                errs.push(
                    &g.file,
                    line,
                    format!("{f}.name"),
                    format!(
                        "listener {:?} is listed twice; names are unique per Gateway",
                        l.name.value
                    ),
                );
            }
            if l.protocol.value != "HTTP" {
                errs.push(&g.file, at(&l.protocol.referenced), format!("{f}.protocol"), format!("{:?} is not supported; allowed: HTTP (TLS at the gateway is not built yet)", l.protocol.value));
            }
            if l.port == 0 {
                errs.push(&g.file, line, format!("{f}.port"), "must be 1-65535");
            }
            if let Some(h) = &l.hostname {
                let bare = h.value.strip_prefix("*.").unwrap_or(&h.value);
                let ok = !bare.is_empty()
                    && bare.split('.').all(|label| {
                        !label.is_empty()
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !ok {
                    errs.push(&g.file, at(&h.referenced), format!("{f}.hostname"), format!("{:?} must be a DNS name like rides.example.com or *.example.com, without a port", h.value));
                }
            }
        }
    }
    for r in &cfg.http_routes {
        let ns = &r.object.metadata.namespace;
        for (i, p) in r.object.spec.parent_refs.iter().enumerate() {
            if !is_gateway_ref(p) {
                continue;
            }
            let f = format!("spec.parentRefs[{i}]");
            let line = abs_line(r.line, &p.name.referenced);
            let gns = p.namespace.as_deref().unwrap_or(ns);
            let Some(g) = find_gateway(cfg, gns, &p.name.value) else {
                errs.push(
                    &r.file,
                    line,
                    format!("{f}.name"),
                    format!("no Gateway {:?} in namespace {gns:?}", p.name.value),
                );
                continue;
            };
            let listeners: Vec<&GatewayListener> = g
                .object
                .spec
                .listeners
                .iter()
                .filter(|l| listener_attached(p, l))
                .collect();
            let names: Vec<&str> = g
                .object
                .spec
                .listeners
                .iter()
                .map(|l| l.name.value.as_str())
                .collect();
            if listeners.is_empty() {
                errs.push(&r.file, line, format!("{f}.sectionName"), format!("Gateway {:?} has no listener matching this sectionName/port; its listeners are {names:?}", p.name.value));
            } else if listeners.iter().all(|l| {
                effective_hostnames(
                    l.hostname.as_ref().map(|h| h.value.as_str()),
                    &r.object.spec.hostnames,
                )
                .is_none()
            }) {
                errs.push(&r.file, line, "spec.hostnames", format!("none of {:?} fits the hostname of a listener of Gateway {:?}; the route would serve nothing", r.object.spec.hostnames, p.name.value));
            }
        }
    }
}

/// Compiles every Gateway; backends get their clusters under their own policies.
pub(crate) fn compile_all(
    cx: &Ctx<'_>,
    clusters: &mut BTreeMap<String, Cluster>,
) -> BTreeMap<String, GatewayEntry> {
    let cfg = cx.cfg;
    let mut out = BTreeMap::new();
    for g in &cfg.gateways {
        let meta = &g.object.metadata;
        let mut routes_sorted: Vec<&Doc<HttpRouteSpec>> = cfg.http_routes.iter().collect();
        // Ties break by namespace/name, as for mesh routes (files have no creation time).
        routes_sorted.sort_by_key(|r| r.key());
        let mut listeners = Vec::new();
        for l in &g.object.spec.listeners {
            let mut routes = Vec::new();
            for r in &routes_sorted {
                let attached = r.object.spec.parent_refs.iter().any(|p| {
                    is_gateway_ref(p)
                        && p.name.value == meta.name
                        && p.namespace
                            .as_deref()
                            .unwrap_or(&r.object.metadata.namespace)
                            == meta.namespace
                        && listener_attached(p, l)
                });
                let hosts = effective_hostnames(
                    l.hostname.as_ref().map(|h| h.value.as_str()),
                    &r.object.spec.hostnames,
                );
                let (true, Some(hosts)) = (attached, hosts) else {
                    continue;
                };
                // Backends without a port take port 80, or their only port, as mesh routes do.
                let mut rules = Vec::new();
                compile_route(cx, None, 80, r, clusters, &mut rules);
                for h in hosts {
                    for rule in &rules {
                        routes.push(GatewayRoute {
                            hostname: h.clone(),
                            rule: rule.clone(),
                        });
                    }
                }
            }
            routes.sort_by_key(|r| {
                std::cmp::Reverse((hostname_rank(&r.hostname), precedence(&r.rule.matches)))
            });
            listeners.push(GatewayListenerEntry {
                name: l.name.value.clone(),
                port: l.port,
                routes,
            });
        }
        out.insert(
            g.key(),
            GatewayEntry {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                listeners,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hostnames_need_a_label_in_place_of_the_star() {
        assert!(host_matches("*.example.com", "rides.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("rides.example.com", "x.example.com"));
    }

    #[test]
    fn route_and_listener_hostnames_intersect_to_the_more_specific() {
        let r = vec!["rides.example.com".to_string(), "other.org".to_string()];
        assert_eq!(
            effective_hostnames(Some("*.example.com"), &r),
            Some(vec![Some("rides.example.com".to_string())])
        );
        assert_eq!(
            effective_hostnames(Some("rides.example.com"), &["*.example.com".into()]),
            Some(vec![Some("rides.example.com".to_string())])
        );
        assert_eq!(effective_hostnames(Some("a.org"), &r), None);
        assert_eq!(effective_hostnames(None, &[]), Some(vec![None]));
    }
}
