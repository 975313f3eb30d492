//! `ClientRateLimit`: a local rate limit per client address, applied by an HTTPRoute rule
//! that names it in an `ExtensionRef` filter (the Gateway API's way to an implementation's
//! own filter). At a gateway the client is the address the edge believes (`trustedProxies`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[cfg_attr(
    feature = "kube",
    derive(serde::Serialize, schemars::JsonSchema, kube::CustomResource),
    kube(
        group = "trellis.dev",
        version = "v1alpha1",
        kind = "ClientRateLimit",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientRateLimitSpec {
    /// Sustained requests per second from one client address.
    pub requests_per_second: f64,
    /// Requests one client may send at once above the rate; one second's worth by default.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// An `ExtensionRef` filter's reference (Gateway API `LocalObjectReference`): an object in
/// the route's own namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionRef {
    pub group: String,
    pub kind: String,
    pub name: serde_saphyr::Spanned<String>,
}
