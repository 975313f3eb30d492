//! Gateways: their listeners, and the HTTPRoute `parentRefs` that name a Gateway resolve to a
//! listener whose hostname the route shares.

use crate::error::ConfigErrors;
use crate::gateway::{effective_hostnames, is_gateway_ref, listener_attached};
use crate::mesh_config::{Doc, MeshConfig, find_gateway};
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
            check_protocol(g, &f, l, errs);
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

/// A listener's protocol and its `tls`: HTTP without, HTTPS with certificates to terminate.
/// Whether those certificates are usable is the listener's own condition
/// (`gateway_tls.rs`), so that one bad certificate does not refuse the whole config.
fn check_protocol(g: &Doc<GatewaySpec>, f: &str, l: &GatewayListener, errs: &mut ConfigErrors) {
    let at = |span: &serde_saphyr::Location| abs_line(g.line, span);
    let line = at(&l.protocol.referenced);
    match (l.protocol.value.as_str(), &l.tls) {
        ("HTTP", None) => {}
        ("HTTP", Some(_)) => errs.push(&g.file, line, format!("{f}.tls"), "an HTTP listener takes no tls; use protocol: HTTPS to terminate TLS"),
        ("HTTPS", None) => errs.push(&g.file, line, format!("{f}.tls"), "an HTTPS listener needs tls: {mode: Terminate, certificateRefs: [{name: <a kubernetes.io/tls Secret>}]}"),
        ("HTTPS", Some(tls)) => {
            if let Some(m) = &tls.mode
                && m.value != "Terminate"
            {
                let why = if m.value == "Passthrough" {
                    "Passthrough (TLSRoute) is not built; Trellis terminates TLS at HTTPS listeners"
                } else {
                    "allowed: Terminate"
                };
                errs.push(&g.file, at(&m.referenced), format!("{f}.tls.mode"), format!("{:?}: {why}", m.value));
            }
            if tls.certificate_refs.is_empty() {
                errs.push(&g.file, line, format!("{f}.tls.certificateRefs"), "an HTTPS listener needs at least one certificateRef, a Secret of type kubernetes.io/tls");
            }
            for (i, r) in tls.certificate_refs.iter().enumerate() {
                let group_ok = r.group.as_deref().is_none_or(str::is_empty);
                let kind_ok = r.kind.as_deref().is_none_or(|k| k == "Secret");
                if !group_ok || !kind_ok {
                    errs.push(&g.file, at(&r.name.referenced), format!("{f}.tls.certificateRefs[{i}]"), format!("group {:?} kind {:?} is not supported; a certificateRef is a core Secret (group \"\", kind Secret)", r.group.as_deref().unwrap_or(""), r.kind.as_deref().unwrap_or("Secret")));
                }
            }
            if let Some(k) = tls.options.keys().next() {
                errs.push(&g.file, line, format!("{f}.tls.options"), format!("option {k:?} is not one Trellis reads; it reads no tls.options"));
            }
        }
        (other, _) => {
            let why = if other == "TLS" {
                " (TLS passthrough with TLSRoute is not built)"
            } else {
                ""
            };
            errs.push(&g.file, line, format!("{f}.protocol"), format!("{other:?} is not supported{why}; allowed: HTTP, HTTPS"));
        }
    }
}
