//! The circuit breaker as a caller sees it: answers, the state metric, `/clusters`, and the
//! admin port's forced states.

mod support;

use std::time::Duration;
use support::*;

const CLUSTER: &str = "billing.rides:80";

async fn billing(breaker: &str) -> (Upstream, Harness) {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy("billing", &format!("  circuitBreaker: {breaker}"));
    (up, start(&mesh, "").await)
}

async fn state_metric(h: &Harness, state: &str) -> f64 {
    h.metric(
        "trellis_circuit_breaker_state",
        &[("cluster", CLUSTER), ("state", state)],
    )
    .await
}

/// Waits until the breaker shows `state` on `/clusters` and in the metric.
async fn wait_for(h: &Harness, state: &str) {
    let label = state.to_ascii_lowercase();
    eventually(Duration::from_secs(5), state, || async {
        (h.breaker_state(CLUSTER).await == state && state_metric(h, &label).await == 1.0)
            .then_some(())
    })
    .await;
}

async fn transitions(h: &Harness, from: &str, to: &str) -> f64 {
    h.metric(
        "trellis_circuit_breaker_transitions_total",
        &[("cluster", CLUSTER), ("from", from), ("to", to)],
    )
    .await
}

#[tokio::test]
async fn states_go_closed_open_half_open_closed_and_open_again_on_failed_probes() {
    let (up, h) = billing(
        "{failureRateThreshold: 50, slidingWindow: {type: COUNT, size: 4}, minimumCalls: 4, \
         waitInOpen: 300ms, permittedCallsInHalfOpen: 2}",
    )
    .await;
    wait_for(&h, "CLOSED").await;
    assert_eq!(state_metric(&h, "open").await, 0.0);

    // CLOSED -> OPEN: four upstream 500s are a 100% failure rate over the minimum calls.
    for _ in 0..4 {
        assert_eq!(h.get("billing", "/status/500").await.status, 500);
    }
    wait_for(&h, "OPEN").await;
    let hits = up.hits();
    for _ in 0..5 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("trellis-error"), "circuit-open");
    }
    assert_eq!(
        up.hits(),
        hits,
        "an OPEN breaker never touches the upstream"
    );

    // OPEN -> HALF_OPEN on its own after waitInOpen; two good probes close it.
    wait_for(&h, "HALF_OPEN").await;
    for _ in 0..2 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    wait_for(&h, "CLOSED").await;

    // And again; this time one of the two probes fails (50% >= 50%), so it opens again.
    for _ in 0..4 {
        h.get("billing", "/status/502").await;
    }
    wait_for(&h, "OPEN").await;
    wait_for(&h, "HALF_OPEN").await;
    assert_eq!(h.get("billing", "/").await.status, 200);
    assert_eq!(h.get("billing", "/status/503").await.status, 503);
    wait_for(&h, "OPEN").await;

    assert_eq!(transitions(&h, "closed", "open").await, 2.0);
    assert_eq!(transitions(&h, "open", "half_open").await, 2.0);
    assert_eq!(transitions(&h, "half_open", "closed").await, 1.0);
    assert_eq!(transitions(&h, "half_open", "open").await, 1.0);
    assert_eq!(
        h.metric(
            "trellis_circuit_breaker_rejected_total",
            &[("cluster", CLUSTER)]
        )
        .await,
        5.0
    );
}

#[tokio::test]
async fn slow_calls_open_the_breaker() {
    let (up, h) = billing(
        "{slowCallRateThreshold: 50, slowCallDurationThreshold: 50ms, \
         slidingWindow: {type: COUNT, size: 4}, minimumCalls: 4, waitInOpen: 10s}",
    )
    .await;
    for _ in 0..4 {
        // Successful but slow.
        assert_eq!(h.get("billing", "/sleep/80").await.status, 200);
    }
    wait_for(&h, "OPEN").await;
    let hits = up.hits();
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "circuit-open");
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn client_errors_never_open_the_breaker() {
    let (_up, h) = billing(
        "{failureRateThreshold: 10, slidingWindow: {type: TIME, size: 10}, minimumCalls: 2}",
    )
    .await;
    for code in [400, 404, 409, 429].repeat(5) {
        assert_eq!(
            h.get("billing", &format!("/status/{code}")).await.status,
            code
        );
    }
    assert_eq!(h.breaker_state(CLUSTER).await, "CLOSED");
    let c = h.cluster(CLUSTER).await;
    assert_eq!(c["circuitBreaker"]["calls"], 20);
    assert_eq!(c["circuitBreaker"]["failureRate"], 0.0);
}

