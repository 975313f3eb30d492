//! HTTPRoutes: their Service parents, matches, backends and the filters on rules and backends.
//! Gateway parents are checked with the Gateways (gateways.rs).

use super::filters::{check_filter, http_header_name_invalid};
use super::origin::Origin;
use super::references::check_backend;
use crate::error::ConfigErrors;
use crate::gateway::is_gateway_ref;
use crate::mesh_config::{Doc, MeshConfig, find_service};
use crate::model::*;

pub(super) fn check_routes(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    for r in &cfg.http_routes {
        check_route(cfg, r, errs);
    }
}

fn check_route(cfg: &MeshConfig, r: &Doc<HttpRouteSpec>, errs: &mut ConfigErrors) {
    let c = Origin::new(r);
    let ns = r.object.metadata.namespace.as_str();
    if r.object.spec.parent_refs.is_empty() {
        c.doc(
            errs,
            "spec.parentRefs",
            "an HTTPRoute needs a parent: a Service, e.g. [{kind: Service, name: billing}], or a Gateway, e.g. [{kind: Gateway, name: ride-gateway}]",
        );
    }
    let mut parent_port = 80;
    for (i, p) in r.object.spec.parent_refs.iter().enumerate() {
        let f = format!("spec.parentRefs[{i}]");
        if is_gateway_ref(p) {
            // Checked with the Gateways (gateways.rs).
            continue;
        }
        if p.kind.as_deref().unwrap_or("Service") != "Service"
            || !p.group.as_deref().unwrap_or("").is_empty()
        {
            c.at(
                errs,
                &p.name,
                format!("{f}.kind"),
                "allowed: {group: \"\", kind: Service} or {group: gateway.networking.k8s.io, kind: Gateway}",
            );
            continue;
        }
        let pns = p.namespace.as_deref().unwrap_or(ns);
        let Some(svc) = find_service(cfg, pns, &p.name.value) else {
            c.at(
                errs,
                &p.name,
                format!("{f}.name"),
                format!("no Service {:?} in namespace {pns:?}", p.name.value),
            );
            continue;
        };
        let ports: Vec<u16> = svc.object.spec.ports.iter().map(|p| p.port).collect();
        if let Some(port) = p.port {
            parent_port = port;
            match svc.object.spec.ports.iter().find(|sp| sp.port == port) {
                None => c.at(errs, &p.name, format!("{f}.port"), format!("Service {:?} has no port {port}; it has {ports:?}", p.name.value)),
                Some(sp) if sp.app_protocol.is_some_and(AppProtocol::is_opaque) => c.at(errs, &p.name, format!("{f}.port"),
                    format!("port {port} has appProtocol {}; HTTP routes cannot attach to an opaque port", sp.app_protocol.unwrap_or_default().name())),
                Some(_) => {}
            }
        } else if let Some(first) = ports.first() {
            parent_port = if ports.contains(&80) { 80 } else { *first };
        }
    }
    for (i, rule) in r.object.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            check_match(&c, &format!("{f}.matches[{j}]"), m, errs);
        }
        let prefix_match = rule.matches.as_deref().is_none_or(|ms| {
            ms.is_empty()
                || ms.iter().all(|m| {
                    m.path
                        .as_ref()
                        .is_none_or(|p| p.kind == PathMatchType::PathPrefix)
                })
        });
        for (j, flt) in rule.filters.iter().enumerate() {
            check_filter(
                cfg,
                &c,
                ns,
                parent_port,
                &format!("{f}.filters[{j}]"),
                flt,
                prefix_match,
                errs,
            );
        }
        let has_redirect = rule
            .filters
            .iter()
            .any(|f| f.kind == FilterType::RequestRedirect);
        if rule.backend_refs.is_empty() && !has_redirect {
            c.doc(
                errs,
                format!("{f}.backendRefs"),
                "a rule needs backendRefs or a RequestRedirect filter",
            );
        }
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bf = format!("{f}.backendRefs[{j}]");
            check_backend(cfg, &c, ns, parent_port, &bf, b, errs);
            if b.weight.is_some_and(|w| w > 1_000_000) {
                c.at(errs, &b.name, format!("{bf}.weight"), "must be 0-1000000");
            }
            for (k, flt) in b.filters.iter().enumerate() {
                if matches!(
                    flt.kind,
                    FilterType::RequestRedirect
                        | FilterType::RequestMirror
                        | FilterType::CORS
                        | FilterType::ExtensionRef
                ) {
                    let msg = format!(
                        "{:?} is only supported on a rule, not on a backendRef; allowed here: \
                         RequestHeaderModifier, ResponseHeaderModifier, URLRewrite",
                        flt.kind
                    );
                    c.at(errs, &b.name, format!("{bf}.filters[{k}].type"), msg);
                    continue;
                }
                check_filter(
                    cfg,
                    &c,
                    ns,
                    parent_port,
                    &format!("{bf}.filters[{k}]"),
                    flt,
                    prefix_match,
                    errs,
                );
            }
        }
    }
}

fn check_match(c: &Origin<'_>, f: &str, m: &HttpRouteMatch, errs: &mut ConfigErrors) {
    if let Some(p) = &m.path {
        match p.kind {
            PathMatchType::RegularExpression => {
                if let Err(e) = regex::Regex::new(&p.value.value) {
                    c.at(
                        errs,
                        &p.value,
                        format!("{f}.path.value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            _ if !p.value.value.starts_with('/') => c.at(
                errs,
                &p.value,
                format!("{f}.path.value"),
                "must start with '/'",
            ),
            _ => {}
        }
    }
    for (kind, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        for (i, v) in list.iter().enumerate() {
            if v.kind == ValueMatchType::RegularExpression
                && let Err(e) = regex::Regex::new(&v.value.value)
            {
                c.at(
                    errs,
                    &v.value,
                    format!("{f}.{kind}[{i}].value"),
                    format!("invalid regular expression: {e}"),
                );
            }
            if kind == "headers" && http_header_name_invalid(&v.name) {
                c.at(
                    errs,
                    &v.value,
                    format!("{f}.{kind}[{i}].name"),
                    format!("{:?} is not a valid header name", v.name),
                );
            }
        }
    }
}
