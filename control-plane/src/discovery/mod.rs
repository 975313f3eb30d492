//! The discovery stream: one per proxy. The proxy subscribes with its node; the control plane
//! pushes the delta between what it last sent and the proxy's current snapshot, and records
//! the ACK or NACK that answers each push.

mod grpc;
mod negotiation;

pub use grpc::DiscoveryServer;

use crate::metrics::{ReasonLabel, ResultLabel};
use crate::state::ControlPlane;
use crate::world::{Compiled, Delta, World};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::metadata::MetadataMap;
use trellis_config::NodeIdentity;
use trellis_config::resources::Key;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::{DiscoveryRequest, Node, ResourceKey, ResourceVersion};

pub struct DiscoveryService(pub Arc<ControlPlane>);

/// The sending end of one stream's responses, each framed (`response`).
type Outbox = mpsc::Sender<Result<Bytes, Status>>;

impl grpc::Streams for DiscoveryService {
    /// Opens a proxy's stream: reads its Subscribe, then answers with the response headers
    /// and the queue its session pushes into; or refuses it with a status.
    async fn open(
        &self,
        peer: Option<SocketAddr>,
        certs: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
        mut inbound: grpc::Requests,
    ) -> Result<(MetadataMap, grpc::Queue), Status> {
        let cp = self.0.clone();
        let refused = |reason| {
            cp.metrics
                .refused_streams
                .get_or_create(&ReasonLabel { reason })
                .inc();
        };
        let refuse = |why: String| {
            tracing::warn!(?peer, "discovery stream refused: {why}");
            refused("invalid");
            Status::invalid_argument(why)
        };
        let subscribe = match inbound.message().await {
            Ok(Some(DiscoveryRequest {
                kind: Some(Kind::Subscribe(s)),
            })) => s,
            Ok(Some(_)) => {
                return Err(refuse(
                    "the first message must be Subscribe, carrying the proxy's node".into(),
                ));
            }
            Ok(None) => return Err(Status::cancelled("the stream closed before Subscribe")),
            // A proxy that gave up (its connect timed out, it is shutting down) refused nothing.
            Err(e) if e.code() == tonic::Code::Cancelled => {
                tracing::debug!(?peer, "the proxy cancelled its stream before Subscribe");
                return Err(e);
            }
            Err(e) => return Err(refuse(format!("cannot read the first message: {e}"))),
        };
        // Before the node: a proxy of another protocol may not even describe itself the same way.
        if let Err(e) = negotiation::check(subscribe.protocol, &subscribe.release) {
            let workload = subscribe.node.as_ref().map_or("", |n| n.workload.as_str());
            tracing::warn!(?peer, %workload, "discovery stream refused: {e}");
            refused("protocol");
            let mut status = Status::failed_precondition(e.to_string());
            negotiation::announce(status.metadata_mut());
            return Err(status);
        }
        let node = subscribe
            .node
            .ok_or_else(|| refuse("Subscribe has no node".into()))?;
        let identity = check_node(&node).map_err(|e| refuse(e.to_string()))?;
        // A proxy that serves a snapshot resumes from it (see `Session::push`).
        let resume = (!subscribe.version.is_empty()).then(|| Resume {
            version: subscribe.version,
            held: held(subscribe.held),
        });
        let gateway = entitled_gateway(&cp, &node, certs.as_deref().and_then(|c| c.first()));
        // 0: a proxy of protocol 1, which sent none (and which `negotiation` refused above).
        let protocol = subscribe.protocol.max(1);
        let id = (cp.registry).connect(node.clone(), identity.clone(), gateway.clone(), protocol);
        cp.metrics.connected_proxies.inc();
        if cp.registration_matters(&identity) {
            cp.request_rebuild();
        }
        tracing::info!(workload = %node.workload, namespace = %node.namespace, ?peer, "proxy connected");
        // Two parts queued per stream: enough that h2 never waits on the session, few enough
        // that a slow proxy holds little of a snapshot in wire form.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut s = Session {
                cp: cp.clone(),
                id,
                identity,
                gateway,
                protocol,
                tx,
                sent: None,
                sent_version: String::new(),
                resume,
                full_push: None,
                nonce: 0,
                services: None,
            };
            s.run(inbound).await;
            cp.registry.disconnect(id);
            cp.metrics.connected_proxies.dec();
            tracing::info!(workload = %node.workload, namespace = %node.namespace, "proxy disconnected");
        });
        let mut headers = MetadataMap::new();
        negotiation::announce(&mut headers);
        headers.insert(
            trellis_proto::SUMMARY_INTERVAL_HEADER,
            self.0.golden.interval.as_secs().max(1).into(),
        );
        Ok((headers, rx))
    }
}

