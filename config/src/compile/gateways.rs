//! Compiling each Gateway listener's attached routes, in Gateway API precedence order.

use super::context::Ctx;
use super::routes::{compile_route, precedence};
use crate::gateway::{effective_hostnames, hostname_rank, is_gateway_ref, listener_attached};
use crate::gateway_tls::ResolvedCertificates;
use crate::mesh_config::Doc;
use crate::model::*;
use crate::snapshot::{
    Cluster, GatewayEntry, GatewayListenerEntry, GatewayRoute, ListenerProtocol,
};
use std::collections::BTreeMap;

/// Compiles every Gateway; backends get their clusters under their own policies.
pub(super) fn compile_all(
    cx: &Ctx<'_>,
    certificates: &ResolvedCertificates,
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
            let https = l.protocol.value == "HTTPS";
            listeners.push(GatewayListenerEntry {
                name: l.name.value.clone(),
                port: l.port,
                protocol: if https {
                    ListenerProtocol::Https
                } else {
                    ListenerProtocol::Http
                },
                certificates: (certificates.listeners.get(&g.key()))
                    .and_then(|ls| ls.get(&l.name.value))
                    .cloned()
                    .unwrap_or_default(),
                routes,
            });
        }
        out.insert(
            g.key(),
            GatewayEntry {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                listeners,
                sampling_percentage: (meta.annotations.get(TRACE_SAMPLING_ANNOTATION))
                    .and_then(|v| parse_sampling_percentage(v)),
            },
        );
    }
    out
}
