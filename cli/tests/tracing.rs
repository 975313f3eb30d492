//! Traces as a third-party backend stores them: Arize Phoenix from PyPI, a real OTLP receiver
//! (gRPC and HTTP/protobuf) that can be asked for the spans it kept. `.ci/run` installs it into
//! `target/trace-venv`, with the OpenTelemetry Python SDK for the instrumented app. Phoenix
//! does not keep the OTLP span kind; sidecar/tests/tracing.rs checks kinds on the wire.

use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn venv() -> PathBuf {
    std::env::var_os("TRELLIS_TRACE_VENV").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/trace-venv")),
        PathBuf::from,
    )
}

/// Whether the venv with Phoenix is here; CI installs it, so there it must be.
fn have_phoenix(what: &str) -> bool {
    let ok = venv().join("bin/phoenix").exists();
    if !ok {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "Phoenix is missing from {} but TRELLIS_REQUIRE_SYSTEM_TESTS is set",
            venv().display()
        );
        println!(
            "skipped {what}: no Phoenix in {} (python3 -m venv target/trace-venv && target/trace-venv/bin/pip install arize-phoenix opentelemetry-sdk opentelemetry-exporter-otlp-proto-http)",
            venv().display()
        );
    }
    ok
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A Phoenix server on free ports, with its database in a temporary folder; killed on drop.
struct Phoenix {
    child: Child,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Phoenix {
    fn start() -> Phoenix {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let child = Command::new(venv().join("bin/phoenix"))
            .arg("serve")
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", http.to_string())
            .env("PHOENIX_GRPC_PORT", grpc.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("phoenix.log")).unwrap())
            .spawn()
            .unwrap();
        let p = Phoenix {
            child,
            http,
            grpc,
            _dir: dir,
        };
        p.wait(Duration::from_secs(90), "Phoenix to serve", |p| {
            p.get("/v1/projects").map(|_| ())
        });
        p
    }

    fn get(&self, path: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}{path}", self.http))
            .output()
            .ok()?;
        out.status.success().then_some(())?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Every span Phoenix stored for `trace_id`.
    fn spans(&self, trace_id: &str) -> Vec<Value> {
        self.get(&format!(
            "/v1/projects/default/spans?trace_id={trace_id}&limit=1000"
        ))
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
    }

