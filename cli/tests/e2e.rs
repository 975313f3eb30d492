//! The `trellis` binary against a live control plane (in-process, real gRPC) and live
//! proxies: what an operator types, and what they see.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::eventually;

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: billing, namespace: rides}\n\
spec:\n  selector: {app: billing}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: billing-v1, namespace: rides}\n\
spec:\n  selector: {app: billing, version: v1}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: billing-v2, namespace: rides}\n\
spec:\n  selector: {app: billing, version: v2}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: billing, namespace: rides}\n\
spec:\n  parentRefs: [{name: billing}]\n  rules:\n  - backendRefs: [{name: billing-v1, port: 80, weight: 90}, {name: billing-v2, port: 80, weight: 10}]\n";

/// A control plane's address and the mesh CA bundle its certificate chains to.
#[derive(Clone)]
struct Cp {
    url: String,
    ca: std::path::PathBuf,
}

fn trellis(cp: &Cp, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["--control-plane", &cp.url])
        .arg("--ca-bundle")
        .arg(&cp.ca)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An in-process control plane serving `mesh` (written into `dir`), with a short
/// registration grace and a summary every second.
async fn control_plane(dir: &Path, mesh: &str) -> (trellis_control::Running, Cp) {
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, mesh).unwrap();
    let state = dir.join("state");
    let running = trellis_control::start(trellis_control::Options {
        registration_grace: Duration::from_millis(300),
        summary_interval: Duration::from_secs(1),
        ..trellis_control::Options::local(path, state.clone())
    })
    .await
    .unwrap();
    let cp = Cp {
        url: format!("https://{}", running.grpc),
        ca: state.join("ca.pem"),
    };
    (running, cp)
}

async fn proxy(cp: &Cp, dir: &Path, name: &str, labels: &str) -> trellis_proxy::Running {
    proxy_of(cp, dir, name, labels, 1).await
}

