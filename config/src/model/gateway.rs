//! Gateway API `Gateway` (v1): the mesh's entry point for traffic from outside. HTTPRoutes
//! whose `parentRefs` name a Gateway are served by the proxy running in gateway mode.

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Accepted for compatibility; every Gateway in a mesh file is Trellis' own.
    #[serde(default)]
    pub gateway_class_name: Option<String>,
    pub listeners: Vec<GatewayListener>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayListener {
    /// The `sectionName` routes use to attach to this listener only.
    pub name: Spanned<String>,
    /// Where the listener serves in a cluster. In local mode the proxy's bootstrap decides
    /// the bound address (`gateway.listen`), and this port only has to match `parentRefs.port`.
    pub port: u16,
    /// `HTTP` only: TLS termination at the gateway is not built yet.
    pub protocol: Spanned<String>,
    /// Only requests whose `Host` matches are served: `rides.example.com` or `*.example.com`.
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
}
