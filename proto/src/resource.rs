//! `trellis.v1.Resource` and its key, written by hand: the typed payload stays the encoded
//! bytes of the kind's message, so it is encoded once and hashed exactly as it was sent.

// On the wire an embedded message and a `bytes` field are the same thing (a length-delimited
// field), so this struct reads and writes exactly what discovery.proto declares. Keeping the
// payload as bytes has two reasons. The control plane encodes each resource once and shares
// the bytes with every proxy it goes to, where a generated struct would be re-encoded per
// stream. And a proxy hashes the bytes it received: re-encoding what it decoded would drop
// fields it does not know yet, and the version check would fail for every newer control plane.

use bytes::Bytes;

/// `(kind, name)`: which resource. `kind` is one of "Mesh", "Service", "Cluster", "Gateway",
/// "ServiceNames", "Certificate".
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ResourceKey {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// One resource: `key`, the `hash` of its payload, and the payload, the encoded message of
/// its kind (`trellis.v1.Mesh`, `Service`, `Cluster`, `Gateway`, `ServiceNames` or
/// `Certificate`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, optional, tag = "1")]
    pub key: Option<ResourceKey>,
    #[prost(string, tag = "3")]
    pub hash: String,
    #[prost(oneof = "Payload", tags = "4, 5, 6, 7, 8, 9")]
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
    /// A `trellis.v1.ServiceNames`.
    #[prost(bytes = "bytes", tag = "8")]
    ServiceNames(Bytes),
    /// A `trellis.v1.Certificate`: sent only to a proxy that serves the Gateway using it.
    #[prost(bytes = "bytes", tag = "9")]
    Certificate(Bytes),
}

impl Payload {
    /// The encoded message, whatever its kind.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Payload::Mesh(b)
            | Payload::Service(b)
            | Payload::Cluster(b)
            | Payload::Gateway(b)
            | Payload::ServiceNames(b)
            | Payload::Certificate(b) => b,
        }
    }

    /// The `ResourceKey.kind` this payload belongs to.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Mesh(_) => "Mesh",
            Payload::Service(_) => "Service",
            Payload::Cluster(_) => "Cluster",
            Payload::Gateway(_) => "Gateway",
            Payload::ServiceNames(_) => "ServiceNames",
            Payload::Certificate(_) => "Certificate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use prost::Message;

    /// `Resource` as discovery.proto declares it, with the payload as a message: what any
    /// other protobuf implementation generates.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Declared {
        #[prost(message, optional, tag = "1")]
        key: Option<ResourceKey>,
        #[prost(string, tag = "3")]
        hash: String,
        #[prost(message, optional, tag = "6")]
        cluster: Option<v1::Cluster>,
    }

    #[test]
    fn the_bytes_payload_is_the_declared_message_on_the_wire() {
        let cluster = v1::Cluster {
            name: "billing.rides:80".into(),
            port: 80,
            endpoints: vec![v1::Endpoint {
                address: "[fd00::1]:8080".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let key = Some(ResourceKey {
            kind: "Cluster".into(),
            name: "billing.rides:80".into(),
        });
        let ours = Resource {
            key: key.clone(),
            hash: "h".into(),
            payload: Some(Payload::Cluster(cluster.encode_to_vec().into())),
        };
        let declared = Declared {
            key,
            hash: "h".into(),
            cluster: Some(cluster),
        };
        assert_eq!(ours.encode_to_vec(), declared.encode_to_vec());
        assert_eq!(Declared::decode(&*ours.encode_to_vec()).unwrap(), declared);
        assert_eq!(Resource::decode(&*declared.encode_to_vec()).unwrap(), ours);
    }
}
