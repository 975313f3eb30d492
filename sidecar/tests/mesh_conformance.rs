//! The Gateway API's mesh conformance cases (GAMMA, the MESH-HTTP profile) that need no
//! cluster, ported: each starts real proxies in the namespaces the upstream test uses, with
//! the same objects in a mesh file, and checks what the upstream test checks.

mod support;

use support::*;

/// Service `echo` and its one Workload, in namespace `mesh`.
fn echo(up: &Upstream) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: mesh}}\n\
         spec:\n  selector: {{app: echo}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: echo-0, namespace: mesh, labels: {{app: echo}}}}\n\
         spec: {{address: {}, ports: {{http: {}}}}}\n---\n",
        up.addr.ip(),
        up.addr.port()
    )
}

/// An HTTPRoute `name` in `namespace` on Service mesh/echo that sets header `header: yes`.
fn setting(namespace: &str, name: &str, header: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo, namespace: mesh, port: 80}}]\n  rules:\n\
         \x20 - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: {header}, value: \"yes\"}}]}}}}]\n\
         \x20   backendRefs: [{{name: echo, namespace: mesh, port: 80}}]\n---\n"
    )
}

/// The headers `echo` saw for a GET from a client in `namespace` (its proxy's outbound).
async fn seen_from(namespace: &str, mesh: &str) -> serde_json::Value {
    let h = start_in(namespace, mesh, "", "{http: 1}").await;
    let r = h.get("echo.mesh", "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// MeshConsumerRoute: an HTTPRoute in namespace `consumer` whose parent is a Service of
/// another namespace applies to the clients in `consumer` only.
#[tokio::test]
async fn mesh_consumer_route_applies_to_its_namespace_only() {
    let up = Upstream::start("echo-0").await;
    let mesh = echo(&up) + &setting("consumer", "consumer-route", "x-consumer");
    assert_eq!(seen_from("consumer", &mesh).await["x-consumer"], "yes");
    for other in ["mesh", "elsewhere"] {
        let seen = seen_from(other, &mesh).await;
        assert!(seen.get("x-consumer").is_none(), "{other}: {seen}");
    }
}

/// GEP-1426: with both, the producer's route (in the Service's namespace) serves every
/// client except those of a namespace with its own consumer route, for whom that replaces it.
#[tokio::test]
async fn a_consumer_route_replaces_the_producer_route_for_its_namespace() {
    let up = Upstream::start("echo-0").await;
    let mesh = echo(&up)
        + &setting("consumer", "consumer-route", "x-consumer")
        + &setting("mesh", "producer-route", "x-producer");
    let seen = seen_from("consumer", &mesh).await;
    assert_eq!(seen["x-consumer"], "yes", "{seen}");
    assert!(seen.get("x-producer").is_none(), "{seen}");
    for other in ["mesh", "elsewhere"] {
        let seen = seen_from(other, &mesh).await;
        assert_eq!(seen["x-producer"], "yes", "{other}: {seen}");
        assert!(seen.get("x-consumer").is_none(), "{other}: {seen}");
    }
}
