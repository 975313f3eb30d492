//! GRPCRoute in mesh files: read as itself, compiled as the HTTPRoute it means (a gRPC call
//! is `POST /<service>/<method>`), and refused with its own field names.

use trellis_config::model::PathMatchType;
use trellis_config::snapshot::RouteRule;
use trellis_config::{NodeIdentity, compile, load_str};

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: trip, namespace: rides}\n\
spec:\n  selector: {app: trip}\n  ports: [{name: grpc, port: 50051, appProtocol: grpc}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: trip-v2, namespace: rides}\n\
spec:\n  selector: {app: trip, version: v2}\n  ports: [{name: grpc, port: 50051, appProtocol: grpc}]\n---\n";

fn route(rules: &str) -> String {
    format!(
        "{SERVICES}apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {{name: trip-grpc, namespace: rides}}\n\
         spec:\n  parentRefs: [{{kind: Service, group: \"\", name: trip, port: 50051}}]\n  rules:\n{rules}"
    )
}

fn rules_of(yaml: &str) -> Vec<RouteRule> {
    let cfg = load_str("mesh.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let node = NodeIdentity {
        name: "passenger-0".into(),
        namespace: "rides".into(),
        ..Default::default()
    };
    let snap = compile(&cfg, &node);
    snap.services["rides/trip"].ports[0].routes.clone()
}

#[test]
fn method_matches_become_path_matches_with_weights_and_header_modifiers() {
    let rules = rules_of(&route(
        "  - matches: [{method: {service: rides.v1.Trip, method: Start}, headers: [{name: x-tenant, value: blue}]}]\n    \
           filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-grpc-route, value: start}]}}]\n    \
           backendRefs: [{name: trip, port: 50051, weight: 90}, {name: trip-v2, port: 50051, weight: 10}]\n  \
         - matches: [{method: {service: rides.v1.Trip}}]\n    backendRefs: [{name: trip-v2, port: 50051}]\n  \
         - matches: [{method: {type: RegularExpression, service: \"rides\\\\.v1\\\\..*\", method: \"St.*\"}}]\n    \
           backendRefs: [{name: trip, port: 50051}]\n",
    ));
    let by_path: Vec<(PathMatchType, &str)> = (rules.iter())
        .map(|r| (r.matches.path_type, r.matches.path.as_str()))
        .collect();
    // Gateway API precedence: the exact method first, then the longer pattern.
    assert!(
        by_path.contains(&(PathMatchType::Exact, "/rides.v1.Trip/Start")),
        "{by_path:?}"
    );
    assert!(
        by_path.contains(&(PathMatchType::RegularExpression, "/rides\\.v1\\.Trip/[^/]+")),
        "{by_path:?}"
    );
    assert!(
        by_path.contains(&(
            PathMatchType::RegularExpression,
            "/(?:rides\\.v1\\..*)/(?:St.*)"
        )),
        "{by_path:?}"
    );
    let start = (rules.iter())
        .find(|r| r.matches.path == "/rides.v1.Trip/Start")
        .unwrap();
    assert_eq!(start.matches.headers.len(), 1);
    assert_eq!(start.filters.len(), 1);
    let weights: Vec<u32> = start.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [90, 10]);
}

#[test]
fn a_grpcroute_is_refused_in_its_own_fields_at_its_line() {
    let refused = |rules: &str| {
        load_str("mesh.yaml", &route(rules))
            .expect_err("refused")
            .to_string()
    };
    // The GRPCRoute document starts on line 15, its first rule on line 21.
    let e = refused(
        "  - matches: [{method: {type: Exact}}]\n    backendRefs: [{name: trip, port: 50051}]\n",
    );
    assert!(
        e.contains(
            "mesh.yaml:21: spec.rules[0].matches[0].method: names neither a service nor a method"
        ),
        "{e}"
    );
    let e = refused(
        "  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]\n    backendRefs: [{name: trip, port: 50051}]\n",
    );
    assert!(
        e.contains("spec.rules[0].filters[0].type: URLRewrite is not a GRPCRoute filter"),
        "{e}"
    );
    let e = refused("  - matches: [{method: {service: a.B}, path: {value: /x}}]\n");
    assert!(e.contains("mesh.yaml:") && e.contains("path"), "{e}");
    // A backend that does not exist: the HTTPRoute checks apply, at the field's own line.
    let e = refused("  - backendRefs: [{name: trip-v9, port: 50051}]\n");
    assert!(
        e.contains("spec.rules[0].backendRefs[0].name") && e.contains("trip-v9"),
        "{e}"
    );
    // A bad regular expression is reported at the line of the name that holds it.
    let e = refused(
        "  - matches:\n    - method:\n        type: RegularExpression\n        service: \"rides(\"\n    backendRefs: [{name: trip, port: 50051}]\n",
    );
    assert!(e.contains("mesh.yaml:24:") && e.contains("rides("), "{e}");
}
