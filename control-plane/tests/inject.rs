//! The injector fed real AdmissionReview v1 JSON (a Pod, a Deployment's pod and a Job's pod,
//! as the API server sends them after its own defaulting): what the patch adds, that it is
//! idempotent, that opted-out pods are untouched, and that bad pods are denied clearly.

mod k8s;

use k8s::{admit, patch_of, patched};
use serde_json::{Value, json};
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

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

fn deny(edit: impl FnOnce(&mut Value)) -> String {
    let body = std::fs::read(k8s::fixture("admission/pod.json")).unwrap();
    let mut req: Value = serde_json::from_slice(&body).unwrap();
    edit(&mut req["request"]["object"]);
    let resp: Value = serde_json::from_slice(&review(
        &serde_json::to_vec(&req).unwrap(),
        &InjectConfig::default(),
    ))
    .unwrap();
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    assert_eq!(resp["response"]["status"]["code"], 403);
    assert!(resp["response"].get("patch").is_none());
    resp["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pods_the_injector_cannot_handle_are_denied_with_what_to_do() {
    let msg = deny(|pod| {
        pod["metadata"]["annotations"]["trellis.dev/exclude-inbound-ports"] = json!("80,admin")
    });
    assert_eq!(
        msg,
        "trellis injector: annotation trellis.dev/exclude-inbound-ports: \"80,admin\" is not valid; use comma-separated port numbers 1-65535, e.g. 5432,6379, or remove the annotation"
    );
    let msg = deny(|pod| {
        pod["metadata"]["annotations"]["trellis.dev/proxy-memory-limit"] = json!("lots")
    });
    assert!(msg.contains("a Kubernetes quantity such as"), "{msg}");
    let msg = deny(|pod| pod["spec"]["hostNetwork"] = json!(true));
    assert!(
        msg.contains("hostNetwork: true") && msg.contains("trellis.dev/inject: disabled"),
        "{msg}"
    );
    let msg = deny(|pod| pod["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(15001));
    assert!(
        msg.contains("port 15001") && msg.contains("billing"),
        "{msg}"
    );
    let msg = deny(|pod| pod["spec"]["containers"][0]["name"] = json!("trellis-proxy"));
    assert!(
        msg.contains("already has a container named \"trellis-proxy\""),
        "{msg}"
    );
}

#[test]
fn a_body_that_is_not_an_admission_review_gets_an_invalid_answer() {
    let resp: Value =
        serde_json::from_slice(&review(b"{\"kind\": \"Pod\"}", &InjectConfig::default())).unwrap();
    assert_eq!(resp["response"]["allowed"], false);
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview"),
        "{resp}"
    );
}

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
