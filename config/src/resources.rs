//! A snapshot as a set of typed resources, the unit the discovery protocol sends: one
//! `Mesh` resource, one per `Service`, `Cluster` and `Gateway`. Each is the encoded
//! `trellis.v1` message of its kind with a hash of those bytes, so a delta holds only what changed.

use crate::snapshot::{Cluster, GatewayEntry, ServiceEntry, Snapshot};
// The Mesh resource's type lives beside the types it gathers; it is named here too.
pub use crate::snapshot::MeshResource;
use crate::wire::WireError;
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use trellis_proto::resource::{Payload, Resource};
use trellis_proto::v1 as pb;

pub const MESH: &str = "Mesh";
pub const SERVICE: &str = "Service";
pub const CLUSTER: &str = "Cluster";
pub const GATEWAY: &str = "Gateway";

/// `(kind, name)`.
pub type Key = (String, String);

/// One resource's encoded message and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The message's bytes, tagged with its kind; shared, not copied, by every proxy a
    /// resource is sent to.
    pub payload: Payload,
    pub hash: String,
}

/// A snapshot type that travels as a resource kind of its own, and its `trellis.v1` message.
pub trait Kind: Sized {
    const KIND: &'static str;
    type Message: Message + Default + for<'a> From<&'a Self> + TryInto<Self, Error = WireError>;
    /// The payload variant that carries this kind.
    fn payload(body: Bytes) -> Payload;
}

impl Kind for MeshResource {
    const KIND: &'static str = MESH;
    type Message = pb::Mesh;
    fn payload(body: Bytes) -> Payload {
        Payload::Mesh(body)
    }
}

impl Kind for ServiceEntry {
    const KIND: &'static str = SERVICE;
    type Message = pb::Service;
    fn payload(body: Bytes) -> Payload {
        Payload::Service(body)
    }
}

impl Kind for Cluster {
    const KIND: &'static str = CLUSTER;
    type Message = pb::Cluster;
    fn payload(body: Bytes) -> Payload {
        Payload::Cluster(body)
    }
}

