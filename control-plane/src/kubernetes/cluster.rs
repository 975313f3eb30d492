//! What the watches hold at one instant, and the source names (`kubernetes:<Kind>/<ns>/<name>`)
//! that documents, errors and statuses cite each object by.

use super::kinds::GATEWAY_CLASS;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything the watchers hold at one instant.
#[derive(Default, Clone)]
pub struct ClusterState {
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
    pub http_routes: Vec<Arc<DynamicObject>>,
    pub grpc_routes: Vec<Arc<DynamicObject>>,
    pub gateways: Vec<Arc<DynamicObject>>,
    pub reference_grants: Vec<Arc<DynamicObject>>,
    /// `kubernetes.io/tls` Secrets in the namespaces Gateways may take them from.
    pub secrets: Vec<Arc<Secret>>,
    /// The trellis.dev kinds, by kind (`Mesh`, `Workload`, ...). They are read untyped so
    /// that one bad object is one file:line error from the loader, not a failed watch.
    pub trellis: BTreeMap<&'static str, Vec<Arc<DynamicObject>>>,
}

/// The trellis-class Gateways, by `(namespace, name)`, and whether any of their listeners
/// admits routes from every namespace (`allowedRoutes.namespaces.from: All`); the Gateway
/// API's default is `Same`. `Selector` is not supported and counts as `Same`.
pub(crate) fn trellis_gateways(state: &ClusterState) -> BTreeMap<(String, String), bool> {
    state
        .gateways
        .iter()
        .filter(|g| g.data["spec"]["gatewayClassName"].as_str() == Some(GATEWAY_CLASS))
        .map(|g| {
            let all = g.data["spec"]["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["allowedRoutes"]["namespaces"]["from"].as_str() == Some("All"));
            ((g.namespace().unwrap_or_default(), g.name_any()), all)
        })
        .collect()
}

/// The kind in a source name `kubernetes:<Kind>/<namespace>/<name>`.
pub fn kind_of(doc_name: &str) -> &str {
    doc_name
        .strip_prefix("kubernetes:")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// `kubernetes:<Kind>/<namespace>/<name>`: the source name errors cite.
pub(crate) fn doc_name<K: Resource>(kind: &str, o: &K) -> String {
    let m = o.meta();
    format!(
        "kubernetes:{kind}/{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}
