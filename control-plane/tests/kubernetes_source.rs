//! `trellis-control --kubernetes` against a mock API server serving real API JSON (lists from
//! tests/fixtures/cluster, watch events from the tests): the cluster becomes the same config
//! as file mode, and adds, updates, deletes, watch restarts and relists flow into it.

mod k8s;

use k8s::mock_api::{MockApi, client};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use testkit::eventually;
use trellis_config::compile::NodeIdentity;
use trellis_control::world::World;

const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const GRPC_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const POLICIES: &str = "/apis/trellis.dev/v1alpha1/resiliencepolicies";
const WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(k8s::fixture(&format!("cluster/{name}"))).unwrap())
        .unwrap()
}

fn item(list: &str, name: &str) -> Value {
    let list = fixture(list);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap()
        .clone()
}

struct Cluster {
    api: MockApi,
    running: trellis_control::Running,
    _state: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

async fn cluster_with(tweak: impl FnOnce(&mut trellis_control::Options)) -> Cluster {
    let api = MockApi::default();
    api.serve(SERVICES, fixture("services.json"));
    api.serve(PODS, fixture("pods.json"));
    api.serve(SLICES, fixture("endpointslices.json"));
    api.serve(ROUTES, fixture("httproutes.json"));
    api.serve(GRPC_ROUTES, fixture("grpcroutes.json"));
    api.serve(GATEWAYS, fixture("gateways.json"));
    api.serve(POLICIES, fixture("resiliencepolicies.json"));
    api.serve("/apis/trellis.dev/v1alpha1/meshes", fixture("meshes.json"));
    api.serve(
        "/apis/trellis.dev/v1alpha1/workloads",
        fixture("workloads.json"),
    );
    api.serve(
        "/apis/trellis.dev/v1alpha1/authorizationpolicies",
        fixture("authorizationpolicies.json"),
    );
    let state = tempfile::tempdir().unwrap();
    let mut opts = trellis_control::Options {
        registration_grace: Duration::from_millis(20),
        ..trellis_control::Options::local(Default::default(), state.path().to_path_buf())
    };
    tweak(&mut opts);
    let running =
        trellis_control::start_with(opts, trellis_control::Source::Kubernetes(client(&api)))
            .await
            .unwrap();
    Cluster {
        api,
        running,
        _state: state,
    }
}

impl Cluster {
    /// Waits until the served config satisfies `check`.
    async fn until(&self, what: &str, check: impl Fn(&World) -> bool) -> Arc<World> {
        let cp = self.running.cp.clone();
        eventually(WAIT, what, || {
            let w = cp.world().filter(|w| check(w));
            async move { w }
        })
        .await
    }
}

fn services(w: &World) -> Vec<String> {
    w.config.services.iter().map(|s| s.key()).collect()
}

fn workloads(w: &World) -> BTreeMap<String, String> {
    w.config
        .workloads
        .iter()
        .map(|d| (d.key(), d.object.spec.address.value.clone()))
        .collect()
}

fn weights(w: &World, route: &str) -> Vec<(String, Option<u32>)> {
    w.config
        .http_routes
        .iter()
        .filter(|r| r.key() == route)
        .flat_map(|r| r.object.spec.rules.iter().flat_map(|r| &r.backend_refs))
        .map(|b| (b.name.value.clone(), b.weight))
        .collect()
}

fn node(name: &str, app: &str, sa: &str) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        namespace: "rides".into(),
        labels: BTreeMap::from([("app".into(), app.into()), ("version".into(), "v1".into())]),
        service_account: Some(sa.into()),
    }
}