    fn wait<T>(&self, within: Duration, what: &str, f: impl Fn(&Phoenix) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(start.elapsed() < within, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `trace_id` holds `n` spans, and a little more for stragglers.
    fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        self.wait(Duration::from_secs(30), &format!("{n} spans"), |p| {
            (p.spans(trace_id).len() >= n).then_some(())
        });
        std::thread::sleep(Duration::from_secs(2));
        self.spans(trace_id)
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(s: &'a Value, k: &str) -> &'a Value {
    &s["attributes"][k]
}

fn id(s: &Value) -> &str {
    s["context"]["span_id"].as_str().unwrap()
}

/// Each span's parent is a span the receiver holds, except `roots`; returns the spans by id.
fn one_tree<'a>(spans: &'a [Value], ctx: &str) -> (HashMap<&'a str, &'a Value>, Vec<&'a Value>) {
    let by_id: HashMap<&str, &Value> = spans.iter().map(|s| (id(s), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique: {ctx}");
    let roots = (spans.iter())
        .filter(|s| {
            s["parent_id"]
                .as_str()
                .is_none_or(|p| !by_id.contains_key(p))
        })
        .collect();
    (by_id, roots)
}

#[test]
fn a_demo_booking_through_the_gateway_and_three_mtls_hops_is_one_trace() {
    if !have_phoenix("the demo's trace in Phoenix") {
        return;
    }
    let phoenix = Phoenix::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args([
            "demo",
            "--no-tui",
            "--duration",
            "15s",
            "--scenario",
            "canary",
        ])
        .args(["--otlp", &format!("127.0.0.1:{}", phoenix.grpc)])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let trace_id = r["trace"]["traceId"].as_str().unwrap().to_string();
    let hops = r["trace"]["hops"].as_array().unwrap().len();
    assert!(hops >= 6, "the booking crossed the mesh: {r:#}");

    // One span per access-log line: every proxy that logged the booking exported its span.
    let spans = phoenix.trace(&trace_id, hops);
    let ctx = format!("{:#}", Value::from(spans.clone()));
    assert_eq!(spans.len(), hops, "{ctx}");
    let (by_id, roots) = one_tree(&spans, &ctx);
    // The only parent not received is the demo client's own span, which it does not export.
    assert_eq!(roots.len(), 1, "{ctx}");
    assert_eq!(attr(roots[0], "trellis.direction"), "gateway", "{ctx}");
    for s in &spans {
        for k in [
            "http.request.method",
            "http.response.status_code",
            "server.address",
        ] {
            assert!(!attr(s, k).is_null(), "{k} on {s:#}");
        }
        assert_eq!(s["status_code"], "UNSET", "the booking succeeded: {s:#}");
    }
    // gateway -> passenger -> trip -> billing, each hop's inbound span naming both ends'
    // SPIFFE IDs (the hop was mTLS), each outbound span its endpoint.
    let billing = (spans.iter())
        .find(|s| attr(s, "trellis.direction") == "inbound" && attr(s, "url.path") == "/charge")
        .unwrap_or_else(|| panic!("billing's inbound span: {ctx}"));
    let mut chain: Vec<&Value> = Vec::new();
    let mut at: Option<&Value> = Some(billing);
    while let Some(s) = at {
        chain.push(s);
        at = s["parent_id"].as_str().and_then(|p| by_id.get(p).copied());
    }
    let steps: Vec<String> = (chain.iter().rev())
        .map(|s| {
            let dir = attr(s, "trellis.direction").as_str().unwrap_or("?");
            let dest = attr(s, "trellis.destination.service")
                .as_str()
                .unwrap_or("?");
            format!("{dir} {dest}")
        })
        .collect();
    assert_eq!(
        steps,
        [
            "gateway passenger.rides",
            "inbound passenger.rides",
            "outbound trip.rides",
            "inbound trip.rides",
            "outbound billing.rides",
            "inbound billing.rides",
        ],
        "{ctx}"
    );
    // Both ends of every hop, inbound (verified certificate) and outbound (the identity the
    // endpoint had to prove); outbound spans also name the endpoint and the URL.
    for (s, caller, callee) in [
        (chain[0], "trip", "billing"),
        (chain[1], "trip", "billing"),
        (chain[2], "passenger", "trip"),
        (chain[3], "passenger", "trip"),
        (chain[4], "ride-gateway", "passenger"),
    ] {
        let td = "spiffe://trellis.local/ns/rides/sa";
        let ids = (
            attr(s, "trellis.source.identity"),
            attr(s, "trellis.destination.identity"),
        );
        assert_eq!(
            (ids.0.as_str(), ids.1.as_str()),
            (
                Some(&format!("{td}/{caller}")[..]),
                Some(&format!("{td}/{callee}")[..])
            ),
            "{s:#}"
        );
        if attr(s, "trellis.direction") == "outbound" {
            assert!(attr(s, "trellis.endpoint").is_string(), "{s:#}");
            assert!(attr(s, "url.full").is_string(), "{s:#}");
        }
    }
}

/// An app instrumented with the OpenTelemetry Python SDK: a server span from the incoming
/// context, and a client span around its call to billing through the sidecar, exported over
/// OTLP/HTTP to the same receiver.
const APP: &str = r#"
import json, sys, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

port, outbound, collector = int(sys.argv[1]), sys.argv[2], sys.argv[3]
provider = TracerProvider(resource=Resource.create({"service.name": "trip-app"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector)))
tracer = provider.get_tracer("trip-app")
propagator = TraceContextTextMapPropagator()

class App(BaseHTTPRequestHandler):
    def do_GET(self):
        parent = propagator.extract(dict(self.headers.items()))
        with tracer.start_as_current_span("book ride", context=parent, kind=trace.SpanKind.SERVER) as span:
            with tracer.start_as_current_span("charge", kind=trace.SpanKind.CLIENT):
                headers = {"Host": "billing"}
                propagator.inject(headers)
                req = urllib.request.Request("http://" + outbound + "/charge", headers=headers)
                status = urllib.request.urlopen(req, timeout=5).status
            body = json.dumps({"trace_id": format(span.get_span_context().trace_id, "032x"), "billing": status}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), App).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_the_opentelemetry_sdk_puts_its_spans_in_the_proxys_tree() {
    if !have_phoenix("the instrumented app's trace in Phoenix") {
        return;
    }
    let phoenix = Phoenix::start();
    let dir = tempfile::tempdir().unwrap();
    let billing = testkit::Upstream::start("billing-0").await;
    let app_port = free_port();
    // Spans go over OTLP/HTTP this time (Phoenix takes it on its HTTP port).
    let mesh = format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec:\n  tracing: {{collector: {{address: \"127.0.0.1:{http}\", protocol: HTTP}}, samplingPercentage: 100}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec:\n  selector: {{app: billing}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: billing-0, namespace: rides, labels: {{app: billing}}}}\n\
         spec: {{address: 127.0.0.1, ports: {{http: {bport}}}}}\n",
        http = phoenix.http,
        bport = billing.addr.port(),
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: trip-0, namespace: rides, labels: {{app: trip}}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {{http: {app_port}}}}}\nmeshFile: mesh.yaml\n"
        ),
    )
    .unwrap();
    let proxy = trellis_proxy::start(trellis_proxy::Bootstrap::load(&boot).unwrap())
        .await
        .unwrap();
    let script = dir.path().join("app.py");
    std::fs::write(&script, APP).unwrap();
    let mut app = Command::new(venv().join("bin/python"))
        .arg(&script)
        .arg(app_port.to_string())
        .arg(proxy.outbound.to_string())
        .arg(format!("http://127.0.0.1:{}/v1/traces", phoenix.http))
        .spawn()
        .unwrap();
    let inbound: SocketAddr = proxy.inbound;
    // A request with no trace context: the proxy's inbound span is the root.
    let answer = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "5", "-H", "Host: trip"])
                .arg(format!("http://{inbound}/ride"))
                .output()
                .unwrap();
            if out.status.success() {
                return serde_json::from_slice::<Value>(&out.stdout).unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the app never answered"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(answer["billing"], 200, "{answer}");
    let trace_id = answer["trace_id"].as_str().unwrap().to_string();
    let spans = tokio::task::spawn_blocking(move || {
        let s = phoenix.trace(&trace_id, 4);
        drop(phoenix);
        s
    })
    .await
    .unwrap();
    let ctx = format!("{:#}", Value::from(spans.clone()));
    assert_eq!(spans.len(), 4, "{ctx}");
    let (by_id, roots) = one_tree(&spans, &ctx);
    assert_eq!(roots.len(), 1, "{ctx}");
    assert!(
        roots[0]["parent_id"].is_null(),
        "the proxy started the trace: {ctx}"
    );
    // proxy inbound -> app server span -> app client span -> proxy outbound.
    let names: Vec<&str> = {
        let mut order = vec![roots[0]];
        let kids =
            |p: &str| -> Vec<&Value> { (spans.iter()).filter(|s| s["parent_id"] == p).collect() };
        while let [only] = kids(id(order.last().unwrap()))[..] {
            order.push(only);
        }
        order
            .iter()
            .map(|s| match attr(s, "trellis.direction").as_str() {
                Some(d) => d,
                None => s["name"].as_str().unwrap(),
            })
            .collect()
    };
    assert_eq!(
        names,
        ["inbound", "book ride", "charge", "outbound"],
        "{ctx}"
    );
    assert!(by_id.len() == 4);
    drop(proxy);
}
