//! Compiling an HTTPRoute's rules: matches, filters, timeouts and weighted backends, and the
//! Gateway API precedence that orders them.

use super::clusters::ensure_cluster;
use super::context::Ctx;
use crate::mesh_config::{Doc, backend_port, find_service};
use crate::model::*;
use crate::snapshot::{self, *};
use std::collections::BTreeMap;

/// The Gateway API order of precedence, as a key that sorts the winner last.
/// Exact paths beat regular expressions, which beat prefixes; a longer value beats a shorter
/// one; then a method match; then more header matches; then more query matches.
pub(super) fn precedence(m: &RouteMatch) -> (u8, usize, bool, usize, usize) {
    let kind = match m.path_type {
        PathMatchType::Exact => 2,
        PathMatchType::RegularExpression => 1,
        PathMatchType::PathPrefix => 0,
    };
    (
        kind,
        m.path.len(),
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// Appends one `RouteRule` per (rule, match) of `route`. `parent` is the Service the route
/// attaches to, or `None` for a Gateway, whose backends keep their own policies.
pub(super) fn compile_route(
    cx: &Ctx<'_>,
    parent: Option<&Doc<ServiceSpec>>,
    parent_port: u16,
    route: &Doc<HttpRouteSpec>,
    clusters: &mut BTreeMap<String, Cluster>,
    out: &mut Vec<RouteRule>,
) {
    let cfg = cx.cfg;
    let ns = &route.object.metadata.namespace;
    for (i, rule) in route.object.spec.rules.iter().enumerate() {
        let backends = rule
            .backend_refs
            .iter()
            .filter_map(|b| {
                let svc = find_service(cfg, b.namespace.as_deref().unwrap_or(ns), &b.name.value)?;
                let port = backend_port(svc, b.port, parent_port)?;
                let cluster = ensure_cluster(cx, svc, port, parent, clusters)?;
                let filters = b
                    .filters
                    .iter()
                    .filter_map(|f| compile_filter(cx, ns, parent_port, parent, f, clusters))
                    .collect();
                Some(WeightedBackend {
                    cluster,
                    weight: b.weight.unwrap_or(1),
                    filters,
                })
            })
            .collect::<Vec<_>>();
        let filters: Vec<Filter> = rule
            .filters
            .iter()
            .filter_map(|f| compile_filter(cx, ns, parent_port, parent, f, clusters))
            .collect();
        let timeouts = rule
            .timeouts
            .as_ref()
            // Gateway API: a zero duration disables the timeout.
            .map(|t| Timeouts {
                request: t.request.filter(|d| !d.is_zero()),
                backend_request: t.backend_request.filter(|d| !d.is_zero()),
            })
            .unwrap_or_default();
        let default_match = [HttpRouteMatch::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        for m in matches {
            out.push(RouteRule {
                route: route.key(),
                rule_index: i,
                matches: compile_match(m),
                filters: filters.clone(),
                backends: backends.clone(),
                timeouts: timeouts.clone(),
                consumer_namespace: None,
            });
        }
    }
}

fn compile_match(m: &HttpRouteMatch) -> RouteMatch {
    let (path_type, path) = match &m.path {
        Some(p) => (p.kind, p.value.value.clone()),
        None => (PathMatchType::PathPrefix, "/".to_string()),
    };
    // Gateway API: of several entries with equivalent names (header names compare without
    // case), only the first is considered and the others are ignored, for matching and so for
    // precedence too.
    let values = |v: &[crate::model::ValueMatch], lower: bool| {
        let mut out: Vec<snapshot::ValueMatch> = Vec::with_capacity(v.len());
        for h in v {
            let name = if lower {
                h.name.to_ascii_lowercase()
            } else {
                h.name.clone()
            };
            if out.iter().all(|seen| seen.name != name) {
                out.push(snapshot::ValueMatch {
                    name,
                    kind: h.kind,
                    value: h.value.value.clone(),
                });
            }
        }
        out
    };
    RouteMatch {
        path_type,
        path,
        headers: values(&m.headers, true),
        query_params: values(&m.query_params, false),
        method: m.method,
    }
}

fn compile_filter(
    cx: &Ctx<'_>,
    ns: &str,
    parent_port: u16,
    parent: Option<&Doc<ServiceSpec>>,
    f: &HttpRouteFilter,
    clusters: &mut BTreeMap<String, Cluster>,
) -> Option<Filter> {
    let cfg = cx.cfg;
    let modifier = |m: &crate::model::HeaderModifier| snapshot::HeaderModifier {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    let path = |p: &PathModifier| match p.kind {
        PathModifierType::ReplaceFullPath => {
            PathRewrite::ReplaceFullPath(p.replace_full_path.clone().unwrap_or_default())
        }
        PathModifierType::ReplacePrefixMatch => {
            PathRewrite::ReplacePrefixMatch(p.replace_prefix_match.clone().unwrap_or_default())
        }
    };
    Some(match f.kind {
        FilterType::RequestHeaderModifier => {
            Filter::RequestHeaderModifier(modifier(f.request_header_modifier.as_ref()?))
        }
        FilterType::ResponseHeaderModifier => {
            Filter::ResponseHeaderModifier(modifier(f.response_header_modifier.as_ref()?))
        }
        FilterType::URLRewrite => {
            let r = f.url_rewrite.as_ref()?;
            Filter::UrlRewrite {
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(path),
            }
        }
        FilterType::RequestRedirect => {
            let r = f.request_redirect.as_ref()?;
            Filter::RequestRedirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(path),
                port: r.port,
                status_code: r.status_code.unwrap_or(302),
            }
        }
        FilterType::RequestMirror => {
            let m = f.request_mirror.as_ref()?;
            let b = &m.backend_ref;
            let svc = find_service(cfg, b.namespace.as_deref().unwrap_or(ns), &b.name.value)?;
            let port = backend_port(svc, b.port, parent_port)?;
            let cluster = ensure_cluster(cx, svc, port, parent, clusters)?;
            Filter::RequestMirror {
                cluster,
                percent: m.percent.unwrap_or(100),
            }
        }
        FilterType::ExtensionRef => {
            let x = f.extension_ref.as_ref()?;
            let l = (cfg.client_rate_limits.iter()).find(|l| {
                l.object.metadata.namespace == ns && l.object.metadata.name == x.name.value
            })?;
            let spec = &l.object.spec;
            Filter::ClientRateLimit {
                name: l.key(),
                requests_per_second: spec.requests_per_second,
                burst: spec
                    .burst
                    .unwrap_or(spec.requests_per_second.ceil().min(f64::from(u32::MAX)) as u32)
                    .max(1),
            }
        }
        FilterType::CORS => {
            let c = f.cors.as_ref()?;
            Filter::Cors(CorsPolicy {
                allow_origins: c
                    .allow_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
                allow_credentials: c.allow_credentials.unwrap_or(false),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age: c.max_age.unwrap_or(5),
            })
        }
    })
}
