//! Python grpcio, the C-core gRPC, on both ends of Trellis (tests/grpc/grpcio_peer.py):
//! through a sidecar's outbound listener and through the gateway's HTTP (h2c) and HTTPS
//! (ALPN h2) listeners, routed by GRPCRoute method matches, split by weights, with request
//! header modifiers. grpcio comes with the tracing tests' venv (Phoenix depends on it):
//! `target/trace-venv`, or `TRELLIS_TRACE_VENV`.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/grpcio_peer.py");

fn python() -> PathBuf {
    std::env::var_os("TRELLIS_TRACE_VENV")
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/trace-venv")),
            PathBuf::from,
        )
        .join("bin/python3")
}

/// Whether grpcio can be imported; CI installs it, so there it must be.
fn have_grpcio() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "grpcio is missing from {} but TRELLIS_REQUIRE_SYSTEM_TESTS is set",
            python().display()
        );
        println!(
            "skipped: no grpcio in {} (python3 -m venv target/trace-venv && target/trace-venv/bin/pip install grpcio)",
            python().display()
        );
    }
    ok
}

/// A grpcio server answering every method as `name`; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(name: &str) -> Server {
        let mut child = Command::new(python())
            .args([SCRIPT, "serve", name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` calls of `method` through `target` with `authority` (over TLS trusting `tls`'s CA
/// file, with that SNI, when given), run off the runtime's thread: the proxy is on it.
async fn call(
    target: std::net::SocketAddr,
    authority: &str,
    method: &str,
    n: usize,
    tls: Option<(&std::path::Path, &str)>,
) -> Value {
    let mut args = vec![
        SCRIPT.to_string(),
        "call".into(),
        target.to_string(),
        authority.into(),
        method.into(),
        n.to_string(),
    ];
    if let Some((ca, sni)) = tls {
        args.extend([ca.display().to_string(), sni.to_string()]);
    }
    let out = tokio::task::spawn_blocking(move || Command::new(python()).args(&args).output())
        .await
        .unwrap()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn mesh(v1: &Server, v2: &Server, cert: &testkit::pki::Leaf) -> String {
    let svc = |name: &str, selector: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: rides}}\n\
             spec:\n  selector: {selector}\n  ports: [{{name: grpc, port: 9090, targetPort: grpc, appProtocol: grpc}}]\n---\n"
        )
    };
    let wl = |v: &str, s: &Server| {
        format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: trips-{v}-0, namespace: rides, labels: {{app: trips, version: {v}}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{grpc: {}}}}}\n---\n",
            s.port
        )
    };
    let route = |value: &str| {
        format!(
            "[{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-grpc-route, value: {value}}}]}}}}]"
        )
    };
    [
        svc("trips", "{app: trips}"),
        svc("trips-v1", "{app: trips, version: v1}"),
        svc("trips-v2", "{app: trips, version: v2}"),
        wl("v1", v1),
        wl("v2", v2),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: trips, namespace: rides}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: trips, port: 9090}}]\n  rules:\n\
             \x20 - matches: [{{method: {{service: rides.v1.Trips, method: Book}}}}]\n\
             \x20   filters: {}\n\
             \x20   backendRefs: [{{name: trips-v1, port: 9090, weight: 80}}, {{name: trips-v2, port: 9090, weight: 20}}]\n\
             \x20 - matches: [{{method: {{service: rides.v1.Trips}}}}]\n\
             \x20   filters: {}\n\
             \x20   backendRefs: [{{name: trips-v2, port: 9090}}]\n---\n",
            route("book"),
            route("trips-any")
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: rides}\n\
         spec:\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n\
         \x20 - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: edge-cert}]}}\n---\n"
            .to_string(),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: edge, namespace: rides}}\n\
             spec:\n  parentRefs: [{{kind: Gateway, name: edge}}]\n  hostnames: [grpc.rides.example.com]\n  rules:\n\
             \x20 - matches: [{{method: {{service: rides.v1.Trips, method: Book}}}}]\n\
             \x20   filters: {}\n\
             \x20   backendRefs: [{{name: trips-v1, port: 9090}}]\n---\n",
            route("edge-book")
        ),
        tls_secret("edge-cert", cert),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_through_a_sidecar_and_the_gateway_by_method_and_weight() {
    if !have_grpcio() {
        return;
    }
    let (v1, v2) = (Server::start("v1"), Server::start("v2"));
    let ca = testkit::pki::TestCa::new("edge-ca");
    let cert = ca.server(&["grpc.rides.example.com"]);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.root_pem).unwrap();
    let h = start(
        &mesh(&v1, &v2, &cert),
        "gateway: {name: edge, listen: {http: 127.0.0.1:0, https: 127.0.0.1:0}}\n",
    )
    .await;
    let gw = &h.running.as_ref().unwrap().gateway;
    let (gw_http, gw_https) = (gw["http"], gw["https"]);
    let book = "/rides.v1.Trips/Book";

    // Through the sidecar: Book is split 80/20 and gets the Book rule's header.
    let r = call(h.outbound, "trips.rides:9090", book, 400, None).await;
    assert_eq!(r["failures"], serde_json::json!({}), "{r}");
    assert_eq!(r["routes"], serde_json::json!({"book": 400}), "{r}");
    let on_v2 = r["servers"]["v2"].as_u64().unwrap_or(0);
    assert_eq!(r["servers"]["v1"].as_u64().unwrap_or(0) + on_v2, 400, "{r}");
    // 20% of 400 is 80, with a standard deviation of 8: ±30 is more than 3.5 of them.
    assert!((50..=110).contains(&on_v2), "v2 served {on_v2} of 400: {r}");
    // Any other method of the service takes the service-wide rule, to v2 only.
    let r = call(
        h.outbound,
        "trips.rides:9090",
        "/rides.v1.Trips/Cancel",
        20,
        None,
    )
    .await;
    assert_eq!(r["servers"], serde_json::json!({"v2": 20}), "{r}");
    assert_eq!(r["routes"], serde_json::json!({"trips-any": 20}), "{r}");
    // A method no rule matches: the proxy answers as gRPC, UNIMPLEMENTED (no-route).
    let r = call(
        h.outbound,
        "trips.rides:9090",
        "/rides.v1.Drivers/Find",
        3,
        None,
    )
    .await;
    assert_eq!(
        r["failures"],
        serde_json::json!({"UNIMPLEMENTED": 3}),
        "{r}"
    );

    // Through the gateway: h2c on the HTTP listener, and h2 by ALPN over TLS on the HTTPS one.
    for tls in [None, Some((ca_file.path(), "grpc.rides.example.com"))] {
        let target = if tls.is_some() { gw_https } else { gw_http };
        let r = call(target, "grpc.rides.example.com", book, 20, tls).await;
        assert_eq!(r["servers"], serde_json::json!({"v1": 20}), "{tls:?}: {r}");
        assert_eq!(
            r["routes"],
            serde_json::json!({"edge-book": 20}),
            "{tls:?}: {r}"
        );
    }
    // The gateway's route holds Book only.
    let r = call(
        gw_http,
        "grpc.rides.example.com",
        "/rides.v1.Trips/Cancel",
        2,
        None,
    )
    .await;
    assert_eq!(
        r["failures"],
        serde_json::json!({"UNIMPLEMENTED": 2}),
        "{r}"
    );
}
