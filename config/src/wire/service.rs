//! The `Service` resource: a Service's ports, each with its route rules in precedence order.

use super::enums::{FromWire, app_protocol_from_wire, app_protocol_to_wire};
use super::{Problem, WireError, each, enum_i32, list, u16_of};
use crate::model::MtlsMode;
use crate::snapshot::{PortEntry, ServiceEntry, TargetPort};
use trellis_proto::v1 as pb;
use trellis_proto::v1::port::TargetPort as WireTargetPort;

impl From<&ServiceEntry> for pb::Service {
    fn from(s: &ServiceEntry) -> Self {
        pb::Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            mtls_mode: enum_i32::<_, pb::MtlsMode>(s.mtls_mode),
            ports: list(&s.ports),
            cluster_ip: s.cluster_ip.map(|ip| ip.to_string()),
        }
    }
}

impl From<&PortEntry> for pb::Port {
    fn from(p: &PortEntry) -> Self {
        pb::Port {
            port: p.port.into(),
            name: p.name.clone(),
            protocol: app_protocol_to_wire(p.protocol).0,
            opaque_protocol: app_protocol_to_wire(p.protocol).1,
            target_port: p.target_port.as_ref().map(|t| match t {
                TargetPort::Number(n) => WireTargetPort::TargetPortNumber((*n).into()),
                TargetPort::Name(n) => WireTargetPort::TargetPortName(n.clone()),
            }),
            routes: list(&p.routes),
            has_http_route: p.has_http_route,
        }
    }
}

impl TryFrom<pb::Service> for ServiceEntry {
    type Error = WireError;

    fn try_from(s: pb::Service) -> Result<Self, WireError> {
        let cluster_ip = s
            .cluster_ip
            .map(|ip| {
                ip.parse()
                    .map_err(|_| WireError::new("cluster_ip", Problem::NotIp(ip)))
            })
            .transpose()?;
        Ok(ServiceEntry {
            mtls_mode: MtlsMode::from_wire(s.mtls_mode, "mtls_mode")?,
            ports: each(s.ports, "port")?,
            name: s.name,
            namespace: s.namespace,
            cluster_ip,
        })
    }
}

impl TryFrom<pb::Port> for PortEntry {
    type Error = WireError;

    fn try_from(p: pb::Port) -> Result<Self, WireError> {
        let target_port = match p.target_port {
            Some(WireTargetPort::TargetPortNumber(n)) => {
                Some(TargetPort::Number(u16_of(n, "target_port_number")?))
            }
            Some(WireTargetPort::TargetPortName(n)) => Some(TargetPort::Name(n)),
            None => None,
        };
        Ok(PortEntry {
            port: u16_of(p.port, "port")?,
            name: p.name,
            protocol: app_protocol_from_wire(p.protocol, p.opaque_protocol)?,
            target_port,
            routes: each(p.routes, "route")?,
            has_http_route: p.has_http_route,
        })
    }
}
