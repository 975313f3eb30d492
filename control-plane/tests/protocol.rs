//! The discovery protocol from a proxy's side, spoken by a bare gRPC client: deltas, resume,
//! NACKs shown in status, garbage refused without touching anyone else, and proxies of
//! another protocol version refused with what to upgrade.

#[path = "discovery/fake_proxy.rs"]
mod fake_proxy;
mod support;

use fake_proxy::{FakeProxy, hashes};
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::*;

fn node(name: &str) -> Node {
    Node {
        workload: name.into(),
        namespace: "rides".into(),
        labels: [("app".to_string(), "trip".to_string())].into(),
        inbound: "127.0.0.1:1".into(),
        ..Default::default()
    }
}

/// A Subscribe as a proxy of this release sends it, holding nothing.
fn subscribe(name: &str, version: &str) -> Subscribe {
    fake_proxy::subscribe(node(name), version)
}

async fn connect(cp: &ControlPlane, name: &str, version: &str) -> FakeProxy {
    open(cp, subscribe(name, version)).await.unwrap().0
}

async fn open(
    cp: &ControlPlane,
    first: Subscribe,
) -> Result<(FakeProxy, tonic::metadata::MetadataMap), tonic::Status> {
    FakeProxy::open(cp.channel().await, first).await
}

async fn cp_with(mesh: &str) -> (ControlPlane, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh).unwrap();
    (ControlPlane::start(&path).await, dir, path)
}

#[tokio::test]
async fn first_update_replaces_then_deltas_carry_only_what_changed() {
    let (cp, _dir, path) = cp_with(&billing_mesh(90, 10)).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let first = p.next().await;
    assert!(first.replace);
    assert_eq!(p.apply(&first), first.version);
    p.send(Kind::Ack(Ack {
        version: first.version.clone(),
        nonce: first.nonce.clone(),
    }))
    .await;

    write_atomically(&path, &billing_mesh(50, 50));
    let delta = p.next().await;
    assert!(!delta.replace);
    let names: Vec<String> = delta
        .upserted
        .iter()
        .map(|r| r.key.clone().unwrap().name)
        .collect();
    assert_eq!(
        names,
        vec!["rides/billing".to_string()],
        "only the billing Service's routes changed"
    );
    assert!(delta.removed.is_empty());
    assert_eq!(p.apply(&delta), delta.version);
    assert_ne!(delta.version, first.version);
}

#[tokio::test]
async fn a_proxy_resuming_with_the_current_version_is_sent_nothing() {
    let (cp, _dir, path) = cp_with(&billing_mesh(90, 10)).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let first = p.next().await;
    drop(p);
    let mut again = connect(&cp, "fake-0", &first.version).await;
    again.held = BTreeMap::new();
    let quiet = tokio::time::timeout(Duration::from_millis(300), again.rx.message()).await;
    assert!(
        quiet.is_err(),
        "nothing is resent to a proxy that holds the current version"
    );
    // The control plane still knows what it holds: the next change is a delta.
    write_atomically(&path, &billing_mesh(50, 50));
    let delta = again.next().await;
    assert!(!delta.replace);
}

