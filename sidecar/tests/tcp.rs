//! Opaque TCP: bytes in, bytes out, balanced over the Service's endpoints.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn echo_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = w.write_all(format!("hello from {addr}\n").as_bytes()).await;
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_service_is_proxied_as_bytes_across_endpoints() {
    let (a, b) = (echo_server().await, echo_server().await);
    let mut mesh = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: rides}\n\
                    spec:\n  selector: {app: db}\n  ports: [{name: pg, port: 5432, targetPort: pg, appProtocol: tcp}]\n---\n"
        .to_string();
    for (i, addr) in [a, b].iter().enumerate() {
        mesh += &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: db-{i}, namespace: rides, labels: {{app: db}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{pg: {}}}}}\n---\n",
            addr.port()
        );
    }
    mesh += "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: db, namespace: rides}\n\
             spec: {targetRef: {kind: Service, name: db}, loadBalancer: {policy: ROUND_ROBIN}}\n";
    let h = start(&mesh, "tcp: [{listen: 127.0.0.1:0, service: db:5432}]\n").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(h.tcp[0]).await.unwrap();
        let mut hello = vec![0u8; 64];
        let n = s.read(&mut hello).await.unwrap();
        seen.insert(String::from_utf8_lossy(&hello[..n]).to_string());
        let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        s.write_all(&payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, payload, "bytes pass unchanged");
    }
    assert_eq!(seen.len(), 2, "both endpoints served connections: {seen:?}");
}

#[tokio::test]
async fn tcp_connect_failures_eject_the_endpoint() {
    let live = echo_server().await;
    let dead = dead_addr();
    let mut mesh = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: rides}\n\
                    spec:\n  selector: {app: db}\n  ports: [{name: pg, port: 5432, targetPort: pg, appProtocol: tcp}]\n---\n"
        .to_string();
    for (i, addr) in [live, dead].iter().enumerate() {
        mesh += &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: db-{i}, namespace: rides, labels: {{app: db}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{pg: {}}}}}\n---\n",
            addr.port()
        );
    }
    mesh += "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: db, namespace: rides}\n\
             spec: {targetRef: {kind: Service, name: db}, loadBalancer: {policy: ROUND_ROBIN}, \
             outlierDetection: {consecutive5xx: 1, baseEjectionTime: 60s, maxEjectionPercent: 50}}\n";
    let h = start(&mesh, "tcp: [{listen: 127.0.0.1:0, service: db:5432}]\n").await;
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(h.tcp[0]).await.unwrap();
        let mut hello = vec![0u8; 64];
        let n = s.read(&mut hello).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&hello[..n]),
            format!("hello from {live}\n"),
            "a refused connect moves on to the live endpoint"
        );
    }
    let cluster = [("cluster", "db.rides:5432")];
    assert_eq!(
        h.metric("trellis_outlier_ejections_total", &cluster).await,
        1.0
    );
    let c = h.cluster("db.rides:5432").await;
    let health = |addr: std::net::SocketAddr| {
        c["endpoints"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["address"] == addr.to_string()))
            .map(|e| e["health"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(health(dead).as_deref(), Some("ejected"), "{c}");
    assert_eq!(health(live).as_deref(), Some("healthy"), "{c}");
}
