//! Gateways: their listeners, and the HTTPRoute `parentRefs` that name a Gateway resolve to a
//! listener whose hostname the route shares.

use crate::error::ConfigErrors;
use crate::gateway::{effective_hostnames, is_gateway_ref, listener_attached};
use crate::mesh_config::{MeshConfig, find_gateway};
use crate::model::*;
use crate::yaml::abs_line;
use std::collections::HashSet;

/// Checks every Gateway and every HTTPRoute parentRef that names one.
pub(super) fn check_gateways(cfg: &MeshConfig, errs: &mut ConfigErrors) {
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