#[tokio::test]
async fn the_cluster_compiles_to_the_same_snapshots_as_the_equivalent_file() {
    let c = cluster().await;
    let w = c
        .until("the first config", |w| w.config.services.len() == 4)
        .await;
    assert_eq!(
        services(&w),
        [
            "rides/billing",
            "rides/billing-v1",
            "rides/billing-v2",
            "rides/trip"
        ]
    );
    // Pods behind ready endpoints are Workloads, the injected trip pod too (from the cluster,
    // not from its proxy's registration, so every replica agrees); the selector-less
    // `kubernetes` Service is no mesh Service.
    assert_eq!(
        workloads(&w),
        BTreeMap::from([
            (
                "rides/billing-v1-6c9f7-abcde".to_string(),
                "10.244.1.11".to_string()
            ),
            (
                "rides/billing-v2-58d4b-fghij".to_string(),
                "10.244.1.12".to_string()
            ),
            (
                "rides/trip-7d9f8-klmno".to_string(),
                "10.244.2.21".to_string()
            ),
            (
                "rides/trip-7d9f8-pqrst".to_string(),
                "10.244.2.22".to_string()
            ),
        ])
    );
    // Traffic to the injected pod goes to its sidecar's inbound port, over mTLS; the pod
    // without a sidecar is called directly, in plaintext.
    let spec = |name: &str| {
        w.config
            .workloads
            .iter()
            .find(|d| d.object.metadata.name == name)
            .map(|d| d.object.spec.clone())
            .unwrap()
    };
    let injected = spec("trip-7d9f8-pqrst");
    assert_eq!(
        (injected.sidecar_inbound, injected.sidecar_mtls),
        (Some(15006), true)
    );
    let plain = spec("trip-7d9f8-klmno");
    assert_eq!((plain.sidecar_inbound, plain.sidecar_mtls), (None, false));
    assert_eq!(
        w.config
            .http_routes
            .iter()
            .map(|r| r.key())
            .collect::<std::collections::BTreeSet<_>>(),
        ["rides/billing".to_string(), "rides/trip-grpc".to_string()].into(),
        "the Gateway-only route is not a mesh route; the GRPCRoute is one"
    );
    assert_eq!(
        w.config.mesh.as_ref().unwrap().object.spec.trust_domain,
        "rides.example"
    );

    let text = std::fs::read_to_string(k8s::fixture("cluster/equivalent-mesh.yaml")).unwrap();
    let mut file = trellis_config::load_str("equivalent-mesh.yaml", &text).unwrap();
    // In file mode a proxy's registration says it holds a certificate; YAML cannot (the
    // field is not part of the schema), so the test says it for the injected pod.
    for d in &mut file.workloads {
        if d.object.metadata.name == "trip-7d9f8-pqrst" {
            std::sync::Arc::make_mut(&mut d.object).spec.sidecar_mtls = true;
        }
    }
    for n in [
        node("trip-0", "trip", "trip"),
        node("billing-v1-0", "billing", "billing"),
    ] {
        let from_cluster = trellis_config::compile(&w.config, &n);
        let from_file = trellis_config::compile(&file, &n);
        assert_eq!(
            from_cluster.version, from_file.version,
            "{}: the snapshots differ",
            n.name
        );
    }
}

