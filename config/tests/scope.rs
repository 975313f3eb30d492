//! The Scope kind: which Services a scoped proxy's snapshot holds, which Scope applies when
//! several could, and the errors that name the line.

use std::collections::BTreeMap;
use trellis_config::{NodeIdentity, Snapshot, compile, load_str};

/// trip calls billing, whose route splits to billing-v1 and billing-v2 and mirrors to audit;
/// driver and notify.notification are other Services trip does not call.
const MESH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: trip, namespace: rides}
spec: {selector: {app: trip}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: rides}
spec: {selector: {app: billing}, clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing-v1, namespace: rides}
spec: {selector: {app: billing, version: v1}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing-v2, namespace: rides}
spec: {selector: {app: billing, version: v2}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: audit, namespace: rides}
spec: {selector: {app: audit}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: driver, namespace: rides}
spec: {selector: {app: driver}, clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: notification, namespace: notify}
spec: {selector: {app: notification}, clusterIP: 10.96.0.30, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: billing, namespace: rides}
spec:
  parentRefs: [{group: \"\", kind: Service, name: billing, port: 80}]
  rules:
  - backendRefs: [{name: billing-v1, port: 80, weight: 90}, {name: billing-v2, port: 80, weight: 10}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: audit, port: 80}}
---
";

fn scope(name: &str, selector: Option<&str>, calls: &str) -> String {
    let selector = selector.map_or(String::new(), |s| format!("  selector: {s}\n"));
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {{name: {name}, namespace: rides}}\n\
         spec:\n{selector}  calls: {calls}\n---\n"
    )
}

fn node(labels: &[(&str, &str)]) -> NodeIdentity {
    NodeIdentity {
        name: "trip-0".into(),
        namespace: "rides".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        service_account: Some("trip".into()),
    }
}

fn snapshot(extra: &str, labels: &[(&str, &str)]) -> Snapshot {
    let yaml = format!("{MESH}{extra}");
    compile(&load_str("mesh.yaml", &yaml).expect("valid"), &node(labels))
}

fn keys<V>(m: &BTreeMap<String, V>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[test]
fn a_scoped_proxy_holds_what_it_calls_and_the_clusters_its_routes_use() {
    let s = snapshot(
        &scope("trip", Some("{app: trip}"), "[billing]"),
        &[("app", "trip")],
    );
    assert_eq!(keys(&s.services), ["rides/billing"]);
    // The route's backends and its mirror, but not billing's own cluster: the route
    // replaces it.
    assert_eq!(
        keys(&s.clusters),
        [
            "audit.rides:80",
            "billing-v1.rides:80",
            "billing-v2.rides:80"
        ]
    );
    let scope = s.mesh.scope.as_ref().expect("scoped");
    assert_eq!(scope.by, ["rides/trip"]);
    // Every Service of the mesh by name and address, from which the proxy takes those it
    // does not hold as the ones it refuses.
    let names: Vec<String> = (s.service_names.as_ref().expect("scoped").services.iter())
        .map(|o| format!("{}/{} {:?}", o.namespace, o.name, o.cluster_ip))
        .collect();
    assert_eq!(
        names,
        [
            "notify/notification Some(10.96.0.30)",
            "rides/audit None",
            "rides/billing Some(10.96.0.10)",
            "rides/billing-v1 None",
            "rides/billing-v2 None",
            "rides/driver Some(10.96.0.20)",
            "rides/trip None",
        ]
    );
}

#[test]
fn without_a_scope_a_proxy_holds_every_service() {
    let s = snapshot("", &[("app", "trip")]);
    assert_eq!(s.services.len(), 7);
    assert!(s.mesh.scope.is_none());
    assert!(
        s.service_names.is_none(),
        "only scoped proxies are sent the names"
    );
    // A Scope that selects other workloads changes nothing for this one.
    let other = snapshot(
        &scope("driver", Some("{app: driver}"), "[billing]"),
        &[("app", "trip")],
    );
    assert_eq!(other.services.len(), 7);
    assert_eq!(other.version, s.version);
}

#[test]
fn a_namespace_wide_scope_applies_where_no_selecting_scope_does() {
    let both = format!(
        "{}{}",
        scope("default", None, "[notify/notification]"),
        scope("trip", Some("{app: trip}"), "[billing, driver]")
    );
    let trip = snapshot(&both, &[("app", "trip")]);
    assert_eq!(keys(&trip.services), ["rides/billing", "rides/driver"]);
    assert_eq!(trip.mesh.scope.as_ref().unwrap().by, ["rides/trip"]);
    let driver = snapshot(&both, &[("app", "driver")]);
    assert_eq!(keys(&driver.services), ["notify/notification"]);
    assert_eq!(driver.mesh.scope.as_ref().unwrap().by, ["rides/default"]);
}

#[test]
fn several_selecting_scopes_add_up_and_a_namespace_entry_takes_all_of_it() {
    let two = format!(
        "{}{}",
        scope("a", Some("{app: trip}"), "[driver]"),
        scope("b", Some("{app: trip}"), "[\"notify/*\"]")
    );
    let s = snapshot(&two, &[("app", "trip")]);
    assert_eq!(keys(&s.services), ["notify/notification", "rides/driver"]);
    assert_eq!(s.mesh.scope.as_ref().unwrap().by, ["rides/a", "rides/b"]);
}

#[test]
fn changing_the_scope_changes_the_version() {
    let a = snapshot(&scope("trip", None, "[billing]"), &[]);
    let b = snapshot(&scope("trip", None, "[billing, driver]"), &[]);
    assert_ne!(a.version, b.version);
}

fn errors(extra: &str) -> String {
    load_str("mesh.yaml", &format!("{MESH}{extra}"))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn bad_entries_and_missing_services_are_errors_at_their_line() {
    // MESH is 46 lines; the Scope's `calls` is the fifth line after it.
    let e = errors(&scope("trip", None, "[biling]"));
    assert!(
        e.contains("mesh.yaml:51: spec.calls[0]"),
        "names the line and field: {e}"
    );
    assert!(
        e.contains("no Service rides/biling; the Services of rides are: trip, billing"),
        "names what exists: {e}"
    );
    let e = errors(&scope("trip", None, "[\"a/b/c\", \"*/billing\", \"/x\"]"));
    for i in 0..3 {
        assert!(e.contains(&format!("spec.calls[{i}]")), "entry {i}: {e}");
    }
    assert!(
        e.contains("namespace/name, or namespace/*"),
        "says what is allowed: {e}"
    );
    let e = errors(&scope("trip", Some("{}"), "[billing]"));
    assert!(e.contains("an empty selector selects no workload"), "{e}");
    let e = errors(&scope("trip", None, "[billing]\n  egress: []"));
    assert!(e.contains("egress"), "unknown fields are refused: {e}");
    // A namespace entry needs no Service yet.
    assert_eq!(errors(&scope("trip", None, "[\"payments/*\"]")), "");
}
