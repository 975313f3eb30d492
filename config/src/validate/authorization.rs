//! AuthorizationPolicies: the target Service exists, path and header patterns use `*` only
//! at an end, and each peer is a `namespace/serviceAccount` Kubernetes accepts.

use super::origin::Origin;
use super::references::check_target;
use super::workloads::kube_service_account;
use crate::error::ConfigErrors;
use crate::mesh_config::MeshConfig;

pub(super) fn check_authorization_policies(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    for p in &cfg.authorization_policies {
        let c = Origin::new(p);
        check_target(
            cfg,
            &c,
            &p.object.metadata.namespace,
            Some(&p.object.spec.target_ref),
            errs,
        );
        for (i, rule) in p.object.spec.rules.iter().enumerate() {
            for (j, to) in rule.to.iter().enumerate() {
                let patterns = to
                    .paths
                    .iter()
                    .map(|p| (format!("spec.rules[{i}].to[{j}].paths"), p))
                    .chain(to.headers.iter().enumerate().flat_map(|(k, h)| {
                        h.values.iter().map(move |v| {
                            (format!("spec.rules[{i}].to[{j}].headers[{k}].values"), v)
                        })
                    }));
                for (field, pat) in patterns {
                    if pat.len() > 1 && pat[1..pat.len() - 1].contains('*') {
                        c.doc(
                            errs,
                            field,
                            format!("{pat:?}: '*' may only start or end a pattern (\"/charge*\", \"*.json\")"),
                        );
                    }
                }
            }
            for (j, from) in rule.from.iter().enumerate() {
                for sa in &from.service_accounts {
                    let field = || format!("spec.rules[{i}].from[{j}].serviceAccounts");
                    match sa.split_once('/') {
                        Some((ns, name)) if !name.contains('/') => {
                            // A name Kubernetes refuses can never be a peer's, so the entry
                            // would silently match nobody.
                            if let Err(e) = kube_service_account(ns, name) {
                                c.doc(errs, field(), format!("in {sa:?}: {e}"));
                            }
                        }
                        _ => c.doc(
                            errs,
                            field(),
                            format!("{sa:?} must be namespace/serviceAccount, e.g. rides/trip"),
                        ),
                    }
                }
            }
        }
    }
}
