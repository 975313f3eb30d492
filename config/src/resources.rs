//! A snapshot as a set of typed resources, the unit the discovery protocol sends: one
//! `Mesh` resource, one per `Service`, `Cluster` and `Gateway`, and for a scoped proxy one
//! `ServiceNames`. Each is the encoded
//! `trellis.v1` message of its kind with a hash of those bytes, so a delta holds only what changed.

use crate::snapshot::{
    Cluster, GatewayEntry, ServiceEntry, ServiceNames, Snapshot, TlsCertificate,
};
use crate::sorted::{Side, join};
// The Mesh resource's type lives beside the types it gathers; it is named here too.
pub use crate::snapshot::MeshResource;
use crate::wire::WireError;
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use trellis_proto::resource::{Payload, Resource};
use trellis_proto::v1 as pb;

pub const MESH: &str = "Mesh";
pub const SERVICE: &str = "Service";
pub const CLUSTER: &str = "Cluster";
pub const GATEWAY: &str = "Gateway";
pub const SERVICE_NAMES: &str = "ServiceNames";
pub const CERTIFICATE: &str = "Certificate";

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

impl Kind for ServiceNames {
    const KIND: &'static str = SERVICE_NAMES;
    type Message = pb::ServiceNames;
    fn payload(body: Bytes) -> Payload {
        Payload::ServiceNames(body)
    }
}

impl Kind for TlsCertificate {
    const KIND: &'static str = CERTIFICATE;
    type Message = pb::Certificate;
    fn payload(body: Bytes) -> Payload {
        Payload::Certificate(body)
    }
}

/// The key of the one `ServiceNames` resource.
pub fn service_names_key() -> Key {
    (SERVICE_NAMES.to_string(), "mesh".to_string())
}

/// A snapshot version from its resources' keys and content hashes: the sum, modulo 2^64, of
/// each resource's `entry_hash`. A sum has no order, so a proxy holding thousands of
/// resources updates its version by what an update changes instead of hashing everything
/// it holds again.
pub fn version_of<'a>(resources: impl Iterator<Item = (&'a Key, &'a str)>) -> String {
    version_hex(sum_of(resources))
}

/// The sum (mod 2^64) of the resources' `entry_hash`es, which `version_of` writes out: a
/// version can be summed in parts.
pub fn sum_of<'a>(resources: impl Iterator<Item = (&'a Key, &'a str)>) -> u64 {
    resources.fold(0, |sum, (key, hash)| {
        sum.wrapping_add(entry_hash(key, hash))
    })
}

/// One resource's part of its snapshot's version: FNV-1a over `kind \0 name \0 hash \n`.
pub fn entry_hash((kind, name): &Key, hash: &str) -> u64 {
    let mut h = Fnv::default();
    for part in [
        kind.as_bytes(),
        b"\0",
        name.as_bytes(),
        b"\0",
        hash.as_bytes(),
        b"\n",
    ] {
        h.write(part);
    }
    h.0
}

/// A version as it travels: the sum of its resources' `entry_hash`es, in hex.
pub fn version_hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's SipHash keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
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

/// FNV-1a over `bytes`, as 16 hex digits.
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h = Fnv::default();
    h.write(bytes);
    format!("{:016x}", h.0)
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
    if let Some(names) = &s.service_names {
        out.insert(service_names_key(), encode(names.as_ref()));
    }
    for (name, svc) in &s.services {
        out.insert((SERVICE.to_string(), name.clone()), encode(svc.as_ref()));
    }
    for (name, c) in &s.clusters {
        out.insert((CLUSTER.to_string(), name.clone()), encode(c.as_ref()));
    }
    for (name, g) in &s.gateways {
        out.insert((GATEWAY.to_string(), name.clone()), encode(g));
    }
    for (name, c) in &s.certificates {
        out.insert((CERTIFICATE.to_string(), name.clone()), encode(c.as_ref()));
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

/// A resource as one entry of a `DiscoveryResponse`'s `upserted` (field 3): its tag, its length
/// and its `Resource` message. Responses are these entries side by side, so a sender that
/// keeps them encodes each resource once for every proxy it goes to.
pub fn upserted_entry(key: &Key, e: &Encoded) -> Bytes {
    let resource = to_wire(key, e);
    let mut buf = Vec::with_capacity(resource.encoded_len() + 8);
    prost::encoding::message::encode(UPSERTED_FIELD, &resource, &mut buf);
    buf.into()
}

/// `DiscoveryResponse.upserted`'s field number.
pub const UPSERTED_FIELD: u32 = 3;

/// What a proxy holds, as it names it when it subscribes again: each resource's key and the
/// hash of its encoded message (`ResourceSet::hashes`), from which the control plane sends
/// only what differs.
pub fn held_hashes<'a>(
    held: impl IntoIterator<Item = (&'a Key, &'a str)>,
) -> Vec<pb::ResourceVersion> {
    held.into_iter()
        .map(|((kind, name), hash)| pb::ResourceVersion {
            key: Some(pb::ResourceKey {
                kind: kind.clone(),
                name: name.clone(),
            }),
            hash: hash.to_string(),
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
    #[error(
        "unknown resource kind {0:?}; this proxy knows Mesh, Service, Cluster, Gateway, ServiceNames, Certificate"
    )]
    UnknownKind(String),
    #[error("the update leaves no Mesh resource")]
    NoMesh,
    #[error("route {route} sends to cluster {cluster:?}, which the update does not hold")]
    MissingCluster { route: String, cluster: String },
    #[error("the resources hash to {actual}, not to the announced version {announced}")]
    VersionMismatch { actual: String, announced: String },
}

