//! `shift` against a cluster: a JSON patch to the HTTPRoute or GRPCRoute the route came from,
//! answered once the watch brings the new weights back.

use super::{GRPC_ROUTES, cluster, weights};
use serde_json::json;
use std::collections::HashMap;

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
