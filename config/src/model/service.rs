//! `Service` (Kubernetes v1) and `Workload` (an endpoint that is not a registered proxy).

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// A number, or the name of a port on each endpoint (`Workload.spec.ports`).
    #[serde(default)]
    pub target_port: Option<Spanned<IntOrString>>,
    #[serde(default)]
    pub app_protocol: Option<AppProtocol>,
    /// Kubernetes' L4 protocol. Only `TCP` is supported.
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    Str(String),
}

/// How the proxy speaks to a Service port.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP, keeping the downstream's version (HTTP/1.1 stays HTTP/1.1, h2 stays h2).
    #[default]
    Http,
    /// HTTP/2 with prior knowledge (h2c) to the upstream, whatever the downstream spoke.
    Http2,
    /// gRPC: HTTP/2 to the upstream, errors answered as gRPC statuses.
    Grpc,
    /// Opaque bytes.
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    pub address: Spanned<String>,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// Set for proxies that registered themselves: traffic goes to their inbound listener at
    /// this port, whatever the Service's targetPort; the sidecar delivers it to the app.
    #[serde(skip)]
    pub sidecar_inbound: Option<u16>,
    /// Set for registered proxies that hold a mesh certificate: they accept mTLS as
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.
    #[serde(skip)]
    pub sidecar_mtls: bool,
}
