//! The `Cluster` resource: one backend's endpoints, protocol and resilience settings.

use super::enums::FromWire;
use super::{Problem, WireError, each, enum_i32, list, required, u16_of};
use crate::model::{AppProtocol, Resilience};
use crate::snapshot::{Cluster, DnsTarget, Endpoint};
use trellis_proto::v1 as pb;

impl From<&Cluster> for pb::Cluster {
    fn from(c: &Cluster) -> Self {
        pb::Cluster {
            name: c.name.clone(),
            service: c.service.clone(),
            port: c.port.into(),
            protocol: enum_i32::<_, pb::AppProtocol>(c.protocol),
            endpoints: list(&c.endpoints),
            resilience: Some(pb::Resilience::from(&c.resilience)),
            dns: c.dns.as_ref().map(|d| pb::DnsTarget {
                name: d.name.clone(),
                port: d.port.into(),
            }),
        }
    }
}

impl From<&Endpoint> for pb::Endpoint {
    fn from(e: &Endpoint) -> Self {
        pb::Endpoint {
            address: e.address.to_string(),
            workload: e.workload.clone(),
            service_account: e.service_account.clone(),
            identity: e.identity.clone(),
            sidecar: e.sidecar,
        }
    }
}

impl TryFrom<pb::Cluster> for Cluster {
    type Error = WireError;

    fn try_from(c: pb::Cluster) -> Result<Self, WireError> {
        let resilience = required(c.resilience, "resilience")?;
        let dns = c
            .dns
            .map(|d| {
                Ok::<_, WireError>(DnsTarget {
                    port: u16_of(d.port, "port").map_err(|e| e.at("dns"))?,
                    name: d.name,
                })
            })
            .transpose()?;
        Ok(Cluster {
            port: u16_of(c.port, "port")?,
            protocol: AppProtocol::from_wire(c.protocol, "protocol")?,
            endpoints: each(c.endpoints, "endpoint")?,
            resilience: Resilience::try_from(resilience).map_err(|e| e.at("resilience"))?,
            dns,
            name: c.name,
            service: c.service,
        })
    }
}

impl TryFrom<pb::Endpoint> for Endpoint {
    type Error = WireError;

    fn try_from(e: pb::Endpoint) -> Result<Self, WireError> {
        let Ok(address) = e.address.parse() else {
            return Err(WireError::new("address", Problem::NotSocketAddr(e.address)));
        };
        Ok(Endpoint {
            address,
            workload: e.workload,
            service_account: e.service_account,
            identity: e.identity,
            sidecar: e.sidecar,
        })
    }
}
