//! Scopes: each entry of `calls` is one of the three forms and names a Service that exists,
//! and a selector, when given, selects something.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::MeshConfig;
use crate::model::{Call, parse_call};
use std::collections::HashSet;

pub(super) fn check_scopes(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    // Built once: a thousand Scopes of twenty calls each against a thousand Services were
    // twenty million comparisons with `find_service`.
    let services: HashSet<(&str, &str)> = (cfg.services.iter())
        .map(|s| {
            (
                s.object.metadata.namespace.as_str(),
                s.object.metadata.name.as_str(),
            )
        })
        .collect();
    for s in &cfg.scopes {
        let c = Origin::new(s);
        let ns = &s.object.metadata.namespace;
        if s.object
            .spec
            .selector
            .as_ref()
            .is_some_and(|l| l.is_empty())
        {
            c.doc(
                errs,
                "spec.selector",
                "an empty selector selects no workload; leave selector out to scope every workload of the namespace",
            );
        }
        for (i, entry) in s.object.spec.calls.iter().enumerate() {
            let field = format!("spec.calls[{i}]");
            match parse_call(ns, &entry.value) {
                None => c.at(
                    errs,
                    entry,
                    field,
                    format!(
                        "{:?} is not a Service: write name (a Service of {ns}), namespace/name, or namespace/* (every Service of a namespace)",
                        entry.value
                    ),
                ),
                Some(Call::Service { namespace, name }) => {
                    if !services.contains(&(namespace, name)) {
                        c.at(errs, entry, field, no_such_service(cfg, namespace, name));
                    }
                }
                Some(Call::Namespace(_)) => {}
            }
        }
    }
}

fn no_such_service(cfg: &MeshConfig, ns: &str, name: &str) -> String {
    let known: Vec<&str> = cfg
        .services
        .iter()
        .filter(|s| s.object.metadata.namespace == ns)
        .map(|s| s.object.metadata.name.as_str())
        .take(20)
        .collect();
    match known.as_slice() {
        [] => format!("no Service {ns}/{name}: namespace {ns} has no Services"),
        some => format!(
            "no Service {ns}/{name}; the Services of {ns} are: {}",
            some.join(", ")
        ),
    }
}
