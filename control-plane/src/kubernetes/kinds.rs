//! The kinds Trellis reads and writes in the cluster: their API resources, and the Gateway
//! API names (group, class, controller) that say which objects are Trellis'.

use kube::api::{ApiResource, GroupVersionKind};

/// The Gateway API group: the default `group` of a `parentRef`.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The `gatewayClassName` of the Gateways Trellis serves (with the `trellis-gateway`
/// Deployment, k8s/gateway/). Gateways of other classes belong to other controllers.
pub const GATEWAY_CLASS: &str = "trellis";

/// The `controllerName` of the `trellis` GatewayClass (k8s/gateway/gatewayclass.yaml), and
/// the name Trellis signs its route status entries with.
pub const CONTROLLER: &str = "trellis.dev/gateway";

/// The trellis.dev kinds the control plane watches, with their plural names.
pub const TRELLIS_KINDS: [(&str, &str); 6] = [
    ("Mesh", "meshes"),
    ("Workload", "workloads"),
    ("ResiliencePolicy", "resiliencepolicies"),
    ("AuthorizationPolicy", "authorizationpolicies"),
    ("Scope", "scopes"),
    ("ClientRateLimit", "clientratelimits"),
];

/// The Gateway API `HTTPRoute`, read untyped: its spec goes to the loader as written.
pub fn http_route_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "HTTPRoute");
    ApiResource::from_gvk_with_plural(&gvk, "httproutes")
}

/// The Gateway API `GRPCRoute` (v1 since Gateway API v1.1), read untyped and translated.
pub fn grpc_route_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "GRPCRoute");
    ApiResource::from_gvk_with_plural(&gvk, "grpcroutes")
}

/// The Gateway API `Gateway`; those of class `trellis` are served by the trellis gateway.
pub fn gateway_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "Gateway");
    ApiResource::from_gvk_with_plural(&gvk, "gateways")
}

/// The Gateway API `ReferenceGrant` (v1beta1): what lets a Gateway use a Secret of another
/// namespace.
pub fn reference_grant_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1beta1", "ReferenceGrant");
    ApiResource::from_gvk_with_plural(&gvk, "referencegrants")
}

pub(crate) fn trellis_resource(kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("trellis.dev", "v1alpha1", kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

/// The Gateway API `GatewayClass`; Trellis marks the `trellis` one `Accepted`.
pub(crate) fn gateway_class_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "GatewayClass");
    ApiResource::from_gvk_with_plural(&gvk, "gatewayclasses")
}
