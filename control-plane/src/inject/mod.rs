//! The sidecar injector: one function that rewrites a pod spec, shared by the admission
//! webhook (`admission`, `webhook`) and by `trellis inject -f FILE` (`manifest`).

pub mod admission;
pub mod manifest;
pub mod overrides;
mod probes;
mod sidecar;
pub mod webhook;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use sidecar::{INBOUND_PORT, TOKEN_AUDIENCE};

/// The container names the injector adds; a pod that already has one is already injected.
pub const INIT_CONTAINER: &str = "trellis-init";
pub const PROXY_CONTAINER: &str = "trellis-proxy";

/// What the injector puts into pods, from the control plane's flags.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// The image holding `trellis-proxy` (both the init step and the sidecar run it).
    pub proxy_image: String,
    /// Where proxies reach the control plane's discovery and identity gRPC.
    pub control_plane: String,
    /// The UID the proxy runs as; `trellis-proxy init` exempts its traffic from redirection.
    pub proxy_uid: i64,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub log_level: String,
    /// The mesh CA certificate (PEM), given to the proxy as `TRELLIS_CA_BUNDLE` so it can
    /// verify the control plane. The webhook sets it from the CA Secret; `trellis inject`
    /// from `--ca-bundle`.
    pub ca_bundle: Option<String>,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: format!("ghcr.io/trellis-mesh/trellis:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "https://trellis-control.trellis-system.svc:15010".into(),
            proxy_uid: 1337,
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
            log_level: "info".into(),
            ca_bundle: None,
        }
    }
}

/// What `inject_pod` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// The pod carries the injector's containers already; nothing changed.
    AlreadyInjected,
    /// `trellis.dev/inject: disabled` on the pod; nothing changed.
    OptedOut,
}

/// Why a pod cannot be injected. The message is what `kubectl` shows the user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InjectError {
    #[error(
        "annotation {annotation}: {value:?} is not valid; use {allowed}, or remove the annotation"
    )]
    BadAnnotation {
        annotation: String,
        value: String,
        allowed: String,
    },
    #[error(
        "pods with hostNetwork: true cannot get a sidecar (its iptables rules would redirect the node's traffic); label the pod trellis.dev/inject: disabled"
    )]
    HostNetwork,
    #[error(
        "the pod already has a container named {0:?} but no trellis.dev/injected annotation; rename that container or label the pod trellis.dev/inject: disabled"
    )]
    NameTaken(String),
    #[error(
        "the pod uses port {port} in container {container:?}, which the proxy needs (15000, 15001, 15006); move the app to another port"
    )]
    PortTaken { container: String, port: i32 },
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
