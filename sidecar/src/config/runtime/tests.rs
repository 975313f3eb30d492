//! A request's two choices on the request path: which rule it takes and which backend the rule
//! sends it to, through the real pipeline (mesh YAML, compiler, runtime). The properties are in
//! `precedence.rs` (against the Gateway API's rules) and `weights.rs` (against the weights).

use super::*;
use crate::config::registry::StateRegistry;
use crate::telemetry::metrics::Metrics;
use std::fmt::Write;

mod precedence;
mod weights;

const MESH: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: trellis.local}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
"#;

/// The runtime of `MESH` plus `docs`, compiled for a proxy in namespace `shop`.
fn runtime(docs: &str) -> Runtime {
    let text = format!("{MESH}{docs}");
    let cfg = trellis_config::load_str("mesh.yaml", &text)
        .unwrap_or_else(|e| panic!("the generated mesh is valid: {e}\n{text}"));
    let node = trellis_config::NodeIdentity {
        name: "client".into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    let snapshot = Arc::new(trellis_config::compile(&cfg, &node));
    (StateRegistry::default().build(snapshot, None, &Metrics::default()))
        .expect("the generated mesh builds")
}

/// The rules of `web:80`, in the order the proxy tries them.
fn web(rt: &Runtime) -> &RtPort {
    let svc = rt.service("web").expect("the Service is in the snapshot");
    svc.port(Some(80)).expect("port 80")
}

/// The rule the proxy picked, by the `x-rule` value its filter sets.
fn picked(rule: &RtRule) -> String {
    let set = rule.filters.iter().find_map(|f| match f {
        Filter::RequestHeaderModifier(m) => m.set.iter().find(|(n, _)| n == "x-rule"),
        _ => None,
    });
    set.expect("every rule here sets x-rule").1.clone()
}

/// An HTTPRoute of `web` named `name`, with `rules` (each made by `rule`).
fn route(name: &str, rules: &[String]) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  parentRefs: [{{kind: Service, name: web, port: 80}}]\n  rules:\n{}",
        rules.concat()
    )
}

/// A rule that sets `x-rule: label`, which `picked` reads, and has `matches` (a YAML list),
/// or none: then it has the Gateway API's default match.
fn rule(label: &str, matches: Option<&str>) -> String {
    let set = format!("{{set: [{{name: x-rule, value: {label}}}]}}");
    let mut r = format!(
        "  - backendRefs: [{{name: web, port: 80}}]\n    \
         filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {set}}}]\n"
    );
    if let Some(m) = matches {
        writeln!(r, "    matches: {m}").unwrap();
    }
    r
}

/// The rule a GET of `uri` with `headers` takes.
fn get(port: &RtPort, uri: &str, headers: &[(&'static str, &'static str)]) -> Option<String> {
    let mut h = HeaderMap::new();
    for &(n, v) in headers {
        h.insert(n, v.parse().unwrap());
    }
    port.route(&Method::GET, &uri.parse().unwrap(), &h)
        .map(picked)
}

/// Gateway API (HTTPHeaderMatch, HTTPQueryParamMatch): of several entries with equivalent
/// names in one match, only the first is considered; the others are ignored, so they neither
/// stop the match nor add to its precedence.
#[test]
fn of_match_entries_with_equivalent_names_only_the_first_counts() {
    let rules = [
        rule(
            "query",
            Some(r#"[{queryParams: [{name: r, value: "1"}, {name: r, value: "2"}]}]"#),
        ),
        rule("one", Some(r#"[{headers: [{name: x-v, value: "1"}]}]"#)),
        rule(
            "twice",
            Some(r#"[{headers: [{name: x-v, value: "1"}, {name: X-V, value: "1"}]}]"#),
        ),
        rule(
            "first",
            Some(r#"[{headers: [{name: x-w, value: "1"}, {name: X-W, value: "2"}]}]"#),
        ),
    ];
    let rt = runtime(&route("dup", &rules));
    let port = web(&rt);
    assert_eq!(get(port, "/?r=1", &[]).as_deref(), Some("query"));
    assert_eq!(
        get(port, "/", &[("x-v", "1")]).as_deref(),
        Some("one"),
        "one header match each: the first rule wins"
    );
    assert_eq!(get(port, "/", &[("x-w", "1")]).as_deref(), Some("first"));
    assert_eq!(get(port, "/", &[("x-w", "2")]), None);
}
