//! Services: ports, the mTLS-mode annotation, and how `clusterIP`, `type` and
//! `externalName` address the Service.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use std::collections::{HashMap, HashSet};

/// Checks each Service, and that no two share a clusterIP.
pub(super) fn check_services(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    let mut cluster_ips = HashMap::new();
    for s in &cfg.services {
        check_service(s, errs);
        if let (Some(ip), Some(span)) = (s.object.spec.cluster_ip(), &s.object.spec.cluster_ip)
            && let Some(first) = cluster_ips.insert(ip, s)
        {
            Origin::new(s).at(
                errs,
                span,
                "spec.clusterIP",
                format!(
                    "{ip} is already the clusterIP of Service {} ({}:{}); each Service needs its own",
                    first.key(),
                    first.file,
                    first.line
                ),
            );
        }
    }
}

fn check_service(s: &Doc<ServiceSpec>, errs: &mut ConfigErrors) {
    let c = Origin::new(s);
    if s.object.spec.ports.is_empty() {
        c.doc(errs, "spec.ports", "a Service needs at least one port");
    }
    let mut seen = HashSet::new();
    for (i, p) in s.object.spec.ports.iter().enumerate() {
        if !seen.insert(p.port) {
            c.doc(
                errs,
                format!("spec.ports[{i}].port"),
                format!("port {} is listed twice", p.port),
            );
        }
        if let Some(proto) = &p.protocol
            && proto != "TCP"
        {
            c.doc(
                errs,
                format!("spec.ports[{i}].protocol"),
                format!("{proto:?} is not supported; allowed: TCP"),
            );
        }
        if p.port == 0 {
            c.doc(errs, format!("spec.ports[{i}].port"), "must be 1-65535");
        }
    }
    if let Some(mode) = s.object.metadata.annotations.get(MTLS_MODE_ANNOTATION)
        && MtlsMode::parse(mode).is_none()
    {
        c.doc(
            errs,
            format!("metadata.annotations.{MTLS_MODE_ANNOTATION}"),
            format!("{mode:?} is not an mTLS mode; allowed: STRICT, PERMISSIVE, DISABLED"),
        );
    }
    check_service_addressing(&c, &s.object.spec, errs);
}

/// `clusterIP`, `type` and `externalName` agree with each other.
fn check_service_addressing(c: &Origin<'_>, spec: &ServiceSpec, errs: &mut ConfigErrors) {
    if let Some(ip) = &spec.cluster_ip
        && ip.value != "None"
        && ip.value.parse::<std::net::IpAddr>().is_err()
    {
        c.at(
            errs,
            ip,
            "spec.clusterIP",
            format!(
                "{:?} is not an IP address; use e.g. 10.96.0.10, or None",
                ip.value
            ),
        );
    }
    match (spec.kind, &spec.external_name) {
        (ServiceType::ExternalName, None) => c.doc(
            errs,
            "spec.externalName",
            "required for type: ExternalName: the DNS name to resolve, e.g. db.example.com",
        ),
        (ServiceType::ExternalName, Some(n)) => {
            let name = n.value.trim_end_matches('.');
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
                c.at(
                    errs,
                    n,
                    "spec.externalName",
                    format!(
                        "{:?} is not a DNS name: letters, digits, '-' and '.'",
                        n.value
                    ),
                );
            }
            if !spec.selector.is_empty() {
                c.doc(
                    errs,
                    "spec.selector",
                    "an ExternalName Service has no selector: its endpoints come from DNS",
                );
            }
        }
        (ServiceType::ClusterIP, Some(n)) => c.at(
            errs,
            n,
            "spec.externalName",
            "set only with type: ExternalName",
        ),
        (ServiceType::ClusterIP, None) => {}
    }
}
