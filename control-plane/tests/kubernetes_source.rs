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
const AUTHZ: &str = "/apis/trellis.dev/v1alpha1/authorizationpolicies";
const CLASSES: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses";
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
    api.serve(AUTHZ, fixture("authorizationpolicies.json"));
    // Not watched: the status writer reads the `trellis` class once to mark it Accepted.
    api.serve(
        CLASSES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClassList", "metadata": {}, "items": [
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": "trellis", "resourceVersion": "4400", "generation": 2},
             "spec": {"controllerName": "trellis.dev/gateway"}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": "istio", "resourceVersion": "4401", "generation": 1},
             "spec": {"controllerName": "istio.io/gateway-controller"}}]}),
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
    /// Waits until the route's status, as the API server holds it, satisfies `check`.
    async fn route_status(&self, path: &str, name: &str, check: impl Fn(&str) -> bool) -> Value {
        eventually(WAIT, &format!("the status of {name}"), || {
            let r = self.api.object(path, "rides", name);
            let s = r
                .map(|r| r["status"].clone())
                .filter(|s| check(&s.to_string()));
            async move { s }
        })
        .await
    }

    /// Shifts `route` to `wanted`, checks it came from `source`, and returns the one spec
    /// patch the API server received: (path, content type, body). The status writer's
    /// patches of the status subresource are not shift's.
    async fn shift(
        &self,
        route: &str,
        wanted: &HashMap<String, u32>,
        source: &str,
    ) -> (String, String, Value) {
        let resp = trellis_control::shift::shift(&self.running.cp, route, wanted, WAIT)
            .await
            .unwrap();
        assert!(resp.failures.is_empty(), "{resp:?}");
        assert_eq!(resp.file, source);
        let mut patches: Vec<_> = self.api.patches.lock().unwrap().clone();
        patches.retain(|(path, ..)| !path.ends_with("/status"));
        assert_eq!(patches.len(), 1, "{patches:?}");
        patches.remove(0)
    }

    /// The number of status writes once no new one has come for 300 ms.
    async fn quiet_status_writes(&self) -> usize {
        eventually(WAIT, "status writes to settle", || async move {
            let n = self.status_writes();
            tokio::time::sleep(Duration::from_millis(300)).await;
            (self.status_writes() == n).then_some(n)
        })
        .await
    }

    fn status_writes(&self) -> usize {
        let patches = self.api.patches.lock().unwrap();
        patches
            .iter()
            .filter(|(p, ..)| p.ends_with("/status"))
            .count()
    }

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
async fn a_bad_new_authorization_policy_refuses_the_whole_change_and_the_last_good_config_keeps_serving()
 {
    // Leaving a refused AuthorizationPolicy out could open what it was written to deny, so
    // for it (and the Mesh) the cluster fails closed, as a file does.
    let c = cluster().await;
    let first = c
        .until("the first config", |w| w.config.services.len() == 4)
        .await;
    let mut bad = json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "billing", "namespace": "rides", "generation": 1},
        "spec": {"targetRef": {"kind": "Service", "name": "billing"}, "action": "ALOW",
                 "rules": [{"from": [{"serviceAccounts": ["rides/trip"]}]}]}});
    c.api.event(AUTHZ, "ADDED", bad.clone());
    let cp = c.running.cp.clone();
    let errors = eventually(WAIT, "the refusal", || {
        let e = cp.config_errors();
        async move { e }
    })
    .await
    .to_string();
    assert!(
        errors.contains("kubernetes:AuthorizationPolicy/rides/billing") && errors.contains("ALOW"),
        "{errors}"
    );
    // A change elsewhere does not get through either while the policy is refused.
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    c.api.event(ROUTES, "MODIFIED", route);
    c.api.event(AUTHZ, "MODIFIED", bad.clone());
    eventually(WAIT, "the route change to be refused too", || {
        let n = c.running.cp.metrics.render();
        async move {
            let line = n
                .lines()
                .find(|l| l.starts_with("trellis_config_reloads_total{result=\"rejected\"}"))?;
            (line.rsplit(' ').next()?.parse::<u64>().ok()? >= 2).then_some(())
        }
    })
    .await;
    assert_eq!(
        cp.world().unwrap().generation,
        first.generation,
        "the last good config serves"
    );
    // Fixing it applies, with the route change.
    bad["spec"]["action"] = json!("ALLOW");
    c.api.event(AUTHZ, "MODIFIED", bad);
    let fixed = c
        .until("the fixed policy", |w| {
            w.config.authorization_policies.len() == 1
                && weights(w, "rides/billing")[0] == ("billing-v1".into(), Some(50))
        })
        .await;
    assert!(fixed.generation > first.generation);
    assert!(cp.config_errors().is_none());
}

