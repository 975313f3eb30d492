//! `trellis-proxy --kubernetes` as the injector sets it up: the bootstrap from environment
//! variables and downward-API files (written here the way the kubelet writes them), the CA
//! inline, certified by the control plane (a process, with a join token standing in for the
//! projected service-account token: the proof differs, the proxy's path is the same), serving
//! mTLS under STRICT, and replaying kubelet's rewritten probes on its admin port.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use support::*;
use testkit::upstream::Mode;

const MESH: &str = "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\n\
    spec: {trustDomain: trellis.local, mtls: {mode: STRICT}}\n---\n\
    apiVersion: v1\nkind: Service\nmetadata: {name: trip, namespace: rides}\n\
    spec: {selector: {app: trip}, ports: [{name: http, port: 80, targetPort: http}]}\n";

/// Quotes like Go's `%q`, which is how the kubelet writes downward-API label files.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Pod {
    proxy: trellis_proxy::Running,
    app: Upstream,
    _dir: tempfile::TempDir,
}

/// The trip pod: its app, and its proxy started from the injected environment. `admin` is
/// where the admin listener binds (`TRELLIS_ADMIN_ADDRESS`).
async fn trip_pod(cp: &ControlPlane, admin: SocketAddr) -> Pod {
    trip_pod_with(cp, admin, serde_json::json!({})).await
}

/// The trip pod with `extra` probes (`{"<container>/<kind>": {...}}`) in its annotation.
async fn trip_pod_with(cp: &ControlPlane, admin: SocketAddr, extra: serde_json::Value) -> Pod {
    trip_pod_at(cp, admin, extra, IpAddr::from([127, 0, 0, 1])).await
}

/// The trip pod with probes `extra`, on pod IP `pod_ip`.
async fn trip_pod_at(
    cp: &ControlPlane,
    admin: SocketAddr,
    extra: serde_json::Value,
    pod_ip: IpAddr,
) -> Pod {
    let app = Upstream::start("trip").await;
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("podinfo");
    std::fs::create_dir(&info).unwrap();
    std::fs::write(
        info.join("labels"),
        "app=\"trip\"\npod-template-hash=\"7d9f8\"\nversion=\"v1\"\n",
    )
    .unwrap();
    // What the injector's probe rewrite records (control-plane/src/inject/probes.rs).
    let mut probes = serde_json::json!({
        "trip/readiness": {"port": app.addr.port(), "path": "/ready-check", "scheme": "HTTP",
                           "httpHeaders": [{"name": "x-probe", "value": "kubelet"}]},
        "trip/liveness": {"port": app.addr.port(), "path": "/status/204", "scheme": "HTTP", "httpHeaders": []},
        "trip/startup": {"port": 1, "path": "/", "scheme": "HTTP", "httpHeaders": []},
    });
    for (k, v) in extra.as_object().unwrap() {
        probes[k] = v.clone();
    }
    std::fs::write(
        info.join("annotations"),
        format!(
            "trellis.dev/app-probes={}\ntrellis.dev/injected=\"0.1.0\"\n",
            go_quote(&probes.to_string())
        ),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, cp.token("rides/trip", "1h")).unwrap();
    let env: BTreeMap<&str, String> = BTreeMap::from([
        ("TRELLIS_POD_NAME", "trip-7d9f8-abcde".to_string()),
        ("TRELLIS_POD_NAMESPACE", "rides".into()),
        ("TRELLIS_POD_IP", pod_ip.to_string()),
        ("TRELLIS_SERVICE_ACCOUNT", "trip".into()),
        ("TRELLIS_NODE_NAME", "node-a".into()),
        ("TRELLIS_CONTROL_PLANE", cp.url()),
        ("TRELLIS_TOKEN_FILE", token.display().to_string()),
        ("TRELLIS_POD_INFO_DIR", info.display().to_string()),
        ("TRELLIS_APP_PORTS", format!("http={}", app.addr.port())),
        (
            "TRELLIS_CA_BUNDLE",
            std::fs::read_to_string(cp.ca_bundle()).unwrap(),
        ),
        // Only so that the test can run many pods on one host; a pod uses the defaults.
        ("TRELLIS_OUTBOUND_ADDRESS", "127.0.0.1:0".into()),
        ("TRELLIS_INBOUND_ADDRESS", "127.0.0.1:0".into()),
        ("TRELLIS_ADMIN_ADDRESS", admin.to_string()),
    ]);
    let boot = trellis_proxy::bootstrap_from_env(|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = trellis_proxy::start(boot).await.expect("the proxy starts");
    let admin = loopback(proxy.admin);
    eventually(
        Duration::from_secs(15),
        "the injected proxy to be ready",
        || async move { (get(admin, "/ready").await?.0 == 200).then_some(()) },
    )
    .await;
    Pod {
        proxy,
        app,
        _dir: dir,
    }
}

/// The admin address to call: a wildcard bind is reached on loopback.
fn loopback(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
    } else {
        a
    }
}

