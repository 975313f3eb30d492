//! The loaded documents of a mesh, by kind, and the lookups across them that validation and
//! compiling share: a Service or Gateway by name, and the port a backendRef resolves to.

use crate::model::*;
use std::sync::Arc;

/// A typed document and where it came from.
#[derive(Debug, Clone)]
pub struct Doc<S> {
    pub file: Arc<str>,
    /// 1-based line where the document starts.
    pub line: u64,
    /// Shared between config generations and the loader's cache; never copied on reload.
    pub object: Arc<Object<S>>,
}

impl<S> Doc<S> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.object.metadata.namespace, self.object.metadata.name
        )
    }
}

/// Every document of a mesh configuration, by kind, in load order.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    pub mesh: Option<Doc<MeshSpec>>,
    pub services: Vec<Doc<ServiceSpec>>,
    pub workloads: Vec<Doc<WorkloadSpec>>,
    pub http_routes: Vec<Doc<HttpRouteSpec>>,
    pub resilience_policies: Vec<Doc<ResiliencePolicySpec>>,
    pub authorization_policies: Vec<Doc<AuthorizationPolicySpec>>,
    pub gateways: Vec<Doc<GatewaySpec>>,
    pub scopes: Vec<Doc<ScopeSpec>>,
    /// TLS Secrets, for Gateway listeners' `certificateRefs`.
    pub secrets: Vec<Doc<SecretSpec>>,
    pub reference_grants: Vec<Doc<ReferenceGrantSpec>>,
    pub client_rate_limits: Vec<Doc<ClientRateLimitSpec>>,
}

pub(crate) fn find_service<'a>(
    cfg: &'a MeshConfig,
    ns: &str,
    name: &str,
) -> Option<&'a Doc<ServiceSpec>> {
    cfg.services
        .iter()
        .find(|s| s.object.metadata.namespace == ns && s.object.metadata.name == name)
}

pub(crate) fn find_gateway<'a>(
    cfg: &'a MeshConfig,
    ns: &str,
    name: &str,
) -> Option<&'a Doc<GatewaySpec>> {
    cfg.gateways
        .iter()
        .find(|g| g.object.metadata.namespace == ns && g.object.metadata.name == name)
}

/// A backendRef's port: the one it names, else the parent's port if the backend has it, else
/// the backend's only port.
pub(crate) fn backend_port(
    svc: &Doc<ServiceSpec>,
    port: Option<u16>,
    parent_port: u16,
) -> Option<u16> {
    let ports = &svc.object.spec.ports;
    match port {
        Some(p) => ports.iter().any(|sp| sp.port == p).then_some(p),
        None if ports.iter().any(|sp| sp.port == parent_port) => Some(parent_port),
        None if ports.len() == 1 => Some(ports[0].port),
        None => None,
    }
}
