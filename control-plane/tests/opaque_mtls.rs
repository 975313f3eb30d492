//! Opaque TCP between two registered sidecars under STRICT mTLS: the client sidecar
//! originates TLS with the `trellis-tcp` ALPN, sends the transport preface inside it, and the
//! server sidecar delivers the bytes to the app port the Service's `targetPort` names.

mod support;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Service `echo` port 9000 delivers to the app's `app_port` on each endpoint's host.
fn mesh(app_port: u16) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{mtls: {{mode: STRICT}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: rides}}\n\
         spec:\n  selector: {{app: echo}}\n  ports: [{{name: echo, port: 9000, targetPort: {app_port}, appProtocol: tcp}}]\n"
    )
}

/// Greets, then echoes until the client closes.
async fn echo_app() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = w.write_all(b"echo ready\n").await;
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn opaque_tcp_crosses_two_sidecars_over_strict_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    let app = echo_app().await;
    std::fs::write(&path, mesh(app.port())).unwrap();
    let cp = ControlPlane::start(&path).await;
    let server = proxy_as(&cp, "echo-0", "echo-0", "{app: echo}", app.port(), "").await;
    let client = proxy_as(
        &cp,
        "trip-0",
        "trip-0",
        "{app: trip}",
        1,
        "tcp: [{listen: 127.0.0.1:0, service: echo:9000}]\n",
    )
    .await;
    cp.wait_converged(2).await;
    let via = client.tcp[0];

    // Certificates arrive after the first config; until both sides hold one, STRICT refuses.
    let mut s = eventually(
        Duration::from_secs(20),
        "a greeting through both sidecars",
        || async {
            let mut s = tokio::net::TcpStream::connect(via).await.ok()?;
            let mut hello = [0u8; 11];
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut hello))
                .await
                .ok()?
                .ok()?;
            (&hello == b"echo ready\n").then_some(s)
        },
    )
    .await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(
        back, payload,
        "the bytes came back unchanged, then EOF after the half-close"
    );

    // The same preface in plaintext, straight to the server sidecar, is refused: the bytes
    // above can only have crossed over mTLS.
    let mut plain = tokio::net::TcpStream::connect(server.inbound)
        .await
        .unwrap();
    let mut preface = b"\0TRELLIS\x01\x0fecho.rides:9000".to_vec();
    preface.extend_from_slice(b"hello");
    plain.write_all(&preface).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(got.is_empty(), "plaintext got an answer: {got:?}");

    let metrics = get(server.admin, "/metrics")
        .await
        .expect("server metrics")
        .1;
    let opened = metrics
        .lines()
        .find(|l| {
            l.starts_with("trellis_tcp_connections_opened_total{")
                && l.contains("direction=\"inbound\"")
        })
        .unwrap_or_else(|| panic!("no inbound TCP series:\n{metrics}"));
    assert!(!opened.ends_with(" 0"), "{opened}");
}