#[tokio::test]
async fn adds_updates_and_deletes_reach_the_served_config() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;

    // A Service is added...
    let mut driver = item("services.json", "trip");
    driver["metadata"]["name"] = json!("driver");
    driver["spec"]["selector"] = json!({"app": "driver"});
    c.api.event(SERVICES, "ADDED", driver.clone());
    c.until("driver added", |w| {
        services(w).contains(&"rides/driver".to_string())
    })
    .await;
    // ...changed: its port moves...
    driver["spec"]["ports"] =
        json!([{"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 9009}]);
    c.api.event(SERVICES, "MODIFIED", driver.clone());
    c.until("driver on 8080", |w| {
        w.config
            .services
            .iter()
            .any(|s| s.key() == "rides/driver" && s.object.spec.ports[0].port == 8080)
    })
    .await;
    // ...and deleted.
    c.api.event(SERVICES, "DELETED", driver);
    c.until("driver deleted", |w| {
        !services(w).contains(&"rides/driver".to_string())
    })
    .await;

    // An HTTPRoute's weights change.
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(50);
    c.api.event(ROUTES, "MODIFIED", route.clone());
    c.until("weights 50/50", |w| {
        weights(w, "rides/billing")
            == [
                ("billing-v1".into(), Some(50)),
                ("billing-v2".into(), Some(50)),
            ]
    })
    .await;

    // An endpoint turns unready: its pod stops being a Workload; ready again, it comes back.
    let mut slice = item("endpointslices.json", "billing-v2-b1b2b");
    slice["endpoints"][0]["conditions"]["ready"] = json!(false);
    let mut all_billing = item("endpointslices.json", "billing-x1x2x");
    all_billing["endpoints"][1]["conditions"]["ready"] = json!(false);
    c.api.event(SLICES, "MODIFIED", slice.clone());
    c.api.event(SLICES, "MODIFIED", all_billing.clone());
    c.until("billing-v2 unready", |w| {
        !workloads(w).contains_key("rides/billing-v2-58d4b-fghij")
    })
    .await;
    slice["endpoints"][0]["conditions"]["ready"] = json!(true);
    c.api.event(SLICES, "MODIFIED", slice);
    c.until("billing-v2 ready", |w| {
        workloads(w).contains_key("rides/billing-v2-58d4b-fghij")
    })
    .await;

    // A Pod's labels change: the Workload follows.
    let mut pod = item("pods.json", "trip-7d9f8-klmno");
    pod["metadata"]["labels"]["version"] = json!("v2");
    c.api.event(PODS, "MODIFIED", pod.clone());
    c.until("trip pod relabelled", |w| {
        w.config.workloads.iter().any(|d| {
            d.key() == "rides/trip-7d9f8-klmno"
                && d.object.metadata.labels.get("version").map(String::as_str) == Some("v2")
        })
    })
    .await;
    // The Pod is deleted: no Workload, even though a stale slice still names it.
    c.api.event(PODS, "DELETED", pod);
    c.until("trip pod gone", |w| {
        !workloads(w).contains_key("rides/trip-7d9f8-klmno")
    })
    .await;

    // The route is deleted.
    c.api.event(ROUTES, "DELETED", route);
    c.until("route deleted", |w| {
        w.config
            .http_routes
            .iter()
            .all(|r| r.key() != "rides/billing")
    })
    .await;

    // A GRPCRoute's method match changes: the mesh route's path follows.
    let mut grpc = item("grpcroutes.json", "trip-grpc");
    grpc["spec"]["rules"][0]["matches"][0]["method"] = json!({"service": "rides.v1.Trip"});
    c.api.event(GRPC_ROUTES, "MODIFIED", grpc.clone());
    c.until("the GRPCRoute matches the whole service", |w| {
        w.config.http_routes.iter().any(|r| {
            r.key() == "rides/trip-grpc"
                && r.object.spec.rules[0].matches.as_ref().is_some_and(|m| {
                    m[0].path.as_ref().map(|p| p.value.value.as_str())
                        == Some("/rides\\.v1\\.Trip/[^/]+")
                })
        })
    })
    .await;
    // A GRPCRoute whose regular expression does not compile is refused with its name, and
    // the last good config keeps serving.
    let mut bad = grpc.clone();
    bad["spec"]["rules"][0]["matches"][0]["method"] =
        json!({"type": "RegularExpression", "service": "rides(", "method": "Start"});
    c.api.event(GRPC_ROUTES, "MODIFIED", bad);
    let cp = c.running.cp.clone();
    eventually(WAIT, "the bad GRPCRoute to be refused", || {
        let e = cp.config_errors().map(|e| e.to_string());
        async move { e.filter(|e| e.contains("kubernetes:GRPCRoute/rides/trip-grpc")) }
    })
    .await;
    assert!(
        cp.world()
            .unwrap()
            .config
            .http_routes
            .iter()
            .any(|r| r.key() == "rides/trip-grpc")
    );
    c.api.event(GRPC_ROUTES, "DELETED", grpc);
    c.until("GRPCRoute deleted", |w| w.config.http_routes.is_empty())
        .await;
}

#[tokio::test]
async fn watches_that_end_resume_and_expired_watches_relist() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let opened = c.api.watches_opened(SERVICES);
    assert!(opened >= 1);

    // The API server ends the watch (its timeout): the client watches again and sees events.
    c.api.end_watches(SERVICES);
    eventually(WAIT, "a new Service watch", || {
        let n = c.api.watches_opened(SERVICES);
        async move { (n > opened).then_some(()) }
    })
    .await;
    let mut driver = item("services.json", "trip");
    driver["metadata"]["name"] = json!("driver");
    driver["spec"]["selector"] = json!({"app": "driver"});
    c.api.event(SERVICES, "ADDED", driver);
    c.until("driver after the re-watch", |w| {
        services(w).contains(&"rides/driver".to_string())
    })
    .await;

    // 410 Gone: the client lists again; what the new list lacks is deleted, though no
    // DELETED event was ever sent for it. (The GRPCRoute on trip goes first: a route whose
    // parent Service is gone is refused, rightly.)
    c.api
        .event(GRPC_ROUTES, "DELETED", item("grpcroutes.json", "trip-grpc"));
    let mut list = fixture("services.json");
    list["items"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["metadata"]["name"] != "trip");
    list["metadata"]["resourceVersion"] = json!("20000");
    c.api.expire(SERVICES, list);
    c.until("trip and driver gone after the relist", |w| {
        services(w) == ["rides/billing", "rides/billing-v1", "rides/billing-v2"]
    })
    .await;
}

#[tokio::test]
async fn a_bad_resource_is_refused_with_its_name_and_the_last_good_config_keeps_serving() {
    let c = cluster().await;
    let first = c
        .until("the first config", |w| w.config.services.len() == 4)
        .await;
    let mut bad = item("resiliencepolicies.json", "billing");
    bad["metadata"]["name"] = json!("billing-typo");
    // One policy per Service: this one is for billing-v2.
    bad["spec"]["targetRef"]["name"] = json!("billing-v2");
    bad["spec"]["timeout"] = json!("2 seconds");
    c.api.event(POLICIES, "ADDED", bad.clone());
    let cp = c.running.cp.clone();
    let errors = eventually(WAIT, "the refusal", || {
        let e = cp.config_errors();
        async move { e }
    })
    .await
    .to_string();
    assert!(
        errors.contains("kubernetes:ResiliencePolicy/rides/billing-typo"),
        "{errors}"
    );
    assert!(
        errors.contains("timeout") && errors.contains("2 seconds"),
        "{errors}"
    );
    assert_eq!(
        cp.world().unwrap().generation,
        first.generation,
        "the last good config serves"
    );
    // Fixing it applies.
    bad["spec"]["timeout"] = json!("2s");
    c.api.event(POLICIES, "MODIFIED", bad);
    let fixed = eventually(WAIT, "the fixed policy", || {
        let (w, e) = (cp.world(), cp.config_errors());
        async move {
            if let Some(e) = &e {
                eprintln!("still refused: {e}");
            }
            w.filter(|w| w.config.resilience_policies.len() == 2)
        }
    })
    .await;
    assert!(fixed.generation > first.generation);
    assert!(cp.config_errors().is_none());
}

#[tokio::test]
async fn shift_patches_the_httproute_and_waits_for_the_watch() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.http_routes.len() == 2)
        .await;
    let wanted = HashMap::from([
        ("billing-v1".to_string(), 0),
        ("billing-v2".to_string(), 100),
    ]);
    let resp = trellis_control::shift::shift(&c.running.cp, "rides/billing", &wanted, WAIT)
        .await
        .unwrap();
    assert!(resp.failures.is_empty(), "{resp:?}");
    assert_eq!(resp.file, "kubernetes:HTTPRoute/rides/billing");
    let patches = c.api.patches.lock().unwrap().clone();
    assert_eq!(patches.len(), 1);
    let (path, content_type, body) = &patches[0];
    assert_eq!(
        path,
        "/apis/gateway.networking.k8s.io/v1/namespaces/rides/httproutes/billing"
    );
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        body,
        &json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "billing-v1"},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 0},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "billing-v2"},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 100},
        ])
    );
    let w = c.running.cp.world().unwrap();
    assert_eq!(
        weights(&w, "rides/billing"),
        [
            ("billing-v1".into(), Some(0)),
            ("billing-v2".into(), Some(100))
        ]
    );
}

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
    let b = trellis_proxy::kubernetes::bootstrap_from_env(|k| env.get(k).cloned())
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

