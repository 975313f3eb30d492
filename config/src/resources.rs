//! A snapshot as a set of typed resources, the unit the discovery protocol sends: one
//! `Mesh` resource, one per `Service`, one per `Cluster`. Each carries a hash of its body,
//! so a delta holds only what changed.

use crate::snapshot::{Cluster, GatewayEntry, MeshInfo, NodeInfo, ServiceEntry, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MESH: &str = "Mesh";
pub const SERVICE: &str = "Service";
pub const CLUSTER: &str = "Cluster";
pub const GATEWAY: &str = "Gateway";

/// `(kind, name)`.
pub type Key = (String, String);

/// One resource's JSON body and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Shared, not copied, by every proxy a resource is sent to.
    pub body: bytes::Bytes,
    pub hash: String,
}

/// The snapshot-wide part: everything that is not a Service or a Cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshResource {
    pub node: NodeInfo,
    pub mesh: MeshInfo,
    pub inbound_services: Vec<String>,
}

/// A snapshot version from its resources' keys and content hashes, in key order.
pub fn version_of<'a>(resources: impl Iterator<Item = (&'a Key, &'a str)>) -> String {
    let mut buf = Vec::with_capacity(4096);
    for ((kind, name), hash) in resources {
        for part in [
            kind.as_bytes(),
            b"\0",
            name.as_bytes(),
            b"\0",
            hash.as_bytes(),
            b"\n",
        ] {
            buf.extend_from_slice(part);
        }
    }
    fnv_hex(&buf)
}

/// Encodes one resource body; its hash is what versions are made of.
pub fn encode<T: Serialize>(v: &T) -> Encoded {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let hash = fnv_hex(&body);
    Encoded {
        body: body.into(),
        hash,
    }
}

/// FNV-1a over `bytes`: stable across builds and platforms, unlike std's SipHash keys.
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Splits a snapshot into its resources.
pub fn split(s: &Snapshot) -> BTreeMap<Key, Encoded> {
    let mut out = BTreeMap::new();
    let mesh = MeshResource {
        node: s.node.clone(),
        mesh: s.mesh.clone(),
        inbound_services: s.inbound_services.clone(),
    };
    out.insert((MESH.to_string(), "mesh".to_string()), encode(&mesh));
    for (name, svc) in &s.services {
        out.insert((SERVICE.to_string(), name.clone()), encode(svc));
    }
    for (name, c) in &s.clusters {
        out.insert((CLUSTER.to_string(), name.clone()), encode(c));
    }
    for (name, g) in &s.gateways {
        out.insert((GATEWAY.to_string(), name.clone()), encode(g));
    }
    out
}

/// Why a resource set cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    // The parse error is part of the message, so it is not also a `source` (a chain printer
    // would print it twice).
    #[error("{kind} {name}: {error}")]
    Body {
        kind: String,
        name: String,
        error: serde_json::Error,
    },
    #[error("unknown resource kind {0:?}; this proxy knows Mesh, Service, Cluster, Gateway")]
    UnknownKind(String),
    #[error("the update leaves no Mesh resource")]
    NoMesh,
    #[error("route {route} sends to cluster {cluster:?}, which the update does not hold")]
    MissingCluster { route: String, cluster: String },
    #[error("the resources hash to {actual}, not to the announced version {announced}")]
    VersionMismatch { actual: String, announced: String },
}

/// Rebuilds a snapshot from a complete resource set and checks it against `version`.
/// Any error means the set cannot be served: a missing Mesh resource, a body that does not
/// parse, a route to a cluster that is absent, or content that does not hash to `version`.
pub fn assemble<B: AsRef<[u8]>>(
    set: &BTreeMap<Key, B>,
    version: &str,
) -> Result<Snapshot, AssembleError> {
    let mut mesh: Option<MeshResource> = None;
    let mut services = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    let mut gateways = BTreeMap::new();
    for ((kind, name), body) in set {
        let bad = |error| AssembleError::Body {
            kind: kind.clone(),
            name: name.clone(),
            error,
        };
        match kind.as_str() {
            MESH => mesh = Some(serde_json::from_slice(body.as_ref()).map_err(bad)?),
            SERVICE => {
                services.insert(
                    name.clone(),
                    serde_json::from_slice::<ServiceEntry>(body.as_ref()).map_err(bad)?,
                );
            }
            CLUSTER => {
                clusters.insert(
                    name.clone(),
                    serde_json::from_slice::<Cluster>(body.as_ref()).map_err(bad)?,
                );
            }
            GATEWAY => {
                gateways.insert(
                    name.clone(),
                    serde_json::from_slice::<GatewayEntry>(body.as_ref()).map_err(bad)?,
                );
            }
            other => {
                return Err(AssembleError::UnknownKind(other.to_string()));
            }
        }
    }
    let mesh = mesh.ok_or(AssembleError::NoMesh)?;
    let service_rules = services
        .values()
        .flat_map(|s| &s.ports)
        .flat_map(|p| &p.routes);
    let gateway_rules = gateways
        .values()
        .flat_map(|g: &GatewayEntry| &g.listeners)
        .flat_map(|l| l.routes.iter().map(|r| &r.rule));
    for rule in service_rules.chain(gateway_rules) {
        for b in &rule.backends {
            if !clusters.contains_key(&b.cluster) {
                return Err(AssembleError::MissingCluster {
                    route: rule.route.clone(),
                    cluster: b.cluster.clone(),
                });
            }
        }
    }
    let hashes: Vec<(&Key, String)> = set
        .iter()
        .map(|(k, body)| (k, fnv_hex(body.as_ref())))
        .collect();
    let actual = version_of(hashes.iter().map(|(k, h)| (*k, h.as_str())));
    if actual != version {
        return Err(AssembleError::VersionMismatch {
            actual,
            announced: version.to_string(),
        });
    }
    Ok(Snapshot {
        version: actual,
        node: mesh.node,
        mesh: mesh.mesh,
        services,
        clusters,
        inbound_services: mesh.inbound_services,
        gateways,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_assemble_round_trips() {
        let yaml = include_str!("../tests/design_example.yaml");
        let cfg = crate::load_str("mesh.yaml", yaml).unwrap();
        let snap = crate::compile(
            &cfg,
            &crate::NodeIdentity {
                namespace: "rides".into(),
                ..Default::default()
            },
        );
        let set: BTreeMap<Key, bytes::Bytes> =
            split(&snap).into_iter().map(|(k, v)| (k, v.body)).collect();
        assert_eq!(assemble(&set, &snap.version).unwrap(), snap);
        let mut missing = set.clone();
        missing.retain(|(kind, _), _| kind != CLUSTER);
        assert!(
            assemble(&missing, &snap.version)
                .unwrap_err()
                .to_string()
                .contains("does not hold")
        );
        assert!(
            assemble(&set, "0000")
                .unwrap_err()
                .to_string()
                .contains("announced version")
        );
    }
}
