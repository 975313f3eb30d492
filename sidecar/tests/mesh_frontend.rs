//! The Gateway API mesh conformance case MeshFrontendHostname, ported: a mesh route's parent
//! Service is the one whose clusterIP the app connected to, never the one its `Host` header
//! names. It needs the intercepted connection's original destination, so it runs in a network
//! namespace with `trellis-proxy init`'s rules (root and iptables; without them it prints one
//! line and returns). The other mesh cases, which need no interception, are in
//! mesh_conformance.rs.

mod netns;

use netns::*;
use std::process::Stdio;
use std::time::Duration;

/// echo-v1 and echo-v2 with clusterIPs, and a route on echo-v2 that marks its answers.
const MESH: &str = r#"apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: rides}
spec: {clusterIP: 127.100.0.21, selector: {app: echo, version: v1}, ports: [{name: http, port: 80, targetPort: 8081}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: rides}
spec: {clusterIP: 127.100.0.22, selector: {app: echo, version: v2}, ports: [{name: http, port: 80, targetPort: 8082}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: echo-v1-0, namespace: rides, labels: {app: echo, version: v1}}
spec: {address: 127.0.0.2}
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: echo-v2-0, namespace: rides, labels: {app: echo, version: v2}}
spec: {address: 127.0.0.3}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-split-v2, namespace: rides}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-v2}]
  rules:
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Header-Set, value: set}]}}]
    backendRefs: [{name: echo-v2, port: 80}]
"#;

#[tokio::test]
async fn mesh_frontend_hostname_the_cluster_ip_decides_not_the_host() {
    if !can_run() {
        return;
    }
    let ns = Netns::create("front").await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bin = proxy_copy(dir.path());
    let bin = bin.to_str().unwrap();
    ns.ok(bin, &["init"]).await;
    let _upstreams = ns
        .cmd("python3")
        .args([
            "-c",
            &format!(
                "{PY_HTTP}\nbackground('127.0.0.2', 8081, 'echo-v1')\nserve('127.0.0.3', 8082, 'echo-v2')\n"
            ),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let boot = standalone(dir.path(), MESH, "0.0.0.0:15006");
    let proxy = Proxy::start(&ns, dir.path(), bin, &boot);
    // The app (root, so its connections are redirected) calls a clusterIP with the other
    // Service's name in Host.
    let call = |ip: &'static str, host: &'static str| {
        let ns = &ns;
        async move {
            let url = format!("http://{ip}/");
            let out = ns
                .run(
                    "curl",
                    &[
                        "-s",
                        "-m",
                        "3",
                        "-D",
                        "-",
                        "-H",
                        &format!("host: {host}"),
                        &url,
                    ],
                )
                .await;
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        }
    };
    let v2 = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let out = call("127.100.0.22", "echo-v1").await;
            if out.ends_with("echo-v2 /") {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("echo-v2 never answered; proxy log:\n{}", proxy.log()));
    // "Send to service with wrong hostname": echo-v2's IP, echo-v2's route, echo-v2's answer.
    assert!(v2.contains("x-header-set: set"), "{v2}");
    // "Send to other service with matching hostname": echo-v1's IP with Host echo-v2 goes to
    // echo-v1, and echo-v2's route does not apply.
    let v1 = call("127.100.0.21", "echo-v2").await;
    assert!(
        v1.ends_with("echo-v1 /"),
        "{v1}\nproxy log:\n{}",
        proxy.log()
    );
    assert!(!v1.contains("x-header-set"), "{v1}");
}