#[tokio::test]
async fn a_refused_object_is_set_aside_and_the_rest_of_the_cluster_applies() {
    // In a shared cluster one team's mistake must not freeze everyone's endpoints.
    let c = cluster().await;
    let cp = c.running.cp.clone();
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;

    // A new ResiliencePolicy that does not load is left out...
    let mut typo = item("resiliencepolicies.json", "billing");
    typo["metadata"]["name"] = json!("billing-typo");
    typo["spec"]["targetRef"]["name"] = json!("billing-v2");
    typo["spec"]["timeout"] = json!("2 seconds");
    c.api.event(POLICIES, "ADDED", typo.clone());
    // ...and a change made after it applies.
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    c.api.event(ROUTES, "MODIFIED", route.clone());
    let w = c
        .until("the route change beside the refused policy", |w| {
            weights(w, "rides/billing")[0] == ("billing-v1".into(), Some(50))
        })
        .await;
    assert_eq!(
        w.config.resilience_policies.len(),
        1,
        "the refused policy is left out"
    );
    let errors = cp
        .config_errors()
        .expect("the refusal is reported")
        .to_string();
    assert!(
        errors.contains("kubernetes:ResiliencePolicy/rides/billing-typo")
            && errors.contains("2 seconds"),
        "{errors}"
    );
    assert!(
        cp.metrics
            .render()
            .contains("trellis_config_refused_objects 1")
    );

    // A bad change to an object that loaded before: its last good version keeps serving.
    let mut billing = item("resiliencepolicies.json", "billing");
    billing["spec"]["timeout"] = json!("soon");
    c.api.event(POLICIES, "MODIFIED", billing.clone());
    let errors = eventually(WAIT, "the second refusal", || {
        let e = cp.config_errors().map(|e| e.to_string());
        async move { e.filter(|e| e.contains("kubernetes:ResiliencePolicy/rides/billing:")) }
    })
    .await;
    assert!(errors.contains("soon"), "{errors}");
    let w = cp.world().unwrap();
    let p = &w.config.resilience_policies[0];
    assert_eq!(p.object.metadata.name, "billing");
    assert_eq!(
        p.object.spec.timeout.map(|t| t.as_secs()),
        Some(2),
        "the last good version (timeout 2s) serves"
    );

    // A route whose backend does not exist is refused too, and says so in its status.
    let mut broken = route.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["metadata"]["generation"] = json!(3);
    broken["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("billing-v3");
    c.api.event(ROUTES, "ADDED", broken);
    let status = c
        .route_status(ROUTES, "broken", |s| s.contains("BackendNotFound"))
        .await;
    let parent = ours(&status);
    assert_eq!(parent["parentRef"]["name"], "billing");
    let accepted = condition(parent, "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["observedGeneration"], 3);
    let resolved = condition(parent, "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("no Service \"billing-v3\"")
            && resolved["message"].as_str().unwrap().contains("not served"),
        "{resolved}"
    );
    assert!(
        c.running
            .cp
            .world()
            .unwrap()
            .config
            .http_routes
            .iter()
            .all(|r| r.object.metadata.name != "broken")
    );

    // Fixed, everything applies and nothing is reported.
    typo["spec"]["timeout"] = json!("2s");
    c.api.event(POLICIES, "MODIFIED", typo);
    billing["spec"]["timeout"] = json!("3s");
    c.api.event(POLICIES, "MODIFIED", billing);
    c.api.event(
        ROUTES,
        "DELETED",
        c.api.object(ROUTES, "rides", "broken").unwrap(),
    );
    c.until("everything applied", |w| {
        w.config.resilience_policies.len() == 2
            && w.config
                .resilience_policies
                .iter()
                .all(|p| p.object.spec.timeout.is_some_and(|t| t.as_secs() >= 2))
            && w.config.http_routes.len() == 2
    })
    .await;
    eventually(WAIT, "no refusal left", || {
        let e = cp.config_errors();
        async move { e.is_none().then_some(()) }
    })
    .await;
    assert!(
        cp.metrics
            .render()
            .contains("trellis_config_refused_objects 0")
    );
}

/// Trellis' entry in a route's `status.parents`.
fn ours(status: &Value) -> &Value {
    let mine: Vec<&Value> = status["parents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["controllerName"] == "trellis.dev/gateway")
        .collect();
    assert_eq!(mine.len(), 1, "one entry of Trellis' in {status}");
    mine[0]
}

fn condition<'a>(parent: &'a Value, kind: &str) -> &'a Value {
    parent["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {parent}"))
}

