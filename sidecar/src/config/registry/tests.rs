//! The incremental build must give what a build from nothing gives, while sharing what did
//! not change.

use super::*;
use std::net::SocketAddr;

const MESH: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: trellis.local, mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: rides}
spec: {selector: {app: billing}, ports: [{name: http, port: 80, targetPort: 9002}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing-v2, namespace: rides}
spec: {selector: {app: billing, version: v2}, ports: [{name: http, port: 80, targetPort: 9002}]}
---
apiVersion: v1
kind: Service
metadata: {name: trip, namespace: rides}
spec: {selector: {app: trip}, ports: [{name: http, port: 80, targetPort: 9001}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: billing-0, namespace: rides, labels: {app: billing, version: v2}}
spec: {address: 127.0.0.2, ports: {http: 9002}, serviceAccount: billing}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: billing-1, namespace: rides, labels: {app: billing, version: v2}}
spec: {address: 127.0.0.3, ports: {http: 9002}, serviceAccount: billing}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: trip-0, namespace: rides, labels: {app: trip}}
spec: {address: 127.0.0.4, ports: {http: 9001}, serviceAccount: trip}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: billing, namespace: rides}
spec:
  parentRefs: [{group: "", kind: Service, name: billing, port: 80}]
  rules:
  - backendRefs: [{name: billing-v2, port: 80}]
"#;

/// The compiled mesh, with every endpoint given a mesh identity, as registered sidecars
/// have.
fn snapshot() -> Snapshot {
    let cfg = trellis_config::load_str("mesh.yaml", MESH).unwrap();
    let node = trellis_config::NodeIdentity {
        name: "client".into(),
        namespace: "rides".into(),
        ..Default::default()
    };
    let mut snap = trellis_config::compile(&cfg, &node);
    for c in snap.clusters.values_mut() {
        for e in &mut Arc::make_mut(c).endpoints {
            let sa = e.service_account.clone().expect("every Workload names one");
            e.identity = Some(format!("spiffe://trellis.local/ns/rides/sa/{sa}").into());
        }
    }
    snap
}

fn registry() -> StateRegistry {
    let r = StateRegistry::default();
    r.originate_mtls
        .store(true, std::sync::atomic::Ordering::Relaxed);
    r
}

/// A registry that has built the runtime of `snapshot()`, from nothing.
fn first_build() -> (Metrics, StateRegistry, Snapshot, Runtime) {
    let metrics = Metrics::default();
    let reg = registry();
    let s1 = snapshot();
    let r1 = reg.build(Arc::new(s1.clone()), None, &metrics).unwrap();
    (metrics, reg, s1, r1)
}

/// The cluster that `rides/billing`'s route sends to.
fn routed(snap: &Snapshot) -> String {
    snap.services["rides/billing"].ports[0].routes[0].backends[0]
        .cluster
        .clone()
}

fn addrs(rt: &Runtime, cluster: &str) -> Vec<SocketAddr> {
    let c = &rt.clusters[cluster].upstream.balancer.endpoints;
    c.iter().map(|e| e.addr).collect()
}

/// The server name the endpoint at `addr` of `cluster` must prove, which its pool's mTLS
/// connections check.
fn tls_of(rt: &Runtime, cluster: &str, addr: SocketAddr) -> Option<SharedName> {
    let eps = &rt.clusters[cluster].upstream.balancer.endpoints;
    eps.iter().find(|e| e.addr == addr)?.tls.clone()
}

fn moved(a: SocketAddr) -> SocketAddr {
    SocketAddr::new("127.0.9.9".parse().unwrap(), a.port())
}