impl Kind for GatewayEntry {
    const KIND: &'static str = GATEWAY;
    type Message = pb::Gateway;
    fn payload(body: Bytes) -> Payload {
        Payload::Gateway(body)
    }
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

/// Encodes one resource; its hash is what versions are made of. prost writes fields in
/// number order and the messages have no maps, so equal content gives equal bytes (and an
/// equal version) on every control-plane replica and after every restart.
pub fn encode<T: Kind>(v: &T) -> Encoded {
    let body = T::Message::from(v).encode_to_vec();
    let hash = fnv_hex(&body);
    Encoded {
        payload: T::payload(body.into()),
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

/// A resource as the discovery stream carries it.
pub fn to_wire(key: &Key, e: &Encoded) -> Resource {
    Resource {
        key: Some(pb::ResourceKey {
            kind: key.0.clone(),
            name: key.1.clone(),
        }),
        hash: e.hash.clone(),
        payload: Some(e.payload.clone()),
    }
}

/// What a proxy holds, as it names it when it subscribes again: each resource's key and the
/// hash of its encoded message, from which the control plane sends only what differs.
pub fn held_hashes<'a>(
    held: impl IntoIterator<Item = (&'a Key, &'a [u8])>,
) -> Vec<pb::ResourceVersion> {
    held.into_iter()
        .map(|((kind, name), body)| pb::ResourceVersion {
            key: Some(pb::ResourceKey {
                kind: kind.clone(),
                name: name.clone(),
            }),
            hash: fnv_hex(body),
        })
        .collect()
}

/// A received resource's key and encoded message, once its payload is the kind its key names.
pub fn from_wire(r: &Resource) -> Result<(Key, Bytes), AssembleError> {
    let key = r.key.as_ref().ok_or(AssembleError::NoKey)?;
    let payload = r.payload.as_ref().ok_or_else(|| AssembleError::NoPayload {
        kind: key.kind.clone(),
        name: key.name.clone(),
    })?;
    if payload.kind() != key.kind {
        return Err(AssembleError::KindMismatch {
            kind: key.kind.clone(),
            name: key.name.clone(),
            payload: payload.kind(),
        });
    }
    Ok((
        (key.kind.clone(), key.name.clone()),
        payload.bytes().clone(),
    ))
}

/// Why a resource set cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("a resource without a key")]
    NoKey,
    #[error("{kind} {name}: the resource carries no payload")]
    NoPayload { kind: String, name: String },
    #[error("{kind} {name}: the payload is a {payload}, not a {kind}")]
    KindMismatch {
        kind: String,
        name: String,
        payload: &'static str,
    },
    // The cause is part of the message, so it is not also a `source` (a chain printer would
    // print it twice).
    #[error("{kind} {name}: not a trellis.v1.{kind} message: {error}")]
    Decode {
        kind: String,
        name: String,
        error: prost::DecodeError,
    },
    #[error("{kind} {name}: {error}")]
    Invalid {
        kind: String,
        name: String,
        error: WireError,
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

/// One resource, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Mesh(MeshResource),
    Service(ServiceEntry),
    Cluster(Box<Cluster>),
    Gateway(GatewayEntry),
}

/// Decodes one resource's message by the kind its key names, and checks every field.
pub fn decode(key: &Key, body: &[u8]) -> Result<Decoded, AssembleError> {
    let (kind, name) = key;
    Ok(match kind.as_str() {
        MESH => Decoded::Mesh(decode_as(name, body)?),
        SERVICE => Decoded::Service(decode_as(name, body)?),
        CLUSTER => Decoded::Cluster(Box::new(decode_as(name, body)?)),
        GATEWAY => Decoded::Gateway(decode_as(name, body)?),
        other => return Err(AssembleError::UnknownKind(other.to_string())),
    })
}

fn decode_as<T: Kind>(name: &str, body: &[u8]) -> Result<T, AssembleError> {
    let message = T::Message::decode(body).map_err(|error| AssembleError::Decode {
        kind: T::KIND.to_string(),
        name: name.to_string(),
        error,
    })?;
    message.try_into().map_err(|error| AssembleError::Invalid {
        kind: T::KIND.to_string(),
        name: name.to_string(),
        error,
    })
}

/// Rebuilds a snapshot from a complete resource set and checks it against `version`.
/// Any error means the set cannot be served: a missing Mesh resource, a message that does not
/// decode or holds an invalid field, a route to a cluster that is absent, or content that does
/// not hash to `version`.
pub fn assemble<B: AsRef<[u8]>>(
    set: &BTreeMap<Key, B>,
    version: &str,
) -> Result<Snapshot, AssembleError> {
    let mut mesh: Option<MeshResource> = None;
    let mut services = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    let mut gateways = BTreeMap::new();
    for (key, body) in set {
        let name = key.1.clone();
        match decode(key, body.as_ref())? {
            Decoded::Mesh(m) => mesh = Some(m),
            Decoded::Service(s) => {
                services.insert(name, s);
            }
            Decoded::Cluster(c) => {
                clusters.insert(name, *c);
            }
            Decoded::Gateway(g) => {
                gateways.insert(name, g);
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

/// A snapshot through the wire and back: split, then assemble. Equal to `s` for every
/// snapshot the compiler makes (checked in debug builds, see `compile`).
pub fn round_trip(s: &Snapshot) -> Result<Snapshot, AssembleError> {
    let set: BTreeMap<Key, Bytes> = split(s)
        .into_iter()
        .map(|(k, e)| (k, e.payload.bytes().clone()))
        .collect();
    assemble(&set, &s.version)
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
        let set: BTreeMap<Key, bytes::Bytes> = split(&snap)
            .into_iter()
            .map(|(k, v)| (k, v.payload.bytes().clone()))
            .collect();
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
        // What a resubscribing proxy names is what the control plane hashed when it sent it.
        let sent = split(&snap);
        let held = held_hashes(set.iter().map(|(k, b)| (k, b.as_ref())));
        assert_eq!(held.len(), sent.len());
        for h in held {
            let k = h.key.unwrap();
            assert_eq!(h.hash, sent[&(k.kind, k.name)].hash);
        }
    }
}
