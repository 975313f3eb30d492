//! A proxy's side of the discovery protocol, spoken by a bare gRPC client: it gathers an
//! update's parts, applies them as a real proxy does, and names what it holds when it
//! subscribes again. Shared by the protocol tests and the replica tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::*;

/// The resources a proxy holds, by (kind, name), as received.
pub type Held = BTreeMap<(String, String), bytes::Bytes>;

/// What a proxy holding `held` names in its Subscribe.
pub fn hashes(held: &Held) -> Vec<ResourceVersion> {
    let hashes: Vec<(&(String, String), String)> = (held.iter())
        .map(|(k, b)| (k, trellis_config::resources::fnv_hex(b)))
        .collect();
    trellis_config::resources::held_hashes(hashes.iter().map(|(k, h)| (*k, h.as_str())))
}

/// A Subscribe as a proxy of this release sends it, holding nothing.
pub fn subscribe(node: Node, version: &str) -> Subscribe {
    Subscribe {
        node: Some(node),
        version: version.into(),
        protocol: trellis_proto::PROTOCOL,
        release: env!("CARGO_PKG_VERSION").into(),
        held: Vec::new(),
    }
}

pub struct FakeProxy {
    pub tx: mpsc::Sender<DiscoveryRequest>,
    pub rx: tonic::Streaming<DiscoveryResponse>,
    pub held: Held,
}

impl FakeProxy {
    /// A stream opened with `first`: the proxy and the response headers, or the refusal.
    pub async fn open(
        channel: tonic::transport::Channel,
        first: Subscribe,
    ) -> Result<(FakeProxy, tonic::metadata::MetadataMap), tonic::Status> {
        let mut client = DiscoveryClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        tx.send(DiscoveryRequest {
            kind: Some(Kind::Subscribe(first)),
        })
        .await
        .unwrap();
        let res = client.stream(ReceiverStream::new(rx)).await?;
        let headers = res.metadata().clone();
        let p = FakeProxy {
            tx,
            rx: res.into_inner(),
            held: BTreeMap::new(),
        };
        Ok((p, headers))
    }

    /// The next whole update, its parts gathered.
    pub async fn next(&mut self) -> DiscoveryResponse {
        let mut update: Option<DiscoveryResponse> = None;
        loop {
            let part = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("an update in time")
                .unwrap()
                .unwrap();
            let acc = match update.take() {
                Some(mut acc) => {
                    assert_eq!(acc.nonce, part.nonce, "parts of one update share a nonce");
                    acc.upserted.extend(part.upserted);
                    acc.removed.extend(part.removed);
                    acc.more = part.more;
                    acc
                }
                None => part,
            };
            if !acc.more {
                return acc;
            }
            update = Some(acc);
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.message()).await.is_err()
    }

    /// Applies an update as a real proxy would and returns the assembled snapshot's version.
    pub fn apply(&mut self, u: &DiscoveryResponse) -> String {
        if u.replace {
            self.held.clear();
        }
        for k in &u.removed {
            self.held.remove(&(k.kind.clone(), k.name.clone()));
        }
        for r in &u.upserted {
            let (k, body) =
                trellis_config::resources::from_wire(r).expect("a well-formed resource");
            self.held.insert(k, body);
        }
        trellis_config::resources::assemble(&self.held, &u.version)
            .expect("the update assembles")
            .version
    }

    pub async fn send(&self, kind: Kind) {
        self.tx
            .send(DiscoveryRequest { kind: Some(kind) })
            .await
            .unwrap();
    }

    /// ACKs `u`.
    pub async fn ack(&self, u: &DiscoveryResponse) {
        self.send(Kind::Ack(Ack {
            version: u.version.clone(),
            nonce: u.nonce.clone(),
        }))
        .await;
    }
}
