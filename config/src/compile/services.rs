//! Compiling each Service port: its HTTPRoutes in precedence order, or a route to itself.

use super::clusters::ensure_cluster;
use super::context::Ctx;
use super::routes::{compile_route, precedence};
use crate::gateway::is_gateway_ref;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use crate::snapshot::*;
use std::collections::BTreeMap;

/// A Service's `trellis.dev/mtls-mode` annotation (checked by validation), else the Mesh's mode.
pub(super) fn service_mtls_mode(cfg: &MeshConfig, svc: &Doc<ServiceSpec>) -> MtlsMode {
    svc.object
        .metadata
        .annotations
        .get(MTLS_MODE_ANNOTATION)
        .and_then(|v| MtlsMode::parse(v))
        .unwrap_or_else(|| {
            cfg.mesh
                .as_ref()
                .map(|m| m.object.spec.mtls.mode)
                .unwrap_or_default()
        })
}

/// A Service's `trellis.dev/trace-sampling-percentage` annotation (checked by validation).
pub(super) fn service_sampling_percentage(svc: &Doc<ServiceSpec>) -> Option<f64> {
    (svc.object.metadata.annotations)
        .get(TRACE_SAMPLING_ANNOTATION)
        .and_then(|v| parse_sampling_percentage(v))
}

pub(super) fn compile_service(
    cx: &Ctx<'_>,
    svc: &Doc<ServiceSpec>,
    clusters: &mut BTreeMap<String, Cluster>,
) -> ServiceEntry {
    let cfg = cx.cfg;
    let meta = &svc.object.metadata;
    let mut ports = Vec::new();
    for p in &svc.object.spec.ports {
        let protocol = p.app_protocol.unwrap_or_default();
        let attached: Vec<&Doc<HttpRouteSpec>> = cfg
            .http_routes
            .iter()
            .filter(|r| {
                // A parent that is a Gateway is the edge's, never this Service's, even when
                // the two share a name.
                r.object.spec.parent_refs.iter().any(|pr| {
                    !is_gateway_ref(pr)
                        && pr.name.value == meta.name
                        && pr
                            .namespace
                            .as_deref()
                            .unwrap_or(&r.object.metadata.namespace)
                            == meta.namespace
                        && pr.port.is_none_or(|port| port == p.port)
                })
            })
            .collect();
        // GEP-1426: a route in the Service's namespace is the producer's, for every client; a
        // route from another namespace is that namespace's consumer route, for its own
        // clients only (the proxy keeps the rules of its namespace, `consumer_namespace`).
        let (producer, consumer): (Vec<&Doc<HttpRouteSpec>>, Vec<&Doc<HttpRouteSpec>>) =
            (attached.iter()).partition(|r| r.object.metadata.namespace == meta.namespace);
        let mut routes = Vec::new();
        if producer.is_empty() || protocol.is_opaque() {
            // A Service with no HTTPRoute routes to itself.
            let cluster = ensure_cluster(cx, svc, p.port, None, clusters);
            routes.push(RouteRule {
                route: format!("{}/{}", meta.namespace, meta.name),
                rule_index: 0,
                matches: RouteMatch {
                    path_type: PathMatchType::PathPrefix,
                    path: "/".into(),
                    headers: vec![],
                    query_params: vec![],
                    method: None,
                },
                filters: vec![],
                backends: cluster
                    .into_iter()
                    .map(|c| WeightedBackend {
                        cluster: c,
                        weight: 1,
                        filters: vec![],
                    })
                    .collect(),
                timeouts: Timeouts::default(),
                consumer_namespace: None,
            });
        } else {
            // Gateway API breaks ties by creation time, then by namespace/name; files have no
            // creation time, so namespace/name decides.
            let mut sorted = producer.clone();
            sorted.sort_by_key(|r| r.key());
            for r in sorted {
                compile_route(cx, Some(svc), p.port, r, clusters, &mut routes);
            }
        }
        if !protocol.is_opaque() {
            let mut sorted = consumer.clone();
            sorted.sort_by_key(|r| r.key());
            for r in sorted {
                let from = routes.len();
                compile_route(cx, Some(svc), p.port, r, clusters, &mut routes);
                for rule in &mut routes[from..] {
                    rule.consumer_namespace = Some(r.object.metadata.namespace.clone());
                }
            }
        }
        // Stable: equal precedence keeps the namespace/name order above.
        routes.sort_by_key(|r| std::cmp::Reverse(precedence(&r.matches)));
        ports.push(PortEntry {
            port: p.port,
            name: p.name.clone(),
            protocol,
            target_port: p.target_port.as_ref().map(|t| match &t.value {
                IntOrString::Int(n) => TargetPort::Number(*n),
                IntOrString::Str(s) => TargetPort::Name(s.clone()),
            }),
            routes,
            has_http_route: !attached.is_empty() && !protocol.is_opaque(),
        });
    }
    ServiceEntry {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        mtls_mode: service_mtls_mode(cfg, svc),
        ports,
        cluster_ip: svc.object.spec.cluster_ip(),
    }
}
