//! Retries and timeouts as a caller sees them: which failures are retried, where the retry
//! goes, what the budget allows, what bodies and methods are resent, and how timeouts end it.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use support::*;
use testkit::Mode;

const CLUSTER: &str = "billing.rides:80";

async fn retries(h: &Harness) -> f64 {
    h.metric("trellis_upstream_retries_total", &[("cluster", CLUSTER)])
        .await
}

fn post(h: &Harness, path: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", h.outbound))
        .header("host", "billing")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn a_retry_lands_on_the_healthy_endpoint() {
    let (a, b, h) =
        pair("retry: {attempts: 2, retryOn: [\"503\"], backoff: {base: 1ms, max: 5ms}}").await;
    a.set_mode(Mode::Status(503));
    for _ in 0..20 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), "billing-b");
    }
    // Every first try that went to a was retried once, on b (retries also move the round
    // robin along, so how many first tries a gets depends on where it started).
    assert!(a.hits() >= 10, "{}", a.hits());
    assert_eq!(b.hits(), 20);
    assert_eq!(retries(&h).await, a.hits() as f64);
}

#[tokio::test]
async fn the_budget_caps_retries_under_a_failing_upstream() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy(
            "billing",
            "  retry: {attempts: 3, retryOn: [5xx], backoff: {base: 1ms, max: 1ms}, \
             budget: {percent: 20, minPerSecond: 1}}",
        );
    let h = start(&mesh, "").await;
    up.set_mode(Mode::Status(503));
    for _ in 0..100 {
        assert_eq!(h.get("billing", "/").await.status, 503);
    }
    // Without the budget: 100 requests x 4 tries. With it: 20% of 100, plus 1/s for 10 s.
    let retried = up.hits() - 100;
    assert_eq!(retried as f64, retries(&h).await);
    assert!(
        (20..=30).contains(&retried),
        "{retried} retries for 100 failing requests"
    );
}

#[tokio::test]
async fn a_post_is_not_resent_once_sent_unless_the_policy_allows_it() {
    let (a, _b, h) =
        pair("retry: {attempts: 2, retryOn: [\"503\"], backoff: {base: 1ms, max: 1ms}}").await;
    a.set_mode(Mode::Status(503));
    let mut failed = 0;
    for _ in 0..10 {
        if h.send(post(&h, "/echo", "charge")).await.status == 503 {
            failed += 1;
        }
    }
    assert_eq!(
        (failed, a.hits()),
        (5, 5),
        "a's POSTs were answered, not retried"
    );
    assert_eq!(retries(&h).await, 0.0);

    let (a, _b, h) = pair(
        "retry: {attempts: 2, retryOn: [\"503\"], backoff: {base: 1ms, max: 1ms}, allowNonIdempotent: true}",
    )
    .await;
    a.set_mode(Mode::Status(503));
    for _ in 0..10 {
        let r = h.send(post(&h, "/echo", "charge")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "charge", "the body is replayed on the retry");
    }
}

#[tokio::test]
async fn a_post_that_never_connected_is_resent_with_its_body() {
    let b = Upstream::start("billing-b").await;
    let mesh = service("billing", "")
        + &workload_at("billing", "billing-dead", dead_addr())
        + &workload("billing", &b)
        + &policy(
            "billing",
            "  loadBalancer: {policy: ROUND_ROBIN}\n  \
             retry: {attempts: 1, retryOn: [connect-failure]}",
        );
    let h = start(&mesh, "").await;
    for _ in 0..6 {
        let r = h.send(post(&h, "/echo", "charge")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "charge");
    }
}

#[tokio::test]
async fn the_per_try_timeout_moves_a_slow_try_to_another_endpoint() {
    let (a, _b, h) = pair(
        "retry: {attempts: 1, perTryTimeout: 100ms, retryOn: [reset], backoff: {base: 1ms, max: 1ms}}",
    )
    .await;
    a.set_mode(Mode::Sleep(Duration::from_secs(2)));
    for _ in 0..4 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), "billing-b");
    }
    assert!(a.hits() >= 2, "{}", a.hits());
    assert_eq!(retries(&h).await, a.hits() as f64);
}