/// A proxy whose app listens on `app_port`.
async fn proxy_of(
    cp: &Cp,
    dir: &Path,
    name: &str,
    labels: &str,
    app_port: u16,
) -> trellis_proxy::Running {
    let boot = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: {name}, namespace: rides, labels: {labels}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {{http: {app_port}}}}}\ncontrolPlane: {{address: {}, caBundle: {}}}\n",
            cp.url,
            cp.ca.display()
        ),
    )
    .unwrap();
    trellis_proxy::start(trellis_proxy::Bootstrap::load(&boot).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_routes_proxy_config_and_shift_as_an_operator_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    let (_running, cp) = control_plane(dir.path(), MESH).await;
    let _trip = proxy(&cp, dir.path(), "trip-0", "{app: trip}").await;
    let _billing = proxy(
        &cp,
        dir.path(),
        "billing-v1-0",
        "{app: billing, version: v1}",
    )
    .await;

    // status: both proxies, each at its latest version.
    let out = eventually(Duration::from_secs(15), "two proxies at (latest)", || {
        let cp = cp.clone();
        async move {
            let (code, out, _) = tokio::task::spawn_blocking(move || trellis(&cp, &["status"]))
                .await
                .unwrap();
            (code == 0 && out.matches("(latest)").count() == 2).then_some(out)
        }
    })
    .await;
    assert!(
        out.contains("rides/trip-0") && out.contains("rides/billing-v1-0"),
        "{out}"
    );
    assert!(out.contains("OK"), "{out}");

    // routes: the split, with its weights.
    let (code, out, err) = trellis(&cp, &["routes", "billing.rides"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("=90") && out.contains("=10") && out.contains("rides/billing"),
        "{out}"
    );

    // proxy-config: the snapshot as JSON, with the billing Service in it.
    let (code, out, err) = trellis(&cp, &["-o", "json", "proxy-config", "rides/trip-0"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["snapshot"]["services"]["rides/billing"].is_object(),
        "{out}"
    );

    // shift: weights written back, every proxy ACKed, time reported.
    let (code, out, err) = trellis(
        &cp,
        &["shift", "rides/billing", "billing-v1=50", "billing-v2=50"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("2 proxies updated") && out.contains("ACKed in"),
        "{out}"
    );
    let written = std::fs::read_to_string(&mesh).unwrap();
    assert_eq!(written.matches("weight: 50").count(), 2, "{written}");
    let (_, out, _) = trellis(&cp, &["routes", "billing"]);
    assert!(out.matches("=50").count() == 2, "{out}");

    // Mistakes get a clear error and a non-zero exit.
    let (code, _, err) = trellis(&cp, &["shift", "rides/billing", "billing-v9=5"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("billing-v9 is not a backend of rides/billing"),
        "{err}"
    );
    let (code, _, err) = trellis(&cp, &["proxy-config", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no proxy named"), "{err}");
    let nobody = Cp {
        url: "https://127.0.0.1:1".into(),
        ..cp.clone()
    };
    let (code, _, err) = trellis(&nobody, &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("is trellis-control running?"), "{err}");
}

/// `trellis stat -o json` against the caller's own `/metrics` over the same requests: the
/// counts are equal, and so is the p99 that `histogram_quantile` would compute from the
/// buckets. `trellis top -n 1` and `trellis dashboard --no-open` show the same mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_json_agrees_with_the_callers_metrics_and_top_and_dashboard_answer() {
    let dir = tempfile::tempdir().unwrap();
    let app = testkit::Upstream::start("billing-v1").await;
    // Only billing-v1, at 100: every call reaches the app.
    let only_v1 = MESH
        .replace("weight: 90", "weight: 100")
        .replace("weight: 10}", "weight: 0}");
    let (running, cp) = control_plane(dir.path(), &only_v1).await;
    let trip = proxy(&cp, dir.path(), "trip-0", "{app: trip}").await;
    let labels = "{app: billing, version: v1}";
    let _billing = proxy_of(&cp, dir.path(), "billing-v1-0", labels, app.addr.port()).await;
    let get = |path: &'static str| {
        let outbound = trip.outbound;
        async move {
            let mut s = tokio::net::TcpStream::connect(outbound).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!("GET {path} HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            String::from_utf8_lossy(&out)
                .split(' ')
                .nth(1)?
                .parse::<u16>()
                .ok()
        }
    };
    eventually(
        Duration::from_secs(15),
        "a 200 through trip's sidecar",
        || async { (get("/").await == Some(200)).then_some(()) },
    )
    .await;
    for i in 0..40 {
        let path = match i % 4 {
            0 => "/status/500",
            1 => "/sleep/20",
            _ => "/",
        };
        assert!(get(path).await.is_some());
    }
    // trip's own count of its calls to billing, and its histogram.
    let metrics = {
        let mut s = tokio::net::TcpStream::connect(trip.admin).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ours = |l: &&str| {
        l.contains("direction=\"outbound\"") && l.contains("destination_service=\"billing.rides\"")
    };
    let value = |l: &str| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    let lines: Vec<&str> = metrics.lines().filter(ours).collect();
    let total: f64 = lines
        .iter()
        .filter(|l| l.starts_with("trellis_requests_total{"))
        .map(|l| value(l))
        .sum();
    let failed: f64 = lines
        .iter()
        .filter(|l| l.starts_with("trellis_requests_total{") && l.contains("response_code=\"5"))
        .map(|l| value(l))
        .sum();
    // histogram_quantile(0.99, ...) over the cumulative buckets, summed across codes.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in lines
        .iter()
        .filter(|l| l.starts_with("trellis_request_duration_seconds_bucket{"))
    {
        let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += value(l),
            None => buckets.push((le, value(l))),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank = 0.99 * total;
    let mut p99 = 0.0;
    let mut below = (0.0, 0.0);
    for &(le, n) in &buckets {
        if n >= rank {
            p99 = below.0 + (le - below.0) * (rank - below.1) / (n - below.1);
            break;
        }
        below = (le, n);
    }
    let json = eventually(
        Duration::from_secs(15),
        "trellis stat to count every call",
        || {
            let cp = cp.clone();
            async move {
                let (code, out, _) = tokio::task::spawn_blocking(move || {
                    trellis(&cp, &["-o", "json", "stat", "billing", "--window", "1m"])
                })
                .await
                .unwrap();
                let v: serde_json::Value = serde_json::from_str(&out).ok()?;
                (code == 0 && v["services"][0]["requests"].as_f64() == Some(total)).then_some(v)
            }
        },
    )
    .await;
    let s = &json["services"][0];
    assert_eq!(s["service"], "billing.rides");
    assert_eq!(s["successes"].as_f64(), Some(total - failed));
    let got = s["latencyMs"]["p99"].as_f64().unwrap() / 1000.0;
    assert!(
        (got - p99).abs() < 1e-9,
        "p99 {got}s from stat, {p99}s from /metrics"
    );

    let (code, out, err) = trellis(&cp, &["top", "-n", "1"]);
    assert_eq!(code, 0, "{err}");
    // No Service selects trip-0, so its calls come from its workload.
    assert!(
        out.contains("BUSIEST ROUTES") && out.contains("trip-0.rides"),
        "{out}"
    );
    let (code, out, err) = trellis(&cp, &["dashboard", "--no-open"]);
    assert_eq!(code, 0, "{err}");
    let dashboard = running.dashboard.expect("the dashboard is on");
    assert_eq!(out.trim(), format!("http://{dashboard}/"));
}