#[tokio::test]
async fn only_a_proxy_that_is_some_services_endpoint_makes_a_new_generation_by_connecting() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let compilations = || cp.metric("trellis_control_compilations_total");
    let mut first = connect(&cp, "fake-0", "").await;
    let u = first.next().await;
    first.ack(&u).await;
    let before = compilations().await;

    // A proxy of another kind that no Service selects: its own kind is compiled, and nothing
    // else changes, so no generation is built and nobody is sent anything.
    let loadgen = Node {
        labels: [("app".to_string(), "loadgen".to_string())].into(),
        ..node("fake-1")
    };
    let (mut second, _) = open(&cp, fake_proxy::subscribe(loadgen, "")).await.unwrap();
    second.next().await;
    assert!(first.quiet_for(Duration::from_millis(300)).await);
    assert_eq!(compilations().await, before + 1.0, "the new kind alone");

    // An endpoint of billing-v1 registers: every proxy's billing-v1 cluster changes.
    let endpoint = Node {
        labels: [
            ("app".to_string(), "billing".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        inbound: "127.0.0.1:2".into(),
        ..node("fake-2")
    };
    let (_third, _) = open(&cp, fake_proxy::subscribe(endpoint, ""))
        .await
        .unwrap();
    let delta = first.next().await;
    assert!(!delta.replace);
    assert!(
        upserted(&delta).contains(&"Cluster billing-v1.rides:80".to_string()),
        "{:?}",
        upserted(&delta)
    );
}

#[tokio::test]
async fn a_nack_shows_in_status_with_its_error() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let u = p.next().await;
    p.send(Kind::Nack(Nack {
        version: u.version.clone(),
        nonce: u.nonce.clone(),
        error: "cluster limit exceeded".into(),
    }))
    .await;
    let s = eventually(Duration::from_secs(5), "the NACK in status", || async {
        let s = cp.status().await;
        s.proxies
            .iter()
            .any(|x| x.last_nack_error == "cluster limit exceeded")
            .then_some(s)
    })
    .await;
    let fake = s.proxies.iter().find(|x| x.workload == "fake-0").unwrap();
    assert_eq!(fake.last_nack_version, u.version);
    assert_eq!(fake.latest_version, u.version);
    assert_ne!(fake.acked_version, u.version);
}

#[tokio::test]
async fn garbage_and_unknown_identities_are_refused_without_harming_others() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let mut good = connect(&cp, "fake-0", "").await;
    let u = good.next().await;
    good.send(Kind::Ack(Ack {
        version: u.version.clone(),
        nonce: u.nonce,
    }))
    .await;

    // An ACK before any Subscribe.
    let mut client = DiscoveryClient::new(cp.channel().await);
    let (tx, rx) = mpsc::channel(1);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Ack(Ack::default())),
    })
    .await
    .unwrap();
    let err = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("must be Subscribe"),
        "{}",
        err.message()
    );

    // A node with no name.
    let (tx, rx) = mpsc::channel(1);
    let mut nameless = node("");
    nameless.workload.clear();
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(Subscribe {
            node: Some(nameless),
            ..subscribe("", "")
        })),
    })
    .await
    .unwrap();
    let err = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node.workload"), "{}", err.message());

    // Raw bytes that are not gRPC at all.
    let mut raw = tokio::net::TcpStream::connect(cp.grpc).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"\x16\x03\x01 hello, not http/2")
        .await
        .unwrap();
    drop(raw);

    let s = cp.status().await;
    assert_eq!(s.proxies.len(), 1, "only the good proxy is registered");
    assert!(s.proxies[0].connected && s.proxies[0].acked_version == u.version);
}

#[tokio::test]
async fn a_large_update_arrives_in_parts_and_applies_whole() {
    // 1,500 Services: well over one 64 KiB message (a Service and its cluster encode to about
    // 80 bytes).
    let mut mesh = String::new();
    for i in 0..1500 {
        mesh += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: rides}}\n\
             spec: {{selector: {{app: svc-{i}}}, ports: [{{port: 80}}]}}\n---\n"
        );
    }
    let (cp, _dir, _path) = cp_with(&mesh).await;
    let mut client = DiscoveryClient::new(cp.channel().await);
    let (tx, rx) = mpsc::channel(8);
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(subscribe("fake-0", ""))),
    })
    .await
    .unwrap();
    let mut stream = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut parts = Vec::new();
    loop {
        let part = stream.message().await.unwrap().unwrap();
        let more = part.more;
        parts.push(part);
        if !more {
            break;
        }
    }
    assert!(
        parts.len() > 1,
        "one message of {} resources",
        parts[0].upserted.len()
    );
    assert!(
        parts
            .iter()
            .all(|p| p.nonce == parts[0].nonce && p.version == parts[0].version)
    );
    let mut held = BTreeMap::new();
    for p in &parts {
        for r in &p.upserted {
            let (k, body) =
                trellis_config::resources::from_wire(r).expect("a well-formed resource");
            held.insert(k, body);
        }
    }
    let snap =
        trellis_config::resources::assemble(&held, &parts[0].version).expect("the parts assemble");
    assert_eq!(snap.services.len(), 1500);
}

