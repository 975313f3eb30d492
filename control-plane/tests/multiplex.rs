//! HTTP/1.1 between two registered sidecars under STRICT mTLS rides one multiplexed HTTP/2
//! connection: twenty app connections at once make one mTLS handshake, not twenty. The
//! receiving sidecar gives the app HTTP/1.1 with the Host the caller sent. A WebSocket still
//! gets an HTTP/1.1 connection of its own. With `upstream.multiplex: false`, each concurrent
//! request takes a connection, and a handshake, of its own.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESH: &str = "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n\
    spec: {mtls: {mode: STRICT}}\n---\n\
    apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n\
    spec:\n  selector: {app: billing}\n  ports: [{name: http, port: 80, targetPort: APP}]\n";

/// One request on a connection of its own; returns the whole answer as text.
async fn fresh_get(via: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(via).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer within 10s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `trellis_upstream_connections_opened_total` for `protocol` over mTLS.
async fn mtls_opened(admin: SocketAddr, protocol: &str) -> u64 {
    let metrics = get(admin, "/metrics").await.expect("metrics").1;
    let prefix = "trellis_upstream_connections_opened_total{";
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(prefix)
                && l.contains(&format!("protocol=\"{protocol}\""))
                && l.contains("tls=\"mtls\"")
        })
        .unwrap_or_else(|| panic!("no {protocol} mtls series:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Twenty requests at once, each on its own client connection, each held 300 ms by the app
/// so that they overlap.
async fn twenty_at_once(via: SocketAddr) -> Vec<String> {
    let calls = (0..20).map(|_| fresh_get(via, "/sleep/300"));
    futures_util::future::join_all(calls).await
}

#[tokio::test]
async fn http1_between_sidecars_shares_one_mtls_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    let app = Upstream::start("billing-0").await;
    std::fs::write(&path, MESH.replace("APP", &app.addr.port().to_string())).unwrap();
    let cp = ControlPlane::start(&path).await;
    let _server = proxy_as(
        &cp,
        "billing-0",
        "billing",
        "{app: billing}",
        app.addr.port(),
        "",
    )
    .await;
    let on = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, "").await;
    let off = proxy_as(
        &cp,
        "trip-1",
        "trip",
        "{app: trip}",
        1,
        "upstream: {multiplex: false}\n",
    )
    .await;
    cp.wait_converged(3).await;
    // Certificates arrive after the first config; until both sides hold one, STRICT refuses.
    for p in [&on, &off] {
        eventually(
            Duration::from_secs(20),
            "a 200 through both sidecars",
            || async {
                let r = fresh_get(p.outbound, "/").await;
                r.starts_with("HTTP/1.1 200").then_some(())
            },
        )
        .await;
    }

    let before = mtls_opened(on.admin, "http2").await;
    let answers = twenty_at_once(on.outbound).await;
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        // The app got HTTP/1.1, with the Host the caller's app sent.
        let lower = a.to_ascii_lowercase();
        assert!(lower.contains("x-seen-version: http/1.1"), "{a}");
        assert!(lower.contains("x-seen-host: billing\r\n"), "{a}");
    }
    assert_eq!(
        mtls_opened(on.admin, "http2").await,
        before,
        "twenty requests rode the connection the first one made"
    );
    assert_eq!(before, 1, "one HTTP/2 mTLS connection");
    assert_eq!(mtls_opened(on.admin, "http1").await, 0);

    // A WebSocket needs a connection of its own: HTTP/1.1 over mTLS, upgraded end to end.
    let mut ws = tokio::net::TcpStream::connect(on.outbound).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: billing\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        ws.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A masked text frame, "ping"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(b"ping".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    ws.write_all(&frame).await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut echo))
        .await
        .expect("the echo within 5s")
        .unwrap();
    assert_eq!(&echo, b"\x81\x04ping");
    assert_eq!(
        mtls_opened(on.admin, "http1").await,
        1,
        "the WebSocket's own"
    );

    // Multiplexing off: every concurrent request opens a connection, each a handshake.
    let before = mtls_opened(off.admin, "http1").await;
    for a in twenty_at_once(off.outbound).await {
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    let opened = mtls_opened(off.admin, "http1").await - before;
    assert!(
        opened >= 10,
        "twenty overlapping requests opened only {opened}"
    );
    assert_eq!(mtls_opened(off.admin, "http2").await, 0);
}
