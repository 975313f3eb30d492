//! Shared by the Kubernetes tests: AdmissionReview fixtures through the injector, and
//! `kubernetes-validate --strict` (PyPI, offline bundled schemas).

#![allow(dead_code)]

pub mod mock_api;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The AdmissionReview in `fixtures/admission/<name>`, and the injector's response to it.
pub fn admit(name: &str) -> (Value, Value) {
    let body = std::fs::read(fixture(&format!("admission/{name}"))).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let response: Value = serde_json::from_slice(&review(&body, &InjectConfig::default())).unwrap();
    (request, response)
}

/// The JSONPatch of a response, decoded from base64, if any.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    use base64::Engine;
    let b64 = response["response"]["patch"].as_str()?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// The request's object with the response's patch applied, as the API server would.
pub fn patched(request: &Value, response: &Value) -> Value {
    let mut pod = request["request"]["object"].clone();
    if let Some(p) = patch_of(response) {
        json_patch::patch(&mut pod, &p).unwrap();
    }
    pod
}

/// `kubernetes-validate`: `TRELLIS_KUBERNETES_VALIDATE`, the venv `.ci/run` makes, or PATH.
pub fn validator() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TRELLIS_KUBERNETES_VALIDATE").map(PathBuf::from),
        Some(repo("target/k8s-venv/bin/kubernetes-validate")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return Some(c);
        }
    }
    Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("kubernetes-validate"))
}

/// The validator, or `None` after one line saying why the test is skipped. Under `.ci/run`
/// (`TRELLIS_REQUIRE_SYSTEM_TESTS` set) a missing validator is a failure, not a skip.
pub fn validator_or_skip(test: &str) -> Option<PathBuf> {
    let v = validator();
    if v.is_none() {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "kubernetes-validate is missing under CI; .ci/run installs it into target/k8s-venv"
        );
        eprintln!(
            "SKIP {test}: kubernetes-validate not installed (run .ci/run, or pip install kubernetes-validate)"
        );
    }
    v
}

/// The Kubernetes versions every object is validated for: 1.29 (the first with native
/// sidecars on by default) and the newest the installed kubernetes-validate bundles.
pub fn versions(validator: &Path) -> Vec<String> {
    let python = validator.with_file_name("python");
    let newest = Command::new(if python.is_file() {
        python.as_path()
    } else {
        Path::new("python3")
    })
    .args([
        "-c",
        "import kubernetes_validate.utils as u; print(u.latest_version())",
    ])
    .output()
    .ok()
    .filter(|o| o.status.success())
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .expect("kubernetes_validate.utils.latest_version() answers");
    vec!["1.29.0".to_string(), newest]
}

/// Validates files strictly for one version; `Err` holds the tool's output.
pub fn validate(validator: &Path, version: &str, files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}
