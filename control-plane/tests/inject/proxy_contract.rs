//! The injected pod, resolved as the kubelet would, is a bootstrap trellis-proxy accepts.

use super::container;
use super::k8s::{self, patched};
use serde_json::{Value, json};
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;

/// Go's `%q` for the plain strings in these fixtures: how the kubelet writes podinfo files.
fn go_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The contract between the injector and the proxy: the environment and the podinfo files
/// of an injected pod (resolved as the kubelet would) make a bootstrap with the pod's
/// identity, the CA, the token, and the app's original probes.
#[test]
fn the_injected_pod_is_what_trellis_proxy_kubernetes_reads() {
    let pem = testkit::pki::TestCa::new("mesh").root_pem;
    let cfg = InjectConfig {
        ca_bundle: Some(pem.clone()),
        ..InjectConfig::default()
    };
    let body = std::fs::read(k8s::fixture("admission/pod.json")).unwrap();
    let req: Value = serde_json::from_slice(&body).unwrap();
    let resp: Value = serde_json::from_slice(&review(&body, &cfg)).unwrap();
    let pod = patched(&req, &resp);
    let proxy = container(&pod["spec"]["initContainers"], "trellis-proxy");
    assert_eq!(proxy["args"], json!(["--kubernetes", "--workers", "2"]));

    // What the downward API fills in on this pod.
    let fields = std::collections::BTreeMap::from([
        ("metadata.name", "billing-5d8f7-xk2p9"),
        ("metadata.namespace", "rides"),
        ("status.podIP", "10.244.1.7"),
        ("spec.serviceAccountName", "billing"),
        ("spec.nodeName", "node-a"),
    ]);
    let mut env = std::collections::BTreeMap::new();
    for e in proxy["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(path)) => fields
                .get(path.as_str())
                .unwrap_or_else(|| panic!("{name}: no downward-API field {path}"))
                .to_string(),
            _ => panic!("{name}: neither a value nor a fieldRef: {e}"),
        };
        env.insert(name, value);
    }
    // The podinfo volume, written where the test can put it.
    let dir = tempfile::tempdir().unwrap();
    let file = |m: &Value| {
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}\n", go_quote(v.as_str().unwrap())))
            .collect::<String>()
    };
    std::fs::write(dir.path().join("labels"), file(&pod["metadata"]["labels"])).unwrap();
    std::fs::write(
        dir.path().join("annotations"),
        file(&pod["metadata"]["annotations"]),
    )
    .unwrap();
    assert_eq!(env["TRELLIS_POD_INFO_DIR"], "/etc/trellis/podinfo");
    env.insert(
        "TRELLIS_POD_INFO_DIR".into(),
        dir.path().display().to_string(),
    );

    let b = trellis_proxy::bootstrap_from_env(|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.workload.name, "billing-5d8f7-xk2p9");
    assert_eq!(b.workload.namespace, "rides");
    assert_eq!(b.workload.service_account.as_deref(), Some("billing"));
    assert_eq!(b.workload.labels, {
        let l = pod["metadata"]["labels"].as_object().unwrap();
        l.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    });
    assert_eq!(b.advertise_address, Some("10.244.1.7".parse().unwrap()));
    assert_eq!(b.app.ports.get("http"), Some(&9003));
    assert!(
        b.protocol_detection.opaque_ports.contains(&3306),
        "defaults kept"
    );
    let cp = b.control_plane.as_ref().unwrap();
    assert_eq!(
        cp.address,
        "https://trellis-control.trellis-system.svc:15010"
    );
    assert_eq!(cp.ca_bundle_pem.as_deref(), Some(pem.as_str()));
    assert_eq!(
        cp.token_file.as_deref(),
        Some(std::path::Path::new("/var/run/secrets/trellis/token"))
    );
    // The probes the injector moved are the probes the proxy replays.
    let readiness = &b.app_probes["billing/readiness"];
    assert_eq!((readiness.port, readiness.path.as_str()), (9003, "/ready"));
    let liveness = &b.app_probes["billing/liveness"];
    assert_eq!((liveness.port, liveness.path.as_str()), (9003, "/healthz"));
    assert_eq!(liveness.http_headers[0].name, "X-Probe");
    assert_eq!(liveness.http_headers[0].value, "kubelet");
    let startup = &b.app_probes["billing/startup"];
    assert_eq!(
        (
            startup.port,
            startup.scheme.as_str(),
            startup.service.as_str()
        ),
        (9004, "GRPC", "billing.v1.Billing")
    );
    let app = container(&pod["spec"]["containers"], "billing");
    assert_eq!(
        app["livenessProbe"]["httpGet"]["path"],
        "/app-health/billing/liveness"
    );
}
