//! Bad input gets a clear answer, never a crash: 400, 431, 404, 503, 502, and a timeout
//! for headers that never finish.

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn billing() -> (Upstream, Harness) {
    let up = Upstream::start("billing-v1").await;
    let h = start(
        &(service("billing-v1", "") + &workload("billing-v1", &up)),
        "limits: {headerReadTimeout: 300ms}\n",
    )
    .await;
    (up, h)
}

#[tokio::test]
async fn malformed_request_gets_400() {
    let (_up, h) = billing().await;
    let answer = raw(h.outbound, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // The proxy is still serving.
    assert_eq!(h.get("billing-v1", "/").await.status, 200);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (up, h) = billing().await;
    // Over the 64 KiB limit but inside hyper's buffer: the proxy's own answer.
    let mut r = req(h.outbound, "billing-v1", "/");
    r.headers_mut()
        .insert("x-big", "a".repeat(70 * 1024).parse().unwrap());
    let res = h.send(r).await;
    assert_eq!(res.status, 431);
    assert_eq!(res.header("trellis-error"), "headers-too-large");
    // Far over: hyper's parser refuses it before any handler runs.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: billing-v1\r\nx-big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = raw(h.outbound, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    assert_eq!(up.hits(), 0, "nothing oversized reached the upstream");
}

#[tokio::test]
async fn unknown_host_gets_404_no_route() {
    let (_up, h) = billing().await;
    let r = h.get("payments", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("trellis-error"), "no-route");
    assert!(r.body.contains("payments"), "{}", r.body);
}

#[tokio::test]
async fn unreachable_endpoint_gets_503_no_healthy_endpoints() {
    // Bind then drop, so nothing listens on the port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mesh = service("billing-v1", "")
        + &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: dead, namespace: rides, labels: {{app: billing-v1}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{http: {}}}}}\n",
            dead.port()
        );
    let h = start(&mesh, "").await;
    let r = h.get("billing-v1", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "no-healthy-endpoints");
    assert!(
        r.body.contains(&dead.to_string()),
        "the answer names the endpoint: {}",
        r.body
    );
}

#[tokio::test]
async fn connect_failure_moves_a_bodyless_request_to_another_endpoint() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let up = Upstream::start("live").await;
    let mesh = service("billing-v1", "")
        + &workload("billing-v1", &up)
        + &format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: dead, namespace: rides, labels: {{app: billing-v1}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{http: {}}}}}\n---\n\
             apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: rr, namespace: rides}}\n\
             spec: {{targetRef: {{kind: Service, name: billing-v1}}, loadBalancer: {{policy: ROUND_ROBIN}}}}\n",
            dead.port()
        );
    let h = start(&mesh, "").await;
    for _ in 0..10 {
        assert_eq!(h.get("billing-v1", "/").await.status, 200);
    }
    assert_eq!(up.hits(), 10);
}

#[tokio::test]
async fn upstream_reset_gets_502() {
    let (_up, h) = billing().await;
    let r = h.get("billing-v1", "/reset").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("trellis-error"), "upstream-reset");
}

/// Waits for the proxy to close `s`, which sent an unfinished request head: within 3 s
/// (the harness's header-read timeout is 300 ms), with nothing or a 408 as the answer.
async fn closed_for_a_slow_head(mut s: tokio::net::TcpStream, started: Instant, which: &str) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the {which} closed the unfinished request instead of waiting forever"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn slowloris_headers_are_timed_out() {
    let (_up, h) = billing().await;
    let mut s = tokio::net::TcpStream::connect(h.outbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: billing-v1\r\nx-slow: ")
        .await
        .unwrap();
    closed_for_a_slow_head(s, Instant::now(), "outbound listener").await;
}

#[tokio::test]
async fn invalid_mesh_at_start_is_not_ready_and_says_why() {
    let h = start("apiVersion: v1\nkind: Service\nmetadata: {name: billing}\nspec: {ports: [{port: 80}], bogus: 1}\n", "").await;
    let ready = h.admin("/ready").await;
    assert_eq!(ready.status, 503);
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "not-ready");
    let dump: serde_json::Value =
        serde_json::from_str(&h.admin("/config_dump").await.body).unwrap();
    let err = dump["lastError"]["errors"][0].as_str().unwrap();
    assert!(
        err.contains("mesh.yaml:4:") && err.contains("bogus"),
        "{err}"
    );
}

/// A POST to `/sleep/300` (the upstream answers only after 300 ms, so the body error comes
/// first) whose chunked body breaks after one good chunk with `bad`.
fn broken_chunked(bad: &str) -> Vec<u8> {
    format!(
        "POST /sleep/300 HTTP/1.1\r\nhost: billing\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n{bad}"
    )
    .into_bytes()
}

#[tokio::test]
async fn broken_chunked_framing_is_the_clients_400_and_no_endpoint_pays() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy(
            "billing",
            "  outlierDetection: {consecutive5xx: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}\n  \
             circuitBreaker: {failureRateThreshold: 50, slidingWindow: {type: COUNT, size: 2}, minimumCalls: 1, waitInOpen: 30s}",
        );
    let h = start(&mesh, "").await;
    const CLUSTER: &str = "billing.rides:80";
    let cases = [
        ("a chunk size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "a chunk size that overflows",
            "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a bare LF ending a chunk-size line",
            "5\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, bad) in cases {
        let answer = raw(h.outbound, &broken_chunked(bad)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(
            answer.contains("trellis-error: bad-request"),
            "{what}: {answer}"
        );
        // The proxy keeps serving, and the endpoint and breaker are untouched.
        assert_eq!(h.get("billing", "/").await.status, 200, "{what}");
        assert_eq!(h.breaker_state(CLUSTER).await, "CLOSED", "{what}");
        let c = h.cluster(CLUSTER).await;
        assert_eq!(c["endpoints"][0]["health"], "healthy", "{what}: {c}");
    }
    let ejections = "trellis_outlier_ejections_total";
    assert_eq!(h.metric(ejections, &[("cluster", CLUSTER)]).await, 0.0);
    let bad_requests = h
        .metric(
            "trellis_requests_total",
            &[("direction", "outbound"), ("response_code", "400")],
        )
        .await;
    assert_eq!(bad_requests, 3.0, "each counted as the client's 400");

    // The control: a failure that is the upstream's does eject the endpoint and open the
    // breaker, so the checks above could fail.
    let r = h
        .send({
            let mut r = req(h.outbound, "billing", "/reset");
            *r.method_mut() = http::Method::POST;
            r
        })
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    eventually(Duration::from_secs(5), "the breaker to open", || async {
        (h.breaker_state(CLUSTER).await == "OPEN").then_some(())
    })
    .await;
    assert_eq!(h.metric(ejections, &[("cluster", CLUSTER)]).await, 1.0);
}

#[tokio::test]
async fn a_slow_admin_client_is_timed_out_while_ready_still_answers() {
    let (_up, h) = billing().await;
    // Positive control: a whole request head on a raw connection is answered.
    let answer = raw(
        h.admin,
        b"GET /live HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    let mut slow = tokio::net::TcpStream::connect(h.admin).await.unwrap();
    slow.write_all(b"GET /ready HTTP/1.1\r\nhost: admin\r\nx-slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        h.admin("/ready").await.status,
        200,
        "the admin port answers others while one client stalls"
    );
    closed_for_a_slow_head(slow, started, "admin port").await;
}
