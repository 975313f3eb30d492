//! Every object Trellis hands to a cluster, validated with PyPI's `kubernetes-validate
//! --strict` (offline, bundled OpenAPI schemas) for Kubernetes 1.29 and the newest version it
//! bundles: the injected pods, the output of `trellis inject`, and every manifest in k8s/.
//! `.ci/run` installs the tool in target/k8s-venv; locally the tests skip with one line.

mod k8s;

use k8s::{admit, patched, repo, validate, validator_or_skip, versions};
use serde_json::Value;
use std::path::PathBuf;
use trellis_control::inject::InjectConfig;
use trellis_control::inject::manifest::inject_stream;

fn write_json(dir: &tempfile::TempDir, name: &str, v: &Value) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

fn check_all(test: &str, files: &[PathBuf]) {
    let Some(tool) = validator_or_skip(test) else {
        return;
    };
    for version in versions(&tool) {
        if let Err(out) = validate(&tool, &version, files) {
            panic!("kubernetes-validate --strict -k {version} refused:\n{out}");
        }
    }
}

#[test]
fn the_validator_refuses_what_it_should() {
    // Without this, a validator that passes everything would make the tests below pass.
    let Some(tool) = validator_or_skip("the_validator_refuses_what_it_should") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (req, resp) = admit("pod.json");
    let mut pod = patched(&req, &resp);
    pod["spec"]["initContainers"][1]["restartPolicyy"] = "Always".into();
    let bad = write_json(&dir, "bad.json", &pod);
    for version in versions(&tool) {
        let out = validate(&tool, &version, std::slice::from_ref(&bad)).unwrap_err();
        assert!(out.contains("restartPolicyy"), "{version}: {out}");
    }
}

#[test]
fn injected_pods_validate() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = ["pod.json", "deployment-pod.json", "job-pod.json"]
        .iter()
        .map(|name| {
            let (req, resp) = admit(name);
            assert_eq!(resp["response"]["allowed"], true);
            let mut pod = patched(&req, &resp);
            // Webhooks see generateName pods unnamed; the API server names them after
            // admission. kubernetes-validate wants a name to report, so give it one the same way.
            if pod["metadata"].get("name").is_none() {
                let generated =
                    format!("{}x7k2p", pod["metadata"]["generateName"].as_str().unwrap());
                pod["metadata"]["name"] = generated.into();
            }
            write_json(&dir, name, &pod)
        })
        .collect();
    check_all("injected_pods_validate", &files);
}

#[test]
fn trellis_inject_output_validates() {
    let input = k8s::fixture("inject/workloads.yaml");
    let text = std::fs::read_to_string(&input).unwrap();
    let (out, reports) = inject_stream("workloads.yaml", &text, &InjectConfig::default()).unwrap();
    let injected = reports
        .iter()
        .filter(|r| r.outcome == Some(trellis_control::inject::Outcome::Injected))
        .count();
    assert_eq!(
        injected, 5,
        "Deployment, StatefulSet, DaemonSet, Job and CronJob: {reports:?}"
    );
    let opted_out = reports
        .iter()
        .filter(|r| r.outcome == Some(trellis_control::inject::Outcome::OptedOut))
        .count();
    assert_eq!(opted_out, 1, "the debug Pod: {reports:?}");
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.yaml");
    let after = dir.path().join("after.yaml");
    std::fs::copy(&input, &before).unwrap();
    std::fs::write(&after, out).unwrap();
    check_all("trellis_inject_output_validates", &[before, after]);
}

#[test]
fn every_manifest_in_k8s_validates() {
    let mut files = Vec::new();
    for dir in ["k8s/install", "k8s/crds", "k8s/gateway"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let p = entry.unwrap().path();
            // kustomization.yaml is kustomize's input, not a Kubernetes object. The Gateway
            // API kinds have no bundled schema (the tool only warns); the Kubernetes source
            // test loads gatewayclass.yaml through the translator and the loader instead.
            if p.extension().is_some_and(|e| e == "yaml")
                && !p.ends_with("kustomization.yaml")
                && !p.ends_with("gatewayclass.yaml")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    check_all("every_manifest_in_k8s_validates", &files);
}

/// The files a kustomization lists, recursively, in order.
fn kustomization_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for r in k["resources"].as_array().unwrap() {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            out.extend(kustomization_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_one_file_install_is_the_kustomization_in_order() {
    // k8s/trellis.yaml is for `kubectl apply --server-side -f` without kustomize; it must be
    // exactly what `kubectl apply -k k8s/install` applies. Regenerate with
    // `TRELLIS_BLESS=1 cargo test -p trellis-control --test k8s_validate`.
    let files = kustomization_files(&repo("k8s/install"));
    let bundle: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().trim_end().to_string() + "\n")
        .collect();
    let bundle = format!(
        "# Generated from k8s/install/kustomization.yaml; do not edit.\n# kubectl apply --server-side -f k8s/trellis.yaml\n{}",
        bundle.join("---\n")
    );
    let path = repo("k8s/trellis.yaml");
    if std::env::var_os("TRELLIS_BLESS").is_some() {
        std::fs::write(&path, &bundle).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == bundle,
        "k8s/trellis.yaml is out of date; regenerate: TRELLIS_BLESS=1 cargo test -p trellis-control --test k8s_validate"
    );
    check_all(
        "the_one_file_install_is_the_kustomization_in_order",
        &[path],
    );
}
