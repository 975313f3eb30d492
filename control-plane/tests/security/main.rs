//! Security end to end: trellis-control's CA as a process, proxies that certify with join
//! tokens, and real TLS handshakes on loopback — mTLS modes, refused certificates, join-token
//! proofs, rotation under load, and authorization over HTTP and opaque TCP.

#[path = "../support/mod.rs"]
mod support;

mod authorization;
mod certificates;
mod gateway_keys;
mod mtls_modes;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_identity::SpiffeId;

const TD: &str = "trellis.local";

/// billing (HTTP) and db (opaque TCP) in STRICT/PERMISSIVE mode, optionally with policies:
/// billing lets rides/trip POST /charge* except /charge/forbidden*; db lets only rides/trip in.
fn mesh_yaml(mode: &str, policies: bool) -> String {
    let mut y = format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{trustDomain: {TD}, mtls: {{mode: {mode}}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec: {{selector: {{app: billing}}, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: rides}}\n\
         spec: {{selector: {{app: db}}, ports: [{{name: tcp, port: 5432, appProtocol: tcp}}]}}\n"
    );
    if policies {
        y += "---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: billing, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: billing}\n  action: ALLOW\n  rules:\n\
              \x20 - from: [{serviceAccounts: [rides/trip]}]\n    to: [{methods: [POST], paths: [\"/charge*\"]}]\n\
              ---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: billing-deny, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: billing}\n  action: DENY\n  rules:\n\
              \x20 - to: [{paths: [\"/charge/forbidden*\"]}]\n\
              ---\napiVersion: trellis.dev/v1alpha1\nkind: AuthorizationPolicy\n\
              metadata: {name: db, namespace: rides}\n\
              spec:\n  targetRef: {kind: Service, name: db}\n  rules:\n  - from: [{serviceAccounts: [rides/trip]}]\n";
    }
    y
}

// Fields drop in order: the proxies and control plane go before the folder of their config.
struct Env {
    trip: trellis_proxy::Running,
    passenger: trellis_proxy::Running,
    billing: trellis_proxy::Running,
    _db: trellis_proxy::Running,
    billing_app: Upstream,
    db_app: Echo,
    cp: ControlPlane,
    _dir: tempfile::TempDir,
}

async fn env(mode: &str, policies: bool, cp_args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh_yaml(mode, policies)).unwrap();
    let cp = ControlPlane::start_with_args(&path, "300ms", cp_args).await;
    let (billing_app, db_app) = (Upstream::start("billing").await, Echo::start().await);
    let db_forward = "tcp: [{listen: 127.0.0.1:0, service: db:5432}]\n";
    let trip = proxy_as(&cp, "trip-0", "trip", "{app: trip}", 1, db_forward).await;
    let passenger = proxy_as(
        &cp,
        "passenger-0",
        "passenger",
        "{app: passenger}",
        1,
        db_forward,
    )
    .await;
    let billing = proxy_as(
        &cp,
        "billing-0",
        "billing",
        "{app: billing}",
        billing_app.addr.port(),
        "",
    )
    .await;
    let db = proxy_as(&cp, "db-0", "db", "{app: db}", db_app.addr.port(), "").await;
    cp.wait_converged(4).await;
    // Each proxy registers as an mTLS endpoint once certified; wait until the callers' configs
    // say so, or their first calls would (correctly) go out in plaintext.
    for caller in [&trip, &passenger] {
        let admin = caller.admin;
        eventually(
            Duration::from_secs(15),
            "callers to see their peers' identities",
            || async move {
                let (_, dump) = get(admin, "/config_dump").await?;
                (dump.matches("\"identity\": \"spiffe://").count() >= 2).then_some(())
            },
        )
        .await;
    }
    Env {
        trip,
        passenger,
        billing,
        _db: db,
        billing_app,
        db_app,
        cp,
        _dir: dir,
    }
}

/// A TCP echo server that counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    async fn start() -> Echo {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, accepted) = (l.local_addr().unwrap(), Arc::new(AtomicUsize::new(0)));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Echo { addr, accepted }
    }
}

/// A request through `addr` (a proxy's outbound or inbound listener): status, the
/// `trellis-error` header, and the body.
async fn call(addr: SocketAddr, method: &str, host: &str, path: &str) -> (u16, String, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("an answer in time")
        .expect("an HTTP answer");
    let status = res.status().as_u16();
    let error = res
        .headers()
        .get("trellis-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

/// Sends one HTTP/1.1 request over `stream` and returns what came back: `None` when the
/// connection failed or closed before any answer.
async fn raw_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> Option<String> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: billing.rides\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// An mTLS client to billing's inbound listener presenting `leaf`, verifying the server as
/// rides/billing against the mesh CA — the same checks a sidecar makes.
async fn mtls_request(env: &Env, leaf: &testkit::pki::Leaf, path: &str) -> Option<String> {
    let billing = SpiffeId::new(TD, "rides", "billing").unwrap();
    let tls = mtls_connect(&env.cp, env.billing.inbound, leaf, &billing).await?;
    raw_request(tls, path).await
}

/// `trellis_control_certificates{result}` on the control plane's HTTP port.
async fn certificates(http: SocketAddr, result: &str) -> f64 {
    let (_, m) = get(http, "/metrics").await.expect("metrics");
    m.lines()
        .find(|l| {
            l.starts_with("trellis_control_certificates")
                && l.contains(&format!("result=\"{result}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A CSR (PEM) asking for `rides/<sa>`'s SPIFFE ID, with a fresh key.
fn csr(sa: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{TD}/ns/rides/sa/{sa}")
            .try_into()
            .unwrap(),
    )];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn trip_id() -> String {
    format!("spiffe://{TD}/ns/rides/sa/trip")
}

async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics").await.expect("metrics").1
}