#[tokio::test]
async fn in_a_cluster_the_admin_api_answers_only_on_loopback() {
    let Some(ip) = testkit::non_loopback_ip() else {
        eprintln!("skipped: this machine has no non-loopback address to call from");
        return;
    };
    let c = cluster_with(|o| {
        o.grpc_addr = ([0, 0, 0, 0], 0).into();
        o.server_names.push(ip.to_string());
    })
    .await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let pem = std::fs::read(c._state.path().join("ca.pem")).unwrap();
    let port = c.running.grpc.port();
    let admin = |host: String| {
        let pem = pem.clone();
        async move {
            let ep =
                trellis_proto::connect::endpoint(&format!("https://{host}:{port}"), &pem).unwrap();
            trellis_proto::v1::admin_client::AdminClient::new(ep.connect().await.unwrap())
        }
    };
    // From another address (any pod, through the Service): refused, saying what to do.
    let e = admin(ip.to_string())
        .await
        .status(trellis_proto::v1::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("port-forward"), "{e}");
    // Through port-forward, which arrives on loopback: served.
    admin("127.0.0.1".into())
        .await
        .status(trellis_proto::v1::StatusRequest::default())
        .await
        .expect("loopback is served");
    // Discovery and Certify stay open to every address: a handshake from the non-loopback
    // address reaches the identity service (and is refused for its bad proof, not its origin).
    let ep = trellis_proto::connect::endpoint(&format!("https://{ip}:{port}"), &pem).unwrap();
    let mut id =
        trellis_proto::v1::identity_client::IdentityClient::new(ep.connect().await.unwrap());
    let e = id
        .certify(trellis_proto::v1::CertifyRequest::default())
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::PermissionDenied, "{e}");
}
