//! `trellis.v1.Resource` and its key, written by hand: its typed payload stays the encoded bytes of the
//! kind's message, so it is encoded once and hashed exactly as it was sent.

// On the wire an embedded message and a `bytes` field are the same thing (a length-delimited
// field), so this struct reads and writes exactly what discovery.proto declares. Keeping the
// payload as bytes has two reasons. The control plane encodes each resource once and shares
// the bytes with every proxy it goes to, where a generated struct would be re-encoded per
// stream. And a proxy hashes the bytes it received: re-encoding what it decoded would drop
// fields it does not know yet, and the version check would fail for every newer control plane.

use bytes::Bytes;

/// `(kind, name)`: which resource. `kind` is one of "Mesh", "Service", "Cluster", "Gateway".
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ResourceKey {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// One resource: `key`, the `hash` of its payload, and the payload, the encoded message of
/// its kind (`trellis.v1.Mesh`, `Service`, `Cluster` or `Gateway`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, optional, tag = "1")]
    pub key: Option<ResourceKey>,
    #[prost(string, tag = "3")]
    pub hash: String,
    #[prost(oneof = "Payload", tags = "4, 5, 6, 7")]
    pub payload: Option<Payload>,
}

/// The `payload` oneof: which kind's message the bytes encode.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Payload {
    /// A `trellis.v1.Mesh`.
    #[prost(bytes = "bytes", tag = "4")]
    Mesh(Bytes),
    /// A `trellis.v1.Service`.
    #[prost(bytes = "bytes", tag = "5")]
    Service(Bytes),
    /// A `trellis.v1.Cluster`.
    #[prost(bytes = "bytes", tag = "6")]
    Cluster(Bytes),
    /// A `trellis.v1.Gateway`.
    #[prost(bytes = "bytes", tag = "7")]
    Gateway(Bytes),
}

impl Payload {
    /// The encoded message, whatever its kind.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Payload::Mesh(b) | Payload::Service(b) | Payload::Cluster(b) | Payload::Gateway(b) => b,
        }
    }

    /// The `ResourceKey.kind` this payload belongs to.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Mesh(_) => "Mesh",
            Payload::Service(_) => "Service",
            Payload::Cluster(_) => "Cluster",
            Payload::Gateway(_) => "Gateway",
        }
    }
}