async fn start_cp() -> (ControlPlane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, MESH).unwrap();
    (ControlPlane::start_with_grace(&path, "300ms").await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_environment_certifies_and_serves_mtls_under_strict() {
    let (cp, _dir) = start_cp().await;
    let pod = trip_pod(&cp, "127.0.0.1:0".parse().unwrap()).await;
    let passenger = proxy_as(&cp, "passenger-0", "passenger", "{app: passenger}", 1, "").await;

    // The identity came from the pod's service account, the labels from the podinfo file.
    let (_, dump) = get(pod.proxy.admin, "/config_dump").await.unwrap();
    assert!(
        dump.contains("spiffe://trellis.local/ns/rides/sa/trip"),
        "{dump}"
    );
    // The passenger's proxy sees trip's endpoint at the advertised pod IP, with an identity.
    let out = passenger.admin;
    let inbound_port = pod.proxy.inbound.port();
    eventually(
        Duration::from_secs(15),
        "passenger to see trip's mTLS endpoint",
        || async move {
            let (_, dump) = get(out, "/config_dump").await?;
            (dump.contains(&format!("127.0.0.1:{inbound_port}"))
                && dump.contains("spiffe://trellis.local/ns/rides/sa/trip"))
            .then_some(())
        },
    )
    .await;
    let before = pod.app.hits();
    let (status, _, body) = request(passenger.outbound, "trip", "/hello")
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://trellis.local/ns/rides/sa/passenger"),
        "the app sees the caller's mesh identity, so the hop was mTLS: {body}"
    );
    assert_eq!(pod.app.hits(), before + 1);
    // STRICT: plaintext straight to the pod's inbound is refused; the app never sees it.
    let direct = request(pod.proxy.inbound, "trip.rides", "/direct").await;
    assert!(
        direct.as_ref().is_none_or(|(s, _, _)| *s != 200),
        "plaintext reached the app under STRICT: {direct:?}"
    );
    assert_eq!(pod.app.hits(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_probes_replay_the_apps_own_probes() {
    let (cp, _dir) = start_cp().await;
    let pod = trip_pod(&cp, "127.0.0.1:0".parse().unwrap()).await;
    let admin = pod.proxy.admin;

    let r = request(admin, "localhost", "/app-health/trip/readiness")
        .await
        .unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    let r = request(admin, "localhost", "/app-health/trip/liveness")
        .await
        .unwrap();
    assert_eq!(r.0, 204, "the app's own status goes back to kubelet: {r:?}");
    // The app turns unhealthy: the probe through the proxy says so.
    pod.app.set_mode(Mode::Status(503));
    let r = request(admin, "localhost", "/app-health/trip/readiness")
        .await
        .unwrap();
    assert_eq!(r.0, 503, "{r:?}");
    pod.app.set_mode(Mode::Normal);
    let r = request(admin, "localhost", "/app-health/trip/readiness")
        .await
        .unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    // Nothing listens on the startup probe's port: a failure kubelet counts, with the reason.
    let r = request(admin, "localhost", "/app-health/trip/startup")
        .await
        .unwrap();
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.2.contains("cannot connect"), "{r:?}");
    // A probe the annotation does not have is a 404 that lists the ones it has.
    let r = request(admin, "localhost", "/app-health/other/readiness")
        .await
        .unwrap();
    assert_eq!(r.0, 404, "{r:?}");
    assert!(r.2.contains("trip/readiness"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_grpc_probe_runs_the_apps_grpc_health_check() {
    // A real gRPC health service (tonic-health, the grpc.health.v1 implementation tonic
    // ships), as a gRPC app would run it for kubelet's grpc probes.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("rides.v1.Trip", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (cp, _dir) = start_cp().await;
    let probes = serde_json::json!({
        "grpc/readiness": {"port": port, "scheme": "GRPC", "service": "rides.v1.Trip"},
        "grpc/liveness": {"port": port, "scheme": "GRPC", "service": ""},
        "grpc/startup": {"port": port, "scheme": "GRPC", "service": "rides.v1.Nothing"},
    });
    let pod = trip_pod_with(&cp, "127.0.0.1:0".parse().unwrap(), probes).await;
    let probe = |kind: &'static str| {
        let admin = pod.proxy.admin;
        async move {
            request(admin, "localhost", &format!("/app-health/grpc/{kind}"))
                .await
                .unwrap()
        }
    };
    // SERVING, for the named service and for the whole server: kubelet's pass.
    assert_eq!(probe("readiness").await.0, 200);
    assert_eq!(probe("liveness").await.0, 200);
    // NOT_SERVING fails, and says so.
    reporter
        .set_service_status("rides.v1.Trip", tonic_health::ServingStatus::NotServing)
        .await;
    let r = probe("readiness").await;
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.2.contains("NOT_SERVING"), "{r:?}");
    // A service the app does not know: the health service's NotFound, as a failure.
    let r = probe("startup").await;
    assert_eq!(r.0, 503, "{r:?}");
    assert!(r.2.contains("NotFound"), "{r:?}");
    // The app gone: a failure with the reason.
    server.abort();
    let _ = server.await;
    let r = probe("liveness").await;
    assert_eq!(r.0, 503, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_reaches_an_app_that_binds_only_the_pod_ip() {
    let Some(ip) = testkit::non_loopback_ip() else {
        eprintln!("skipped: this machine has no non-loopback address to stand in for a pod IP");
        return;
    };
    // An app listening on the pod IP alone: loopback refuses.
    let app = Upstream::start_on(&SocketAddr::new(ip, 0).to_string(), "pod-ip-app").await;
    let port = app.addr.port();
    assert!(
        std::net::TcpStream::connect((IpAddr::from([127, 0, 0, 1]), port)).is_err(),
        "the app must not be reachable on loopback for this test to mean anything"
    );
    let (cp, _dir) = start_cp().await;
    let probes = serde_json::json!({
        "ip-app/readiness": {"port": port, "path": "/", "scheme": "HTTP", "httpHeaders": []},
    });
    let pod = trip_pod_at(&cp, "127.0.0.1:0".parse().unwrap(), probes, ip).await;
    let before = app.hits();
    let r = request(pod.proxy.admin, "localhost", "/app-health/ip-app/readiness")
        .await
        .unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        app.hits(),
        before + 1,
        "the probe reached the app on the pod IP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_outside_the_pod_the_admin_port_answers_probes_and_metrics_only() {
    let Some(ip) = testkit::non_loopback_ip() else {
        eprintln!("skipped: this machine has no non-loopback address to call from");
        return;
    };
    let (cp, _dir) = start_cp().await;
    // The default in a pod: every address, since kubelet probes the pod IP.
    let pod = trip_pod(&cp, "0.0.0.0:0".parse().unwrap()).await;
    let remote = SocketAddr::new(ip, pod.proxy.admin.port());
    for path in ["/ready", "/live", "/metrics", "/app-health/trip/readiness"] {
        let r = request(remote, "pod", path).await.unwrap();
        assert_eq!(r.0, 200, "{path} from {ip}: {r:?}");
    }
    for path in ["/config_dump", "/clusters", "/drain"] {
        let r = request(remote, "pod", path).await.unwrap();
        assert_eq!(r.0, 403, "{path} from {ip}: {r:?}");
        assert!(r.2.contains("kubectl port-forward"), "{r:?}");
    }
    // From inside the pod (loopback) the rest still answers.
    let r = request(loopback(pod.proxy.admin), "pod", "/config_dump")
        .await
        .unwrap();
    assert_eq!(r.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_probe_is_replayed_over_tls_without_verification_as_kubelet_does() {
    // The app: openssl's own HTTPS server (`-www` answers GET with 200), with a certificate
    // from a CA nobody trusts, for a name that is not 127.0.0.1 — kubelet would not care.
    let have_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_openssl {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "openssl is missing but TRELLIS_REQUIRE_SYSTEM_TESTS is set"
        );
        println!("skipped: openssl is not installed (Debian: apt-get install openssl)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let leaf = testkit::pki::TestCa::new("app's own CA").server(&["app.internal"]);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let port = free_addr().port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("openssl is installed");
    eventually(
        Duration::from_secs(10),
        "openssl s_server to listen",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    let (cp, _dir) = start_cp().await;
    let probes = serde_json::json!({
        "tls-app/readiness": {"port": port, "path": "/", "scheme": "HTTPS", "httpHeaders": []},
    });
    let pod = trip_pod_with(&cp, "127.0.0.1:0".parse().unwrap(), probes).await;
    let r = request(
        pod.proxy.admin,
        "localhost",
        "/app-health/tls-app/readiness",
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
    let r = r.unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    // With the server gone the same probe fails, and says why.
    let r = request(
        pod.proxy.admin,
        "localhost",
        "/app-health/tls-app/readiness",
    )
    .await
    .unwrap();
    assert_eq!(r.0, 503, "{r:?}");
}
