//! A real mesh on loopback: trellis-control as a child process, trellis-proxy instances
//! in-process (real listeners), and testkit upstreams as apps.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::{StatusRequest, StatusResponse};

#[allow(unused_imports)]
pub use testkit::{Upstream, eventually};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// trellis-control as a child process; killed when dropped.
pub struct ControlPlane {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    config: PathBuf,
    grace: &'static str,
    child: Option<Child>,
    /// The generated mesh CA lives here; it survives restarts, as on a real host.
    pub state: tempfile::TempDir,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts with a 500ms registration grace (and warm-up).
    pub async fn start(config: &Path) -> ControlPlane {
        Self::start_with_grace(config, "500ms").await
    }

    pub async fn start_with_grace(config: &Path, grace: &'static str) -> ControlPlane {
        Self::start_with_args(config, grace, &[]).await
    }

    /// Starts with extra `trellis-control` flags, e.g. `--cert-ttl 10s`.
    pub async fn start_with_args(
        config: &Path,
        grace: &'static str,
        extra: &[&str],
    ) -> ControlPlane {
        let mut cp = ControlPlane {
            grpc: free_addr(),
            http: free_addr(),
            config: config.to_path_buf(),
            grace,
            child: None,
            state: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cp.restart().await;
        cp
    }

    /// Starts the process again on the same ports and waits until it is ready.
    pub async fn restart(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_trellis-control"))
            .args(["--config", self.config.to_str().unwrap()])
            .args([
                "--grpc-addr",
                &self.grpc.to_string(),
                "--http-addr",
                &self.http.to_string(),
            ])
            .args(["--registration-grace", self.grace])
            .arg("--state-dir")
            .arg(self.state.path())
            .args(&self.extra)
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn trellis-control");
        self.child = Some(child);
        let http = self.http;
        eventually(
            Duration::from_secs(15),
            "trellis-control to be ready",
            || async move {
                let r = get(http, "/ready").await?;
                (r.0 == 200).then_some(())
            },
        )
        .await;
    }

    /// SIGKILL: no goodbye to the proxies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// The mesh CA's root, which the control plane's certificate chains to.
    pub fn ca_bundle(&self) -> PathBuf {
        self.state.path().join("ca.pem")
    }

    /// A TLS channel to the gRPC port, trusting the mesh CA.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let pem = std::fs::read(self.ca_bundle()).expect("the control plane wrote its CA");
        trellis_proto::connect::endpoint(&self.url(), &pem)
            .unwrap()
            .connect()
            .await
            .expect("TLS connection to trellis-control")
    }

    pub async fn admin(&self) -> AdminClient<tonic::transport::Channel> {
        AdminClient::new(self.channel().await)
    }

    /// A join token for `namespace/name`, minted by the real `trellis-control token create`.
    pub fn token(&self, service_account: &str, ttl: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_trellis-control"))
            .args([
                "token",
                "create",
                "--service-account",
                service_account,
                "--ttl",
                ttl,
            ])
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .expect("run trellis-control token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub async fn status(&self) -> StatusResponse {
        self.admin()
            .await
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// Waits until `n` proxies are connected and each has ACKed its latest version.
    pub async fn wait_converged(&self, n: usize) -> StatusResponse {
        eventually(
            Duration::from_secs(15),
            &format!("{n} proxies to ACK their latest version"),
            || async {
                let s = self.status().await;
                let ok = s
                    .proxies
                    .iter()
                    .filter(|p| {
                        p.connected
                            && !p.latest_version.is_empty()
                            && p.acked_version == p.latest_version
                    })
                    .count();
                (ok == n && s.proxies.len() == n).then_some(s)
            },
        )
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A proxy in control-plane mode for workload `name` labelled `labels` (YAML flow map),
/// delivering inbound traffic to `app_port`.
pub async fn proxy(
    cp: &ControlPlane,
    name: &str,
    labels: &str,
    app_port: u16,
) -> trellis_proxy::Running {
    proxy_as(cp, name, name, labels, app_port, "").await
}

/// A proxy running as service account `rides/<sa>` (with a join token for it), with `extra`
/// bootstrap lines (e.g. `tcp:` forwards). Returns once it is ready.
pub async fn proxy_as(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    app_port: u16,
    extra: &str,
) -> trellis_proxy::Running {
    let ports = format!("{{http: {app_port}}}");
    let running = start_proxy(cp, name, sa, labels, &ports, extra).await;
    wait_ready(name, running.admin).await;
    running
}

/// A ready proxy whose app listens on `ports` (a YAML flow map of names to ports).
pub async fn proxy_with_ports(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    ports: &str,
) -> trellis_proxy::Running {
    let running = start_proxy(cp, name, sa, labels, ports, "").await;
    wait_ready(name, running.admin).await;
    running
}

/// A proxy started without waiting for it to be ready: the control plane may be down.
pub async fn start_unready(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    app_port: u16,
) -> trellis_proxy::Running {
    start_proxy(cp, name, sa, labels, &format!("{{http: {app_port}}}"), "").await
}

async fn start_proxy(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    ports: &str,
    extra: &str,
) -> trellis_proxy::Running {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    // Beside the CA, so it outlives this function: renewals read it again.
    let token = cp.state.path().join(format!("{name}.token"));
    std::fs::write(&token, cp.token(&format!("rides/{sa}"), "1h")).unwrap();
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: {name}, namespace: rides, serviceAccount: {sa}, labels: {labels}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {ports}}}\n\
             controlPlane: {{address: {}, caBundle: {}, tokenFile: {}}}\nlimits: {{drainTimeout: 2s}}\n{extra}",
            cp.url(),
            cp.ca_bundle().display(),
            token.display(),
        ),
    )
    .unwrap();
    let b = trellis_proxy::Bootstrap::load(&boot).unwrap_or_else(|e| panic!("{e}"));
    trellis_proxy::start(b).await.expect("proxy starts")
}

async fn wait_ready(name: &str, admin: SocketAddr) {
    eventually(
        Duration::from_secs(15),
        &format!("{name} to be ready"),
        || async move {
            let r = get(admin, "/ready").await?;
            (r.0 == 200).then_some(())
        },
    )
    .await;
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

/// The mesh CA itself, read from trellis-control's state directory, to sign test leaves.
pub fn mesh_ca(cp: &ControlPlane) -> testkit::pki::TestCa {
    let dir = cp.state.path();
    testkit::pki::TestCa::from_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("ca-key.pem")).unwrap(),
    )
}

/// A leaf from the mesh CA for `spiffe_id`, valid for an hour.
pub fn mesh_leaf(cp: &ControlPlane, spiffe_id: &str) -> testkit::pki::Leaf {
    let now = std::time::SystemTime::now();
    mesh_ca(cp).spiffe(
        spiffe_id,
        now - Duration::from_secs(60),
        Duration::from_secs(3600),
    )
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
