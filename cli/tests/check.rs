//! `trellis check` as a user runs it: the real binary on real files, judged by its exit
//! code and the `file:line:` it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

const VALID: &str = "\
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: rides}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 80, targetPort: 9002}]
---
apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: billing-0, namespace: rides, labels: {app: billing}}
spec: {address: 127.0.0.1, ports: {http: 9002}, serviceAccount: billing}
";

/// `portz` on line 6 is not a Service field.
const UNKNOWN_FIELD: &str = "\
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: rides}
spec:
  selector: {app: billing}
  portz: [{name: http, port: 80, targetPort: 9002}]
";

/// A file under the temp dir that no other test (or test run) uses; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("trellis-check-{}-{nanos}-{tag}.yaml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn trellis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .output()
        .expect("run the trellis binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_valid_mesh_passes() {
    let file = TempFile::new("valid", VALID);
    let out = trellis(&["check", file.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 file OK\n");
}

#[test]
fn an_unknown_field_fails_with_file_and_line() {
    let file = TempFile::new("unknown", UNKNOWN_FIELD);
    let path = file.0.to_str().unwrap();
    let out = trellis(&["check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains(&format!("{path}:6: ")), "{printed}");
    assert!(printed.contains("portz"), "{printed}");
    assert!(printed.ends_with("1 error\n"), "{printed}");
}

#[test]
fn json_lists_each_error_and_fails() {
    let good = TempFile::new("json-valid", VALID);
    let bad = TempFile::new("json-unknown", UNKNOWN_FIELD);
    let (good, bad) = (good.0.to_str().unwrap(), bad.0.to_str().unwrap());
    let out = trellis(&["-o", "json", "check", good, bad]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["errors"][0]["file"], bad);
    assert_eq!(v["errors"][0]["line"], 6);
}

#[test]
fn a_missing_path_is_an_error_not_a_pass() {
    let missing = std::env::temp_dir().join(format!(
        "trellis-check-{}-does-not-exist.yaml",
        std::process::id()
    ));
    let path = missing.to_str().unwrap();
    let out = trellis(&["check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{path}:0: cannot read")),
        "{}",
        text(&out)
    );
}

#[test]
fn no_path_is_a_usage_error() {
    let out = trellis(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A GRPCRoute for billing whose second rule has a method match that names nothing (line 22,
/// after VALID).
const GRPC_ROUTE: &str = "\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: billing-grpc, namespace: rides}
spec:
  parentRefs: [{group: \"\", kind: Service, name: billing, port: 80}]
  rules:
  - matches: [{method: {service: rides.v1.Billing, method: Charge}}]
    backendRefs: [{name: billing, port: 80}]
  - matches:
    - method: {type: Exact}
    backendRefs: [{name: billing, port: 80}]
";

#[test]
fn grpcroutes_are_checked_and_their_errors_named_at_their_line() {
    let valid = GRPC_ROUTE.replace(
        "    - method: {type: Exact}\n",
        "    - method: {method: Refund}\n",
    );
    let file = TempFile::new("grpc-valid", &format!("{VALID}{valid}"));
    let out = trellis(&["check", file.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let file = TempFile::new("grpc-bad", &format!("{VALID}{GRPC_ROUTE}"));
    let path = file.0.to_str().unwrap();
    let out = trellis(&["check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains(&format!(
            "{path}:22: spec.rules[1].matches[0].method: names neither a service nor a method"
        )),
        "{printed}"
    );
}

/// After `VALID` (11 lines): an HTTPS listener whose certificateRefs (line 22) name `good`
/// and `gone`, then the Secret `good` (line 24) with `crt` and `key`.
fn https_gateway(crt: &str, key: &str) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n      ");
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: rides}}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs: [{{name: good}}, {{name: gone}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: good, namespace: rides}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
      {}
  tls.key: |
      {}
",
        indent(crt),
        indent(key)
    )
}

#[test]
fn certificates_that_cannot_serve_are_named_at_their_certificate_ref() {
    let ca = testkit::pki::TestCa::new("edge");
    let leaf = ca.server(&["rides.example.com"]);
    let file = TempFile::new(
        "tls-bad",
        &format!(
            "{VALID}{}",
            https_gateway(&leaf.cert_pem, &ca.server(&["x"]).key_pem)
        ),
    );
    let path = file.0.to_str().unwrap();
    let out = trellis(&["check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains(&format!("{path}:22: spec.listeners[0].tls.certificateRefs[0]: Secret rides/good ({path}:24): tls.key does not belong to the certificate in tls.crt")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{path}:22: spec.listeners[0].tls.certificateRefs[1]: no Secret \"gone\" in namespace \"rides\"")),
        "{printed}"
    );
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
}
