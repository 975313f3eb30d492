//! Golden metrics without Prometheus: proxies send summaries on their discovery streams, and
//! the control plane's `Stat` (what `trellis stat` prints) agrees with the proxies' own
//! `/metrics` over the same requests. And the dashboard's listener: what it serves, and the
//! requests it refuses (a DNS name in Host, a shift while read-only, a cross-origin shift, a
//! shift without the page's token).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_proto::v1::{StatRequest, StatResponse};

/// A caller (trip) and billing split 50/50 between two versions, over STRICT mTLS; the
/// calls to billing-v1 have a breaker that this test's failures do not open.
fn mesh() -> String {
    let mut m = billing_mesh(50, 50);
    m.push_str(
        "---\napiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n\
         spec: {mtls: {mode: STRICT}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: trip, namespace: rides}\n\
         spec:\n  selector: {app: trip}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: billing-v1, namespace: rides}\n\
         spec:\n  targetRef: {kind: Service, name: billing-v1}\n  circuitBreaker: {failureRateThreshold: 90, minimumCalls: 100}\n",
    );
    m
}

async fn stat(cp: &ControlPlane) -> StatResponse {
    let mut admin = cp.admin().await;
    let req = StatRequest {
        window_seconds: 300,
    };
    admin.stat(req).await.expect("Stat").into_inner()
}

/// The sum of the `trellis_requests_total` samples of trip's outbound calls to billing, and
/// of those answered below 500, and the cumulative histogram buckets, from `/metrics` text.
fn from_metrics(text: &str) -> (u64, u64, BTreeMap<String, u64>) {
    let (mut total, mut ok) = (0, 0);
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let ours = line.contains("direction=\"outbound\"")
            && line.contains("destination_service=\"billing.rides\"");
        if !ours {
            continue;
        }
        let value = || -> u64 { line.rsplit(' ').next().unwrap().parse().unwrap() };
        if line.starts_with("trellis_requests_total{") {
            let value = value();
            total += value;
            let code = line.split("response_code=\"").nth(1).unwrap();
            if !code.starts_with('5') {
                ok += value;
            }
        } else if line.starts_with("trellis_request_duration_seconds_bucket{") {
            let value = value();
            let le = line
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            *buckets.entry(le.to_string()).or_default() += value;
        }
    }
    (total, ok, buckets)
}

/// The Stat edges' per-bucket counts as Prometheus's cumulative `le` buckets.
fn cumulative(latency: &[u64]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut sum = 0;
    for (i, n) in latency.iter().enumerate() {
        sum += n;
        let le = match trellis_proto::LATENCY_BOUNDS.get(i) {
            Some(b) => format!("{b:?}"),
            None => "+Inf".to_string(),
        };
        out.insert(le, sum);
    }
    out
}

