//! The `Mesh` resource: the proxy's namespace, the mesh settings, inbound authorization and
//! the proxy's scope; and the `ServiceNames` resource that scoped proxies hold.

use super::enums::FromWire;
use super::{Problem, WireError, each, enum_i32, list, required};
use crate::model::{
    AuthzAction, AuthzHeader, AuthzOperation, AuthzRule, AuthzSource, Collector, EscapedSlashMode,
    MtlsMode, OtlpProtocol, OutboundMode, PathNormalization, PathParameterMode, SlashMode,
    TracingSettings,
};
use crate::snapshot::{
    InboundPolicy, MeshInfo, MeshResource, NodeInfo, ScopeInfo, ServiceName, ServiceNames,
};
use trellis_proto::v1 as pb;

// === To the wire ===

impl From<&MeshResource> for pb::Mesh {
    fn from(m: &MeshResource) -> Self {
        pb::Mesh {
            node: Some(pb::NodeInfo {
                namespace: m.node.namespace.clone(),
            }),
            mesh: Some(pb::MeshInfo::from(&m.mesh)),
            inbound_services: m.inbound_services.clone(),
        }
    }
}

impl From<&MeshInfo> for pb::MeshInfo {
    fn from(m: &MeshInfo) -> Self {
        pb::MeshInfo {
            trust_domain: m.trust_domain.clone(),
            mtls_mode: enum_i32::<_, pb::MtlsMode>(m.mtls_mode),
            outbound_traffic_policy: enum_i32::<_, pb::OutboundMode>(m.outbound_traffic_policy),
            path_normalization: Some(pb::PathNormalization::from(&m.path_normalization)),
            inbound_mtls_mode: enum_i32::<_, pb::MtlsMode>(m.inbound_mtls_mode),
            authorization: list(&m.authorization),
            scope: m.scope.as_ref().map(|s| pb::ScopeInfo { by: s.by.clone() }),
            tracing: Some(pb::Tracing {
                collector: m.tracing.collector.as_ref().map(|c| pb::Collector {
                    address: c.address.clone(),
                    protocol: enum_i32::<_, pb::OtlpProtocol>(c.protocol),
                }),
                sampling_percentage: m.tracing.sampling_percentage,
            }),
        }
    }
}

impl From<&ServiceNames> for pb::ServiceNames {
    fn from(n: &ServiceNames) -> Self {
        pb::ServiceNames {
            services: (n.services.iter())
                .map(|o| pb::ServiceName {
                    name: o.name.clone(),
                    namespace: o.namespace.clone(),
                    cluster_ip: o.cluster_ip.map(|ip| ip.to_string()),
                })
                .collect(),
        }
    }
}

impl From<&PathNormalization> for pb::PathNormalization {
    fn from(p: &PathNormalization) -> Self {
        pb::PathNormalization {
            slashes: enum_i32::<_, pb::SlashMode>(p.slashes),
            escaped_slashes: enum_i32::<_, pb::EscapedSlashMode>(p.escaped_slashes),
            path_parameters: enum_i32::<_, pb::PathParameterMode>(p.path_parameters),
        }
    }
}

impl From<&InboundPolicy> for pb::InboundPolicy {
    fn from(p: &InboundPolicy) -> Self {
        pb::InboundPolicy {
            name: p.name.clone(),
            service: p.service.clone(),
            action: enum_i32::<_, pb::AuthzAction>(p.action),
            rules: list(&p.rules),
        }
    }
}

impl From<&AuthzRule> for pb::AuthzRule {
    fn from(r: &AuthzRule) -> Self {
        pb::AuthzRule {
            from: list(&r.from),
            to: list(&r.to),
        }
    }
}

impl From<&AuthzSource> for pb::AuthzSource {
    fn from(s: &AuthzSource) -> Self {
        pb::AuthzSource {
            service_accounts: s.service_accounts.clone(),
            namespaces: s.namespaces.clone(),
        }
    }
}

impl From<&AuthzOperation> for pb::AuthzOperation {
    fn from(o: &AuthzOperation) -> Self {
        pb::AuthzOperation {
            methods: o.methods.clone(),
            paths: o.paths.clone(),
            headers: list(&o.headers),
        }
    }
}

impl From<&AuthzHeader> for pb::AuthzHeader {
    fn from(h: &AuthzHeader) -> Self {
        pb::AuthzHeader {
            name: h.name.clone(),
            values: h.values.clone(),
        }
    }
}

// === From the wire ===

impl TryFrom<pb::Mesh> for MeshResource {
    type Error = WireError;

