//! A proxy under a Scope: it holds only the Services its workload calls, and a call to any
//! other mesh Service is refused with `trellis-error: not-in-scope`, through a real proxy.

mod support;

use support::*;

fn scope(calls: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {{name: trip, namespace: rides}}\n\
         spec: {{selector: {{app: trip}}, calls: {calls}}}\n---\n"
    )
}

#[tokio::test]
async fn a_scoped_proxy_calls_what_its_scope_lists_and_refuses_the_rest_with_the_reason() {
    let billing = Upstream::start("billing").await;
    let driver = Upstream::start("driver").await;
    let mesh = [
        service("billing", ""),
        service("driver", ""),
        workload("billing", &billing),
        workload("driver", &driver),
    ]
    .concat();
    let h = start(&(mesh.clone() + &scope("[billing]")), "").await;

    assert_eq!(h.get("billing", "/").await.status, 200);
    for host in ["driver", "driver.rides", "DRIVER.rides.svc.cluster.local."] {
        let r = h.get(host, "/charge").await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        assert_eq!(r.header("trellis-error"), "not-in-scope", "{host}");
        assert!(
            r.body.contains(
                "driver.rides is a mesh Service outside this workload's Scope (rides/trip); add it to the Scope's spec.calls"
            ),
            "{host}: {}",
            r.body
        );
    }
    assert_eq!(driver.hits(), 0, "nothing reached driver");
    // A name that is no Service at all is still `no-route`, not a Scope matter.
    let r = h.get("nowhere", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("trellis-error")),
        (404, "no-route")
    );

    // The proxy holds only what it may call; /config_dump shows the Scope and what it leaves
    // out.
    let dump: serde_json::Value =
        serde_json::from_str(&h.admin("/config_dump").await.body).expect("JSON");
    let snap = &dump["snapshot"];
    let services: Vec<&str> = snap["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(services, ["rides/billing"]);
    let clusters: Vec<&str> = snap["clusters"]
        .as_object()
        .expect("clusters")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(clusters, ["billing.rides:80"]);
    assert_eq!(snap["mesh"]["scope"]["by"][0], "rides/trip");

    // Widening the Scope is a config change like any other.
    let before = h.version().await;
    h.write_mesh(&(mesh + &scope("[billing, driver]")));
    h.wait_for_new_version(&before).await;
    let r = h.get("driver", "/").await;
    assert_eq!((r.status.as_u16(), r.header("x-upstream")), (200, "driver"));
    // Each refusal was counted against the Service it was meant for.
    let refused = h
        .metric(
            "trellis_requests_total",
            &[
                ("destination_service", "driver.rides"),
                ("response_code", "403"),
            ],
        )
        .await;
    assert_eq!(refused, 3.0);
}