#[tokio::test]
async fn routes_and_trellis_gateways_get_gateway_api_status() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    // A mesh route: one entry for its Service parent, accepted and resolved, after the entry
    // another mesh's controller wrote (the fixture's, as when migrating from Linkerd), which
    // stays as it was.
    let fixture_status = item("httproutes.json", "billing")["status"].clone();
    let status = c
        .route_status(ROUTES, "billing", |s| s.contains("trellis.dev"))
        .await;
    let parents = status["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{status}");
    assert_eq!(parents[0], fixture_status["parents"][0]);
    let parent = ours(&status);
    assert_eq!(
        parent["parentRef"],
        json!({"group": "", "kind": "Service", "name": "billing", "port": 80})
    );
    assert_eq!(parent["controllerName"], "trellis.dev/gateway");
    for kind in ["Accepted", "ResolvedRefs"] {
        let cond = condition(parent, kind);
        assert_eq!(cond["status"], "True", "{cond}");
        assert_eq!(cond["reason"], kind);
        assert_eq!(cond["observedGeneration"], 1);
        assert!(cond["lastTransitionTime"].as_str().unwrap().ends_with('Z'));
    }
    // GRPCRoutes too.
    let status = c
        .route_status(GRPC_ROUTES, "trip-grpc", |s| s.contains("Accepted"))
        .await;
    assert_eq!(condition(ours(&status), "Accepted")["status"], "True");

    // A route attached to the trellis Gateway from its own namespace is admitted and counted;
    // the one attached only to another controller's Gateway gets no status from Trellis.
    let mut attached = item("httproutes.json", "edge");
    attached["metadata"]["name"] = json!("edge-trellis");
    attached["spec"]["parentRefs"] = json!([{"name": "ride-gateway"}]);
    attached["spec"]["hostnames"] = json!(["app.rides.example.com"]);
    // Another controller's entry is already there and must survive.
    let foreign = json!({"parentRef": {"name": "public"}, "controllerName": "istio.io/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2026-11-26T18:00:00Z"}]});
    attached["status"] = json!({"parents": [foreign]});
    c.api.event(ROUTES, "ADDED", attached);
    let status = c
        .route_status(ROUTES, "edge-trellis", |s| s.contains("trellis.dev"))
        .await;
    let parents = status["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{status}");
    assert_eq!(
        parents[0], foreign,
        "another controller's entry is kept as it was"
    );
    assert_eq!(condition(&parents[1], "Accepted")["status"], "True");
    let gateway = eventually(WAIT, "the Gateway's status", || {
        let g = c.api.object(GATEWAYS, "rides", "ride-gateway");
        async move { g.filter(|g| g["status"]["listeners"][0]["attachedRoutes"] == 1) }
    })
    .await;
    let gstatus = &gateway["status"];
    for kind in ["Accepted", "Programmed"] {
        let cond = gstatus["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == kind)
            .unwrap();
        assert_eq!(cond["status"], "True", "{cond}");
        assert_eq!(cond["observedGeneration"], 1);
    }
    assert!(
        gstatus["addresses"].is_null(),
        "no Service, no address: {gstatus}"
    );
    assert_eq!(gstatus["listeners"][0]["name"], "http");
    assert_eq!(
        gstatus["listeners"][0]["supportedKinds"][0]["kind"],
        "HTTPRoute"
    );
    let class = eventually(WAIT, "the GatewayClass accepted", || {
        let g = c.api.object(CLASSES, "", "trellis");
        async move { g.filter(|g| !g["status"].is_null()) }
    })
    .await;
    let cond = &class["status"]["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["observedGeneration"]),
        (&json!("Accepted"), &json!("True"), &json!(2))
    );
    assert!(
        c.api.object(CLASSES, "", "istio").unwrap()["status"].is_null(),
        "not Trellis' class"
    );
    assert!(
        c.api.object(ROUTES, "rides", "edge").unwrap()["status"].is_null(),
        "not Trellis' route"
    );
    assert!(
        c.api.object(GATEWAYS, "rides", "public").unwrap()["status"].is_null(),
        "not Trellis' Gateway"
    );

    // The gateway's LoadBalancer Service (named like the Gateway): not programmed until the
    // load balancer has an address, then its address is the Gateway's.
    let mut lb = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ride-gateway", "namespace": "rides"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "ride-gateway"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    c.api.event(SERVICES, "ADDED", lb.clone());
    let programmed = |g: &Value| {
        g["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == "Programmed")
            .unwrap()
            .clone()
    };
    let gateway = eventually(WAIT, "the Gateway waiting for its address", || {
        let g = c.api.object(GATEWAYS, "rides", "ride-gateway");
        async move { g.filter(|g| programmed(g)["status"] == "False") }
    })
    .await;
    assert_eq!(programmed(&gateway)["reason"], "AddressNotAssigned");
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}});
    c.api.event(SERVICES, "MODIFIED", lb);
    let gateway = eventually(WAIT, "the Gateway's address", || {
        let g = c.api.object(GATEWAYS, "rides", "ride-gateway");
        async move { g.filter(|g| !g["status"]["addresses"].is_null()) }
    })
    .await;
    assert_eq!(
        gateway["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"}])
    );
    assert_eq!(programmed(&gateway)["status"], "True");

    // From another namespace, a Gateway that admits only its own does not take the route.
    let mut other = item("httproutes.json", "edge");
    other["metadata"]["name"] = json!("edge-other");
    other["metadata"]["namespace"] = json!("shop");
    other["spec"]["parentRefs"] = json!([{"name": "ride-gateway", "namespace": "rides"}]);
    other["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("rides");
    c.api.event(ROUTES, "ADDED", other);
    let status = eventually(WAIT, "the refused attachment's status", || {
        let r = c.api.object(ROUTES, "shop", "edge-other");
        async move {
            r.map(|r| r["status"].clone())
                .filter(|s| s.to_string().contains("NotAllowedByListeners"))
        }
    })
    .await;
    assert_eq!(
        condition(&status["parents"][0], "Accepted")["status"],
        "False"
    );

    // Once current, statuses are not written again: a change that leaves them alone (an
    // EndpointSlice update) reaches the served config and makes no status write.
    let settled = c.quiet_status_writes().await;
    let mut slice = c
        .api
        .object(SLICES, "rides", "trip-c1c2c")
        .expect("the trip slice");
    slice["endpoints"].as_array_mut().unwrap().pop();
    c.api.event(SLICES, "MODIFIED", slice);
    let before = c.running.cp.world().unwrap().generation;
    c.until("the slice change", |w| w.generation > before).await;
    // A barrier: a route's new generation needs exactly one write, which the single writer
    // makes after anything the slice change would have asked for.
    let mut route = c.api.object(ROUTES, "rides", "edge-trellis").unwrap();
    route["metadata"]["generation"] = json!(2);
    c.api.event(ROUTES, "MODIFIED", route);
    c.route_status(ROUTES, "edge-trellis", |s| {
        s.contains("\"observedGeneration\":2")
    })
    .await;
    assert_eq!(
        c.quiet_status_writes().await,
        settled + 1,
        "no status write without a status change: only the route's new generation was written"
    );
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
    let (path, content_type, body) = &c
        .shift(
            "rides/billing",
            &wanted,
            "kubernetes:HTTPRoute/rides/billing",
        )
        .await;
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

#[tokio::test]
async fn shift_patches_the_grpcroute_a_route_came_from() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.http_routes.len() == 2)
        .await;
    let wanted = HashMap::from([("trip".to_string(), 7)]);
    let (path, content_type, body) = &c
        .shift(
            "rides/trip-grpc",
            &wanted,
            "kubernetes:GRPCRoute/rides/trip-grpc",
        )
        .await;
    assert_eq!(
        path,
        "/apis/gateway.networking.k8s.io/v1/namespaces/rides/grpcroutes/trip-grpc"
    );
    assert_eq!(content_type, "application/json-patch+json");
    // The GRPCRoute's backendRefs carry no weight yet: `add`, guarded by `test`.
    assert_eq!(
        body,
        &json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "trip"},
            {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7},
            {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "trip"},
            {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 7},
        ])
    );
    let stored = c.api.object(GRPC_ROUTES, "rides", "trip-grpc").unwrap();
    assert_eq!(stored["kind"], "GRPCRoute");
    assert_eq!(stored["spec"]["rules"][1]["backendRefs"][0]["weight"], 7);
    let w = c.running.cp.world().unwrap();
    assert_eq!(
        weights(&w, "rides/trip-grpc"),
        [("trip".into(), Some(7)), ("trip".into(), Some(7))]
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
    // Through port-forward, which arrives on loopback: served, naming its source.
    let status = admin("127.0.0.1".into())
        .await
        .status(trellis_proto::v1::StatusRequest::default())
        .await
        .expect("loopback is served")
        .into_inner();
    assert_eq!(status.config_source, "kubernetes");
    assert!(status.config_errors.is_empty() && !status.config_partial);
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

#[tokio::test]
async fn a_proxy_is_served_as_its_pod_is_labelled_now() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let cp = c.running.cp.clone();
    // What the proxy read from the downward API at start matches the Pod: served as claimed.
    let claimed = node("trip-7d9f8-pqrst", "trip", "trip");
    assert_eq!(cp.cluster_identity(&claimed), None);
    // A proxy claiming another workload's labels is served as its pod is labelled.
    let spoofed = node("trip-7d9f8-pqrst", "billing", "billing");
    assert_eq!(*cp.serving_identity(&spoofed), claimed);
    // Relabelled, the pod's proxy is served with the new labels, without a restart.
    let mut pod = c
        .api
        .object(PODS, "rides", "trip-7d9f8-pqrst")
        .expect("the fixture's pod");
    pod["metadata"]["labels"]["version"] = json!("v2");
    c.api.event(PODS, "MODIFIED", pod);
    let now = eventually(WAIT, "the relabel to reach the Pod watch", || {
        let id = cp.cluster_identity(&claimed);
        async move { id }
    })
    .await;
    assert_eq!(now.labels["version"], "v2");
    assert_eq!(now.labels["app"], "trip");
    let mut v2 = claimed.clone();
    v2.labels.insert("version".into(), "v2".into());
    assert_eq!(now, v2);
    // A proxy whose pod the cluster does not have (a VM, say) is served as it claims.
    let vm = node("trip-on-a-vm", "trip", "trip");
    assert_eq!(cp.cluster_identity(&vm), None);
}

#[tokio::test]
async fn in_a_cluster_a_certificate_does_not_renew_itself() {
    // The kubelet keeps every pod's projected token fresh, so nothing in a cluster needs
    // renewal by certificate, and a stolen key must not be renewable with it.
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let state = c._state.path();
    let mesh = testkit::pki::TestCa::from_pem(
        &std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(state.join("ca-key.pem")).unwrap(),
    );
    let id = "spiffe://rides.example/ns/rides/sa/trip";
    let now = std::time::SystemTime::now();
    let leaf = mesh.spiffe(id, now - Duration::from_secs(60), Duration::from_secs(3600));
    let ep = trellis_proto::connect::endpoint_with_identity(
        &format!("https://127.0.0.1:{}", c.running.grpc.port()),
        &std::fs::read(state.join("ca.pem")).unwrap(),
        &leaf.cert_pem,
        &leaf.key_pem,
    )
    .unwrap();
    let mut client =
        trellis_proto::v1::identity_client::IdentityClient::new(ep.connect().await.unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let e = client
        .certify(trellis_proto::v1::CertifyRequest {
            csr,
            token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(
        e.message().contains("projected service-account token"),
        "{e}"
    );
}
