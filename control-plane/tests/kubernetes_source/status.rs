//! Gateway API status written back to the API server: each route's parent entries and each
//! Trellis Gateway's conditions and address, written once and not again while current.

use super::{
    CLASSES, GATEWAYS, GRPC_ROUTES, ROUTES, SERVICES, SLICES, WAIT, cluster, condition, item, ours,
};
use serde_json::{Value, json};
use testkit::eventually;

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
