//! Load balancing policies and connection pooling, observed from real upstreams.

mod support;

use std::time::Duration;
use support::*;
use testkit::Mode;

async fn cluster(policy: &str, n: usize) -> (Vec<Upstream>, Harness) {
    let mut ups = Vec::new();
    let mut mesh = service("billing", "");
    for i in 0..n {
        let up = Upstream::start(&format!("billing-{i}")).await;
        mesh += &workload("billing", &up);
        ups.push(up);
    }
    mesh += &format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: billing, namespace: rides}}\n\
         spec: {{targetRef: {{kind: Service, name: billing}}, loadBalancer: {policy}}}\n"
    );
    let h = start(&mesh, "").await;
    (ups, h)
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (ups, h) = cluster("{policy: ROUND_ROBIN}", 3).await;
    for _ in 0..300 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert_eq!(hits, vec![100, 100, 100]);
}

#[tokio::test]
async fn random_reaches_every_endpoint() {
    let (ups, h) = cluster("{policy: RANDOM}", 3).await;
    for _ in 0..600 {
        h.get("billing", "/").await;
    }
    for u in &ups {
        assert!(
            (120..=280).contains(&u.hits()),
            "{} got {} of 600",
            u.name,
            u.hits()
        );
    }
}

#[tokio::test]
async fn ring_hash_keeps_a_key_on_one_endpoint() {
    let (ups, h) = cluster("{policy: RING_HASH, hashKey: {header: x-user}}", 4).await;
    let mut owners = std::collections::HashMap::new();
    for user in 0..40 {
        for _ in 0..5 {
            let mut r = req(h.outbound, "billing", "/");
            r.headers_mut()
                .insert("x-user", format!("user-{user}").parse().unwrap());
            let who = h.send(r).await.header("x-upstream").to_string();
            let first = owners.entry(user).or_insert_with(|| who.clone());
            assert_eq!(*first, who, "user-{user} moved endpoints");
        }
    }
    let used: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        used.len() >= 3,
        "40 keys spread over {} of 4 endpoints",
        used.len()
    );
    assert_eq!(ups.iter().map(Upstream::hits).sum::<usize>(), 200);
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    let (ups, h) = cluster("{policy: LEAST_REQUEST}", 2).await;
    let h = std::sync::Arc::new(h);
    // Pin slow requests until both endpoints hold some, then check new ones go to the idle side.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let h = h.clone();
        slow.push(tokio::spawn(async move {
            h.get("billing", "/sleep/1500")
                .await
                .header("x-upstream")
                .to_string()
        }));
    }
    eventually(
        Duration::from_secs(5),
        "six slow requests in flight",
        || async { (ups.iter().map(Upstream::hits).sum::<usize>() == 6).then_some(()) },
    )
    .await;
    let busy: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    // P2C over two endpoints always compares both, so in-flight counts stay balanced.
    assert_eq!(busy, vec![3, 3], "slow requests split evenly");
    for s in slow {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn peak_ewma_prefers_the_fast_endpoint() {
    let fast = Upstream::start("fast").await;
    let slow = Upstream::start("slow").await;
    let mesh = service("billing", "")
        + &workload("billing", &fast)
        + &workload("billing", &slow)
        + "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: billing, namespace: rides}\n\
           spec: {targetRef: {kind: Service, name: billing}, loadBalancer: {policy: PEAK_EWMA}}\n---\n\
           apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: billing, namespace: rides}\n\
           spec:\n  parentRefs: [{name: billing}]\n  rules:\n  - backendRefs: [{name: billing, port: 80}]\n";
    let h = start(&mesh, "").await;
    // The slow one takes 100 ms per request; the balancer learns it from real answers.
    slow.set_mode(Mode::Sleep(Duration::from_millis(100)));
    for _ in 0..100 {
        h.get("billing", "/").await;
    }
    assert!(
        fast.hits() >= 95,
        "fast got {} of 100, slow {}",
        fast.hits(),
        slow.hits()
    );
}

#[tokio::test]
async fn closed_keep_alive_connections_never_surface_as_errors() {
    // An upstream that closes every connection after one response, without saying so
    // (no `Connection: close`): the pooled connection is dead when the next request comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Linger a moment so the proxy pools the connection, then close it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            });
        }
    });
    let mesh = service("billing", "")
        + &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: b0, namespace: rides, labels: {{app: billing}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
            addr.port()
        );
    let h = start(&mesh, "").await;
    for i in 0..50 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 10 } else { 0 })).await;
    }
}