/// What a subscribing proxy serves: its version and, if it named them, the key and hash of
/// each resource behind it.
struct Resume {
    version: String,
    held: Option<BTreeMap<Key, String>>,
}

fn held(list: Vec<ResourceVersion>) -> Option<BTreeMap<Key, String>> {
    let held: BTreeMap<Key, String> = list
        .into_iter()
        .filter_map(|r| r.key.map(|k| ((k.kind, k.name), r.hash)))
        .collect();
    (!held.is_empty()).then_some(held)
}

/// Why a Subscribe's node is refused. The message goes back to the proxy as the status.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error("node.workload {0:?} must be a DNS name")]
    Workload(String),
    #[error("node.namespace {0:?} must be a DNS name")]
    Namespace(String),
    #[error("node.inbound {0:?} must be ip:port")]
    Inbound(String),
}

/// A node must name itself and say where its inbound listener is.
fn check_node(n: &Node) -> Result<NodeIdentity, NodeError> {
    let dns = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !dns(&n.workload) {
        return Err(NodeError::Workload(n.workload.clone()));
    }
    if !dns(&n.namespace) {
        return Err(NodeError::Namespace(n.namespace.clone()));
    }
    if n.inbound.parse::<SocketAddr>().is_err() {
        return Err(NodeError::Inbound(n.inbound.clone()));
    }
    Ok(NodeIdentity {
        name: n.workload.clone(),
        namespace: n.namespace.clone(),
        labels: n.labels.clone().into_iter().collect(),
        service_account: Some(n.service_account.clone()).filter(|s| !s.is_empty()),
    })
}

/// The Gateway whose keys a proxy may be sent: the one its node names, when the stream's
/// client certificate (verified against the mesh CA by the TLS layer) is a SPIFFE identity
/// of this trust domain in that Gateway's namespace. That is the rule Istio applies to
/// gateway Secrets (a proxy reads the Secrets of its own namespace). A node that names a
/// Gateway without that proof gets its routes and no key, and the refusal is logged.
fn entitled_gateway(
    cp: &ControlPlane,
    node: &Node,
    leaf: Option<&rustls_pki_types::CertificateDer<'static>>,
) -> Option<String> {
    if node.gateway.is_empty() {
        return None;
    }
    let (gns, _) = node.gateway.split_once('/')?;
    let why = match leaf.map(trellis_identity::cert::inspect) {
        None => "its stream presented no mesh client certificate (does the proxy have a join token or a service-account token?)".to_string(),
        Some(Err(e)) => format!("its client certificate is not a mesh identity: {e}"),
        Some(Ok(info)) if info.id.trust_domain != cp.trust_domain() => format!("its identity {} is of another trust domain", info.id),
        Some(Ok(info)) if info.id.namespace != gns => format!("its identity {} is not of the Gateway's namespace {gns:?}", info.id),
        Some(Ok(_)) => return Some(node.gateway.clone()),
    };
    tracing::warn!(workload = %node.workload, namespace = %node.namespace, gateway = %node.gateway, "serving the Gateway's routes without its certificates: {why}");
    None
}

struct Session {
    cp: Arc<ControlPlane>,
    id: u64,
    identity: NodeIdentity,
    /// The Gateway whose certificates this proxy may hold (`entitled_gateway`).
    gateway: Option<String>,
    /// Its discovery protocol: what it can read (`World::compiled_for_proxy`).
    protocol: u32,
    tx: Outbox,
    /// The resources the proxy holds, as far as we know; `None` forces a full replace.
    sent: Option<Arc<Compiled>>,
    sent_version: String,
    /// What the proxy said it serves when it subscribed, until the first push.
    resume: Option<Resume>,
    /// Held while a full snapshot to this proxy awaits its answer.
    full_push: Option<tokio::sync::OwnedSemaphorePermit>,
    nonce: u64,
    /// The Services that select the proxy, and the config generation they are of.
    services: Option<(u64, Vec<String>)>,
}

