//! References to Services: a policy's `targetRef` and a route's `backendRef` name a Service,
//! and a port, that exist.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::{MeshConfig, backend_port, find_service};
use crate::model::*;

pub(super) fn check_target(
    cfg: &MeshConfig,
    c: &Origin<'_>,
    ns: &str,
    t: Option<&TargetRef>,
    errs: &mut ConfigErrors,
) {
    let Some(t) = t else {
        c.doc(
            errs,
            "spec.targetRef",
            "required: the Service this policy applies to, e.g. {kind: Service, name: billing}",
        );
        return;
    };
    if t.kind != "Service" {
        c.at(
            errs,
            &t.name,
            "spec.targetRef.kind",
            format!("{:?} is not supported; allowed: Service", t.kind),
        );
    } else if find_service(cfg, t.namespace.as_deref().unwrap_or(ns), &t.name.value).is_none() {
        c.at(
            errs,
            &t.name,
            "spec.targetRef.name",
            format!("no Service {:?} in namespace {ns:?}", t.name.value),
        );
    }
}

pub(super) fn check_backend(
    cfg: &MeshConfig,
    c: &Origin<'_>,
    ns: &str,
    parent_port: u16,
    f: &str,
    b: &BackendRef,
    errs: &mut ConfigErrors,
) {
    if b.kind.as_deref().unwrap_or("Service") != "Service"
        || !b.group.as_deref().unwrap_or("").is_empty()
    {
        c.at(
            errs,
            &b.name,
            format!("{f}.kind"),
            "allowed: {group: \"\", kind: Service}",
        );
        return;
    }
    let bns = b.namespace.as_deref().unwrap_or(ns);
    match find_service(cfg, bns, &b.name.value) {
        None => c.at(
            errs,
            &b.name,
            format!("{f}.name"),
            format!("no Service {:?} in namespace {bns:?}", b.name.value),
        ),
        Some(svc) if backend_port(svc, b.port, parent_port).is_none() => {
            let ports: Vec<u16> = svc.object.spec.ports.iter().map(|p| p.port).collect();
            c.at(
                errs,
                &b.name,
                format!("{f}.port"),
                format!(
                    "Service {:?} has no such port; set port to one of {ports:?}",
                    b.name.value
                ),
            );
        }
        Some(_) => {}
    }
}
