//! A Gateway's private keys go only to the proxies that serve it and prove it: a stream that
//! names the Gateway with a mesh client certificate of the Gateway's namespace is sent its
//! `Certificate` resources; one without a certificate, or with one of another namespace, and
//! every other proxy, never is. The real gateway proxy then serves HTTPS with them.

use super::support::*;
use super::{TD, mesh_yaml};
#[path = "../discovery/fake_proxy.rs"]
mod fake_proxy;
use fake_proxy::{FakeProxy, subscribe};
use std::time::Duration;
use trellis_proto::v1::{Node, ProxyConfigRequest};

/// `mesh_yaml` plus Gateway `rides/edge` with an HTTPS listener on `edge-cert`, a route to
/// billing, and the Secret.
fn gateway_mesh(leaf: &testkit::pki::Leaf) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n      ");
    format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: rides}}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: edge-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: edge, namespace: rides}}
spec:
  parentRefs: [{{kind: Gateway, name: edge}}]
  rules: [{{backendRefs: [{{name: billing, port: 80}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-cert, namespace: rides}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
      {}
  tls.key: |
      {}
",
        mesh_yaml("PERMISSIVE", false),
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}

fn node(workload: &str, namespace: &str, gateway: &str) -> Node {
    Node {
        workload: workload.into(),
        namespace: namespace.into(),
        inbound: "127.0.0.1:1".into(),
        gateway: gateway.into(),
        ..Default::default()
    }
}

/// The kinds and names of the resources in a stream's first update.
async fn first_update(channel: tonic::transport::Channel, n: Node) -> Vec<(String, String)> {
    let (mut p, _) = FakeProxy::open(channel, subscribe(n, "")).await.unwrap();
    let u = p.next().await;
    (u.upserted.iter())
        .filter_map(|r| r.key.as_ref().map(|k| (k.kind.clone(), k.name.clone())))
        .collect()
}

/// A channel to the control plane that presents `leaf` as its client certificate.
async fn channel_as(cp: &ControlPlane, leaf: &testkit::pki::Leaf) -> tonic::transport::Channel {
    let ca = std::fs::read(cp.ca_bundle()).unwrap();
    trellis_proto::connect::endpoint_with_identity(&cp.url(), &ca, &leaf.cert_pem, &leaf.key_pem)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_proxy_proving_the_gateways_namespace_is_sent_its_keys() {
    let edge_ca = testkit::pki::TestCa::new("edge-ca");
    let leaf = edge_ca.server(&["rides.example.com"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, gateway_mesh(&leaf)).unwrap();
    let cp = ControlPlane::start(&path).await;
    let cert = ("Certificate".to_string(), "rides/edge-cert".to_string());

    // Naming the Gateway proves nothing: no client certificate, no key.
    let got = first_update(cp.channel().await, node("edge-0", "rides", "rides/edge")).await;
    assert!(
        got.contains(&("Gateway".into(), "rides/edge".into())),
        "{got:?}"
    );
    assert!(
        !got.contains(&cert),
        "a key to an unauthenticated stream: {got:?}"
    );

    // A mesh identity of another namespace, claiming to be in rides: no key.
    let other = mesh_leaf(&cp, &format!("spiffe://{TD}/ns/shop/sa/edge"));
    let got = first_update(
        channel_as(&cp, &other).await,
        node("edge-0", "rides", "rides/edge"),
    )
    .await;
    assert!(
        !got.contains(&cert),
        "a key to another namespace's identity: {got:?}"
    );

    // A certificate from another CA does not even finish the handshake.
    let foreign = edge_ca.spiffe(
        &format!("spiffe://{TD}/ns/rides/sa/edge"),
        std::time::SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    let ca = std::fs::read(cp.ca_bundle()).unwrap();
    let refused = trellis_proto::connect::endpoint_with_identity(
        &cp.url(),
        &ca,
        &foreign.cert_pem,
        &foreign.key_pem,
    )
    .unwrap()
    .connect()
    .await;
    if let Ok(ch) = refused {
        let opened =
            FakeProxy::open(ch, subscribe(node("edge-0", "rides", "rides/edge"), "")).await;
        assert!(
            opened.is_err(),
            "a stream over a foreign client certificate was served"
        );
    }

    // The Gateway's namespace, proved: the key comes, and only to that stream.
    let edge = mesh_leaf(&cp, &format!("spiffe://{TD}/ns/rides/sa/edge"));
    let got = first_update(
        channel_as(&cp, &edge).await,
        node("edge-0", "rides", "rides/edge"),
    )
    .await;
    assert!(got.contains(&cert), "{got:?}");
    let got = first_update(channel_as(&cp, &edge).await, node("trip-0", "rides", "")).await;
    assert!(
        !got.contains(&cert),
        "a key to a proxy that serves no Gateway: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_proxy_serves_https_with_its_key_and_no_one_else_holds_it() {
    let edge_ca = testkit::pki::TestCa::new("edge-ca");
    let leaf = edge_ca.server(&["rides.example.com"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, gateway_mesh(&leaf)).unwrap();
    let cp = ControlPlane::start(&path).await;
    let billing_app = Upstream::start("billing").await;
    let billing = proxy_as(
        &cp,
        "billing-0",
        "billing",
        "{app: billing}",
        billing_app.addr.port(),
        "",
    )
    .await;
    let edge = proxy_as(
        &cp,
        "edge-0",
        "edge",
        "{app: edge}",
        1,
        "gateway: {name: edge, listen: {https: 127.0.0.1:0}}\n",
    )
    .await;
    let https = edge.gateway["https"];
    // The gateway first subscribes without its certificate, then again with it.
    let got = eventually(
        Duration::from_secs(15),
        "the gateway to serve HTTPS",
        || async {
            testkit::tls::https_get(https, "rides.example.com", &edge_ca.root_pem, "/charge")
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(got.0, 200);
    assert_eq!(billing_app.hits(), 1);

    // The key is in no other proxy, and no dump or proxy-config shows it.
    // (Every proxy holds the Gateway's routes, which name the Secret; only edge-0 holds it.)
    let (_, dump) = get(billing.admin, "/config_dump").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(
        v["snapshot"]["certificates"].is_null(),
        "billing holds the gateway's certificate: {dump}"
    );
    let (_, dump) = get(edge.admin, "/config_dump").await.unwrap();
    assert!(
        dump.contains("rides.example.com") && !dump.contains("PRIVATE KEY"),
        "{dump}"
    );
    let pc = cp
        .admin()
        .await
        .proxy_config(ProxyConfigRequest {
            workload: "rides/edge-0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pc.snapshot_json
            .contains("\"dnsNames\":[\"rides.example.com\"]"),
        "{}",
        pc.snapshot_json
    );
    assert!(!pc.snapshot_json.contains("PRIVATE KEY"));
}
