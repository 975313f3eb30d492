//! Spans as the collector receives them. The receiver here is a tonic server of the official
//! OTLP service definitions (`opentelemetry-proto`): it decodes exactly what went over the
//! wire, span kinds included, which the third-party receiver of cli/tests/tracing.rs (Phoenix)
//! does not keep. The proxy is real, its upstreams are real hyper servers.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// What the receiver got: each span with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = (rs.resource.iter())
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Received {
    async fn start() -> (Received, SocketAddr) {
        let r = Received::default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let svc = TraceServiceServer::new(r.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        (r, addr)
    }

    async fn wait_for(&self, n: usize) -> Vec<(String, Span)> {
        eventually(Duration::from_secs(15), &format!("{n} spans"), || async {
            let got = self.0.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    (s.attributes.iter())
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn mesh_doc(collector: SocketAddr, percent: f64) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec:\n  tracing: {{collector: {{address: \"{collector}\"}}, samplingPercentage: {percent}}}\n---\n"
    )
}

async fn get_with(h: &Harness, to: SocketAddr, host: &str, path: &str, tp: &str) -> Resp {
    let mut r = req(to, host, path);
    if !tp.is_empty() {
        r.headers_mut().insert("traceparent", tp.parse().unwrap());
    }
    h.send(r).await
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn both_directions_export_spans_with_kinds_parents_and_attributes() {
    let (rx, collector) = Received::start().await;
    let billing = Upstream::start("billing-0").await;
    let app = Upstream::start("trip-app").await;
    let mesh = mesh_doc(collector, 0.0) + &service("billing", "") + &workload("billing", &billing);
    let h = start_with_app(&mesh, "", &format!("{{http: {}}}", app.addr.port())).await;
    let tp = format!("00-{TRACE}-{CALLER}-01");

    // Outbound: the app's call, sampled by its caller even at 0%.
    let r = get_with(&h, h.outbound, "billing", "/charge?ride=7", &tp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let sent = seen["traceparent"].as_str().unwrap().to_string();
    // Inbound: a call to this workload's app.
    let r = get_with(&h, h.inbound, "trip", "/trips", &tp).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let spans = rx.wait_for(2).await;
    let ctx = format!("{spans:#?}");
    let client = &spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Client as i32)
        .expect(&ctx)
        .1;
    let server = &spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Server as i32)
        .expect(&ctx)
        .1;
    for (service, s) in &spans {
        assert_eq!(service, "trip", "service.name is the workload's app");
        assert_eq!(hex(&s.trace_id), TRACE, "{ctx}");
        assert_eq!(
            hex(&s.parent_span_id),
            CALLER,
            "the caller's span is the parent: {ctx}"
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    assert_eq!(
        sent,
        format!("00-{TRACE}-{}-01", hex(&client.span_id)),
        "the upstream's parent is the client span the proxy exported"
    );
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.full", "http://billing/charge?ride=7"),
        ("server.address", "billing"),
        ("http.response.status_code", "200"),
        ("http.route", "/"),
        ("trellis.direction", "outbound"),
        ("trellis.source.workload", "trip-0"),
        ("trellis.source.namespace", "rides"),
        ("trellis.destination.service", "billing.rides"),
        ("trellis.cluster", "billing.rides:80"),
        ("trellis.endpoint", &billing.addr.to_string()),
        ("network.peer.address", "127.0.0.1"),
        ("trellis.retry.attempts", "0"),
    ] {
        assert_eq!(
            attr(client, key).as_deref(),
            Some(want),
            "{key}: {client:#?}"
        );
    }
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/trips"),
        ("server.address", "trip"),
        ("http.response.status_code", "200"),
        ("trellis.direction", "inbound"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(
            attr(server, key).as_deref(),
            Some(want),
            "{key}: {server:#?}"
        );
    }
    let m = h.admin("/metrics").await.body;
    assert!(
        sample(&m, "trellis_trace_spans_exported_total") >= 2.0,
        "{m}"
    );
    assert_eq!(sample(&m, "trellis_trace_spans_dropped_total"), 0.0, "{m}");
}

#[tokio::test]
async fn retries_and_the_proxys_own_answer_show_on_the_span() {
    let (rx, collector) = Received::start().await;
    let mesh = mesh_doc(collector, 100.0)
        + &service("billing", "")
        + &workload_at("billing", "billing-0", dead_addr())
        + &policy(
            "billing",
            "  retry: {attempts: 2, retryOn: [connect-failure], backoff: {base: 1ms, max: 2ms}}",
        );
    let h = start(&mesh, "").await;
    let r = h.get("billing", "/charge").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let code = r.header("trellis-error").to_string();
    assert!(!code.is_empty());

    let spans = rx.wait_for(1).await;
    let s = &spans[0].1;
    assert_eq!(s.kind, SpanKind::Client as i32);
    assert!(
        s.parent_span_id.is_empty(),
        "no context came: the trace starts here"
    );
    let status = s.status.as_ref().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32, "{s:#?}");
    assert!(status.message.starts_with(&code), "{s:#?}");
    assert_eq!(attr(s, "trellis.error").as_deref(), Some(code.as_str()));
    let retries: Vec<_> = s.events.iter().filter(|e| e.name == "retry").collect();
    assert_eq!(retries.len(), 2, "{s:#?}");
    assert_eq!(attr(s, "trellis.retry.attempts").as_deref(), Some("2"));
}

#[tokio::test]
async fn the_sampling_percentage_follows_a_config_push() {
    let (rx, collector) = Received::start().await;
    let billing = Upstream::start("billing-0").await;
    let rest = service("billing", "") + &workload("billing", &billing);
    let h = start(&(mesh_doc(collector, 0.0) + &rest), "").await;
    for _ in 0..20 {
        let r = h.get("billing", "/").await;
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let tp = seen["traceparent"].as_str().unwrap();
        assert!(tp.ends_with("-00"), "0%: a root marked not sampled: {tp}");
    }
    let v = h.version().await;
    h.write_mesh(&(mesh_doc(collector, 100.0) + &rest));
    h.wait_for_new_version(&v).await;
    for _ in 0..5 {
        let r = h.get("billing", "/").await;
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(seen["traceparent"].as_str().unwrap().ends_with("-01"));
    }
    let spans = rx.wait_for(5).await;
    assert_eq!(spans.len(), 5, "none from before the push");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_dropped_spans_not_requests() {
    let billing = Upstream::start("billing-0").await;
    let mesh =
        mesh_doc(dead_addr(), 100.0) + &service("billing", "") + &workload("billing", &billing);
    let h = start(&mesh, "").await;
    for _ in 0..50 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    eventually(
        Duration::from_secs(20),
        "the export to fail and count its spans",
        || async {
            let m = h.admin("/metrics").await.body;
            let dropped = sample(&m, "trellis_trace_spans_dropped_total");
            let errors = sample(&m, "trellis_trace_export_errors_total");
            (dropped >= 50.0 && errors >= 1.0).then_some(())
        },
    )
    .await;
    let m = h.admin("/metrics").await.body;
    assert_eq!(sample(&m, "trellis_trace_spans_exported_total"), 0.0);
}

#[tokio::test]
async fn the_last_spans_reach_the_collector_before_the_proxy_exits() {
    let (rx, collector) = Received::start().await;
    let billing = Upstream::start("billing-0").await;
    let mesh =
        mesh_doc(collector, 100.0) + &service("billing", "") + &workload("billing", &billing);
    let mut h = start(&mesh, "").await;
    for _ in 0..3 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    let running = h.running.take().unwrap();
    running.drain();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .expect("the proxy drains and exits");
    assert_eq!(rx.0.lock().unwrap().len(), 3, "every span was sent by exit");
}

/// The one span the collector got, after one request to billing answered `status`.
async fn one_span_after(rx: &Received, h: &Harness, status: u16) -> Span {
    let r = h.get("billing", "/charge").await;
    assert_eq!(r.status, status, "{}", r.body);
    let spans = rx.wait_for(1).await;
    rx.0.lock().unwrap().clear();
    spans.into_iter().next().unwrap().1
}

fn event<'a>(s: &'a Span, name: &str) -> &'a opentelemetry_proto::tonic::trace::v1::span::Event {
    (s.events.iter())
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} event: {s:#?}"))
}

/// A receiver, billing under `policy_spec`, and a proxy tracing every request to it.
async fn traced_billing(policy_spec: &str) -> (Received, Upstream, Harness) {
    let (rx, collector) = Received::start().await;
    let billing = Upstream::start("billing-0").await;
    let mesh = mesh_doc(collector, 100.0)
        + &service("billing", "")
        + &workload("billing", &billing)
        + &policy("billing", policy_spec);
    (rx, billing, start(&mesh, "").await)
}

#[tokio::test]
async fn breaker_rate_limit_and_ejection_are_span_events() {
    let (rx, billing, h) = traced_billing(
        "  rateLimit: {requestsPerSecond: 0.1, burst: 2}\n  \
         outlierDetection: {consecutive5xx: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}",
    )
    .await;

    // A 503 ejects the only endpoint: the request that saw it says so.
    billing.set_mode(testkit::Mode::Status(503));
    let s = one_span_after(&rx, &h, 503).await;
    let e = event(&s, "outlier_ejection");
    let ep = (e.attributes.iter()).find(|kv| kv.key == "trellis.endpoint");
    assert_eq!(
        ep.and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?)),
        Some(billing.addr.to_string())
    );

    // The burst of 2 is spent: the next is rate limited before it reaches the breaker.
    let _ = h.get("billing", "/").await;
    rx.wait_for(1).await;
    rx.0.lock().unwrap().clear();
    let s = one_span_after(&rx, &h, 429).await;
    event(&s, "rate_limited");
    assert_eq!(attr(&s, "trellis.error").as_deref(), Some("rate-limited"));
}

#[tokio::test]
async fn a_breaker_rejection_is_a_span_event() {
    let (rx, _billing, h) = traced_billing(
        "  circuitBreaker: {slidingWindow: {type: COUNT, size: 2}, minimumCalls: 2, waitInOpen: 60s}",
    )
    .await;
    let r = h
        .post_admin("/breaker?cluster=billing.rides:80&state=FORCED_OPEN")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = one_span_after(&rx, &h, 503).await;
    event(&s, "circuit_breaker.rejected");
    assert_eq!(attr(&s, "trellis.error").as_deref(), Some("circuit-open"));
}