#[tokio::test]
async fn stat_agrees_with_the_callers_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    let (v1, v2) = (
        Upstream::start("billing-v1").await,
        Upstream::start("billing-v2").await,
    );
    std::fs::write(&path, mesh()).unwrap();
    let cp = ControlPlane::start_with_args(&path, "500ms", &["--summary-interval", "1s"]).await;
    let _b1 = proxy(
        &cp,
        "billing-v1-0",
        "{app: billing, version: v1}",
        v1.addr.port(),
    )
    .await;
    let _b2 = proxy(
        &cp,
        "billing-v2-0",
        "{app: billing, version: v2}",
        v2.addr.port(),
    )
    .await;
    let trip = proxy(&cp, "trip-0", "{app: trip}", 1).await;
    cp.wait_converged(3).await;
    eventually(
        Duration::from_secs(20),
        "a 200 from billing over mTLS",
        || async {
            let r = request(trip.outbound, "billing", "/").await?;
            (r.0 == 200).then_some(())
        },
    )
    .await;
    // Successes, server errors, a client error and slow answers, through both backends.
    for i in 0..60 {
        let path = match i % 6 {
            0 => "/status/503",
            1 => "/status/404",
            2 => "/sleep/30",
            _ => "/",
        };
        request(trip.outbound, "billing", path)
            .await
            .expect("an answer");
    }
    // Every request is in the summaries once trip has sent one after the last of them; then
    // the two agree exactly, bucket by bucket.
    let (total, ok, buckets) = from_metrics(&get(trip.admin, "/metrics").await.unwrap().1);
    assert!(total >= 61, "trip counted {total}");
    let s = eventually(
        Duration::from_secs(15),
        "the summaries caught up",
        || async {
            let s = stat(&cp).await;
            let got: u64 = s
                .edges
                .iter()
                .filter(|e| !e.inbound && e.destination == "billing.rides")
                .map(|e| e.requests)
                .sum();
            (got == total).then_some(s)
        },
    )
    .await;
    let edges: Vec<_> = (s.edges.iter())
        .filter(|e| !e.inbound && e.destination == "billing.rides")
        .collect();
    assert!(edges.iter().all(|e| e.source == "trip.rides"), "{edges:?}");
    let totals = trellis_proto::stat::Totals::of(edges.iter().copied());
    assert_eq!((totals.requests, totals.successes), (total, ok));
    assert_eq!(cumulative(&totals.latency), buckets, "the histograms agree");
    assert_eq!(totals.mtls, total, "every call went over mTLS");
    // Both backends took a share, each named by its cluster.
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert!(edges.iter().all(|e| e.requests > 5), "{edges:?}");
    // The callee's side: billing's proxies counted the same requests inbound, from trip's
    // identity (the service account trip-0), the failures included.
    eventually(
        Duration::from_secs(10),
        "billing's inbound counts",
        || async {
            let s = stat(&cp).await;
            let inbound: u64 = (s.edges.iter())
                .filter(|e| {
                    e.inbound && e.source == "rides/trip-0" && e.destination == "billing.rides"
                })
                .map(|e| e.requests)
                .sum();
            if inbound != total {
                eprintln!("inbound {inbound} of {total} so far");
            }
            (inbound == total).then_some(())
        },
    )
    .await;
    // trip's health: its Service, its certificate, and no cluster to report while every
    // breaker is closed.
    let trip_health = s.proxies.iter().find(|p| p.workload == "trip-0").unwrap();
    assert_eq!(trip_health.services, ["trip.rides"]);
    assert!(trip_health.certificate_expiry_unix > 0);
    assert!(
        trip_health.clusters.is_empty(),
        "{:?}",
        trip_health.clusters
    );
    // An operator forces the breaker of trip's cluster for billing-v1 open: the next
    // summary says so.
    let clusters = get(trip.admin, "/clusters").await.unwrap().1;
    let v: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let name = (v["clusters"].as_array().unwrap().iter())
        .filter_map(|c| c["name"].as_str())
        .find(|n| n.starts_with("billing-v1"))
        .unwrap()
        .to_string();
    let force = format!(
        "/breaker?cluster={}&state=FORCED_OPEN",
        name.replace(' ', "%20")
    );
    let (status, body) = post(trip.admin, &force).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(10),
        "the forced breaker in Stat",
        || async {
            let s = stat(&cp).await;
            let p = s.proxies.iter().find(|p| p.workload == "trip-0")?;
            let c = p.clusters.iter().find(|c| c.cluster == name)?;
            (c.breaker == "forced_open" && c.service == "billing-v1.rides").then_some(())
        },
    )
    .await;
    // The calls it refuses are errors trip's proxy made up, counted by their code. The
    // app's own 503s above are not: a proxy counts only the answers it made itself.
    for _ in 0..20 {
        request(trip.outbound, "billing", "/")
            .await
            .expect("an answer");
    }
    eventually(
        Duration::from_secs(10),
        "circuit-open in Stat's errors",
        || async {
            let s = stat(&cp).await;
            let codes: Vec<(&str, &str)> = (s.errors.iter())
                .map(|e| (e.destination.as_str(), e.code.as_str()))
                .collect();
            let open = s.errors.iter().find(|e| e.code == "circuit-open")?;
            assert_eq!(codes, [("billing.rides", "circuit-open")], "{codes:?}");
            (open.count > 0).then_some(())
        },
    )
    .await;
    assert!(cp.metric("trellis_control_summaries_total").await >= 3.0);
}

/// A POST with no body; the status and the body.
async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, _, body) = call(addr, &head).await;
    (status, body)
}

/// One HTTP/1.1 request to the dashboard with `headers`; the status, the `trellis-error`
/// header and the body.
async fn call(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (status, error) = status_and_header(&text, "trellis-error");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, error, body)
}

