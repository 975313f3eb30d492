//! The Gateway kind and the HTTPRoutes attached to it: validation errors that name the line,
//! and what a gateway proxy's snapshot holds.

use trellis_config::{NodeIdentity, compile, load_str};

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: passenger, namespace: rides}\n\
spec:\n  selector: {app: passenger}\n  ports: [{name: http, port: 80}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: driver, namespace: rides}\n\
spec:\n  selector: {app: driver}\n  ports: [{name: http, port: 80}]\n---\n";

fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: rides}}\n\
         spec:\n  listeners:\n{listeners}---\n"
    )
}

fn route(parent: &str, extra: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: api, namespace: rides}}\n\
         spec:\n  parentRefs: [{parent}]\n{extra}  rules:\n\
         \x20 - matches: [{{path: {{value: /api/rides}}}}]\n    backendRefs: [{{name: passenger}}]\n\
         \x20 - matches: [{{path: {{type: Exact, value: /api/rides/health}}}}]\n    backendRefs: [{{name: driver}}]\n---\n"
    )
}

fn errors(yaml: &str) -> String {
    load_str("mesh.yaml", yaml)
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn routes_compile_into_the_gateway_listener_in_precedence_order() {
    let yaml = [
        SERVICES,
        &gateway("  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}\n  - {name: admin, port: 9000, protocol: HTTP}\n"),
        &route("{kind: Gateway, name: edge, sectionName: http}", "  hostnames: [rides.example.com]\n"),
    ]
    .concat();
    let cfg = load_str("mesh.yaml", &yaml).expect("valid");
    let snap = compile(
        &cfg,
        &NodeIdentity {
            namespace: "rides".into(),
            ..Default::default()
        },
    );
    let g = &snap.gateways["rides/edge"];
    let http = g.listeners.iter().find(|l| l.name == "http").unwrap();
    let got: Vec<_> = http
        .routes
        .iter()
        .map(|r| {
            (
                r.hostname.as_deref(),
                r.rule.matches.path.as_str(),
                r.rule.backends[0].cluster.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Some("rides.example.com"),
                "/api/rides/health",
                "driver.rides:80"
            ),
            (
                Some("rides.example.com"),
                "/api/rides",
                "passenger.rides:80"
            ),
        ]
    );
    // sectionName: http attaches to that listener only.
    let admin = g.listeners.iter().find(|l| l.name == "admin").unwrap();
    assert!(admin.routes.is_empty());
    // A gateway route is not a mesh route of the Service it sends to.
    assert!(!snap.services["rides/passenger"].ports[0].has_http_route);
}

#[test]
fn a_route_naming_a_missing_gateway_or_listener_is_an_error_with_its_line() {
    let yaml = [SERVICES, &route("{kind: Gateway, name: nowhere}", "")].concat();
    let e = errors(&yaml);
    assert!(e.contains("mesh.yaml:19"), "{e}");
    assert!(e.contains("spec.parentRefs[0].name"), "{e}");
    assert!(
        e.contains("no Gateway \"nowhere\" in namespace \"rides\""),
        "{e}"
    );

    let yaml = [
        SERVICES,
        &gateway("  - {name: http, port: 80, protocol: HTTP}\n"),
        &route("{kind: Gateway, name: edge, sectionName: https}", ""),
    ]
    .concat();
    let e = errors(&yaml);
    assert!(e.contains("spec.parentRefs[0].sectionName"), "{e}");
    assert!(e.contains("[\"http\"]"), "{e}");
}

#[test]
fn tls_passthrough_and_unknown_protocols_are_refused_by_name() {
    let yaml = [
        SERVICES,
        &gateway(
            "  - {name: tls, port: 443, protocol: TLS}
  - {name: udp, port: 53, protocol: UDP}
  - name: pass
    port: 8443
    protocol: HTTPS
    tls: {mode: Passthrough, certificateRefs: [{name: c}]}
  - name: opts
    port: 9443
    protocol: HTTPS
    tls: {certificateRefs: [{kind: ConfigMap, name: c}], options: {x: y}}
",
        ),
    ]
    .concat();
    let e = errors(&yaml);
    assert!(e.contains("spec.listeners[0].protocol: \"TLS\" is not supported (TLS passthrough with TLSRoute is not built); allowed: HTTP, HTTPS"), "{e}");
    assert!(
        e.contains("spec.listeners[1].protocol: \"UDP\" is not supported; allowed: HTTP, HTTPS"),
        "{e}"
    );
    assert!(
        e.contains("spec.listeners[2].tls.mode: \"Passthrough\""),
        "{e}"
    );
    assert!(
        e.contains("spec.listeners[3].tls.certificateRefs[0]"),
        "{e}"
    );
    assert!(e.contains("spec.listeners[3].tls.options"), "{e}");
}

#[test]
fn listener_protocol_hostname_and_duplicates_are_checked() {
    let yaml = [
        SERVICES,
        &gateway(
            "  - {name: http, port: 80, protocol: HTTPS}\n  - {name: http, port: 81, protocol: HTTP, hostname: \"rides.example.com:80\"}\n",
        ),
    ]
    .concat();
    let e = errors(&yaml);
    // HTTPS is built; without tls it cannot serve, and the error says what to add.
    assert!(e.contains("mesh.yaml:20: spec.listeners[0].tls"), "{e}");
    assert!(e.contains("certificateRefs"), "{e}");
    assert!(e.contains("mesh.yaml:21: spec.listeners[1].name"), "{e}");
    assert!(e.contains("spec.listeners[1].hostname"), "{e}");

    let yaml = [
        SERVICES,
        &gateway("  - {name: http, port: 80, protocol: HTTP, hostname: rides.example.com}\n"),
        &route(
            "{kind: Gateway, name: edge}",
            "  hostnames: [maps.example.org]\n",
        ),
    ]
    .concat();
    let e = errors(&yaml);
    assert!(e.contains("spec.hostnames"), "{e}");

    let e = errors(
        &[
            SERVICES,
            &gateway("  - {name: http, port: 80, protocol: HTTP, tls: {}}\n"),
        ]
        .concat(),
    );
    assert!(e.contains("tls"), "{e}");
}

/// A route whose parent is a Gateway is not a mesh route of a Service that happens to share
/// the Gateway's name: mesh callers of that Service must not get the edge's rules.
#[test]
fn a_gateway_route_does_not_attach_to_a_service_of_the_same_name() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: edge, namespace: rides}\n\
        spec:\n  selector: {app: edge}\n  ports: [{name: http, port: 80}]\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n\
        spec:\n  selector: {app: billing}\n  ports: [{name: http, port: 80}]\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: rides}\n\
        spec:\n  gatewayClassName: trellis\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n---\n\
        apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: to-billing, namespace: rides}\n\
        spec:\n  parentRefs: [{kind: Gateway, name: edge}]\n  rules:\n  - backendRefs: [{name: billing, port: 80}]\n";
    let cfg = trellis_config::load_str("mesh.yaml", yaml).unwrap();
    let node = trellis_config::NodeIdentity {
        name: "trip-0".into(),
        namespace: "rides".into(),
        ..Default::default()
    };
    let snap = trellis_config::compile(&cfg, &node);
    let port = &snap.services["rides/edge"].ports[0];
    assert!(!port.has_http_route, "{port:#?}");
    assert_eq!(
        port.routes[0].route, "rides/edge",
        "the Service routes to itself"
    );
}