impl Session {
    async fn run(&mut self, mut inbound: grpc::Requests) {
        let mut worlds = self.cp.subscribe();
        let first = worlds.borrow_and_update().clone();
        if let Some(w) = first
            && !self.push(&w).await
        {
            return;
        }
        loop {
            tokio::select! {
                changed = worlds.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let w = worlds.borrow_and_update().clone();
                    if let Some(w) = w
                        && !self.push(&w).await
                    {
                        return;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.answer(req),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(id = self.id, error = %e, "discovery stream ended");
                        return;
                    }
                },
            }
        }
    }

    /// Sends what changed for this proxy in `w`. Returns false when the proxy has gone.
    async fn push(&mut self, w: &World) -> bool {
        // In a cluster the Pod's labels, as they are now, not as the proxy read them at start.
        let identity = self.cp.serving_identity(&self.identity);
        let c = w.compiled_for_proxy(
            &identity,
            self.gateway.as_deref(),
            self.protocol,
            &self.cp.metrics.compilations,
        );
        if c.version == self.sent_version {
            return true;
        }
        let resumed = |result| {
            let label = ResultLabel { result };
            self.cp.metrics.resumes.get_or_create(&label).inc();
        };
        // A proxy that subscribed serving a snapshot (after a control-plane restart, or moved
        // to another replica whose world is a generation ahead or behind) is sent what it
        // lacks, not the megabytes of a whole snapshot.
        let delta: Option<Arc<Delta>> = if let Some(prev) = &self.sent {
            Some(c.delta_from(prev))
        } else {
            match self.resume.take() {
                Some(r) if r.version == c.version => {
                    // It already serves this snapshot: nothing is resent.
                    resumed("unchanged");
                    self.sent = Some(c.clone());
                    self.sent_version = r.version.clone();
                    self.cp.registry.update(self.id, |e| {
                        e.latest_version = r.version.clone();
                        e.acked_version = r.version;
                    });
                    return true;
                }
                Some(Resume { held: Some(h), .. }) => {
                    // A wrong hash costs only that resource resent. A key the proxy claims but
                    // lacks shows in its version check, and its NACK makes the next push a
                    // replace.
                    resumed("delta");
                    Some(Arc::new(c.delta_from_held(&h)))
                }
                Some(Resume { held: None, .. }) => {
                    resumed("replace");
                    None
                }
                None => None,
            }
        };
        let replace = delta.is_none();
        if replace && self.full_push.is_none() {
            // A full snapshot is megabytes once encoded: bound how many are in flight at once
            // so a fleet reconnecting together does not balloon the control plane's memory.
            // The permit is held until the proxy answers this push.
            self.full_push = self.cp.full_pushes.clone().acquire_owned().await.ok();
        }
        self.nonce += 1;
        let version = c.version.clone();
        let nonce = self.nonce.to_string();
        // Each part is built only once the one before it is queued, so a stream holds at most
        // the queue's few parts, not a whole snapshot in wire form. A part is the resources'
        // entries, encoded once for every proxy, side by side.
        let (upserted, removed): (Box<dyn Iterator<Item = _> + Send>, &[Key]) = match &delta {
            Some(d) => (Box::new(d.upserted.iter().map(|(_, r)| r)), &d.removed),
            None => (Box::new(c.resources().map(|(_, r)| r)), &[]),
        };
        let mut upserted = upserted.peekable();
        let mut part = Vec::new();
        loop {
            part.clear();
            let mut size = 0;
            while size < CHUNK_BYTES
                && let Some(r) = upserted.next()
            {
                size += r.entry.len();
                part.push(&r.entry);
            }
            let last = upserted.peek().is_none();
            let removed = if last { removed } else { &[] };
            let res = response(&version, &nonce, &part, removed, replace, !last);
            if self.tx.send(res).await.is_err() {
                return false;
            }
            if last {
                break;
            }
        }
        self.cp.metrics.pushes.inc();
        self.sent = Some(c.clone());
        self.sent_version = version.clone();
        self.cp
            .registry
            .update(self.id, |e| e.latest_version = version);
        true
    }

    fn answer(&mut self, req: DiscoveryRequest) {
        match req.kind {
            Some(Kind::Summary(s)) => self.summary(s),
            Some(Kind::Ack(a)) => {
                self.full_push = None;
                self.cp.metrics.acks.inc();
                self.cp.registry.update(self.id, |e| {
                    e.acked_version = a.version;
                    e.last_nack = None;
                });
            }
            Some(Kind::Nack(n)) => {
                self.full_push = None;
                self.cp.metrics.nacks.inc();
                tracing::warn!(id = self.id, version = %n.version, error = %n.error, "proxy refused an update");
                // What the proxy holds is no longer known: the next push replaces it whole.
                self.sent = None;
                self.sent_version.clear();
                self.cp
                    .registry
                    .update(self.id, |e| e.last_nack = Some((n.version, n.error)));
            }
            Some(Kind::Subscribe(_)) | None => {
                tracing::warn!(id = self.id, "ignored a second Subscribe on one stream");
            }
        }
    }
}