#[test]
fn one_changed_cluster_rebuilds_only_it_and_the_services_that_send_to_it() {
    let (metrics, reg, s1, r1) = first_build();
    let name = routed(&s1);
    let trip = "trip.rides:80";
    let old = addrs(&r1, &name);
    assert_eq!(old.len(), 2, "{name}: {old:?}");
    assert!(tls_of(&r1, &name, old[1]).is_some());

    // One endpoint of the routed cluster moves; nothing else changes.
    let mut s2 = s1.clone();
    let ep = &mut Arc::make_mut(s2.clusters.get_mut(&name).unwrap()).endpoints[1];
    ep.address = moved(ep.address);
    let r2 = reg
        .build(Arc::new(s2.clone()), Some(&r1), &metrics)
        .unwrap();

    assert!(!Arc::ptr_eq(
        &r1.clusters[name.as_str()],
        &r2.clusters[name.as_str()]
    ));
    assert!(Arc::ptr_eq(&r1.clusters[trip], &r2.clusters[trip]));
    let svc = |rt: &Runtime, key: &str| {
        rt.services[s1.services.keys().position(|k| k == key).unwrap()].clone()
    };
    assert!(!Arc::ptr_eq(
        &svc(&r1, "rides/billing"),
        &svc(&r2, "rides/billing")
    ));
    assert!(Arc::ptr_eq(
        &svc(&r1, "rides/trip"),
        &svc(&r2, "rides/trip")
    ));
    assert!(Arc::ptr_eq(&r1.index, &r2.index));
    // The rebuilt route sends to the rebuilt cluster, not the one before.
    let backend = &r2.service("billing").unwrap().ports[0].rules[0].backends[0];
    assert!(Arc::ptr_eq(&backend.cluster, &r2.clusters[name.as_str()]));
    // The endpoint that stayed keeps its live state; the moved one is new.
    let eps = |rt: &Runtime| {
        rt.clusters[name.as_str()]
            .upstream
            .balancer
            .endpoints
            .clone()
    };
    assert!(Arc::ptr_eq(&eps(&r1)[0], &eps(&r2)[0]));
    assert_eq!(addrs(&r2, &name), vec![old[0], moved(old[1])]);
    // The moved endpoint's server name follows it.
    assert_eq!(
        tls_of(&r2, &name, moved(old[1])),
        tls_of(&r1, &name, old[1])
    );
    assert!(tls_of(&r2, &name, old[0]).is_some());

    // The same as a build from nothing.
    let fresh = registry();
    let whole = fresh.build(Arc::new(s2), None, &metrics).unwrap();
    let mut a: Vec<_> = r2.clusters.keys().cloned().collect();
    let mut b: Vec<_> = whole.clusters.keys().cloned().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for name in &a {
        assert_eq!(addrs(&r2, name), addrs(&whole, name), "{name}");
    }
    for addr in [old[0], moved(old[1])] {
        assert_eq!(
            tls_of(&r2, &name, addr),
            tls_of(&whole, &name, addr),
            "{addr}"
        );
    }
}

#[test]
fn a_removed_cluster_and_its_endpoints_go() {
    let (metrics, reg, s1, r1) = first_build();
    let trip = "trip.rides:80";
    let ep = r1.clusters[trip].upstream.balancer.endpoints[0].clone();
    assert_eq!(
        Arc::strong_count(&ep),
        3,
        "r1's balancer, the registry, and `ep`"
    );
    let mut s2 = s1.clone();
    s2.clusters.remove(trip);
    s2.services.remove("rides/trip");
    let r2 = reg.build(Arc::new(s2), Some(&r1), &metrics).unwrap();
    assert!(!r2.clusters.contains_key(trip));
    assert!(r2.service("trip").is_none());
    assert!(r2.service("billing").is_some());
    // Only the runtime being replaced (and this test) still hold the endpoint's state, so
    // its pool, and every connection in it, goes with that runtime.
    assert_eq!(Arc::strong_count(&ep), 2, "r1's balancer and `ep`");
}

#[test]
fn after_a_failed_build_the_next_one_starts_from_nothing() {
    let (metrics, reg, s1, r1) = first_build();
    let name = routed(&s1);
    let kept = addrs(&r1, &name)[1];

    // The routed cluster loses an endpoint, but a route to a missing cluster fails the build
    // after the clusters were built.
    let mut bad = s1.clone();
    Arc::make_mut(bad.clusters.get_mut(&name).unwrap())
        .endpoints
        .truncate(1);
    let trip = Arc::make_mut(bad.services.get_mut("rides/trip").unwrap());
    trip.ports[0].routes[0].backends[0].cluster = "nowhere".into();
    let err = reg.build(Arc::new(bad), Some(&r1), &metrics).err().unwrap();
    assert!(err.to_string().contains("nowhere"), "{err}");
    // Still serving r1, whose endpoint keeps its server name.
    assert!(tls_of(&r1, &name, kept).is_some());

    // The next good snapshot holds the endpoint again: its name is there.
    let mut s2 = s1.clone();
    let c = Arc::make_mut(s2.clusters.get_mut("trip.rides:80").unwrap());
    c.endpoints.clear();
    let r2 = reg.build(Arc::new(s2), Some(&r1), &metrics).unwrap();
    assert_eq!(addrs(&r2, &name).len(), 2);
    assert!(tls_of(&r2, &name, kept).is_some());
    assert!(addrs(&r2, "trip.rides:80").is_empty());
}

#[test]
fn a_service_turning_mtls_off_rebuilds_its_cluster_in_plaintext() {
    let (metrics, reg, s1, r1) = first_build();
    let trip = "trip.rides:80";
    let addr = addrs(&r1, trip)[0];
    assert!(r1.clusters[trip].mtls);
    let mut s2 = s1.clone();
    Arc::make_mut(s2.services.get_mut("rides/trip").unwrap()).mtls_mode =
        trellis_config::model::MtlsMode::Disabled;
    let r2 = reg.build(Arc::new(s2), Some(&r1), &metrics).unwrap();
    assert!(!r2.clusters[trip].mtls);
    let ep = &r2.clusters[trip].upstream.balancer.endpoints[0];
    assert!(ep.tls.is_none(), "{ep:?}");
    assert_eq!(ep.addr, addr);
}