#[test]
fn cors_filters_name_bad_origins_methods_and_headers_and_stay_on_rules() {
    let yaml = [
        SERVICES,
        &gateway("  - {name: http, port: 80, protocol: HTTP}\n"),
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge}]
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://ok.example.com", "https://*.example.com:8443", "example.com", "https://a.example.com/path", "https://*"]
        allowMethods: [GET, FETCH]
        allowHeaders: ["bad header"]
    - type: CORS
    backendRefs:
    - name: passenger
      filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]
---
"#,
    ]
    .concat();
    let e = errors(&yaml);
    assert!(e.contains("\"example.com\" is not an origin"), "{e}");
    assert!(
        e.contains("\"https://a.example.com/path\" is not an origin"),
        "{e}"
    );
    assert!(e.contains("\"https://*\" is not an origin"), "{e}");
    assert!(!e.contains("\"https://*.example.com:8443\" is not"), "{e}");
    assert!(!e.contains("\"https://ok.example.com\" is not"), "{e}");
    assert!(
        e.contains("spec.rules[0].filters[0].cors.allowMethods: \"FETCH\" is not a method"),
        "{e}"
    );
    assert!(
        e.contains("\"bad header\" is not a valid header name"),
        "{e}"
    );
    assert!(
        e.contains("spec.rules[0].filters[1].cors: type CORS needs its cors field"),
        "{e}"
    );
    assert!(e.contains("CORS is only supported on a rule"), "{e}");
}

#[test]
fn extension_refs_name_a_client_rate_limit_of_the_routes_namespace() {
    let yaml = [
        SERVICES,
        &gateway("  - {name: http, port: 80, protocol: HTTP}\n"),
        r#"apiVersion: trellis.dev/v1alpha1
kind: ClientRateLimit
metadata: {name: zero, namespace: rides}
spec: {requestsPerSecond: 0, burst: 0}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: rides}
spec:
  parentRefs: [{kind: Gateway, name: edge}]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: x}}
    - {type: ExtensionRef, extensionRef: {group: trellis.dev, kind: ClientRateLimit, name: missing}}
    backendRefs: [{name: passenger}]
---
"#,
    ]
    .concat();
    let e = errors(&yaml);
    assert!(
        e.contains("spec.requestsPerSecond: 0 must be a number greater than 0"),
        "{e}"
    );
    assert!(e.contains("spec.burst: must be at least 1"), "{e}");
    assert!(
        e.contains("group \"example.com\" kind \"Magic\" is not a filter Trellis knows"),
        "{e}"
    );
    assert!(
        e.contains("extensionRef.name: no ClientRateLimit \"missing\" in namespace \"rides\""),
        "{e}"
    );
}
