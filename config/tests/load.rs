//! Loading, validating and compiling mesh YAML, as an operator writes it.

use trellis_config::model::{AppProtocol, LbPolicy, MtlsMode, PathMatchType};
use trellis_config::{NodeIdentity, compile, load_str};

const EXAMPLE: &str = include_str!("design_example.yaml");

fn trip() -> NodeIdentity {
    NodeIdentity {
        name: "trip-0".into(),
        namespace: "rides".into(),
        ..Default::default()
    }
}

#[test]
fn design_example_loads_and_compiles() {
    let cfg = load_str("mesh.yaml", EXAMPLE).expect("the DESIGN.md example is valid");
    let snap = compile(&cfg, &trip());
    assert_eq!(snap.mesh.mtls_mode, MtlsMode::Strict);
    let billing = &snap.services["rides/billing"];
    let port = billing
        .ports
        .iter()
        .find(|p| p.port == 80)
        .expect("port 80");
    assert_eq!(port.protocol, AppProtocol::Http);
    assert!(port.has_http_route);
    // Precedence: the Exact match first, then the longer prefix with a header, then "/".
    let kinds: Vec<_> = port
        .routes
        .iter()
        .map(|r| (r.matches.path_type, r.matches.path.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (PathMatchType::Exact, "/health"),
            (PathMatchType::PathPrefix, "/v2"),
            (PathMatchType::PathPrefix, "/")
        ]
    );
    let split: Vec<_> = port.routes[2]
        .backends
        .iter()
        .map(|b| (b.cluster.as_str(), b.weight))
        .collect();
    assert_eq!(
        split,
        vec![
            ("billing-v1.rides:80 via billing.rides", 90),
            ("billing-v2.rides:80 via billing.rides", 10)
        ]
    );
    let v1 = &snap.clusters["billing-v1.rides:80 via billing.rides"];
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(v1.endpoints[0].address.to_string(), "127.0.0.1:9002");
    assert_eq!(v1.resilience.load_balancer.policy, LbPolicy::LeastRequest);
    // A named targetPort is looked up on the Workload.
    let v2 = &snap.clusters["billing-v2.rides:80 via billing.rides"];
    assert_eq!(v2.endpoints[0].address.to_string(), "127.0.0.2:9003");
}

#[test]
fn version_is_a_content_hash() {
    let cfg = load_str("mesh.yaml", EXAMPLE).unwrap();
    let a = compile(&cfg, &trip());
    let b = compile(&cfg, &trip());
    assert_eq!(a.version, b.version);
    let changed = EXAMPLE.replace("weight: 90", "weight: 80");
    let c = compile(&load_str("mesh.yaml", &changed).unwrap(), &trip());
    assert_ne!(a.version, c.version);
}

fn first_error(yaml: &str) -> String {
    let errs = load_str("mesh.yaml", yaml).expect_err("must be refused");
    errs.0[0].to_string()
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let bad = EXAMPLE.replace(
        "  selector: {app: billing}\n",
        "  selector: {app: billing}\n  selectr: {}\n",
    );
    let e = first_error(&bad);
    assert!(e.starts_with("mesh.yaml:13:"), "{e}");
    assert!(e.contains("selectr"), "{e}");
}

#[test]
fn missing_backend_is_an_error_at_its_line() {
    let bad = EXAMPLE.replace(
        "{name: billing-v2, port: 80, weight: 10}",
        "{name: billing-v3, port: 80, weight: 10}",
    );
    let e = first_error(&bad);
    assert!(e.starts_with("mesh.yaml:46:"), "{e}");
    assert!(e.contains("spec.rules[0].backendRefs[1].name"), "{e}");
    assert!(e.contains("billing-v3"), "{e}");
}

#[test]
fn bad_enum_lists_allowed_values() {
    let bad = EXAMPLE.replace("policy: LEAST_REQUEST", "policy: FASTEST");
    let e = first_error(&bad);
    assert!(e.starts_with("mesh.yaml:56:"), "{e}");
    assert!(e.contains("LEAST_REQUEST") && e.contains("FASTEST"), "{e}");
}

#[test]
fn unknown_kind_lists_allowed_kinds() {
    let e = first_error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert!(e.starts_with("mesh.yaml:1: kind:"), "{e}");
    assert!(e.contains("HTTPRoute"), "{e}");
}

#[test]
fn bad_values_are_refused_with_their_field() {
    let bad = EXAMPLE
        .replace("failureRateThreshold: 50", "failureRateThreshold: 150")
        .replace("timeouts: {request: 2s}", "timeouts: {request: soon}");
    let errs = load_str("mesh.yaml", &bad).expect_err("refused");
    let all = errs.to_string();
    assert!(all.contains("invalid duration \"soon\""), "{all}");
}