impl Session {
    /// Takes in the proxy's golden-metrics Summary (`golden`). Its calls count as coming
    /// from the Services that select it in the current config, worked out again only when
    /// the config changes.
    fn summary(&mut self, s: trellis_proto::v1::Summary) {
        self.cp.metrics.summaries.inc();
        let world = self.cp.world();
        let generation = world.as_ref().map_or(0, |w| w.generation);
        if self.services.as_ref().is_none_or(|(g, _)| *g != generation) {
            let identity = self.cp.serving_identity(&self.identity);
            let names = world.map_or_else(Vec::new, |w| {
                trellis_config::compile::services_selecting(
                    &w.config,
                    &identity.namespace,
                    &identity.labels,
                )
            });
            self.services = Some((generation, names));
        }
        let services = self
            .services
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let proxy = (self.identity.namespace.clone(), self.identity.name.clone());
        (self.cp.golden).intake(crate::golden::unix_now(), &proxy, services, s);
    }
}

fn key(k: &Key) -> ResourceKey {
    ResourceKey {
        kind: k.0.clone(),
        name: k.1.clone(),
    }
}

/// One `DiscoveryResponse`, framed: its fields in number order, as prost writes them, with
/// the upserted resources as the entries `World` encoded once (`resources::upserted_entry`).
fn response(
    version: &str,
    nonce: &str,
    entries: &[&Bytes],
    removed: &[Key],
    replace: bool,
    more: bool,
) -> Result<Bytes, Status> {
    use prost::encoding::{WireType, bool as flag, encode_key, encode_varint, message};
    use prost::encoding::{encoded_len_varint, key_len};
    let removed: Vec<ResourceKey> = removed.iter().map(key).collect();
    // A proto3 string: absent when empty.
    let text_len = |tag, s: &str| match s.len() {
        0 => 0,
        n => key_len(tag) + encoded_len_varint(n as u64) + n,
    };
    let text = |tag, s: &str, buf: &mut Vec<u8>| {
        if !s.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
    };
    let len = text_len(1, version)
        + text_len(2, nonce)
        + entries.iter().map(|e| e.len()).sum::<usize>()
        + message::encoded_len_repeated(4, &removed)
        + if replace {
            flag::encoded_len(5, &true)
        } else {
            0
        }
        + if more { flag::encoded_len(6, &true) } else { 0 };
    grpc::frame(len, |buf| {
        text(1, version, buf);
        text(2, nonce, buf);
        for e in entries {
            buf.extend_from_slice(e);
        }
        for k in &removed {
            message::encode(4, k, buf);
        }
        if replace {
            flag::encode(5, &true, buf);
        }
        if more {
            flag::encode(6, &true, buf);
        }
    })
}

/// Payload bytes per message before an update is split: each message is framed into a buffer
/// of its own size, so this bounds what one queued part holds; a typical delta is one message.
const CHUNK_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use trellis_config::resources::{self, Encoded, upserted_entry};
    use trellis_proto::resource::Payload;
    use trellis_proto::v1::DiscoveryResponse;

    #[test]
    fn a_response_of_encoded_entries_is_the_message_prost_would_write() {
        let key = |n: &str| ("Cluster".to_string(), n.to_string());
        let encoded = |body: &'static [u8]| Encoded {
            payload: Payload::Cluster(Bytes::from_static(body)),
            hash: resources::fnv_hex(body),
        };
        let (a, b) = (encoded(b"\x0a\x01a"), encoded(b""));
        let entries = [upserted_entry(&key("a"), &a), upserted_entry(&key("b"), &b)];
        let cases = [
            ("v1", "7", true, false, vec![]),
            ("", "", false, true, vec![key("gone"), key("went")]),
        ];
        for (version, nonce, replace, more, removed) in cases {
            let framed = response(
                version,
                nonce,
                &[&entries[0], &entries[1]],
                &removed,
                replace,
                more,
            )
            .expect("framed");
            let expected = DiscoveryResponse {
                version: version.into(),
                nonce: nonce.into(),
                upserted: vec![
                    resources::to_wire(&key("a"), &a),
                    resources::to_wire(&key("b"), &b),
                ],
                removed: removed.iter().map(super::key).collect(),
                replace,
                more,
            };
            assert_eq!(framed[0], 0, "not compressed");
            assert_eq!(
                &framed[5..],
                &expected.encode_to_vec()[..],
                "{version:?} {more}"
            );
            assert_eq!(
                u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
                framed.len() - 5
            );
        }
    }
}