/// One resource, decoded and checked. Services and clusters are `Arc`s, so the snapshots
/// made from one held set share them.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Mesh(Arc<MeshResource>),
    Service(Arc<ServiceEntry>),
    Cluster(Arc<Cluster>),
    Gateway(Arc<GatewayEntry>),
    ServiceNames(Arc<ServiceNames>),
    Certificate(Arc<TlsCertificate>),
}

/// Decodes one resource's message by the kind its key names, and checks every field.
pub fn decode(key: &Key, body: &[u8]) -> Result<Decoded, AssembleError> {
    let (kind, name) = key;
    Ok(match kind.as_str() {
        MESH => Decoded::Mesh(Arc::new(decode_as(name, body)?)),
        SERVICE => Decoded::Service(Arc::new(decode_as(name, body)?)),
        CLUSTER => Decoded::Cluster(Arc::new(decode_as(name, body)?)),
        GATEWAY => Decoded::Gateway(Arc::new(decode_as(name, body)?)),
        SERVICE_NAMES => Decoded::ServiceNames(Arc::new(decode_as(name, body)?)),
        CERTIFICATE => Decoded::Certificate(Arc::new(decode_as(name, body)?)),
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
    let update = Update {
        replace: true,
        upserted: set
            .iter()
            .map(|(k, b)| (k.clone(), Bytes::copy_from_slice(b.as_ref())))
            .collect(),
        removed: Vec::new(),
        version: version.to_string(),
    };
    Ok(ResourceSet::default().stage(update)?.0)
}

/// One update as the proxy received it: resources to add or replace, keys to remove, and
/// the version the result must hash to.
#[derive(Debug, Default)]
pub struct Update {
    /// Start from an empty set rather than from what is held.
    pub replace: bool,
    pub upserted: Vec<(Key, Bytes)>,
    pub removed: Vec<Key>,
    pub version: String,
}

/// The resources a proxy holds: each one's bytes as received, their hash, and the decoded
/// form. An update decodes only what it upserts, and the snapshot it makes shares every
/// other Service and cluster with the one before, so applying one changed endpoint costs
/// the same with 10 clusters held or with 10,000.
#[derive(Debug, Default)]
pub struct ResourceSet {
    held: BTreeMap<Key, Held>,
    /// The sum of the held resources' `entry_hash`es: their version, kept as it changes.
    sum: u64,
}

#[derive(Debug, Clone)]
struct Held {
    hash: String,
    /// `entry_hash(key, hash)`, this resource's part of the version.
    entry: u64,
    decoded: Decoded,
}

/// An update checked against the held set: the changes that `ResourceSet::commit` makes to
/// the held set once the snapshot it made is being served.
#[derive(Debug)]
pub struct Staged {
    replace: bool,
    sum: u64,
    /// `None` removes the key.
    changes: BTreeMap<Key, Option<Held>>,
}

impl ResourceSet {
    /// Each held resource's key and the hash of its bytes, in key order.
    pub fn hashes(&self) -> impl Iterator<Item = (&Key, &str)> {
        self.held.iter().map(|(k, h)| (k, h.hash.as_str()))
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Checks `update` on top of what is held, without changing it: every upserted payload
    /// decodes and holds valid fields, a Mesh resource is left, every route sends to a
    /// cluster that is left, and the result hashes to the announced version. Returns the
    /// snapshot the update makes, and the update to commit once that snapshot is served.
    pub fn stage(&self, update: Update) -> Result<(Snapshot, Staged), AssembleError> {
        let mut changes: BTreeMap<Key, Option<Held>> = BTreeMap::new();
        for key in update.removed {
            changes.insert(key, None);
        }
        for (key, body) in update.upserted {
            let hash = fnv_hex(&body);
            let held = Held {
                entry: entry_hash(&key, &hash),
                hash,
                decoded: decode(&key, &body)?,
            };
            changes.insert(key, Some(held));
        }
        let base = if update.replace {
            None
        } else {
            Some(&self.held)
        };
        let next = || merged(base, &changes);
        // Keys are in order, so each map is built in one pass rather than by inserts.
        let mut mesh = None;
        let mut services = Vec::new();
        let mut clusters = Vec::new();
        let mut gateways = Vec::new();
        let mut service_names = None;
        let mut certificates = Vec::new();
        for ((_, name), h) in next() {
            match &h.decoded {
                Decoded::Mesh(m) => mesh = Some(m.clone()),
                Decoded::Service(s) => services.push((name.clone(), s.clone())),
                Decoded::Cluster(c) => clusters.push((name.clone(), c.clone())),
                Decoded::Gateway(g) => gateways.push((name.clone(), (**g).clone())),
                Decoded::ServiceNames(n) => service_names = Some(n.clone()),
                Decoded::Certificate(c) => certificates.push((name.clone(), c.clone())),
            }
        }
        let mesh = mesh.ok_or(AssembleError::NoMesh)?;
        let (services, clusters, gateways): (BTreeMap<_, _>, BTreeMap<_, _>, BTreeMap<_, _>) = (
            services.into_iter().collect(),
            clusters.into_iter().collect(),
            gateways.into_iter().collect(),
        );
        let mut snapshot = Snapshot {
            version: String::new(),
            node: mesh.node.clone(),
            mesh: mesh.mesh.clone(),
            services,
            clusters,
            inbound_services: mesh.inbound_services.clone(),
            gateways,
            service_names,
            certificates: certificates.into_iter().collect(),
        };
        // Only a route that changed, or one whose cluster went away, can miss its cluster.
        let cluster_removed = update.replace
            || changes
                .iter()
                .any(|((kind, _), h)| kind == CLUSTER && h.is_none());
        let changed = |kind: &str, name: &String| {
            cluster_removed || changes.contains_key(&(kind.to_string(), name.clone()))
        };
        let service_rules = (snapshot.services.iter())
            .filter(|(name, _)| changed(SERVICE, name))
            .flat_map(|(_, s)| &s.ports)
            .flat_map(|p| &p.routes);
        let gateway_rules = (snapshot.gateways.iter())
            .filter(|(name, _)| changed(GATEWAY, name))
            .flat_map(|(_, g)| &g.listeners)
            .flat_map(|l| l.routes.iter().map(|r| &r.rule));
        for rule in service_rules.chain(gateway_rules) {
            for b in &rule.backends {
                if !snapshot.clusters.contains_key(&b.cluster) {
                    return Err(AssembleError::MissingCluster {
                        route: rule.route.clone(),
                        cluster: b.cluster.clone(),
                    });
                }
            }
        }
        // Last, as docs/protocol.md orders the checks: a missed or reordered delta. The
        // version moves by what the update takes out and puts in.
        let mut sum = if update.replace { 0 } else { self.sum };
        for (key, change) in &changes {
            if let Some(old) = base.and_then(|b| b.get(key)) {
                sum = sum.wrapping_sub(old.entry);
            }
            if let Some(new) = change {
                sum = sum.wrapping_add(new.entry);
            }
        }
        let actual = version_hex(sum);
        if actual != update.version {
            return Err(AssembleError::VersionMismatch {
                actual,
                announced: update.version,
            });
        }
        snapshot.version = actual;
        let staged = Staged {
            replace: update.replace,
            changes,
            sum,
        };
        Ok((snapshot, staged))
    }

    /// Makes a staged update what is held; called once its snapshot is served.
    pub fn commit(&mut self, staged: Staged) {
        if staged.replace {
            self.held.clear();
        }
        self.sum = staged.sum;
        for (key, change) in staged.changes {
            match change {
                Some(h) => {
                    self.held.insert(key, h);
                }
                None => {
                    self.held.remove(&key);
                }
            }
        }
    }
}

/// `base` (or nothing) with `changes` applied, in key order, without building it.
fn merged<'a>(
    base: Option<&'a BTreeMap<Key, Held>>,
    changes: &'a BTreeMap<Key, Option<Held>>,
) -> impl Iterator<Item = (&'a Key, &'a Held)> {
    join(base.into_iter().flatten(), changes).filter_map(|(k, side)| match side {
        Side::Left(held) => Some((k, held)),
        // The change replaces (or removes) the held resource.
        Side::Right(change) | Side::Both(_, change) => change.as_ref().map(|h| (k, h)),
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
        let (rs, _) = holding(&snap);
        let held = held_hashes(rs.hashes());
        assert_eq!(held.len(), sent.len());
        for h in held {
            let k = h.key.unwrap();
            assert_eq!(h.hash, sent[&(k.kind, k.name)].hash);
        }
    }

    fn design_snapshot() -> Snapshot {
        let yaml = include_str!("../tests/design_example.yaml");
        let cfg = crate::load_str("mesh.yaml", yaml).unwrap();
        crate::compile(
            &cfg,
            &crate::NodeIdentity {
                namespace: "rides".into(),
                ..Default::default()
            },
        )
    }

    fn bodies(s: &Snapshot) -> BTreeMap<Key, Bytes> {
        split(s)
            .into_iter()
            .map(|(k, v)| (k, v.payload.bytes().clone()))
            .collect()
    }

    /// A set holding all of `s`, and the snapshot that staging it made.
    fn holding(s: &Snapshot) -> (ResourceSet, Snapshot) {
        let mut set = ResourceSet::default();
        let (snapshot, staged) = set
            .stage(Update {
                replace: true,
                upserted: bodies(s).into_iter().collect(),
                removed: Vec::new(),
                version: s.version.clone(),
            })
            .unwrap();
        set.commit(staged);
        (set, snapshot)
    }

    #[test]
    fn a_delta_decodes_only_what_it_upserts_and_shares_the_rest() {
        let s1 = design_snapshot();
        let (mut set, first) = holding(&s1);
        assert_eq!(first, s1);

        // One endpoint moves in one cluster.
        let mut s2 = s1.clone();
        let name = s2.clusters.keys().next().unwrap().clone();
        let c = Arc::make_mut(s2.clusters.get_mut(&name).unwrap());
        c.endpoints[0].address = "127.0.9.9:1".parse().unwrap();
        s2.version = crate::compile::content_version(&s2);
        let key = (CLUSTER.to_string(), name.clone());
        let body = bodies(&s2)[&key].clone();
        let delta = || Update {
            replace: false,
            upserted: vec![(key.clone(), body.clone())],
            removed: Vec::new(),
            version: s2.version.clone(),
        };
        let (second, staged) = set.stage(delta()).unwrap();
        assert_eq!(second, s2);
        // Unchanged Services and clusters are the very `Arc`s of the first snapshot.
        for (k, c) in &second.clusters {
            assert_eq!(Arc::ptr_eq(c, &first.clusters[k]), *k != name, "{k}");
        }
        for (k, s) in &second.services {
            assert!(Arc::ptr_eq(s, &first.services[k]), "{k}");
        }
        // Staging changes nothing held: the same delta stages again until committed.
        assert!(set.stage(delta()).is_ok());
        set.commit(staged);
        let held: Vec<_> = set
            .hashes()
            .map(|(k, h)| (k.clone(), h.to_string()))
            .collect();
        let expected: Vec<_> = split(&s2).into_iter().map(|(k, e)| (k, e.hash)).collect();
        assert_eq!(held, expected);
    }

    #[test]
    fn a_delta_that_removes_a_routed_cluster_or_misses_the_version_is_refused() {
        let s1 = design_snapshot();
        let (set, _) = holding(&s1);
        let routed = s1.services["rides/billing"].ports[0].routes[0].backends[0]
            .cluster
            .clone();
        let err = set
            .stage(Update {
                replace: false,
                upserted: Vec::new(),
                removed: vec![(CLUSTER.to_string(), routed.clone())],
                version: s1.version.clone(),
            })
            .unwrap_err();
        assert!(err.to_string().contains(&routed), "{err}");
        assert_eq!(
            set.len(),
            bodies(&s1).len(),
            "a refused delta changes nothing"
        );
        let err = set
            .stage(Update {
                replace: false,
                upserted: Vec::new(),
                removed: Vec::new(),
                version: "0000".into(),
            })
            .unwrap_err();
        assert!(err.to_string().contains("announced version"), "{err}");
    }
}
