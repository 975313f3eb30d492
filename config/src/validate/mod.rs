//! Cross-document checks: every reference resolves, every value is in range. Each error
//! names the file, the line, the field and what is allowed.

mod authorization;
mod filters;
mod gateways;
mod names;
mod origin;
mod references;
mod resilience;
mod routes;
mod scopes;
mod services;
mod tracing;
mod workloads;

use crate::error::ConfigErrors;
use crate::mesh_config::MeshConfig;

/// Checks a loaded config; `Ok` means it can be compiled for any proxy.
pub fn validate(cfg: &MeshConfig) -> Result<(), ConfigErrors> {
    // The order of the checks is the order of the errors an operator reads.
    let mut errs = ConfigErrors::default();
    names::check_unique(cfg, &mut errs);
    services::check_services(cfg, &mut errs);
    workloads::check_trust_domain(cfg, &mut errs);
    workloads::check_workloads(cfg, &mut errs);
    routes::check_routes(cfg, &mut errs);
    resilience::check_resilience_policies(cfg, &mut errs);
    resilience::check_client_rate_limits(cfg, &mut errs);
    authorization::check_authorization_policies(cfg, &mut errs);
    gateways::check_gateways(cfg, &mut errs);
    scopes::check_scopes(cfg, &mut errs);
    tracing::check_tracing(cfg, &mut errs);
    errs.into_result()
}
