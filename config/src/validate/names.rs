//! Names: each document's name is a DNS name and unique per kind and namespace.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig};
use std::collections::HashSet;

pub(super) fn check_unique(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    fn dupes<S>(kind: &str, docs: &[Doc<S>], errs: &mut ConfigErrors) {
        let mut seen = HashSet::new();
        for d in docs {
            if !seen.insert(d.key()) {
                Origin::new(d).doc(
                    errs,
                    "metadata.name",
                    format!(
                        "duplicate {kind} {}; names are unique per namespace",
                        d.key()
                    ),
                );
            }
            let name = &d.object.metadata.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                Origin::new(d).doc(
                    errs,
                    "metadata.name",
                    format!("{name:?} must be a DNS name: lowercase letters, digits, '-' and '.'"),
                );
            }
        }
    }
    dupes("Service", &cfg.services, errs);
    dupes("Workload", &cfg.workloads, errs);
    dupes("HTTPRoute", &cfg.http_routes, errs);
    dupes("ResiliencePolicy", &cfg.resilience_policies, errs);
    dupes("AuthorizationPolicy", &cfg.authorization_policies, errs);
    dupes("Gateway", &cfg.gateways, errs);
    dupes("Scope", &cfg.scopes, errs);
}
