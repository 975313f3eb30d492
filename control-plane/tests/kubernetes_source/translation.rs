//! The fixture cluster translates to the same config, and the same snapshots, as the
//! equivalent mesh file.

use super::{cluster, k8s, node, services, workloads};
use std::collections::BTreeMap;

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
