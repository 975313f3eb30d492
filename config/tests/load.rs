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
    assert!(
        e.starts_with("mesh.yaml:56: spec.loadBalancer.policy:"),
        "{e}"
    );
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
    assert!(
        all.contains("spec.rules[0].timeouts.request: invalid duration \"soon\""),
        "{all}"
    );
}

#[test]
fn defaults_without_a_mesh_document() {
    let cfg = load_str(
        "mesh.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    let snap = compile(&cfg, &trip());
    assert_eq!(snap.mesh.trust_domain, "trellis.local");
    assert_eq!(snap.mesh.mtls_mode, MtlsMode::Permissive);
}

#[test]
fn policy_with_target_namespace_applies_there() {
    let extra = "---\napiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: v2, namespace: ops}\n\
                 spec: {targetRef: {kind: Service, name: billing-v2, namespace: rides}, loadBalancer: {policy: RANDOM}}\n";
    let cfg = load_str("mesh.yaml", &format!("{EXAMPLE}{extra}")).unwrap();
    let snap = compile(&cfg, &trip());
    assert_eq!(
        snap.clusters["billing-v2.rides:80"]
            .resilience
            .load_balancer
            .policy,
        LbPolicy::Random
    );
}

#[test]
fn conflicting_or_ignored_settings_are_refused() {
    let dup = "---\napiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: billing-2, namespace: rides}\n\
               spec: {targetRef: {kind: Service, name: billing}}\n";
    let e = load_str("mesh.yaml", &format!("{EXAMPLE}{dup}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already has ResiliencePolicy rides/billing (mesh.yaml:51)"),
        "{e}"
    );

    let hash = EXAMPLE.replace(
        "policy: LEAST_REQUEST}",
        "policy: LEAST_REQUEST, hashKey: {header: x-user}}",
    );
    let e = load_str("mesh.yaml", &hash).unwrap_err().to_string();
    assert!(e.contains("hashKey only applies to RING_HASH"), "{e}");

    let redirect = EXAMPLE.replace(
        "{name: billing-v2, port: 80, weight: 10}",
        "{name: billing-v2, port: 80, weight: 10, filters: [{type: RequestRedirect, requestRedirect: {hostname: x}}]}",
    );
    let e = load_str("mesh.yaml", &redirect).unwrap_err().to_string();
    assert!(
        e.contains("backendRefs[1].filters[0].type") && e.contains("only supported on a rule"),
        "{e}"
    );
}

#[test]
fn zero_timeout_means_no_timeout() {
    let cfg = load_str(
        "mesh.yaml",
        &EXAMPLE.replace("timeouts: {request: 2s}", "timeouts: {request: 0s}"),
    )
    .unwrap();
    let snap = compile(&cfg, &trip());
    let port = &snap.services["rides/billing"].ports[0];
    assert!(port.routes.iter().all(|r| r.timeouts.request.is_none()));
}

#[test]
fn names_kubernetes_refuses_are_errors_at_their_document() {
    // A service account is a DNS-1123 subdomain: '_' and capitals are refused, but a label
    // over 63 characters is not (it is a valid Kubernetes name, so it must load).
    let long = "a".repeat(64);
    let ok = EXAMPLE.replacen(
        "serviceAccount: billing}",
        &format!("serviceAccount: {long}}}"),
        1,
    );
    load_str("mesh.yaml", &ok).expect("a 64-character label is a valid service account");

    let bad = EXAMPLE.replacen("serviceAccount: billing}", "serviceAccount: Bill_ing}", 1);
    let e = first_error(&bad);
    assert!(
        e.starts_with(
            "mesh.yaml:29: spec.serviceAccount: \"Bill_ing\" is not a valid service account"
        ),
        "{e}"
    );

    let bad = EXAMPLE.replace(
        "namespace: rides, labels: {app: billing, version: v1}",
        "namespace: ri.des, labels: {app: billing, version: v1}",
    );
    let all = load_str("mesh.yaml", &bad)
        .expect_err("refused")
        .to_string();
    assert!(
        all.contains("mesh.yaml:29: metadata.namespace: \"ri.des\" is not a valid namespace"),
        "{all}"
    );

    let bad = EXAMPLE.replace(
        "serviceAccounts: [\"rides/trip\"]",
        "serviceAccounts: [\"rides/-trip\"]",
    );
    let e = first_error(&bad);
    assert!(
        e.starts_with("mesh.yaml:72: spec.rules[0].from[0].serviceAccounts: in \"rides/-trip\": \"-trip\" is not a valid service account"),
        "{e}"
    );
    // The shape error stays as it was.
    let bad = EXAMPLE.replace(
        "serviceAccounts: [\"rides/trip\"]",
        "serviceAccounts: [\"rides/trip/x\"]",
    );
    assert!(first_error(&bad).contains("must be namespace/serviceAccount"));

    let bad = EXAMPLE.replace("trustDomain: trellis.local", "trustDomain: Trellis..local");
    let e = first_error(&bad);
    assert!(
        e.starts_with(
            "mesh.yaml:1: spec.trustDomain: \"Trellis..local\" is not a valid trust domain"
        ),
        "{e}"
    );
}

#[test]
fn kubernetes_h2c_is_http2() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: trip, namespace: rides}\n\
        spec:\n  selector: {app: trip}\n  ports: [{name: h2, port: 80, appProtocol: kubernetes.io/h2c}]\n";
    let cfg = load_str("mesh.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let snap = compile(&cfg, &trip());
    assert_eq!(
        snap.services["rides/trip"].ports[0].protocol,
        AppProtocol::Http2
    );
}
