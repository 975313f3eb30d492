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

async fn proxy(cp: &Cp, dir: &Path, name: &str, labels: &str) -> trellis_proxy::Running {
    let boot = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: {name}, namespace: rides, labels: {labels}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {{http: 1}}}}\ncontrolPlane: {{address: {}, caBundle: {}}}\n",
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
    std::fs::write(&mesh, MESH).unwrap();
    let state = dir.path().join("state");
    let running = trellis_control::start(trellis_control::Options {
        registration_grace: Duration::from_millis(300),
        ..trellis_control::Options::local(mesh.clone(), state.clone())
    })
    .await
    .unwrap();
    let cp = Cp {
        url: format!("https://{}", running.grpc),
        ca: state.join("ca.pem"),
    };
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
