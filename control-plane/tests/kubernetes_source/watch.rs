//! Watch events reach the served config: adds, updates and deletes of each kind, watches
//! that end and resume, and expired watches that relist.

use super::{
    GRPC_ROUTES, PODS, ROUTES, SCOPES, SERVICES, SLICES, WAIT, cluster, fixture, item, services,
    weights, workloads,
};
use serde_json::json;
use testkit::eventually;

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
async fn a_scope_in_the_cluster_scopes_the_workloads_it_selects() {
    let c = cluster().await;
    c.until("the first config", |w| w.config.services.len() == 4)
        .await;
    let scope = json!({
        "apiVersion": "trellis.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "trip", "namespace": "rides", "resourceVersion": "7201"},
        "spec": {"selector": {"app": "trip"}, "calls": ["billing"]},
    });
    c.api.event(SCOPES, "ADDED", scope.clone());
    let w = c
        .until("the Scope loaded", |w| !w.config.scopes.is_empty())
        .await;
    let trip = trellis_config::NodeIdentity {
        name: "trip-7d9f8-klmno".into(),
        namespace: "rides".into(),
        labels: [("app".to_string(), "trip".to_string())].into(),
        service_account: Some("trip".into()),
    };
    let snap = trellis_config::compile(&w.config, &trip);
    assert_eq!(
        snap.services.keys().collect::<Vec<_>>(),
        ["rides/billing"],
        "trip holds only billing"
    );
    assert_eq!(snap.mesh.scope.as_ref().unwrap().by, ["rides/trip"]);
    // A Scope naming a Service the cluster lacks is set aside with its reason, and its last
    // good version keeps serving.
    let mut typo = scope;
    typo["spec"]["calls"] = json!(["biling"]);
    typo["metadata"]["resourceVersion"] = json!("7202");
    c.api.event(SCOPES, "MODIFIED", typo);
    let cp = c.running.cp.clone();
    eventually(WAIT, "the bad Scope to be set aside", || {
        let e = cp.config_errors().map(|e| e.to_string());
        async move {
            e.filter(|e| {
                e.contains("kubernetes:Scope/rides/trip") && e.contains("no Service rides/biling")
            })
        }
    })
    .await;
    let served = cp.world().unwrap();
    assert_eq!(served.config.scopes.len(), 1);
    assert_eq!(
        served.config.scopes[0].object.spec.calls[0].value,
        "billing"
    );
}
