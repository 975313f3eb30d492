//! End to end: trellis-control as a process, proxies that register themselves, and traffic
//! between them while the config changes and the control plane dies and comes back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use trellis_proto::v1::ShiftRequest;

// Fields drop in order: the control plane goes before the folder holding its config.
struct Mesh {
    cp: ControlPlane,
    trip: trellis_proxy::Running,
    _v1: trellis_proxy::Running,
    v2: trellis_proxy::Running,
    _apps: (Upstream, Upstream, Upstream),
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// trip-0 calls billing; billing-v1-0 and billing-v2-0 are proxies in front of real apps.
async fn mesh(w1: u32, w2: u32) -> Mesh {
    mesh_with_grace(w1, w2, "500ms").await
}

async fn mesh_with_grace(w1: u32, w2: u32, grace: &'static str) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, billing_mesh(w1, w2)).unwrap();
    let cp = ControlPlane::start_with_grace(&path, grace).await;
    let (trip_app, v1_app, v2_app) = (
        Upstream::start("trip").await,
        Upstream::start("billing-v1").await,
        Upstream::start("billing-v2").await,
    );
    let trip = proxy(&cp, "trip-0", "{app: trip}", trip_app.addr.port()).await;
    let v1 = proxy(
        &cp,
        "billing-v1-0",
        "{app: billing, version: v1}",
        v1_app.addr.port(),
    )
    .await;
    let v2 = proxy(
        &cp,
        "billing-v2-0",
        "{app: billing, version: v2}",
        v2_app.addr.port(),
    )
    .await;
    cp.wait_converged(3).await;
    Mesh {
        cp,
        trip,
        _v1: v1,
        v2,
        _apps: (trip_app, v1_app, v2_app),
        path,
        _dir: dir,
    }
}

async fn who(m: &Mesh) -> String {
    let (status, upstream, body) = request(m.trip.outbound, "billing", "/")
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{body}");
    upstream
}

/// Waits until every request from trip reaches `want`.
async fn wait_for_upstream(m: &Mesh, want: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("traffic to move to {want}"),
        || async {
            for _ in 0..10 {
                if who(m).await != want {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_change_moves_traffic_and_every_proxy_acks() {
    let m = mesh(100, 0).await;
    wait_for_upstream(&m, "billing-v1").await;
    let before = m.cp.status().await;
    write_atomically(&m.path, &billing_mesh(0, 100));
    wait_for_upstream(&m, "billing-v2").await;
    let after = m.cp.wait_converged(3).await;
    let trip = |s: &trellis_proto::v1::StatusResponse| {
        s.proxies
            .iter()
            .find(|p| p.workload == "trip-0")
            .unwrap()
            .acked_version
            .clone()
    };
    assert_ne!(trip(&before), trip(&after), "trip ACKed a new version");
    // The request went trip's sidecar -> billing-v2's sidecar -> the app, and billing-v2
    // labels it with who trip proved to be over mTLS: namespace and service account.
    let inbound = requests_line(&m.v2, "inbound");
    assert!(
        inbound.contains("source_namespace=\"rides\"")
            && inbound.contains("source_identity=\"trip-0\""),
        "{inbound}"
    );
    let outbound = requests_line(&m.trip, "outbound");
    assert!(
        outbound.contains("source_workload=\"trip-0\"")
            && outbound.contains("source_identity=\"trip-0\""),
        "{outbound}"
    );
}

/// The first `trellis_requests_total` line of `direction` in `proxy`'s metrics.
fn requests_line(proxy: &trellis_proxy::Running, direction: &str) -> String {
    let text = proxy.metrics_text();
    let prefix = format!("trellis_requests_total{{direction=\"{direction}\"");
    (text.lines().find(|l| l.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no {direction} request counted:\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_control_plane_fails_nothing_and_proxies_reconverge() {
    // The grace (and warm-up) must cover the proxies' reconnect backoff, as in production.
    let mut m = mesh_with_grace(100, 0, "4s").await;
    let m_trip = m.trip.outbound;
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loop_task = {
        let (failures, total, stop) = (failures.clone(), total.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match request(m_trip, "billing", "/").await {
                    Some((200, _, _)) => {}
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    m.cp.kill();
    // The proxies keep serving their last good snapshot while the control plane is gone.
    let seen = total.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(10),
        "100 requests with the control plane down",
        || async { (total.load(Ordering::Relaxed) >= seen + 100).then_some(()) },
    )
    .await;
    m.cp.restart().await;
    let s = m.cp.wait_converged(3).await;
    assert!(s.proxies.iter().all(|p| p.connected));
    // The converged world works: a change after the restart reaches the proxies.
    write_atomically(&m.path, &billing_mesh(0, 100));
    wait_for_upstream(&m, "billing-v2").await;
    stop.store(true, Ordering::Relaxed);
    loop_task.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests out of {}",
        total.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restarted_during_a_change_sends_each_proxy_only_the_difference() {
    let mut m = mesh_with_grace(100, 0, "4s").await;
    wait_for_upstream(&m, "billing-v1").await;
    m.cp.kill();
    // The change lands while the control plane is down: the restarted one is a generation
    // ahead of every proxy.
    write_atomically(&m.path, &billing_mesh(0, 100));
    m.cp.restart().await;
    wait_for_upstream(&m, "billing-v2").await;
    m.cp.wait_converged(3).await;
    // Each proxy named the resources it held and got the delta from them, which it applied
    // and ACKed; none was sent its whole snapshot again.
    let resumes = |result: &str| format!("trellis_control_resumes_total{{result=\"{result}\"}}");
    assert_eq!(m.cp.metric(&resumes("delta")).await, 3.0);
    assert_eq!(m.cp.metric(&resumes("replace")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_refused_with_file_line_and_the_old_config_kept() {
    let m = mesh(0, 100).await;
    wait_for_upstream(&m, "billing-v2").await;
    let versions: Vec<String> =
        m.cp.status()
            .await
            .proxies
            .iter()
            .map(|p| p.acked_version.clone())
            .collect();
    write_atomically(
        &m.path,
        &billing_mesh(100, 0).replace("weight: 100", "weight: lots"),
    );
    let s = eventually(
        Duration::from_secs(10),
        "the refusal in trellis status",
        || async {
            let s = m.cp.status().await;
            (!s.config_errors.is_empty()).then_some(s)
        },
    )
    .await;
    let err = &s.config_errors[0];
    assert!(
        err.contains("mesh.yaml:29: spec.rules[0].backendRefs[0].weight:"),
        "{err}"
    );
    let now: Vec<String> = s.proxies.iter().map(|p| p.acked_version.clone()).collect();
    assert_eq!(versions, now, "no proxy got a new version");
    assert_eq!(who(&m).await, "billing-v2");
    assert_eq!(
        get(m.cp.http, "/ready").await.unwrap().0,
        200,
        "still serving the last valid config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_under_a_request_loop_moves_the_split_with_zero_failures() {
    let m = mesh(100, 0).await;
    let m_trip = m.trip.outbound;
    let failures = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loop_task = {
        let (failures, stop) = (failures.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if !matches!(request(m_trip, "billing", "/").await, Some((200, _, _))) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        })
    };
    let original = std::fs::read_to_string(&m.path).unwrap();
    let res =
        m.cp.admin()
            .await
            .shift(ShiftRequest {
                route: "rides/billing".into(),
                weights: [
                    ("billing-v1".to_string(), 0),
                    ("billing-v2".to_string(), 100),
                ]
                .into(),
                timeout_ms: 10_000,
            })
            .await
            .expect("shift")
            .into_inner();
    assert!(res.failures.is_empty(), "{:?}", res.failures);
    // Every proxy holds every Service's routes, so all three take the new version.
    assert_eq!(res.proxies_updated, 3);
    // Right after the shift returns, every request goes to v2: trip has ACKed.
    for _ in 0..20 {
        assert_eq!(who(&m).await, "billing-v2");
    }
    stop.store(true, Ordering::Relaxed);
    let n = loop_task.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests out of {n}"
    );
    // Only the HTTPRoute document changed; the others are byte-for-byte what they were.
    let written = std::fs::read_to_string(&m.path).unwrap();
    let head = &original[..original.find("# the canary split").unwrap()];
    assert!(written.starts_with(head), "{written}");
    assert!(
        written.contains("weight: 100") && written.contains("weight: 0"),
        "{written}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registered_proxy_joins_the_balancing_and_leaves_when_stopped() {
    let m = mesh(0, 100).await;
    wait_for_upstream(&m, "billing-v2").await;
    // A second v2 replica registers itself.
    let app = Upstream::start("billing-v2-b").await;
    let extra = proxy(
        &m.cp,
        "billing-v2-1",
        "{app: billing, version: v2}",
        app.addr.port(),
    )
    .await;
    m.cp.wait_converged(4).await;
    eventually(
        Duration::from_secs(10),
        "the new replica to get traffic",
        || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20 {
                seen.insert(who(&m).await);
            }
            (seen.contains("billing-v2-b") && seen.contains("billing-v2")).then_some(())
        },
    )
    .await;
    // Stop it: it drains, its stream ends, and after the grace period it is no endpoint.
    extra.drain();
    extra.wait().await;
    let hits = app.hits();
    m.cp.wait_converged(3).await;
    for _ in 0..20 {
        assert_eq!(who(&m).await, "billing-v2");
    }
    assert_eq!(app.hits(), hits, "the stopped replica got no more traffic");
}
