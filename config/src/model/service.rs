//! `Service` (Kubernetes v1) and `Workload` (an endpoint that is not a registered proxy).

use super::small_map::SmallMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub selector: SmallMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `ClusterIP` (the default) or `ExternalName`.
    #[serde(default, rename = "type")]
    pub kind: ServiceType,
    /// The virtual address an intercepted app connects to, as in Kubernetes. Under transparent
    /// interception the original destination `clusterIP:port` names this Service. `None`
    /// (Kubernetes' headless form) means no address.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<Spanned<String>>,
    /// For `type: ExternalName`: the DNS name the proxy resolves to reach this Service.
    #[serde(default)]
    pub external_name: Option<Spanned<String>>,
}

/// Kubernetes' Service types that the mesh supports.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    /// The endpoints are the addresses a DNS name resolves to, refreshed as its TTL expires.
    ExternalName,
}

impl ServiceSpec {
    /// The parsed `clusterIP`, if it is an address (validation refuses anything else).
    pub fn cluster_ip(&self) -> Option<std::net::IpAddr> {
        self.cluster_ip.as_ref().and_then(|s| s.value.parse().ok())
    }
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
    /// HTTP/1.1 to the upstream whatever the downstream spoke; gRPC calls, which need
    /// HTTP/2, go over h2c.
    #[default]
    Http,
    /// HTTP/2 with prior knowledge (h2c) to the upstream, whatever the downstream spoke.
    /// Kubernetes' own name for it, `kubernetes.io/h2c`, is accepted too.
    #[serde(alias = "kubernetes.io/h2c")]
    Http2,
    /// gRPC: HTTP/2 to the upstream, errors answered as gRPC statuses.
    Grpc,
    /// Opaque bytes.
    Tcp,
    // The brokers' and databases' protocols below are opaque bytes too, never detected: a
    // server that speaks first (MySQL, NATS) must not wait for detection. Naming one says
    // what the port carries, which metrics use (`kafka` decodes request headers for per-API
    // metrics) and a future filter may.
    /// Apache Kafka.
    Kafka,
    /// AMQP 0-9-1 or 1.0 (RabbitMQ, ActiveMQ, Qpid).
    Amqp,
    /// STOMP (ActiveMQ, RabbitMQ's plugin).
    Stomp,
    /// MQTT.
    Mqtt,
    /// NATS: the server speaks first.
    Nats,
    /// Redis' RESP.
    Redis,
    /// MySQL: the server speaks first.
    Mysql,
    /// PostgreSQL. `postgres` is accepted too.
    #[serde(alias = "postgres")]
    Postgresql,
}

impl AppProtocol {
    /// Opaque bytes: never read for HTTP, routed by the Service port alone.
    pub fn is_opaque(self) -> bool {
        !matches!(
            self,
            AppProtocol::Http | AppProtocol::Http2 | AppProtocol::Grpc
        )
    }

    /// The name in YAML and in Kubernetes' `appProtocol`.
    pub fn name(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Http2 => "http2",
            AppProtocol::Grpc => "grpc",
            AppProtocol::Tcp => "tcp",
            AppProtocol::Kafka => "kafka",
            AppProtocol::Amqp => "amqp",
            AppProtocol::Stomp => "stomp",
            AppProtocol::Mqtt => "mqtt",
            AppProtocol::Nats => "nats",
            AppProtocol::Redis => "redis",
            AppProtocol::Mysql => "mysql",
            AppProtocol::Postgresql => "postgresql",
        }
    }

    /// Every value, for Kubernetes' translation and for error messages.
    pub const ALL: [AppProtocol; 12] = [
        AppProtocol::Http,
        AppProtocol::Http2,
        AppProtocol::Grpc,
        AppProtocol::Tcp,
        AppProtocol::Kafka,
        AppProtocol::Amqp,
        AppProtocol::Stomp,
        AppProtocol::Mqtt,
        AppProtocol::Nats,
        AppProtocol::Redis,
        AppProtocol::Mysql,
        AppProtocol::Postgresql,
    ];
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    feature = "kube",
    derive(serde::Serialize, schemars::JsonSchema, kube::CustomResource),
    kube(
        group = "trellis.dev",
        version = "v1alpha1",
        kind = "Workload",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    #[cfg_attr(feature = "kube", schemars(with = "String"))]
    pub address: Spanned<String>,
    #[serde(default)]
    #[cfg_attr(
        feature = "kube",
        schemars(with = "std::collections::BTreeMap<String, u16>")
    )]
    pub ports: SmallMap<String, u16>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// The endpoint runs a Trellis sidecar whose inbound listener is on this port: traffic
    /// goes there, whatever the Service's targetPort, and the sidecar delivers it to the app.
    /// Registered proxies get it set; in local mode, where proxies do not register, the
    /// mesh file sets it.
    #[serde(default)]
    pub sidecar_inbound: Option<u16>,
    /// Set for registered proxies that hold a mesh certificate: they accept mTLS as
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.
    #[serde(skip)]
    pub sidecar_mtls: bool,
}
