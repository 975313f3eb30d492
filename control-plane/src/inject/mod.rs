//! The sidecar injector: one function that rewrites a pod spec, shared by the admission
//! webhook (`admission`, `webhook`) and by `trellis inject -f FILE` (`manifest`).

pub mod admission;
mod config;
mod error;
pub mod manifest;
pub(crate) mod overrides;
mod probes;
mod sidecar;
pub mod webhook;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sidecar::{INIT_CONTAINER, PROXY_CONTAINER};

pub use config::InjectConfig;
pub use error::InjectError;
pub(crate) use overrides::INJECTED;
pub(crate) use sidecar::{INBOUND_PORT, TOKEN_AUDIENCE};

/// What `inject_pod` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// The pod carries the injector's containers already; nothing changed.
    AlreadyInjected,
    /// `trellis.dev/inject: disabled` on the pod; nothing changed.
    OptedOut,
}

/// Adds the init step, the native sidecar, the token and pod-info volumes and the probe
/// rewrites to one pod. Applying it to a pod it already injected changes nothing.
pub fn inject_pod(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    cfg: &InjectConfig,
) -> Result<Outcome, InjectError> {
    if overrides::opted_out(meta.labels.as_ref(), meta.annotations.as_ref()) {
        return Ok(Outcome::OptedOut);
    }
    let injected_mark = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(overrides::INJECTED));
    let has_ours = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == INIT_CONTAINER || c.name == PROXY_CONTAINER);
    match (injected_mark, has_ours) {
        (true, Some(_)) => return Ok(Outcome::AlreadyInjected),
        (false, Some(c)) => return Err(InjectError::NameTaken(c.name.clone())),
        // The mark without the containers: a copy of an injected pod's metadata on a new
        // spec (e.g. `kubectl get -o yaml` edited by hand). Inject it properly.
        _ => {}
    }

    // Check everything before changing anything, so a denial leaves the pod as it was.
    if spec.host_network == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    let over = overrides::parse(meta.annotations.as_ref())?;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            if sidecar::PROXY_PORTS.contains(&p.container_port) {
                return Err(InjectError::PortTaken {
                    container: c.name.clone(),
                    port: p.container_port,
                });
            }
        }
    }

    let app_probes = probes::rewrite(&mut spec.containers);
    let mut init = vec![
        sidecar::init_container(cfg, &over, spec),
        sidecar::proxy_container(cfg, &over, spec),
    ];
    // Ours run first: the redirect is in place and the proxy ready before any of the
    // user's init containers make a network call.
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(sidecar::volumes());

    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        overrides::INJECTED.into(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    if !app_probes.is_empty() {
        annotations.insert(overrides::APP_PROBES.into(), app_probes);
    }
    Ok(Outcome::Injected)
}