    fn try_from(m: pb::Mesh) -> Result<Self, WireError> {
        let node = required(m.node, "node")?;
        Ok(MeshResource {
            node: NodeInfo {
                namespace: node.namespace,
            },
            mesh: MeshInfo::try_from(required(m.mesh, "mesh")?).map_err(|e| e.at("mesh"))?,
            inbound_services: m.inbound_services,
        })
    }
}

impl TryFrom<pb::MeshInfo> for MeshInfo {
    type Error = WireError;

    fn try_from(m: pb::MeshInfo) -> Result<Self, WireError> {
        let path_normalization =
            PathNormalization::try_from(required(m.path_normalization, "path_normalization")?)
                .map_err(|e| e.at("path_normalization"))?;
        Ok(MeshInfo {
            trust_domain: m.trust_domain,
            mtls_mode: MtlsMode::from_wire(m.mtls_mode, "mtls_mode")?,
            outbound_traffic_policy: OutboundMode::from_wire(
                m.outbound_traffic_policy,
                "outbound_traffic_policy",
            )?,
            path_normalization,
            inbound_mtls_mode: MtlsMode::from_wire(m.inbound_mtls_mode, "inbound_mtls_mode")?,
            authorization: each(m.authorization, "authorization policy")?,
            scope: m.scope.map(|s| ScopeInfo { by: s.by }),
            tracing: match m.tracing {
                None => TracingSettings::default(),
                Some(t) => TracingSettings::try_from(t).map_err(|e| e.at("tracing"))?,
            },
        })
    }
}

impl TryFrom<pb::Tracing> for TracingSettings {
    type Error = WireError;

    fn try_from(t: pb::Tracing) -> Result<Self, WireError> {
        let collector = (t.collector)
            .map(|c| {
                Ok::<_, WireError>(Collector {
                    address: c.address,
                    protocol: OtlpProtocol::from_wire(c.protocol, "protocol")
                        .map_err(|e| e.at("collector"))?,
                })
            })
            .transpose()?;
        Ok(TracingSettings {
            collector,
            sampling_percentage: t.sampling_percentage.clamp(0.0, 100.0),
        })
    }
}

impl TryFrom<pb::ServiceNames> for ServiceNames {
    type Error = WireError;

    fn try_from(n: pb::ServiceNames) -> Result<Self, WireError> {
        Ok(ServiceNames {
            services: each(n.services, "service")?,
        })
    }
}

impl TryFrom<pb::ServiceName> for ServiceName {
    type Error = WireError;

    fn try_from(o: pb::ServiceName) -> Result<Self, WireError> {
        let cluster_ip = o
            .cluster_ip
            .map(|ip| {
                ip.parse()
                    .map_err(|_| WireError::new("cluster_ip", Problem::NotIp(ip)))
            })
            .transpose()?;
        Ok(ServiceName {
            name: o.name,
            namespace: o.namespace,
            cluster_ip,
        })
    }
}

impl TryFrom<pb::PathNormalization> for PathNormalization {
    type Error = WireError;

    fn try_from(p: pb::PathNormalization) -> Result<Self, WireError> {
        Ok(PathNormalization {
            slashes: SlashMode::from_wire(p.slashes, "slashes")?,
            escaped_slashes: EscapedSlashMode::from_wire(p.escaped_slashes, "escaped_slashes")?,
            path_parameters: PathParameterMode::from_wire(p.path_parameters, "path_parameters")?,
        })
    }
}

impl TryFrom<pb::InboundPolicy> for InboundPolicy {
    type Error = WireError;

    fn try_from(p: pb::InboundPolicy) -> Result<Self, WireError> {
        Ok(InboundPolicy {
            action: AuthzAction::from_wire(p.action, "action")?,
            rules: p.rules.into_iter().map(AuthzRule::from).collect(),
            name: p.name,
            service: p.service,
        })
    }
}

// An authorization rule has nothing that can be invalid: lists of strings, all optional.
impl From<pb::AuthzRule> for AuthzRule {
    fn from(r: pb::AuthzRule) -> Self {
        AuthzRule {
            from: r
                .from
                .into_iter()
                .map(|s| AuthzSource {
                    service_accounts: s.service_accounts,
                    namespaces: s.namespaces,
                })
                .collect(),
            to: r
                .to
                .into_iter()
                .map(|o| AuthzOperation {
                    methods: o.methods,
                    paths: o.paths,
                    headers: o
                        .headers
                        .into_iter()
                        .map(|h| AuthzHeader {
                            name: h.name,
                            values: h.values,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
