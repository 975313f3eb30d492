//! Outlier detection as a caller sees it: traffic leaves a failing endpoint, `/clusters`
//! says until when, the endpoint comes back, and a cluster with none left fails fast.

mod support;

use std::time::Duration;
use support::*;
use testkit::Mode;

const CLUSTER: &str = "billing.rides:80";

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back_after_its_time() {
    let (a, b, h) = pair("outlierDetection: {consecutive5xx: 3, interval: 10s, baseEjectionTime: 400ms, maxEjectionPercent: 50}").await;
    a.set_mode(Mode::Status(503));

    // Round robin alternates, so a's third failure in a row comes with the fifth request;
    // after that, everything goes to b.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(h.get("billing", "/").await.status.as_u16());
    }
    assert_eq!(a.hits(), 3, "a got three requests, then was ejected");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3);
    assert_eq!(b.hits(), 17);

    let c = h.cluster(CLUSTER).await;
    let ep_a = c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == a.addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(ep_a["health"], "ejected", "{c}");
    assert_eq!(ep_a["ejections"], 1);
    let until = ep_a["ejectedUntilUnixMs"].as_u64().expect("until when");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        until > now_ms && until <= now_ms + 400,
        "{until} vs now {now_ms}"
    );
    assert_eq!(
        h.metric("trellis_outlier_ejections_total", &[("cluster", CLUSTER)])
            .await,
        1.0
    );

    // Healed, it is back in rotation once the ejection ends.
    a.set_mode(Mode::Normal);
    eventually(Duration::from_secs(5), "a to be healthy again", || async {
        let c = h.cluster(CLUSTER).await;
        c["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["health"] == "healthy")
            .then_some(())
    })
    .await;
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    assert_eq!(a.hits() - before, 5);
}

#[tokio::test]
async fn with_every_endpoint_ejected_the_answer_is_a_fast_503() {
    let up = Upstream::start("billing-0").await;
    // maxEjectionPercent 10 of one endpoint is 0.1, yet one endpoint may always be ejected.
    let mesh = service("billing", "")
        + &workload("billing", &up)
        + &policy(
            "billing",
            "  outlierDetection: {consecutive5xx: 2, baseEjectionTime: 30s, maxEjectionPercent: 10}",
        );
    let h = start(&mesh, "").await;
    up.set_mode(Mode::Reset);
    for _ in 0..2 {
        let r = h.get("billing", "/").await;
        assert_eq!(r.header("trellis-error"), "upstream-reset");
    }
    let hits = up.hits();
    let r = h.get("billing", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("trellis-error"), "no-healthy-endpoints");
    assert!(
        r.body.contains("1 ejected by outlier detection"),
        "{}",
        r.body
    );
    assert_eq!(up.hits(), hits, "no request reaches an ejected endpoint");
}

#[tokio::test]
async fn max_ejection_percent_keeps_the_rest_in_service() {
    let ups = [
        Upstream::start("billing-a").await,
        Upstream::start("billing-b").await,
        Upstream::start("billing-c").await,
        Upstream::start("billing-d").await,
    ];
    let mut mesh = service("billing", "");
    for u in &ups {
        mesh += &workload("billing", u);
    }
    mesh += &policy(
        "billing",
        "  loadBalancer: {policy: ROUND_ROBIN}\n  \
         outlierDetection: {consecutive5xx: 1, baseEjectionTime: 30s, maxEjectionPercent: 50}",
    );
    let h = start(&mesh, "").await;
    for u in &ups {
        u.set_mode(Mode::Status(500));
    }
    for _ in 0..12 {
        assert_eq!(h.get("billing", "/").await.status, 500);
    }
    let c = h.cluster(CLUSTER).await;
    let ejected = c["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["health"] == "ejected")
        .count();
    assert_eq!(ejected, 2, "50% of 4: {c}");
}
