//! The `Cluster` resource: one backend's endpoints, protocol and resilience settings.

use super::enums::{app_protocol_from_wire, app_protocol_to_wire};
use super::{Problem, WireError, each, list, required, u16_of};
use crate::model::Resilience;
use crate::snapshot::{Cluster, DnsTarget, Endpoint};
use std::collections::HashSet;
use std::sync::Arc;
use trellis_proto::v1 as pb;

impl From<&Cluster> for pb::Cluster {
    fn from(c: &Cluster) -> Self {
        pb::Cluster {
            name: c.name.clone(),
            service: c.service.clone(),
            port: c.port.into(),
            protocol: app_protocol_to_wire(c.protocol).0,
            opaque_protocol: app_protocol_to_wire(c.protocol).1,
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
            workload: e.workload.to_string(),
            service_account: e.service_account.as_deref().map(str::to_string),
            identity: e.identity.as_deref().map(str::to_string),
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
            protocol: app_protocol_from_wire(c.protocol, c.opaque_protocol)?,
            endpoints: share_names(each(c.endpoints, "endpoint")?),
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
            workload: e.workload.into(),
            service_account: e.service_account.map(Arc::from),
            identity: e.identity.map(Arc::from),
            sidecar: e.sidecar,
        })
    }
}

/// Makes the endpoints of one cluster that run as the same service account and identity share
/// one copy of each name: a Deployment's replicas differ in address and workload, not in
/// who they are, and a proxy holds every endpoint it may call.
fn share_names(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let mut names: HashSet<Arc<str>> = HashSet::new();
    let mut share = |name: &mut Option<Arc<str>>| {
        if let Some(n) = name {
            match names.get(n) {
                Some(held) => *n = held.clone(),
                None => {
                    names.insert(n.clone());
                }
            }
        }
    };
    for e in &mut endpoints {
        share(&mut e.service_account);
        share(&mut e.identity);
    }
    endpoints
}
