//! Hot reload and the admin port: a config swap under load fails nothing, a bad file is
//! refused with file:line while the old config keeps serving.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

fn mesh(v1: &Upstream, v2: &Upstream, w1: u32, w2: u32) -> String {
    [
        service("billing", ""),
        service("billing-v1", ""),
        service("billing-v2", ""),
        workload("billing-v1", v1),
        workload("billing-v2", v2),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: billing, namespace: rides}}\n\
             spec:\n  parentRefs: [{{name: billing}}]\n  rules:\n  - backendRefs: [{{name: billing-v1, port: 80, weight: {w1}}}, {{name: billing-v2, port: 80, weight: {w2}}}]\n"
        ),
    ]
    .concat()
}

#[tokio::test]
async fn reload_under_a_request_loop_fails_nothing_and_moves_traffic() {
    let v1 = Upstream::start("billing-v1").await;
    let v2 = Upstream::start("billing-v2").await;
    let h = Arc::new(start(&mesh(&v1, &v2, 100, 0), "").await);
    let v_before = h.version().await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (h, failures, done) = (h.clone(), failures.clone(), done.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                if h.get("billing", "/").await.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    // Flip the split back and forth while the loops run.
    let mut version = v_before.clone();
    for i in 0..6 {
        let (a, b) = if i % 2 == 0 { (0, 100) } else { (100, 0) };
        h.write_mesh(&mesh(&v1, &v2, a, b));
        version = h.wait_for_new_version(&version).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests out of {total}"
    );
    assert!(total > 50, "the loops ran ({total} requests)");
    // The last write sent everything to v1.
    assert_eq!(
        h.get("billing", "/").await.header("x-upstream"),
        "billing-v1"
    );
    let metrics = h.admin("/metrics").await.body;
    assert!(
        metrics.contains(&format!(
            "trellis_config_version_info{{version=\"{version}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_change_is_refused_and_the_old_config_keeps_serving() {
    let v1 = Upstream::start("billing-v1").await;
    let v2 = Upstream::start("billing-v2").await;
    let h = start(&mesh(&v1, &v2, 0, 100), "").await;
    let before = h.version().await;
    h.write_mesh(
        &mesh(&v1, &v2, 0, 100).replace("name: billing-v2, port: 80", "name: billing-v9, port: 80"),
    );
    let dump = eventually(
        Duration::from_secs(10),
        "the refusal to show in /config_dump",
        || async {
            let d: serde_json::Value =
                serde_json::from_str(&h.admin("/config_dump").await.body).unwrap();
            d["lastError"].is_object().then_some(d)
        },
    )
    .await;
    let err = dump["lastError"]["errors"][0].as_str().unwrap();
    assert!(
        err.contains("mesh.yaml:")
            && err.contains("backendRefs[1].name")
            && err.contains("billing-v9"),
        "{err}"
    );
    assert_eq!(
        dump["version"],
        before.as_str(),
        "the old version keeps serving"
    );
    assert_eq!(
        h.get("billing", "/").await.header("x-upstream"),
        "billing-v2"
    );
    let metrics = h.admin("/metrics").await.body;
    assert!(
        metrics.contains("trellis_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    // Fixing the file clears the error.
    h.write_mesh(&mesh(&v1, &v2, 100, 0));
    h.wait_for_new_version(&before).await;
    let d: serde_json::Value = serde_json::from_str(&h.admin("/config_dump").await.body).unwrap();
    assert!(d["lastError"].is_null());
    // Every load that was applied or refused was timed, and only those.
    let metrics = h.admin("/metrics").await.body;
    let value = |prefix: &str| sample(&metrics, prefix);
    let loads = value("trellis_config_reloads_total{result=\"applied\"}")
        + value("trellis_config_reloads_total{result=\"rejected\"}");
    assert!(
        loads >= 3.0,
        "the first load, the refusal and the fix: {metrics}"
    );
    assert_eq!(
        value("trellis_config_apply_duration_seconds_count "),
        loads,
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_endpoints_report_health_metrics_and_clusters() {
    let v1 = Upstream::start("billing-v1").await;
    let v2 = Upstream::start("billing-v2").await;
    let h = start(&mesh(&v1, &v2, 50, 50), "").await;
    assert_eq!(h.admin("/live").await.status, 200);
    let ready = h.admin("/ready").await;
    assert_eq!(ready.status, 200);
    for _ in 0..4 {
        assert_eq!(h.get("billing", "/").await.status, 200);
    }
    assert_eq!(h.get("nosuch", "/").await.status, 404);
    let m = h.admin("/metrics").await.body;
    let line = m
        .lines()
        .find(|l| l.starts_with("trellis_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("{m}"));
    for label in [
        "direction=\"outbound\"",
        "source_workload=\"trip-0\"",
        "source_namespace=\"rides\"",
        "destination_service=\"billing.rides\"",
        "route=\"rides/billing\"",
    ] {
        assert!(line.contains(label), "{label} in {line}");
    }
    assert!(line.ends_with(" 4"), "{line}");
    assert!(
        m.contains("trellis_request_duration_seconds_bucket{"),
        "histogram present"
    );
    assert!(m.contains("response_code=\"404\""));
    let clusters: serde_json::Value =
        serde_json::from_str(&h.admin("/clusters").await.body).unwrap();
    let names: Vec<&str> = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"billing-v1.rides:80"), "{names:?}");
    let ep = &clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "billing-v1.rides:80")
        .unwrap()["endpoints"][0];
    assert_eq!(ep["address"], v1.addr.to_string());
    assert_eq!(ep["health"], "healthy");
    // POST /drain flips readiness.
    let mut r = req(h.admin, "admin", "/drain");
    *r.method_mut() = http::Method::POST;
    assert_eq!(h.send(r).await.status, 202);
    assert_eq!(h.admin("/ready").await.status, 503);
}
