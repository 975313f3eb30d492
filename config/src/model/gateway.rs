//! Gateway API `Gateway` (v1): the mesh's entry point for traffic from outside. HTTPRoutes
//! whose `parentRefs` name a Gateway are served by the proxy running in gateway mode.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

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
    /// `HTTP`, or `HTTPS` with `tls` (TLS terminated here, then HTTP/1.1 or HTTP/2 by ALPN).
    pub protocol: Spanned<String>,
    /// Only requests whose `Host` matches are served: `rides.example.com` or `*.example.com`.
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    /// For `HTTPS`: the certificates the listener serves, chosen by SNI.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

/// Gateway API `GatewayTLSConfig`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// `Terminate`, the default and the only mode built (`Passthrough` is refused by name).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// Secrets of type `kubernetes.io/tls`. The first is the default for clients whose SNI
    /// no certificate names (or who send none); the others are chosen by SNI.
    #[serde(default)]
    pub certificate_refs: Vec<SecretRef>,
    /// Implementation-specific options; Trellis reads none and refuses any, so that a
    /// setting meant for another implementation is not silently ignored.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Gateway API `SecretObjectReference`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// `""` (the core group), the default.
    #[serde(default)]
    pub group: Option<String>,
    /// `Secret`, the default.
    #[serde(default)]
    pub kind: Option<String>,
    pub name: Spanned<String>,
    /// Another namespace than the Gateway's needs a ReferenceGrant there.
    #[serde(default)]
    pub namespace: Option<String>,
}
