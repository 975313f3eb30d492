//! Workloads and the identities built from them: the Mesh's trust domain, each workload's
//! namespace and service account, and its address.

use super::origin::Origin;
use crate::error::ConfigErrors;
use crate::mesh_config::MeshConfig;
use trellis_identity::{SpiffeId, SpiffeIdError};

/// The Mesh document's trust domain is one `SpiffeId::new` accepts.
pub(super) fn check_trust_domain(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    if let Some(m) = &cfg.mesh
        && let Err(e) = SpiffeId::new(&m.object.spec.trust_domain, "ns", "sa")
    {
        Origin::new(m).doc(errs, "spec.trustDomain", e.to_string());
    }
}

/// Each workload's service account and namespace are names Kubernetes accepts, and its
/// address is an IP.
pub(super) fn check_workloads(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    for w in &cfg.workloads {
        if let Some(sa) = &w.object.spec.service_account
            && let Err(e) = kube_service_account(&w.object.metadata.namespace, sa)
        {
            // The endpoint's identity is built from both, so say which one Kubernetes refuses.
            let field = match &e {
                SpiffeIdError::Name {
                    what: "namespace", ..
                } => "metadata.namespace",
                _ => "spec.serviceAccount",
            };
            Origin::new(w).doc(errs, field, e.to_string());
        }
        if w.object
            .spec
            .address
            .value
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            let e = Origin::new(w);
            e.at(
                errs,
                &w.object.spec.address,
                "spec.address",
                "must be an IP address, e.g. 127.0.0.1",
            );
        }
    }
}

/// Whether Kubernetes would accept `namespace` and service account `name`: the rule
/// [`SpiffeId::new`] applies, so config the validator passes never fails there later. The
/// trust domain is a stand-in; the Mesh document's own is checked on its own.
pub(super) fn kube_service_account(namespace: &str, name: &str) -> Result<(), SpiffeIdError> {
    SpiffeId::new("trellis.local", namespace, name).map(drop)
}
