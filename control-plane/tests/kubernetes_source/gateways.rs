//! Trellis Gateways from a cluster: which Gateways and routes are served, and that the
//! shipped k8s/gateway manifests agree with the translator and the proxy's bootstrap.

use super::{GATEWAYS, ROUTES, cluster, item, k8s};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use trellis_control::world::World;

fn gateway_routes(w: &World) -> Vec<String> {
    w.config
        .http_routes
        .iter()
        .filter(|r| {
            r.object
                .spec
                .parent_refs
                .iter()
                .any(|p| p.kind.as_deref() == Some("Gateway"))
        })
        .map(|r| r.key())
        .collect()
}

#[tokio::test]
async fn trellis_gateways_and_the_routes_they_admit_are_served() {
    let c = cluster().await;
    let w = c
        .until("the first config", |w| w.config.services.len() == 4)
        .await;
    // Only the trellis-class Gateway; the `edge` route to the other controller's `public`
    // Gateway stays out.
    let gateways: Vec<String> = w.config.gateways.iter().map(|g| g.key()).collect();
    assert_eq!(gateways, ["rides/ride-gateway"]);
    assert!(gateway_routes(&w).is_empty());

    // A route in the Gateway's namespace attaches; parentRefs without kind and group mean a
    // Gateway, as in the Gateway API.
    let route = |ns: &str, name: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"parentRefs": [{"name": "ride-gateway", "namespace": "rides"}],
                        "hostnames": ["app.rides.example.com"],
                        "rules": [{"backendRefs": [{"name": "trip", "namespace": "rides", "port": 80}]}]}})
    };
    c.api.event(ROUTES, "ADDED", route("rides", "ingress"));
    c.until("the same-namespace route attached", |w| {
        gateway_routes(w) == ["rides/ingress"]
    })
    .await;
    // From another namespace: refused while the listener admits only its own namespace...
    c.api
        .event(ROUTES, "ADDED", route("drivers", "drivers-ingress"));
    c.api
        .event(ROUTES, "ADDED", route("rides", "ingress-v2-marker"));
    c.until("the marker after the cross-namespace route", |w| {
        gateway_routes(w).contains(&"rides/ingress-v2-marker".to_string())
    })
    .await;
    assert!(
        !gateway_routes(&c.running.cp.world().unwrap())
            .contains(&"drivers/drivers-ingress".to_string()),
        "allowedRoutes: Same keeps other namespaces out"
    );
    // ...and admitted once it says `from: All`.
    let mut gw = item("gateways.json", "ride-gateway");
    gw["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"] = json!("All");
    c.api.event(GATEWAYS, "MODIFIED", gw.clone());
    c.until("the cross-namespace route attached", |w| {
        gateway_routes(w).contains(&"drivers/drivers-ingress".to_string())
    })
    .await;
    // The Gateway goes: so do its routes (they had no other parent), and nothing is refused.
    c.api.event(GATEWAYS, "DELETED", gw);
    c.until("gateway and its routes gone", |w| {
        w.config.gateways.is_empty() && gateway_routes(w).is_empty()
    })
    .await;
    assert!(c.running.cp.config_errors().is_none());
}

/// k8s/gateway as shipped: the Gateway the Deployment serves is one the translator keeps and
/// the loader accepts, and the Deployment's environment makes a gateway bootstrap naming it.
#[test]
fn the_shipped_gateway_manifests_agree_with_each_other() {
    use trellis_control::kubernetes::translate::{ClusterState, mesh_config};
    let text = std::fs::read_to_string(k8s::repo("k8s/gateway/gatewayclass.yaml")).unwrap();
    let mut state = ClusterState::default();
    for doc in text.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        if v["kind"] == "Gateway" {
            state
                .gateways
                .push(Arc::new(serde_json::from_value(v).unwrap()));
        }
    }
    let loader = trellis_config::Loader::default();
    let cfg = mesh_config(&state, &loader).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = cfg.gateways.iter().map(|g| g.key()).collect();
    assert_eq!(keys, ["trellis-system/trellis-gateway"]);

    let text = std::fs::read_to_string(k8s::repo("k8s/gateway/gateway.yaml")).unwrap();
    let deployment: Value = text
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap())
        .find(|v| v["kind"] == "Deployment")
        .unwrap();
    let pod = &deployment["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let fields = HashMap::from([
        ("metadata.name", "trellis-gateway-5c7d9-abcde"),
        ("metadata.namespace", "trellis-system"),
        ("status.podIP", "10.244.3.4"),
        ("spec.serviceAccountName", "trellis-gateway"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, testkit::pki::TestCa::new("mesh").root_pem).unwrap();
    let mut env: HashMap<String, String> = HashMap::new();
    for e in c["env"].as_array().unwrap() {
        let v = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => fields[e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap()].to_string(),
        };
        env.insert(e["name"].as_str().unwrap().to_string(), v);
    }
    // The mounted files, where the test has them.
    assert_eq!(env["TRELLIS_CA_BUNDLE_FILE"], "/etc/trellis/ca/ca.crt");
    env.insert("TRELLIS_CA_BUNDLE_FILE".into(), ca.display().to_string());
    env.remove("TRELLIS_POD_INFO_DIR");
    let b = trellis_proxy::bootstrap_from_env(|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{e}"));
    let g = b.gateway.expect("gateway mode");
    assert_eq!(g.key(&b.workload.namespace), keys[0]);
    let port = g.listen["http"].port();
    let ports: Vec<u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(ports.contains(&u64::from(port)), "{ports:?} lacks {port}");
    assert_eq!(
        b.workload.service_account.as_deref(),
        Some("trellis-gateway")
    );
}