#[test]
fn endpoints_of_one_identity_share_one_server_name() {
    let (_metrics, _reg, s1, r1) = first_build();
    let name = routed(&s1);
    let eps = &r1.clusters[name.as_str()].upstream.balancer.endpoints;
    let (a, b) = (&eps[0], &eps[1]);
    let (ta, tb) = (a.tls.as_ref().unwrap(), b.tls.as_ref().unwrap());
    assert!(
        Arc::ptr_eq(ta, tb),
        "billing-0 and billing-1 both run as billing"
    );
    let trip = &r1.clusters["trip.rides:80"].upstream.balancer.endpoints[0];
    assert_ne!(trip.tls, a.tls, "another identity, another name");
}

#[test]
fn an_endpoint_that_changes_identity_at_its_address_gets_fresh_state_and_name() {
    let (metrics, reg, s1, r1) = first_build();
    let trip = "trip.rides:80";
    let before = r1.clusters[trip].upstream.balancer.endpoints[0].clone();
    let mut s2 = s1.clone();
    let ep = &mut Arc::make_mut(s2.clusters.get_mut(trip).unwrap()).endpoints[0];
    ep.identity = Some("spiffe://trellis.local/ns/rides/sa/trip-v2".into());
    let r2 = reg.build(Arc::new(s2), Some(&r1), &metrics).unwrap();
    let after = &r2.clusters[trip].upstream.balancer.endpoints[0];
    assert_eq!(after.addr, before.addr);
    assert!(
        !Arc::ptr_eq(after, &before),
        "another identity is another endpoint"
    );
    assert_ne!(after.tls, before.tls);
    assert!(after.tls.is_some());
}

#[tokio::test]
async fn an_endpoint_keeps_its_connections_across_swaps_and_closes_them_when_it_goes() {
    use crate::upstream::pool::{Target, Upstreams};
    use http_body_util::BodyExt;
    let up = testkit::upstream::Upstream::start("billing-0").await;
    let metrics = Metrics::default();
    let ups = Upstreams::new(
        std::time::Duration::from_secs(1),
        None,
        true,
        metrics.connections(),
    );
    let get = |ep: &Arc<EndpointState>| {
        let req = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, "billing")
            .body(crate::http::body::Body::empty())
            .unwrap();
        let to = Target {
            addr: ep.addr,
            tls: None,
        };
        let ep = ep.clone();
        let ups = &ups;
        async move {
            let Ok(res) = ups.send(&ep.pool, to, req, false, true).await else {
                panic!("no answer");
            };
            res.into_body().collect().await.unwrap();
        }
    };
    let find = |rt: &Runtime, name: &str| {
        let eps = &rt.clusters[name].upstream.balancer.endpoints;
        eps.iter().find(|e| e.addr == up.addr).cloned()
    };

    let reg = registry();
    let mut s1 = snapshot();
    let name = routed(&s1);
    Arc::make_mut(s1.clusters.get_mut(&name).unwrap()).endpoints[0].address = up.addr;
    let r1 = reg.build(Arc::new(s1.clone()), None, &metrics).unwrap();
    get(&find(&r1, &name).unwrap()).await;

    // The other endpoint of the same cluster moves: the cluster is rebuilt, this endpoint
    // stays, and so does its connection.
    let mut s2 = s1.clone();
    let other = &mut Arc::make_mut(s2.clusters.get_mut(&name).unwrap()).endpoints[1];
    other.address = moved(other.address);
    let r2 = reg
        .build(Arc::new(s2.clone()), Some(&r1), &metrics)
        .unwrap();
    drop(r1);
    get(&find(&r2, &name).unwrap()).await;
    assert_eq!(up.connections(), 1, "the swap kept the pooled connection");
    assert_eq!(up.open_connections(), 1);

    // It leaves the config: once the runtime that held it is gone, so is its connection.
    let mut s3 = s2.clone();
    Arc::make_mut(s3.clusters.get_mut(&name).unwrap())
        .endpoints
        .retain(|e| e.address != up.addr);
    let r3 = reg.build(Arc::new(s3), Some(&r2), &metrics).unwrap();
    assert!(find(&r3, &name).is_none());
    drop(r2);
    testkit::eventually(
        std::time::Duration::from_secs(5),
        "the removed endpoint's connection closed",
        || async { (up.open_connections() == 0).then_some(()) },
    )
    .await;
}
