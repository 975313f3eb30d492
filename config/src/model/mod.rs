//! Typed mesh resources, one struct per YAML kind. Unknown fields are refused by serde.

mod client_rate_limit;
mod gateway;
mod grpc_route;
mod policy;
mod route;
mod scope;
mod secret;
mod service;
mod small_map;

pub use client_rate_limit::*;
pub use gateway::*;
pub use grpc_route::*;
pub use policy::*;
pub use route::*;
pub use scope::*;
pub use secret::*;
pub use service::*;
pub use small_map::SmallMap;

use serde::Deserialize;
use std::collections::BTreeMap;

/// Kubernetes object metadata: the subset Trellis reads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: SmallMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub fn default_namespace() -> String {
    "default".to_string()
}

/// A whole document: `apiVersion`, `kind`, `metadata`, `spec`. The loader has read
/// `apiVersion` and `kind` to choose `S`, so they are checked present and not kept: a mesh
/// of 10,000 Workloads would hold 20,000 copies of two strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: Read,
    pub kind: Read,
    pub metadata: Metadata,
    pub spec: S,
}

/// A string field that was read and need not be kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Read;

impl<'de> Deserialize<'de> for Read {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Read)
    }
}

/// The mesh-wide settings: at most one `Mesh` document.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    feature = "kube",
    derive(serde::Serialize, schemars::JsonSchema, kube::CustomResource),
    kube(group = "trellis.dev", version = "v1alpha1", kind = "Mesh")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub mtls: MtlsSettings,
    /// What the proxy does with intercepted traffic to a destination outside the mesh.
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// How every proxy rewrites a request's path before routing, authorization and delivery.
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// Where proxies send spans, and how many new traces they record.
    #[serde(default)]
    pub tracing: TracingSettings,
}

/// `tracing`: the OTLP receiver that every proxy exports its spans to, and the share of new
/// traces that are recorded (docs/observability.md). Without a collector, proxies export
/// nothing and pass incoming trace context on unchanged.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<Collector>,
    /// The percentage (0-100) of traces recorded where a trace starts: at the Gateway, or
    /// at the first proxy a request without trace context meets. Every hop after follows
    /// that decision. A Service or Gateway overrides it with the
    /// `trellis.dev/trace-sampling-percentage` annotation.
    #[serde(default = "default_sampling_percentage")]
    pub sampling_percentage: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            collector: None,
            sampling_percentage: default_sampling_percentage(),
        }
    }
}

/// Istio's default: one trace in a hundred.
pub fn default_sampling_percentage() -> f64 {
    1.0
}

/// The Service and Gateway annotation that overrides the Mesh's `tracing.samplingPercentage`
/// for traces that start at that Service's proxies (or at that Gateway).
pub const TRACE_SAMPLING_ANNOTATION: &str = "trellis.dev/trace-sampling-percentage";

/// Reads a sampling percentage: a number from 0 to 100.
pub fn parse_sampling_percentage(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
}

/// An OTLP receiver: `address` is `host:port`, dialled directly by each proxy (not through
/// the mesh; docs/observability.md says why).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Collector {
    pub address: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

/// `GRPC` (OTLP/gRPC, usually port 4317) or `HTTP` (OTLP/HTTP with protobuf bodies, to
/// `/v1/traces`, usually port 4318).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OtlpProtocol {
    #[default]
    Grpc,
    Http,
}

/// `pathNormalization`: the parts of path normalization that change what some apps would see.
/// Dot segments and percent-encoded unreserved characters are always normalized (RFC 3986
/// §5.2.4, §6.2.2); these three choose how far past that the proxy goes. Each default is
/// the choice under which no app framework can read the path as something authorization did
/// not check (docs/security.md, "What a policy protects").
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathNormalization {
    #[serde(default)]
    pub slashes: SlashMode,
    #[serde(default)]
    pub escaped_slashes: EscapedSlashMode,
    #[serde(default)]
    pub path_parameters: PathParameterMode,
}

/// Runs of `/`: `MERGE` (`//admin` is `/admin`, as most servers read it) or `KEEP`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlashMode {
    #[default]
    Merge,
    Keep,
}

/// `%2F`, `%5C` and a raw `\`: `REJECT` answers 400; `DECODE` reads all three as `/` (as
/// Istio's `DECODE_AND_MERGE_SLASHES` does); `KEEP` passes them on as they came, for apps
/// that carry data in `%2F` and do not decode it before routing.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscapedSlashMode {
    #[default]
    Reject,
    Decode,
    Keep,
}

/// `;` path parameters (`/..;/admin`, `/a;jsessionid=1`): `REJECT` answers 400; `STRIP`
/// removes each segment's parameters, as Tomcat and Jetty do before they resolve the path;
/// `KEEP` treats `;` as an ordinary character.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathParameterMode {
    #[default]
    Reject,
    Strip,
    Keep,
}

/// `outboundTrafficPolicy: {mode: ALLOW_ANY | REGISTRY_ONLY}`, as in Istio.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "kube", derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// `ALLOW_ANY` passes an unknown destination through; `REGISTRY_ONLY` refuses it.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    #[default]
    AllowAny,
    RegistryOnly,
}

impl Default for MeshSpec {
    /// What a mesh without a `Mesh` document runs with.
    fn default() -> Self {
        MeshSpec {
            trust_domain: default_trust_domain(),
            mtls: MtlsSettings::default(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            path_normalization: PathNormalization::default(),
            tracing: TracingSettings::default(),
        }
    }
}

pub fn default_trust_domain() -> String {
    "trellis.local".to_string()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "kube", derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSettings {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// `STRICT` refuses plaintext, `PERMISSIVE` accepts both, `DISABLED` never uses mTLS.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Strict,
    #[default]
    Permissive,
    Disabled,
}

/// The Service annotation that overrides the Mesh's mTLS mode for that Service.
pub const MTLS_MODE_ANNOTATION: &str = "trellis.dev/mtls-mode";

impl MtlsMode {
    /// `STRICT`, `PERMISSIVE` or `DISABLED`.
    pub fn parse(s: &str) -> Option<MtlsMode> {
        match s {
            "STRICT" => Some(MtlsMode::Strict),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "DISABLED" => Some(MtlsMode::Disabled),
            _ => None,
        }
    }

    /// The stricter of two modes, for a workload that serves Services with different modes:
    /// STRICT over PERMISSIVE over DISABLED.
    pub fn strictest(self, other: MtlsMode) -> MtlsMode {
        let rank = |m: MtlsMode| match m {
            MtlsMode::Disabled => 0,
            MtlsMode::Permissive => 1,
            MtlsMode::Strict => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}
