//! Rate limits, bulkheads, fault injection and the connection cap as a caller sees them.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLUSTER: &str = "billing.rides:80";

async fn billing(spec: &str) -> (Upstream, Harness) {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "") + &workload("billing", &up) + &policy("billing", spec);
    (up, start(&mesh, "").await)
}

#[tokio::test]
async fn over_the_rate_limit_the_answer_is_429_with_retry_after() {
    // One token every 2 s, five at once.
    let (up, h) = billing("  rateLimit: {requestsPerSecond: 0.5, burst: 5}").await;
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = h.get("billing", "/").await;
        if r.status == 429 {
            assert_eq!(r.header("trellis-error"), "rate-limited");
            let after: u64 = r
                .header("retry-after")
                .parse()
                .expect("retry-after seconds");
            assert!((1..=2).contains(&after), "retry-after: {after}");
        }
        codes.push(r.status.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(up.hits(), 5);
    assert_eq!(
        h.metric("trellis_rate_limited_total", &[("cluster", CLUSTER)])
            .await,
        3.0
    );
}

#[tokio::test]
async fn the_bulkhead_admits_concurrent_plus_pending_and_refuses_the_rest() {
    let (up, h) =
        billing("  bulkhead: {maxConcurrentRequests: 2, maxPendingRequests: 2, maxWait: 10s}")
            .await;
    let h = Arc::new(h);
    let spawn = |h: &Arc<Harness>| {
        let h = h.clone();
        tokio::spawn(async move { h.get("billing", "/sleep/400").await })
    };
    let running: Vec<_> = (0..2).map(|_| spawn(&h)).collect();
    eventually(Duration::from_secs(5), "two requests upstream", || async {
        (up.hits() == 2).then_some(())
    })
    .await;
    let queued: Vec<_> = (0..2).map(|_| spawn(&h)).collect();
    eventually(Duration::from_secs(5), "two requests queued", || async {
        (h.cluster(CLUSTER).await["bulkhead"]["pending"] == 2).then_some(())
    })
    .await;
    // The fifth finds both slots and the queue full: refused at once, upstream untouched.
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "overloaded");
    assert_eq!(up.hits(), 2);
    for t in running.into_iter().chain(queued) {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(up.hits(), 4, "the queued ones ran once slots were free");
    assert_eq!(
        h.metric("trellis_bulkhead_rejected_total", &[("cluster", CLUSTER)])
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_queued_request_gives_up_after_max_wait() {
    let (up, h) =
        billing("  bulkhead: {maxConcurrentRequests: 1, maxPendingRequests: 1, maxWait: 100ms}")
            .await;
    let h = Arc::new(h);
    let slow = {
        let h = h.clone();
        tokio::spawn(async move { h.get("billing", "/sleep/1000").await })
    };
    eventually(Duration::from_secs(5), "one request upstream", || async {
        (up.hits() == 1).then_some(())
    })
    .await;
    let r = h.get("billing", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("trellis-error")),
        (503, "overloaded")
    );
    assert_eq!(up.hits(), 1);
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn injected_aborts_and_delays_hit_their_percentages() {
    let (up, h) = billing(
        "  faultInjection: {abort: {percent: 30, status: 503}, delay: {percent: 20, duration: 1ms}}",
    )
    .await;
    let n = 5000;
    let mut aborted = 0;
    for _ in 0..n {
        let r = h.get("billing", "/").await;
        if r.status == 503 {
            assert_eq!(r.header("trellis-error"), "fault-injected");
            aborted += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    // 30% and 20%, within 3 points (150 of 5000) either way.
    assert!((1350..=1650).contains(&aborted), "{aborted} of {n} aborted");
    assert_eq!(
        up.hits(),
        n - aborted,
        "aborted requests never reach billing"
    );
    let delayed = h
        .metric(
            "trellis_faults_injected_total",
            &[("cluster", CLUSTER), ("fault", "delay")],
        )
        .await;
    assert!(
        (850.0..=1150.0).contains(&delayed),
        "{delayed} of {n} delayed"
    );
}

#[tokio::test]
async fn an_injected_delay_counts_against_the_timeout() {
    let (up, h) =
        billing("  timeout: 100ms\n  faultInjection: {delay: {percent: 100, duration: 5s}}").await;
    let r = h.get("billing", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("trellis-error")),
        (504, "timeout")
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn an_injected_abort_for_a_grpc_caller_carries_a_grpc_status() {
    let (_up, h) = billing("  faultInjection: {abort: {percent: 100, status: 503}}").await;
    let mut r = req(h.outbound, "billing", "/pkg.Svc/Method");
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let r = h.send(r).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), "14");
    assert_eq!(r.header("trellis-error"), "fault-injected");
}

/// Reads from `s` until a whole response head has arrived, or `wait` passes (`None`).
async fn response_head(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the proxy closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn past_max_connections_a_new_client_waits_for_an_open_connection_to_close() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "") + &workload("billing", &up);
    let h = start(
        &mesh,
        "limits: {maxConnections: 1, headerReadTimeout: 30s}\n",
    )
    .await;
    let request = b"GET / HTTP/1.1\r\nhost: billing\r\n\r\n";

    // The one slot: a kept-alive connection that has had its answer.
    let mut first = TcpStream::connect(h.outbound).await.unwrap();
    first.write_all(request).await.unwrap();
    let head = response_head(&mut first, Duration::from_secs(5)).await;
    assert!(head.is_some_and(|r| r.starts_with("HTTP/1.1 200")));

    // The kernel completes the second handshake, but the proxy does not take it yet.
    let mut second = TcpStream::connect(h.outbound).await.unwrap();
    second.write_all(request).await.unwrap();
    let early = response_head(&mut second, Duration::from_millis(300)).await;
    assert_eq!(early, None, "answered past the connection cap");

    drop(first);
    let head = response_head(&mut second, Duration::from_secs(5)).await;
    assert!(
        head.as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "{head:?}"
    );
    assert_eq!(up.hits(), 2);
}
