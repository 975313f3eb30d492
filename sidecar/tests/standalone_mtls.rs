//! A standalone proxy (meshFile, no CA) has no mesh identity. Under STRICT it must fail
//! closed rather than quietly accept plaintext; under PERMISSIVE it serves plaintext.

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mesh(mode: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{mtls: {{mode: {mode}}}}}\n---\n"
    )
}

/// One plaintext request at the inbound port; what came back, if anything.
async fn plaintext(h: &Harness) -> String {
    let mut s = tokio::net::TcpStream::connect(h.inbound).await.unwrap();
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn strict_without_an_identity_refuses_plaintext() {
    let h = start(&mesh("STRICT"), "").await;
    assert_eq!(plaintext(&h).await, "");
    let m = h.admin("/metrics").await.body;
    assert!(m.contains(r#"reason="plaintext-refused"} 1"#), "{m}");
}

#[tokio::test]
async fn permissive_without_an_identity_serves_plaintext() {
    let h = start(&mesh("PERMISSIVE"), "").await;
    // The app port (1) is closed, so the proxy itself answers: the point is that it answers.
    assert!(plaintext(&h).await.starts_with("HTTP/1.1 503"));
}