#[tokio::test]
async fn the_overall_timeout_ends_the_retries_with_504() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy(
            "billing",
            "  timeout: 250ms\n  \
             retry: {attempts: 5, perTryTimeout: 100ms, retryOn: [5xx], backoff: {base: 1ms, max: 1ms}}",
        );
    let h = start(&mesh, "").await;
    up.set_mode(Mode::Sleep(Duration::from_secs(2)));
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.header("trellis-error"), "timeout");
    assert!(r.body.contains("within 250ms"), "{}", r.body);
    // Tries at about 0, 100 and 200 ms; the third is cut short by the overall budget.
    assert!((2..=3).contains(&up.hits()), "{} tries", up.hits());
}

#[tokio::test]
async fn route_timeouts_compose_request_as_overall_and_backend_request_per_try() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy(
            "billing",
            "  retry: {attempts: 5, retryOn: [5xx], backoff: {base: 1ms, max: 1ms}}",
        )
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: billing, namespace: rides}\n\
           spec:\n  parentRefs: [{name: billing}]\n  rules:\n  - backendRefs: [{name: billing, port: 80}]\n    \
           timeouts: {request: 250ms, backendRequest: 100ms}\n";
    let h = start(&mesh, "").await;
    up.set_mode(Mode::Sleep(Duration::from_secs(2)));
    let r = h.get("billing", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("trellis-error")),
        (504, "timeout")
    );
    assert!((2..=3).contains(&up.hits()), "{} tries", up.hits());
}

#[tokio::test]
async fn a_grpc_unavailable_answer_is_retried_with_its_streamed_body() {
    let echo = testkit::grpc::start_echo().await;
    let mesh = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: rides}}\n\
         spec:\n  selector: {{app: echo}}\n  ports: [{{name: grpc, port: 80, targetPort: {}, appProtocol: grpc}}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: echo-0, namespace: rides, labels: {{app: echo}}}}\n\
         spec: {{address: 127.0.0.1}}\n---\n",
        echo.port()
    ) + &policy(
        "echo",
        "  retry: {attempts: 2, retryOn: [unavailable], backoff: {base: 1ms, max: 1ms}}",
    );
    let h = start(&mesh, "").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.outbound))
        .unwrap()
        .origin("http://echo".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut c = testkit::grpc::EchoClient::new(channel);
    // gRPC bodies have no length; the proxy records the first try's body to send it again.
    let err = c
        .unary(testkit::grpc::EchoMessage {
            text: "fail:14".into(),
        })
        .await
        .expect_err("UNAVAILABLE after the retries");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let retried = h
        .metric(
            "trellis_upstream_retries_total",
            &[("cluster", "echo.rides:80")],
        )
        .await;
    assert_eq!(retried, 2.0);
    // Other codes are the app's answer, passed on once.
    let err = c
        .unary(testkit::grpc::EchoMessage {
            text: "fail:5".into(),
        })
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let ok = c
        .unary(testkit::grpc::EchoMessage { text: "hi".into() })
        .await
        .expect("ok");
    assert_eq!(ok.into_inner().text, "hi");
}

#[tokio::test]
async fn a_grpc_caller_that_times_out_gets_deadline_exceeded() {
    let up = Upstream::start("billing-0").await;
    let mesh =
        service("billing", "") + &workload("billing", &up) + &policy("billing", "  timeout: 100ms");
    let h = start(&mesh, "").await;
    up.set_mode(Mode::Sleep(Duration::from_secs(2)));
    let mut r = req(h.outbound, "billing", "/pkg.Billing/Charge");
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let r = h.send(r).await;
    assert_eq!(r.status, 200, "gRPC errors travel in grpc-status");
    assert_eq!(r.header("grpc-status"), "4");
    assert_eq!(r.header("trellis-error"), "timeout");
}
