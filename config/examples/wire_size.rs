//! cargo run --release -p trellis-config --example wire_size -- --services 1000 --endpoints 10000
//!
//! The discovery resources of one snapshot as protobuf (the wire) and as JSON (the wire before
//! typed resources; still what /config_dump shows): total bytes, and the time to encode and to
//! decode them all, best of 5. The mesh is propagation.rs's: Services with Workloads spread
//! over them, and one HTTPRoute. Not a test: a measurement.

use std::fmt::Write as _;
use std::time::{Duration, Instant};
use trellis_config::resources::{self, CLUSTER, GATEWAY, Key, MESH, MeshResource, SERVICE};
use trellis_config::snapshot::Snapshot;

fn mesh(services: usize, endpoints: usize) -> String {
    let mut s = String::with_capacity(endpoints * 200);
    for i in 0..services {
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
             spec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n"
        );
    }
    for e in 0..endpoints {
        let i = e % services;
        let _ = write!(
            s,
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w-{e}, namespace: bench, labels: {{app: svc-{i}}}}}\n\
             spec: {{address: 10.{}.{}.{}}}\n---\n",
            (e >> 16) & 255,
            (e >> 8) & 255,
            e & 255
        );
    }
    let _ = write!(
        s,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc-0, namespace: bench}}\n\
         spec: {{parentRefs: [{{name: svc-0}}], rules: [{{backendRefs: [{{name: svc-1, port: 80, weight: 10}}, {{name: svc-2, port: 80, weight: 90}}]}}]}}\n"
    );
    s
}

/// Each resource's JSON body, as the wire carried it before typed resources.
fn json(s: &Snapshot) -> Vec<(Key, Vec<u8>)> {
    let mut out = Vec::new();
    let mesh = MeshResource {
        node: s.node.clone(),
        mesh: s.mesh.clone(),
        inbound_services: s.inbound_services.clone(),
    };
    let key = |k: &str, n: &str| (k.to_string(), n.to_string());
    out.push((key(MESH, "mesh"), enc(&mesh)));
    for (n, v) in &s.services {
        out.push((key(SERVICE, n), enc(v)));
    }
    for (n, v) in &s.clusters {
        out.push((key(CLUSTER, n), enc(v)));
    }
    for (n, v) in &s.gateways {
        out.push((key(GATEWAY, n), enc(v)));
    }
    out
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("a snapshot serializes")
}

fn json_decode(set: &[(Key, Vec<u8>)]) {
    use trellis_config::snapshot::{Cluster, GatewayEntry, ServiceEntry};
    for ((kind, _), body) in set {
        match kind.as_str() {
            MESH => drop(serde_json::from_slice::<MeshResource>(body).expect("decodes")),
            SERVICE => drop(serde_json::from_slice::<ServiceEntry>(body).expect("decodes")),
            CLUSTER => drop(serde_json::from_slice::<Cluster>(body).expect("decodes")),
            _ => drop(serde_json::from_slice::<GatewayEntry>(body).expect("decodes")),
        }
    }
}

fn best(mut f: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(name: &str, snap: &Snapshot) {
    let proto = resources::split(snap);
    let proto_bytes: usize = proto.values().map(|e| e.payload.bytes().len()).sum();
    let json_set = json(snap);
    let json_bytes: usize = json_set.iter().map(|(_, b)| b.len()).sum();
    let held: std::collections::BTreeMap<Key, bytes::Bytes> = proto
        .iter()
        .map(|(k, e)| (k.clone(), e.payload.bytes().clone()))
        .collect();
    let enc_proto = best(|| drop(resources::split(snap)));
    let enc_json = best(|| drop(json(snap)));
    let dec_proto = best(|| {
        for (k, b) in &held {
            drop(resources::decode(k, b).expect("decodes"));
        }
    });
    let assemble = best(|| drop(resources::assemble(&held, &snap.version).expect("assembles")));
    let dec_json = best(|| json_decode(&json_set));
    println!(
        "{name}: {} resources\n  protobuf {proto_bytes} B, JSON {json_bytes} B ({:.0}% of JSON)\n  \
         encode: protobuf {enc_proto:?}, JSON {enc_json:?}\n  \
         decode: protobuf {dec_proto:?}, JSON {dec_json:?}\n  \
         assemble (decode, version and cluster checks): {assemble:?}",
        proto.len(),
        100.0 * proto_bytes as f64 / json_bytes as f64,
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut services, mut endpoints) = (1000, 10_000);
    for pair in argv.chunks(2) {
        let v = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), v) {
            ("--services", Some(v)) => services = v,
            ("--endpoints", Some(v)) => endpoints = v,
            _ => panic!("usage: wire_size [--services N] [--endpoints N]"),
        }
    }
    let node = trellis_config::NodeIdentity {
        namespace: "rides".into(),
        ..Default::default()
    };
    let design =
        trellis_config::load_str("mesh.yaml", include_str!("../tests/design_example.yaml"))
            .expect("the design example loads");
    report(
        "design example (rides)",
        &trellis_config::compile(&design, &node),
    );
    let cfg = trellis_config::load_str("mesh.yaml", &mesh(services, endpoints)).expect("loads");
    report(
        &format!("{services} Services, {endpoints} endpoints"),
        &trellis_config::compile(&cfg, &node),
    );
}