#[tokio::test]
async fn an_operator_forces_the_breaker_open_disabled_and_closed() {
    let (up, h) = billing("{slidingWindow: {type: COUNT, size: 2}, minimumCalls: 2}").await;
    let cluster = "billing.rides%3A80";

    let r = h
        .post_admin(&format!("/breaker?cluster={cluster}&state=FORCED_OPEN"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(&h, "FORCED_OPEN").await;
    let hits = up.hits();
    let r = h.get("billing", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.header("trellis-error")),
        (503, "circuit-open")
    );
    assert!(r.body.contains("FORCED_OPEN"), "{}", r.body);
    assert_eq!(up.hits(), hits);

    h.post_admin(&format!("/breaker?cluster={cluster}&state=DISABLED"))
        .await;
    wait_for(&h, "DISABLED").await;
    for _ in 0..6 {
        assert_eq!(h.get("billing", "/status/500").await.status, 500);
    }
    assert_eq!(h.breaker_state(CLUSTER).await, "DISABLED", "never opens");

    h.post_admin(&format!("/breaker?cluster={cluster}&state=closed"))
        .await;
    wait_for(&h, "CLOSED").await;
    for _ in 0..2 {
        h.get("billing", "/status/500").await;
    }
    wait_for(&h, "OPEN").await;

    // Mistakes are answered with what to do instead.
    let bad = h
        .post_admin(&format!("/breaker?cluster={cluster}&state=OPEN"))
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("CLOSED|DISABLED|FORCED_OPEN"),
        "{}",
        bad.body
    );
    let unknown = h.post_admin("/breaker?cluster=nope&state=CLOSED").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(h.admin("/breaker").await.status, 405);
}

#[tokio::test]
async fn a_cluster_without_a_breaker_cannot_be_forced_and_has_no_state_series() {
    let up = Upstream::start("billing-0").await;
    let mesh = service("billing", "") + &workload("billing", &up);
    let h = start(&mesh, "").await;
    let r = h
        .post_admin("/breaker?cluster=billing.rides:80&state=FORCED_OPEN")
        .await;
    assert_eq!(r.status, 409);
    assert!(r.body.contains("spec.circuitBreaker"), "{}", r.body);
    let metrics = h.admin("/metrics").await.body;
    assert!(
        !metrics.contains("trellis_circuit_breaker_state{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn breaker_state_survives_an_unrelated_config_change_and_resets_on_its_own() {
    let (up, h) =
        billing("{slidingWindow: {type: COUNT, size: 2}, minimumCalls: 2, waitInOpen: 60s}").await;
    for _ in 0..2 {
        h.get("billing", "/status/500").await;
    }
    wait_for(&h, "OPEN").await;
    // A new rate limit leaves the breaker as it was...
    let v = h.version().await;
    h.write_mesh(
        &(service("billing", "")
            + &workload("billing", &up)
            + &policy(
                "billing",
                "  circuitBreaker: {slidingWindow: {type: COUNT, size: 2}, minimumCalls: 2, waitInOpen: 60s}\n  \
                 rateLimit: {requestsPerSecond: 1000}",
            )),
    );
    let v = h.wait_for_new_version(&v).await;
    assert_eq!(h.breaker_state(CLUSTER).await, "OPEN");
    // ...while new breaker settings start it afresh.
    h.write_mesh(
        &(service("billing", "")
            + &workload("billing", &up)
            + &policy(
                "billing",
                "  circuitBreaker: {slidingWindow: {type: COUNT, size: 3}, minimumCalls: 3, waitInOpen: 60s}",
            )),
    );
    h.wait_for_new_version(&v).await;
    wait_for(&h, "CLOSED").await;
    assert_eq!(h.get("billing", "/").await.status, 200);
}