/// The keys of an update's upserted resources, as `Kind name`.
fn upserted(u: &DiscoveryResponse) -> Vec<String> {
    u.upserted
        .iter()
        .map(|r| {
            let k = r.key.clone().unwrap();
            format!("{} {}", k.kind, k.name)
        })
        .collect()
}

#[tokio::test]
async fn a_scoped_proxy_is_sent_only_its_scope_and_a_scope_change_is_a_delta() {
    let scope = |calls: &str| {
        format!(
            "---\napiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {{name: trip, namespace: rides}}\n\
             spec: {{selector: {{app: trip}}, calls: {calls}}}\n"
        )
    };
    let (cp, _dir, path) = cp_with(&(billing_mesh(90, 10) + &scope("[billing]"))).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let first = p.next().await;
    assert!(first.replace);
    // billing and the two clusters its route splits over; not billing-v1 or billing-v2 as
    // Services, and not billing's own cluster, which the route replaces. And the names of
    // every Service, from which the proxy knows what to refuse.
    assert_eq!(
        upserted(&first),
        [
            "Cluster billing-v1.rides:80",
            "Cluster billing-v2.rides:80",
            "Mesh mesh",
            "Service rides/billing",
            "ServiceNames mesh",
        ]
    );
    assert_eq!(p.apply(&first), first.version);
    p.send(Kind::Ack(Ack {
        version: first.version.clone(),
        nonce: first.nonce.clone(),
    }))
    .await;

    // Widening the Scope sends the new Service alone, as a delta: what the proxy refuses
    // follows from what it holds, so neither its Mesh resource nor the names change.
    write_atomically(
        &path,
        &(billing_mesh(90, 10) + &scope("[billing, billing-v1]")),
    );
    let wider = p.next().await;
    assert!(!wider.replace);
    assert_eq!(upserted(&wider), ["Service rides/billing-v1"]);
    assert!(wider.removed.is_empty());
    assert_eq!(p.apply(&wider), wider.version);
    p.send(Kind::Ack(Ack {
        version: wider.version.clone(),
        nonce: wider.nonce.clone(),
    }))
    .await;

    // Narrowing it removes them again.
    write_atomically(&path, &(billing_mesh(90, 10) + &scope("[billing]")));
    let narrower = p.next().await;
    assert!(!narrower.replace);
    assert!(upserted(&narrower).is_empty());
    let removed: Vec<String> = narrower
        .removed
        .iter()
        .map(|k| format!("{} {}", k.kind, k.name))
        .collect();
    assert_eq!(removed, ["Service rides/billing-v1"]);
    assert_eq!(p.apply(&narrower), narrower.version);
    assert_eq!(
        narrower.version, first.version,
        "versions are content hashes"
    );
}

/// The response header `name`, as text.
fn header<'a>(headers: &'a tonic::metadata::MetadataMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn a_proxy_of_this_protocol_is_served_and_told_the_control_planes_version() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let (mut p, headers) = open(&cp, subscribe("fake-0", "")).await.unwrap();
    assert_eq!(
        header(&headers, "trellis-protocol"),
        trellis_proto::PROTOCOL.to_string()
    );
    assert_eq!(
        header(&headers, "trellis-release"),
        env!("CARGO_PKG_VERSION")
    );
    let first = p.next().await;
    assert_eq!(p.apply(&first), first.version);
}

