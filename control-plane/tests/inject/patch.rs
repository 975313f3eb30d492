//! What the patch adds to a Pod, a Deployment's pod and a Job's pod, that injecting twice
//! changes nothing, and that an opted-out pod is left untouched.

use super::container;
use super::k8s::{admit, patch_of, patched};
use serde_json::{Value, json};
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;

#[test]
fn a_pod_gets_the_init_step_the_native_sidecar_token_and_identity() {
    let (req, resp) = admit("pod.json");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["response"]["uid"], req["request"]["uid"]);
    assert_eq!(resp["response"]["allowed"], true);
    let pod = patched(&req, &resp);
    let spec = &pod["spec"];
    let init = spec["initContainers"].as_array().unwrap();
    assert_eq!(init[0]["name"], "trellis-init");
    assert_eq!(init[1]["name"], "trellis-proxy");

    // The init step: trellis-proxy init, NET_ADMIN and NET_RAW only, the pod's exclusions.
    let i = &init[0];
    assert_eq!(i["command"], json!(["trellis-proxy"]));
    let args: Vec<&str> = i["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "init");
    let flag = |f: &str| args.iter().position(|a| *a == f).map(|p| args[p + 1]);
    assert_eq!(flag("--proxy-uid"), Some("1337"));
    assert_eq!(flag("--exclude-inbound-ports"), Some("15000"));
    assert_eq!(
        flag("--exclude-outbound-ports"),
        Some("5432"),
        "from the pod's annotation"
    );
    assert_eq!(
        i["securityContext"]["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(i["securityContext"]["privileged"], false);
    assert!(i.get("restartPolicy").is_none(), "the init step runs once");

    // The proxy: a native sidecar, ready before the app starts, as the proxy UID.
    let p = &init[1];
    assert_eq!(p["restartPolicy"], "Always");
    assert_eq!(
        p["startupProbe"]["httpGet"],
        json!({"path": "/ready", "port": 15000})
    );
    assert_eq!(p["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        p["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(
        p["resources"]["requests"]["cpu"], "20m",
        "the annotation overrides the default"
    );
    let env = p["env"].as_array().unwrap();
    let field = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("TRELLIS_POD_NAME"), Some(json!("metadata.name")));
    assert_eq!(
        field("TRELLIS_POD_NAMESPACE"),
        Some(json!("metadata.namespace"))
    );
    assert_eq!(
        field("TRELLIS_SERVICE_ACCOUNT"),
        Some(json!("spec.serviceAccountName"))
    );
    let app_ports = env
        .iter()
        .find(|e| e["name"] == "TRELLIS_APP_PORTS")
        .unwrap();
    assert_eq!(app_ports["value"], "http=9003");

    // The token: projected, audience trellis; the pod info through the downward API.
    let vols = spec["volumes"].as_array().unwrap();
    assert!(
        vols[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "kept first"
    );
    let token = container(&spec["volumes"], "trellis-token");
    let sat = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sat["audience"], "trellis");
    assert_eq!(sat["expirationSeconds"], 3600);
    let info = container(&spec["volumes"], "trellis-podinfo");
    assert_eq!(
        info["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.labels"
    );
    let mounts = p["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "trellis-token" && m["mountPath"] == "/var/run/secrets/trellis")
    );

    // Probes now go through the proxy's admin port; the originals are kept for the proxy.
    let app = container(&spec["containers"], "billing");
    assert_eq!(
        app["readinessProbe"]["httpGet"],
        json!({"path": "/app-health/billing/readiness", "port": 15000, "scheme": "HTTP"})
    );
    assert_eq!(app["readinessProbe"]["periodSeconds"], 5, "timing is kept");
    assert_eq!(
        app["livenessProbe"]["httpGet"]["path"],
        "/app-health/billing/liveness"
    );
    let originals: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["trellis.dev/app-probes"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        originals["billing/readiness"],
        json!({"port": 9003, "path": "/ready", "scheme": "HTTP", "httpHeaders": []})
    );
    assert_eq!(
        originals["billing/liveness"]["httpHeaders"],
        json!([{"name": "X-Probe", "value": "kubelet"}])
    );
    // A gRPC probe becomes an HTTP one on the admin port too (a probe has one handler); the
    // proxy runs the gRPC health check it stood for.
    assert_eq!(
        app["startupProbe"]["httpGet"],
        json!({"path": "/app-health/billing/startup", "port": 15000, "scheme": "HTTP"})
    );
    assert!(
        app["startupProbe"].get("grpc").is_none(),
        "{}",
        app["startupProbe"]
    );
    assert_eq!(
        app["startupProbe"]["failureThreshold"], 30,
        "timing is kept"
    );
    assert_eq!(
        originals["billing/startup"],
        json!({"port": 9004, "scheme": "GRPC", "service": "billing.v1.Billing"})
    );
    assert_eq!(
        pod["metadata"]["annotations"]["trellis.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );
    // The app container itself is otherwise untouched.
    assert_eq!(app["image"], "ghcr.io/trellis-mesh/billing:1.0");
    assert_eq!(app["terminationMessagePath"], "/dev/termination-log");
}

#[test]
fn the_users_init_containers_run_after_the_proxy() {
    let (req, resp) = admit("deployment-pod.json");
    let pod = patched(&req, &resp);
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["trellis-init", "trellis-proxy", "migrate"]);
    assert_eq!(pod["metadata"]["generateName"], "trip-7d9f8c6b5-");
    // The patch is the few operations the injector means, not a rewrite of the pod.
    let ops = serde_json::to_value(patch_of(&resp).unwrap()).unwrap();
    let paths: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/spec/initContainers/0",
            "/spec/initContainers/1",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/containers/0/livenessProbe/httpGet",
            "/spec/containers/0/readinessProbe/httpGet",
        ]
    );
}

#[test]
fn a_jobs_pod_keeps_restart_policy_never_and_gets_a_native_sidecar() {
    let (req, resp) = admit("job-pod.json");
    let pod = patched(&req, &resp);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    // The sidecar is an init container with restartPolicy Always, not a regular container:
    // kubelet stops it when `run` exits, so the Job completes.
    assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
    assert_eq!(
        container(&pod["spec"]["initContainers"], "trellis-proxy")["restartPolicy"],
        "Always"
    );
    assert!(
        pod["metadata"]["annotations"]
            .get("trellis.dev/app-probes")
            .is_none(),
        "no probes to rewrite"
    );
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    for name in ["pod.json", "deployment-pod.json", "job-pod.json"] {
        let (mut req, resp) = admit(name);
        let once = patched(&req, &resp);
        req["request"]["object"] = once.clone();
        let again = review(&serde_json::to_vec(&req).unwrap(), &InjectConfig::default());
        let again: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(again["response"]["allowed"], true, "{name}");
        assert!(
            patch_of(&again).is_none(),
            "{name}: second injection patched {again}"
        );
        assert_eq!(patched(&req, &again), once, "{name}");
    }
}

#[test]
fn an_opted_out_pod_is_allowed_untouched() {
    let (req, resp) = admit("opted-out-pod.json");
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none(), "{resp}");
    assert_eq!(patched(&req, &resp), req["request"]["object"]);
}
