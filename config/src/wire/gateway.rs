//! The `Gateway` resource: a Gateway's listeners, each with the route rules attached to it.

use super::{Problem, WireError, each, list, required, u16_of};
use crate::snapshot::{
    GatewayEntry, GatewayListenerEntry, GatewayRoute, ListenerProtocol, RouteRule, TlsCertificate,
};
use trellis_proto::v1 as pb;

impl From<&GatewayEntry> for pb::Gateway {
    fn from(g: &GatewayEntry) -> Self {
        pb::Gateway {
            name: g.name.clone(),
            namespace: g.namespace.clone(),
            listeners: list(&g.listeners),
            sampling_percentage: g.sampling_percentage,
        }
    }
}

impl From<&GatewayListenerEntry> for pb::GatewayListener {
    fn from(l: &GatewayListenerEntry) -> Self {
        pb::GatewayListener {
            name: l.name.clone(),
            port: l.port.into(),
            routes: list(&l.routes),
            protocol: match l.protocol {
                ListenerProtocol::Http => pb::ListenerProtocol::Http,
                ListenerProtocol::Https => pb::ListenerProtocol::Https,
            }
            .into(),
            certificates: l.certificates.clone(),
        }
    }
}

impl From<&GatewayRoute> for pb::GatewayRoute {
    fn from(r: &GatewayRoute) -> Self {
        pb::GatewayRoute {
            hostname: r.hostname.clone(),
            rule: Some(pb::RouteRule::from(&r.rule)),
        }
    }
}

impl TryFrom<pb::Gateway> for GatewayEntry {
    type Error = WireError;

    fn try_from(g: pb::Gateway) -> Result<Self, WireError> {
        Ok(GatewayEntry {
            listeners: each(g.listeners, "listener")?,
            name: g.name,
            namespace: g.namespace,
            sampling_percentage: g.sampling_percentage.map(|p| p.clamp(0.0, 100.0)),
        })
    }
}

impl TryFrom<pb::GatewayListener> for GatewayListenerEntry {
    type Error = WireError;

    fn try_from(l: pb::GatewayListener) -> Result<Self, WireError> {
        Ok(GatewayListenerEntry {
            port: u16_of(l.port, "port")?,
            routes: each(l.routes, "route")?,
            protocol: match pb::ListenerProtocol::try_from(l.protocol) {
                Ok(pb::ListenerProtocol::Http) => ListenerProtocol::Http,
                Ok(pb::ListenerProtocol::Https) => ListenerProtocol::Https,
                Err(_) => {
                    return Err(WireError::new("protocol", Problem::UnknownEnum(l.protocol)));
                }
            },
            certificates: l.certificates,
            name: l.name,
        })
    }
}

impl TryFrom<pb::GatewayRoute> for GatewayRoute {
    type Error = WireError;

    fn try_from(r: pb::GatewayRoute) -> Result<Self, WireError> {
        Ok(GatewayRoute {
            rule: RouteRule::try_from(required(r.rule, "rule")?)?,
            hostname: r.hostname,
        })
    }
}

impl From<&TlsCertificate> for pb::Certificate {
    fn from(c: &TlsCertificate) -> Self {
        pb::Certificate {
            chain_pem: c.chain_pem.clone(),
            key_pem: c.key_pem.clone(),
            dns_names: c.dns_names.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            serial: c.serial.clone(),
        }
    }
}

impl TryFrom<pb::Certificate> for TlsCertificate {
    type Error = WireError;

    fn try_from(c: pb::Certificate) -> Result<Self, WireError> {
        if c.chain_pem.is_empty() {
            return Err(WireError::new("chain_pem", Problem::Missing));
        }
        if c.key_pem.is_empty() {
            return Err(WireError::new("key_pem", Problem::Missing));
        }
        Ok(TlsCertificate {
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
            dns_names: c.dns_names,
            not_before: c.not_before,
            not_after: c.not_after,
            serial: c.serial,
        })
    }
}