#[tokio::test]
async fn an_older_protocol_is_refused_naming_the_release_to_upgrade_the_proxy_to() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let release = env!("CARGO_PKG_VERSION");
    // A proxy of protocol 1 sent neither field.
    let unversioned = Subscribe {
        protocol: 0,
        release: String::new(),
        ..subscribe("fake-0", "")
    };
    let err = open(&cp, unversioned).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("speaks discovery protocol 1;")
            && err
                .message()
                .contains(&format!("upgrade the proxy to release {release}")),
        "{}",
        err.message()
    );
    // The refusal carries the control plane's version too.
    assert_eq!(
        header(err.metadata(), "trellis-protocol"),
        trellis_proto::PROTOCOL.to_string()
    );

    let older = Subscribe {
        protocol: trellis_proto::MIN_PROTOCOL - 1,
        release: "0.0.9".into(),
        ..subscribe("fake-1", "")
    };
    let err = open(&cp, older).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().starts_with(&format!(
            "this proxy (release 0.0.9) speaks discovery protocol {}; this control plane (release {release})",
            trellis_proto::MIN_PROTOCOL - 1
        )),
        "{}",
        err.message()
    );
    assert!(
        cp.status().await.proxies.is_empty(),
        "a refused proxy is not registered"
    );
    assert_eq!(
        cp.metric("trellis_control_refused_streams_total{reason=\"protocol\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_newer_protocol_is_refused_naming_the_control_plane_upgrade() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let newer = Subscribe {
        protocol: trellis_proto::PROTOCOL + 1,
        release: "9.0.0".into(),
        ..subscribe("fake-0", "")
    };
    let err = open(&cp, newer).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("upgrade the control plane to release 9.0.0 or later first"),
        "{}",
        err.message()
    );
    assert_eq!(
        header(err.metadata(), "trellis-release"),
        env!("CARGO_PKG_VERSION")
    );
}

#[tokio::test]
async fn a_proxy_resuming_from_an_older_version_is_sent_only_what_changed() {
    let (cp, _dir, path) = cp_with(&billing_mesh(90, 10)).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let first = p.next().await;
    assert_eq!(p.apply(&first), first.version);
    let old = p.held.clone();
    // The mesh changes while the proxy is away (or on another replica, a generation behind).
    write_atomically(&path, &billing_mesh(50, 50));
    let change = p.next().await;
    drop(p);

    let (mut again, _) = open(
        &cp,
        Subscribe {
            held: hashes(&old),
            ..subscribe("fake-0", &first.version)
        },
    )
    .await
    .unwrap();
    again.held = old;
    let resumed = again.next().await;
    assert!(!resumed.replace, "a delta on top of what the proxy holds");
    assert_eq!(upserted(&resumed), ["Service rides/billing"]);
    assert!(resumed.removed.is_empty());
    assert_eq!(resumed.version, change.version);
    assert_eq!(again.apply(&resumed), change.version);
    assert_eq!(
        cp.metric("trellis_control_resumes_total{result=\"delta\"}")
            .await,
        1.0
    );

    // What the control plane thinks the proxy holds is right: the next change is a delta too.
    again
        .send(Kind::Ack(Ack {
            version: resumed.version.clone(),
            nonce: resumed.nonce.clone(),
        }))
        .await;
    write_atomically(&path, &billing_mesh(90, 10));
    let next = again.next().await;
    assert!(!next.replace);
    assert_eq!(again.apply(&next), first.version);
}

#[tokio::test]
async fn a_resource_held_with_a_wrong_hash_is_resent_and_one_not_served_is_removed() {
    let (cp, _dir, _path) = cp_with(&billing_mesh(90, 10)).await;
    let mut p = connect(&cp, "fake-0", "").await;
    let first = p.next().await;
    assert_eq!(p.apply(&first), first.version);
    let mut held = p.held.clone();
    drop(p);

    // What a proxy holds: the current resources, one of them with other bytes, and a Service
    // the mesh no longer has.
    let cluster = ("Cluster".to_string(), "billing-v1.rides:80".to_string());
    held.insert(cluster, bytes::Bytes::from_static(b"other bytes"));
    let gone = ("Service".to_string(), "rides/gone".to_string());
    held.insert(gone, bytes::Bytes::from_static(b"gone"));
    let (mut again, _) = open(
        &cp,
        Subscribe {
            held: hashes(&held),
            ..subscribe("fake-0", "an older version")
        },
    )
    .await
    .unwrap();
    again.held = held;
    let resumed = again.next().await;
    assert!(!resumed.replace);
    assert_eq!(upserted(&resumed), ["Cluster billing-v1.rides:80"]);
    let removed: Vec<String> = resumed
        .removed
        .iter()
        .map(|k| format!("{} {}", k.kind, k.name))
        .collect();
    assert_eq!(removed, ["Service rides/gone"]);
    assert_eq!(again.apply(&resumed), first.version);
}