#[tokio::test]
async fn the_dashboard_serves_its_page_and_refuses_what_could_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh()).unwrap();
    let ro = ControlPlane::start(&path).await;
    let d = ro.dashboard;
    let get = |path: &str, host: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let host = d.to_string();
    let (status, _, page) = call(d, &get("/", &host)).await;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\">"), "{page}");
    let token = page
        .split("name=\"trellis-csrf\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32);
    // The page's weight: the page, its script and its style.
    let mut weight = page.len();
    for asset in ["/app.js", "/app.css"] {
        let (status, _, body) = call(d, &get(asset, &host)).await;
        assert_eq!(status, 200, "{asset}");
        weight += body.len();
    }
    assert!(weight < 300 * 1024, "{weight} bytes");
    let (status, _, state) = call(d, &get("/api/state?window=60", "localhost:1")).await;
    assert_eq!(
        status, 200,
        "localhost at another port (a port-forward) is taken"
    );
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let names: Vec<&str> = (v["services"].as_array().unwrap().iter())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "billing-v1.rides",
            "billing-v2.rides",
            "billing.rides",
            "trip.rides"
        ]
    );
    assert_eq!(v["routes"][0]["backends"].as_array().unwrap().len(), 2);

    // A DNS name pointed at the dashboard (rebinding) is refused, reads included.
    let (status, error, _) =
        call(d, &get("/api/state", &format!("evil.example:{}", d.port()))).await;
    assert_eq!((status, error.as_str()), (421, "dashboard-host"));

    // Read-only unless started with --dashboard-shift.
    let body = r#"{"route":"rides/billing","weights":{"billing-v1":0,"billing-v2":100}}"#;
    let post = |origin: &str, token: &str| {
        format!(
            "POST /api/shift HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nx-trellis-csrf: {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let own = format!("http://{host}");
    let (status, error, _) = call(d, &post(&own, &token)).await;
    assert_eq!((status, error.as_str()), (403, "dashboard-read-only"));

    let rw = ControlPlane::start_with_args(&path, "500ms", &["--dashboard-shift"]).await;
    let d = rw.dashboard;
    let host = d.to_string();
    let own = format!("http://{host}");
    let page = call(d, &get("/", &host)).await.2;
    let token = page
        .split("name=\"trellis-csrf\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    let post = |origin: &str, token: &str| {
        format!(
            "POST /api/shift HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nx-trellis-csrf: {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, error, _) = call(d, &post("http://evil.example", &token)).await;
    assert_eq!((status, error.as_str()), (403, "dashboard-origin"));
    let (status, error, _) = call(d, &post(&own, "not-the-token")).await;
    assert_eq!((status, error.as_str()), (403, "dashboard-csrf"));
    // The page's own request goes through the Admin API's shift, which writes the YAML.
    let (status, _, answer) = call(d, &post(&own, &token)).await;
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["file"].as_str(), Some(path.to_str().unwrap()), "{answer}");
    let written = trellis_config::load_dir_or_file(&path).expect("the shifted mesh loads");
    let route = &written.http_routes[0].object.spec.rules[0];
    let weights: Vec<(String, Option<u32>)> = (route.backend_refs.iter())
        .map(|b| (b.name.value.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("billing-v1".to_string(), Some(0)),
            ("billing-v2".to_string(), Some(100))
        ]
    );
}

/// Each replica holds its own proxies' summaries; one that names the other with `--peer`
/// answers `Stat` (and draws its dashboard) from both, and names a peer that does not answer.
#[tokio::test]
async fn a_replica_merges_its_peers_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, mesh()).unwrap();
    let app = Upstream::start("billing-v1").await;
    let fast = ["--summary-interval", "1s"];
    let b = ControlPlane::start_with_args(&path, "500ms", &fast).await;
    let peer = b.http.to_string();
    let a = ControlPlane::start_with_args(
        &path,
        "500ms",
        &[
            "--summary-interval",
            "1s",
            "--peer",
            &peer,
            "--peer",
            "127.0.0.1:1",
        ],
    )
    .await;
    // On each replica a caller and one billing instance, with a mesh certificate of b's CA
    // on b: the two replicas have CAs of their own here, and each proxy joins one.
    let _billing_a = proxy(
        &a,
        "billing-v1-0",
        "{app: billing, version: v1}",
        app.addr.port(),
    )
    .await;
    let _billing_b = proxy(
        &b,
        "billing-v2-0",
        "{app: billing, version: v2}",
        app.addr.port(),
    )
    .await;
    let trip_a = proxy(&a, "trip-0", "{app: trip}", 1).await;
    let trip_b = proxy(&b, "trip-1", "{app: trip}", 1).await;
    // Whatever the answers (half of each caller's calls go to a version its replica has no
    // endpoint of), every call is counted by its caller.
    for _ in 0..10 {
        request(trip_a.outbound, "billing", "/")
            .await
            .expect("an answer");
    }
    for _ in 0..7 {
        request(trip_b.outbound, "billing", "/")
            .await
            .expect("an answer");
    }
    let outbound = |s: &StatResponse, from: &str| -> u64 {
        (s.edges.iter())
            .filter(|e| !e.inbound && e.destination == "billing.rides" && e.source == from)
            .map(|e| e.requests)
            .sum()
    };
    let merged = eventually(
        Duration::from_secs(15),
        "both replicas' counts in a's Stat",
        || async {
            let s = stat(&a).await;
            (outbound(&s, "trip.rides") >= 17).then_some(s)
        },
    )
    .await;
    assert_eq!(outbound(&merged, "trip.rides"), 17, "{:?}", merged.edges);
    assert_eq!(merged.replicas, 2);
    let workloads: Vec<&str> = merged.proxies.iter().map(|p| p.workload.as_str()).collect();
    assert_eq!(
        workloads,
        ["billing-v1-0", "billing-v2-0", "trip-0", "trip-1"]
    );
    assert_eq!(merged.unreachable.len(), 1, "{:?}", merged.unreachable);
    assert!(
        merged.unreachable[0].starts_with("127.0.0.1:1"),
        "{:?}",
        merged.unreachable
    );
    // b names no peer: its own proxies only.
    let own = stat(&b).await;
    assert_eq!((own.replicas, outbound(&own, "trip.rides")), (1, 7));
}
