//! Trellis Gateways from a cluster: which Gateways and routes are served, and that the
//! shipped k8s/gateway manifests agree with the translator and the proxy's bootstrap.

use super::{GATEWAYS, GRANTS, ROUTES, SECRETS, cluster, item, k8s};
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

/// A `kubernetes.io/tls` Secret as the API server returns it, base64 data included.
fn tls_secret(ns: &str, name: &str, leaf: &testkit::pki::Leaf) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": ns,
                        // What `kubectl apply` leaves behind: the key, again. Never read.
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
           "type": "kubernetes.io/tls",
           "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}})
}

/// The listener `https` of `ride-gateway`'s status, as the API server holds it now.
fn https_listener(c: &super::Cluster) -> Option<Value> {
    let g = c.api.object(GATEWAYS, "rides", "ride-gateway")?;
    (g["status"]["listeners"].as_array()?.iter())
        .find(|l| l["name"] == "https")
        .cloned()
}

fn condition<'a>(listener: &'a Value, kind: &str) -> &'a Value {
    (listener["conditions"].as_array().into_iter().flatten())
        .find(|c| c["type"] == kind)
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn https_listeners_take_tls_secrets_with_reference_grants_and_say_why_not() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let ca = testkit::pki::TestCa::new("edge");
    // The certificate lives in another namespace, `certs`: not usable until a grant there.
    c.api.event(
        SECRETS,
        "ADDED",
        tls_secret("certs", "rides-tls", &ca.server(&["app.rides.example.com"])),
    );
    c.api.event(
        SECRETS,
        "ADDED",
        tls_secret("rides", "unrelated", &ca.server(&["x.example.com"])),
    );
    let mut gw = item("gateways.json", "ride-gateway");
    gw["spec"]["listeners"].as_array_mut().unwrap().push(json!({
        "name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.rides.example.com",
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "rides-tls", "namespace": "certs"}]}}));
    c.api.event(GATEWAYS, "MODIFIED", gw);
    let listener = testkit::eventually(super::WAIT, "ResolvedRefs: False", || async {
        https_listener(&c).filter(|l| condition(l, "ResolvedRefs")["status"] == "False")
    })
    .await;
    let refs = condition(&listener, "ResolvedRefs");
    assert_eq!(refs["reason"], "RefNotPermitted", "{listener}");
    assert!(
        refs["message"].as_str().unwrap().contains("ReferenceGrant"),
        "{refs}"
    );
    assert_eq!(
        condition(&listener, "Programmed")["status"],
        "False",
        "{listener}"
    );
    // The other listener is untouched, and the refusal shows in `trellis status`.
    let g = c.api.object(GATEWAYS, "rides", "ride-gateway").unwrap();
    assert_eq!(
        g["status"]["listeners"][0]["conditions"][1]["status"], "True",
        "{g}"
    );
    let errors = c
        .running
        .cp
        .config_errors()
        .expect("the certificate is refused");
    assert!(
        errors.to_string().contains("certificateRefs[0]"),
        "{errors}"
    );

    // The grant in `certs` lets Gateways of `rides` use its Secrets.
    c.api.event(GRANTS, "ADDED", json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "rides-gateways", "namespace": "certs"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "rides"}],
                 "to": [{"group": "", "kind": "Secret"}]}}));
    let listener = testkit::eventually(super::WAIT, "ResolvedRefs: True", || async {
        https_listener(&c).filter(|l| condition(l, "ResolvedRefs")["status"] == "True")
    })
    .await;
    assert_eq!(
        condition(&listener, "Programmed")["status"],
        "True",
        "{listener}"
    );
    let w = c.running.cp.world().unwrap();
    // Only the Secret a Gateway names became a document; annotations did not travel.
    let secrets: Vec<String> = w.config.secrets.iter().map(|s| s.key()).collect();
    assert_eq!(secrets, ["certs/rides-tls"]);
    assert!(c.running.cp.config_errors().is_none());

    // A key that is not the certificate's: InvalidCertificateRef, with the reason.
    let mut bad = tls_secret("certs", "rides-tls", &ca.server(&["app.rides.example.com"]));
    bad["data"]["tls.key"] = tls_secret("x", "y", &ca.server(&["z"]))["data"]["tls.key"].clone();
    c.api.event(SECRETS, "MODIFIED", bad);
    let listener = testkit::eventually(super::WAIT, "InvalidCertificateRef", || async {
        https_listener(&c)
            .filter(|l| condition(l, "ResolvedRefs")["reason"] == "InvalidCertificateRef")
    })
    .await;
    let message = condition(&listener, "ResolvedRefs")["message"].to_string();
    assert!(
        message.contains("does not belong to the certificate"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE"), "{message}");
}
