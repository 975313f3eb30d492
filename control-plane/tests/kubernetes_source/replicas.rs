//! Several replicas over one cluster. The API server is their shared state and versions are a
//! function of content, so a proxy gets the same version from any replica, and one that moves
//! to another replica (its own died, or a rolling restart moved it) resumes without a resend.

use super::fake_proxy::{FakeProxy, hashes, subscribe};
use super::{Cluster, ROUTES, WAIT, cluster, item, weights};
use serde_json::json;
use std::time::Duration;
use testkit::eventually;
use trellis_proto::v1::Node;

/// The `trip-7d9f8-klmno` pod of the fixtures, as its proxy names itself.
fn trip_pod() -> Node {
    Node {
        workload: "trip-7d9f8-klmno".into(),
        namespace: "rides".into(),
        labels: [
            ("app".to_string(), "trip".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        inbound: "10.244.2.21:15006".into(),
        service_account: "trip".into(),
        ..Default::default()
    }
}

async fn channel(c: &Cluster, replica: &trellis_control::Running) -> tonic::transport::Channel {
    let pem = std::fs::read(c.state_dir().join("ca.pem")).expect("the shared CA");
    trellis_proto::connect::endpoint(&format!("https://{}", replica.grpc), &pem)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `trellis_control_resumes_total{result=...}` from the replica's `/metrics`.
async fn resumed(replica: &trellis_control::Running, result: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(replica.http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let sample = format!("trellis_control_resumes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(sample.as_str()))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_proxy_that_moves_to_another_replica_resumes_with_nothing_resent() {
    let a = cluster().await;
    let b = a.replica().await;
    for r in [&a.running, &b] {
        let cp = r.cp.clone();
        eventually(WAIT, "each replica's first config", || {
            let w = cp.world();
            async move { w }
        })
        .await;
    }

    // The proxy syncs with replica A. Its connecting builds no new generation: in Kubernetes
    // mode the EndpointSlices, not the streams, say who serves.
    // (Once the replicas' status writes, which come back as watch events, have settled.)
    a.quiet_status_writes().await;
    let generation = a.running.cp.world().unwrap().generation;
    let (mut on_a, _) = FakeProxy::open(channel(&a, &a.running).await, subscribe(trip_pod(), ""))
        .await
        .unwrap();
    let first = on_a.next().await;
    assert!(first.replace);
    let version = on_a.apply(&first);
    on_a.ack(&first).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.running.cp.world().unwrap().generation, generation);

    // Replica B, from the same objects, computes the same snapshot for it.
    let (mut fresh_b, _) = FakeProxy::open(channel(&a, &b).await, subscribe(trip_pod(), ""))
        .await
        .unwrap();
    let from_b = fresh_b.next().await;
    assert_eq!(
        from_b.version, first.version,
        "one version for one config, on any replica"
    );
    assert_eq!(fresh_b.apply(&from_b), version);
    assert_eq!(fresh_b.held, on_a.held, "the same resources, byte for byte");
    drop(fresh_b);

    // A goes away; the proxy subscribes to B with what it holds, and B sends nothing.
    let held = on_a.held.clone();
    drop(on_a);
    let (mut moved, _) = FakeProxy::open(
        channel(&a, &b).await,
        trellis_proto::v1::Subscribe {
            held: hashes(&held),
            ..subscribe(trip_pod(), &version)
        },
    )
    .await
    .unwrap();
    moved.held = held;
    assert!(
        moved.quiet_for(Duration::from_millis(300)).await,
        "nothing is resent to a proxy that holds B's current version"
    );
    assert_eq!(resumed(&b, "unchanged").await, 1.0);
    assert_eq!(resumed(&b, "replace").await, 0.0);

    // A change in the cluster reaches the moved proxy from B as a delta, and a proxy still on
    // A gets the same version for it.
    let (mut still_on_a, _) = FakeProxy::open(
        channel(&a, &a.running).await,
        trellis_proto::v1::Subscribe {
            held: hashes(&moved.held),
            ..subscribe(trip_pod(), &version)
        },
    )
    .await
    .unwrap();
    still_on_a.held = moved.held.clone();
    assert!(still_on_a.quiet_for(Duration::from_millis(100)).await);
    let mut route = item("httproutes.json", "billing");
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(50);
    a.api.event(ROUTES, "MODIFIED", route);
    let via_b = moved.next().await;
    let via_a = still_on_a.next().await;
    assert!(
        !via_b.replace && !via_a.replace,
        "deltas, not whole snapshots"
    );
    assert_eq!(via_b.version, via_a.version);
    assert_ne!(via_b.version, version);
    assert_eq!(moved.apply(&via_b), via_b.version);
    assert_eq!(still_on_a.apply(&via_a), via_a.version);
    assert_eq!(moved.held, still_on_a.held);
    let w = b.cp.world().unwrap();
    assert_eq!(
        weights(&w, "rides/billing"),
        [
            ("billing-v1".to_string(), Some(50)),
            ("billing-v2".to_string(), Some(50))
        ]
    );
}