/// What protocol 3 added, in one mesh: a consumer route, a CORS filter, a ClientRateLimit and
/// an HTTPS Gateway listener.
const PROTOCOL_3_MESH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: billing, namespace: rides}
spec: {selector: {app: billing}, ports: [{name: http, port: 80}]}
---
apiVersion: trellis.dev/v1alpha1
kind: ClientRateLimit
metadata: {name: per-client, namespace: rides}
spec: {requestsPerSecond: 5}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: billing, namespace: rides}
spec:
  parentRefs: [{kind: Service, name: billing, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /limited}}]
    filters: [{type: ExtensionRef, extensionRef: {group: trellis.dev, kind: ClientRateLimit, name: per-client}}]
    backendRefs: [{name: billing, port: 80}]
  - filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]
    backendRefs: [{name: billing, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: billing-for-shop, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: billing, namespace: rides, port: 80}]
  rules: [{backendRefs: [{name: billing, namespace: rides, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: rides}
spec:
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: nowhere}]}}
"#;

/// The Service and Gateway a proxy of `protocol` is sent, decoded.
async fn sent_to(
    cp: &ControlPlane,
    protocol: u32,
) -> (
    trellis_config::snapshot::ServiceEntry,
    trellis_config::snapshot::GatewayEntry,
) {
    use trellis_config::resources::{Decoded, decode, from_wire};
    let first = Subscribe {
        protocol,
        ..subscribe(&format!("fake-{protocol}"), "")
    };
    let mut p = open(cp, first).await.unwrap().0;
    let u = p.next().await;
    // Every update must assemble for the proxy it was made for.
    assert_eq!(p.apply(&u), u.version);
    let (mut svc, mut gw) = (None, None);
    for r in &u.upserted {
        let (key, body) = from_wire(r).unwrap();
        match decode(&key, &body).unwrap() {
            Decoded::Service(s) if key.1 == "rides/billing" => svc = Some((*s).clone()),
            Decoded::Gateway(g) => gw = Some((*g).clone()),
            _ => {}
        }
    }
    (svc.unwrap(), gw.unwrap())
}

#[tokio::test]
async fn a_protocol_2_proxy_is_sent_only_what_it_can_read_and_nothing_unsafe() {
    use trellis_config::snapshot::{Filter, ListenerProtocol};
    let (cp, _dir, _path) = cp_with(PROTOCOL_3_MESH).await;
    let (svc, gw) = sent_to(&cp, 3).await;
    let rules = &svc.ports[0].routes;
    assert!(
        rules
            .iter()
            .any(|r| r.consumer_namespace.as_deref() == Some("shop"))
    );
    assert!(
        rules
            .iter()
            .any(|r| r.filters.iter().any(|f| matches!(f, Filter::Cors(_))))
    );
    assert!(
        gw.listeners
            .iter()
            .any(|l| l.protocol == ListenerProtocol::Https)
    );

    let (svc, gw) = sent_to(&cp, 2).await;
    let rules = &svc.ports[0].routes;
    // No consumer route (it would apply to every client), no filter it would refuse.
    assert!(
        rules.iter().all(|r| r.consumer_namespace.is_none()),
        "{rules:?}"
    );
    let new = |f: &Filter| matches!(f, Filter::Cors(_) | Filter::ClientRateLimit { .. });
    assert!(
        rules.iter().all(|r| !r.filters.iter().any(new)),
        "{rules:?}"
    );
    // The rate-limited rule answers no-backend rather than admit what its limit holds back.
    let limited = rules.iter().find(|r| r.matches.path == "/limited").unwrap();
    assert!(limited.backends.is_empty(), "{limited:?}");
    // No HTTPS listener, which it would serve as plain HTTP.
    let names: Vec<&str> = gw.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["http"]);
}
