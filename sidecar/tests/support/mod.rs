//! The in-process harness: a real trellis-proxy on 127.0.0.1:0 with a mesh file in a temp dir,
//! and a plain hyper client to talk to it.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trellis_proxy::Bootstrap;

pub use testkit::{Upstream, eventually};

pub struct Harness {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub tcp: Vec<SocketAddr>,
    pub mesh_path: PathBuf,
    pub running: Option<trellis_proxy::Running>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Starts a proxy for workload `trip-0` in namespace `rides` with `mesh` as its mesh file.
/// `extra` is appended to the bootstrap YAML (e.g. `limits: {...}`).
pub async fn start(mesh: &str, extra: &str) -> Harness {
    start_with_app(mesh, extra, "{http: 1}").await
}

pub async fn start_with_app(mesh: &str, extra: &str, app_ports: &str) -> Harness {
    start_in("rides", mesh, extra, app_ports).await
}

/// `start_with_app` for workload `trip-0` of namespace `namespace`.
pub async fn start_in(namespace: &str, mesh: &str, extra: &str, app_ports: &str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_path = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_path, mesh).expect("write mesh");
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: trip-0, namespace: {namespace}, serviceAccount: trip, labels: {{app: trip}}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {app_ports}}}\n\
             meshFile: mesh.yaml\n{extra}"
        ),
    )
    .expect("write bootstrap");
    let b = Bootstrap::load(&boot).unwrap_or_else(|e| panic!("bootstrap: {e}"));
    let running = trellis_proxy::start(b).await.expect("proxy starts");
    Harness {
        outbound: running.outbound,
        inbound: running.inbound,
        admin: running.admin,
        tcp: running.tcp.clone(),
        mesh_path,
        running: Some(running),
        client: Client::builder(TokioExecutor::new()).build_http(),
        _dir: dir,
    }
}

impl Harness {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Resp {
        let res = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("the proxy answers within 20s")
            .expect("the proxy answers");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// GET `path` on the outbound listener with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Resp {
        self.send(req(self.outbound, host, path)).await
    }

    pub async fn admin(&self, path: &str) -> Resp {
        self.send(req(self.admin, "admin", path)).await
    }

    pub fn write_mesh(&self, yaml: &str) {
        // Write then rename, as editors and kubectl do, so the proxy never reads half a file.
        let tmp = self.mesh_path.with_extension("tmp");
        std::fs::write(&tmp, yaml).expect("write");
        std::fs::rename(&tmp, &self.mesh_path).expect("rename");
    }

    /// Waits until the proxy serves a config whose version differs from `old`.
    pub async fn wait_for_new_version(&self, old: &str) -> String {
        let old = old.to_string();
        eventually(
            Duration::from_secs(10),
            "the new config to be applied",
            || async {
                let v = self.version().await;
                (v != old).then_some(v)
            },
        )
        .await
    }

    pub async fn version(&self) -> String {
        let dump = self.admin("/config_dump").await.body;
        let v: serde_json::Value = serde_json::from_str(&dump).expect("config_dump is JSON");
        v["version"].as_str().unwrap_or("").to_string()
    }
}

pub fn req(addr: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// A Service `name` in `rides` selecting `app: name`, port 80 to each workload's `http` port.
pub fn service(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: rides}}\n\
         spec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: http{extra_spec}}}]\n---\n"
    )
}

/// A Workload for `up`, labelled `app: app`.
pub fn workload(app: &str, up: &Upstream) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {}, namespace: rides, labels: {{app: {app}}}}}\n\
         spec: {{address: {}, ports: {{http: {}}}}}\n---\n",
        up.name,
        up.addr.ip(),
        up.addr.port()
    )
}

/// A Workload named `name` at `addr`, labelled `app: app` (e.g. an address nothing listens on).
pub fn workload_at(app: &str, name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: rides, labels: {{app: {app}}}}}\n\
         spec: {{address: {}, ports: {{http: {}}}}}\n---\n",
        addr.ip(),
        addr.port()
    )
}

/// An address that refuses connections: bound once, then closed.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A ResiliencePolicy for Service `service`; `spec` holds the fields under `spec:`, each line
/// indented by two spaces.
pub fn policy(service: &str, spec: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {service}, namespace: rides}}\n\
         spec:\n  targetRef: {{kind: Service, name: {service}}}\n{spec}\n---\n"
    )
}

/// The value of the sample in Prometheus text `metrics` whose line starts with `prefix`
/// (the name and, if any, its labels); panics, showing the text, when there is none.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
}

impl Harness {
    pub async fn post_admin(&self, path: &str) -> Resp {
        let mut r = req(self.admin, "admin", path);
        *r.method_mut() = http::Method::POST;
        self.send(r).await
    }

    /// The value of metric `name` on the series whose labels include all of `labels`, or 0
    /// when there is no such series.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin("/metrics").await.body;
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The `/clusters` entry of cluster `name`.
    pub async fn cluster(&self, name: &str) -> serde_json::Value {
        let body = self.admin("/clusters").await.body;
        let v: serde_json::Value = serde_json::from_str(&body).expect("/clusters is JSON");
        v["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no cluster {name} in /clusters: {body}"))
    }

    /// The breaker state of cluster `name`, as `/clusters` shows it.
    pub async fn breaker_state(&self, name: &str) -> String {
        self.cluster(name).await["circuitBreaker"]["state"]
            .as_str()
            .unwrap_or("none")
            .to_string()
    }
}

/// Two endpoints, `billing-a` and `billing-b`, of Service `billing`, balanced round robin,
/// under the ResiliencePolicy lines in `spec`.
pub async fn pair(spec: &str) -> (Upstream, Upstream, Harness) {
    let (a, b) = (
        Upstream::start("billing-a").await,
        Upstream::start("billing-b").await,
    );
    let mesh = service("billing", "")
        + &workload("billing", &a)
        + &workload("billing", &b)
        + &policy(
            "billing",
            &format!("  loadBalancer: {{policy: ROUND_ROBIN}}\n  {spec}"),
        );
    let h = start(&mesh, "").await;
    (a, b, h)
}

/// A gRPC channel that dials `addr` (a proxy's listener) but names `authority` (a Service)
/// as the call's `:authority`, as a gRPC client of the mesh does.
pub async fn grpc_channel(addr: SocketAddr, authority: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect()
        .await
        .expect("connect to the proxy")
}

/// A `kubernetes.io/tls` Secret `rides/<name>` holding `leaf`, as `kubectl create secret tls`
/// makes it (PEM under `stringData`).
pub fn tls_secret(name: &str, leaf: &testkit::pki::Leaf) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n      ");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: rides}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n      {}\n  tls.key: |\n      {}\n---\n",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}
