//! A real mesh on loopback: trellis-control as a child process, trellis-proxy instances
//! in-process (real listeners), and testkit upstreams as apps.
#![allow(dead_code)]

mod control_plane;
mod proxies;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[allow(unused_imports)]
pub use testkit::{Upstream, eventually};

#[allow(unused_imports)]
pub use control_plane::{ControlPlane, mesh_ca, mesh_leaf};
#[allow(unused_imports)]
pub use proxies::{proxy, proxy_as, proxy_with_ports, start_unready};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` from `addr`; `None` when the connection fails.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, "localhost", path)
        .await
        .map(|(s, _, b)| (s, b))
}

/// GET with a Host header; returns status, the `x-upstream` header and the body.
pub async fn request(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String, String)> {
    let req = http::Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status().as_u16();
    let upstream = res
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        upstream,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Services `billing` (app: billing), `billing-v1` and `billing-v2` (by version), and a
/// route splitting billing `w1`/`w2` between the versions.
pub fn billing_mesh(w1: u32, w2: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec:\n  selector: {{app: billing}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing-v1, namespace: rides}}\n\
         spec:\n  selector: {{app: billing, version: v1}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing-v2, namespace: rides}}\n\
         spec:\n  selector: {{app: billing, version: v2}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\n\
         # the canary split\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: billing, namespace: rides}}\n\
         spec:\n  parentRefs: [{{name: billing}}]\n  rules:\n  - backendRefs: [{{name: billing-v1, port: 80, weight: {w1}}}, {{name: billing-v2, port: 80, weight: {w2}}}]\n"
    )
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Sends `request` (raw HTTP/1.1 bytes, so that paths reach the proxy exactly as spelled)
/// over `stream` and returns what came back; `None` when the connection failed or closed
/// before any answer.
pub async fn raw_exchange<S>(mut stream: S, request: &str) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// A `GET path` with `Host: host` and `connection: close`, as raw bytes.
pub fn raw_get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
}

/// The status code and the value of header `name` in a raw HTTP/1.1 answer.
pub fn status_and_header(answer: &str, name: &str) -> (u16, String) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let prefix = format!("{name}: ");
    let value = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| l[prefix.len()..].trim().to_string())
        })
        .unwrap_or_default();
    (status, value)
}

/// An mTLS connection to a sidecar's inbound listener at `inbound`, presenting `leaf` and
/// verifying the server as `server` (a SPIFFE ID) against the mesh CA: the checks a sidecar
/// makes. `None` when the handshake fails.
pub async fn mtls_connect(
    cp: &ControlPlane,
    inbound: SocketAddr,
    leaf: &testkit::pki::Leaf,
    server: &trellis_identity::SpiffeId,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use std::sync::Arc;
    let roots = vec![CertificateDer::from_pem_file(cp.ca_bundle()).unwrap()];
    let bundle = Arc::new(arc_swap::ArcSwap::from_pointee(
        trellis_identity::TrustBundle::new(&server.trust_domain, roots).unwrap(),
    ));
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(trellis_identity::SpiffeServerVerifier {
            bundle,
        }))
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(inbound).await.ok()?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server.server_name().expect("a server name"), tcp)
        .await
        .ok()
}

/// The serial of the certificate a proxy holds, from its `/config_dump` (empty before it has
/// one): rotation changes it.
pub async fn serial(admin: SocketAddr) -> String {
    let (_, dump) = get(admin, "/config_dump").await.expect("config dump");
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    v["identity"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
