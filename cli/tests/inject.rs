//! `trellis inject` as a user runs it: the real binary on the workloads fixture, with and
//! without the mesh CA that injected proxies need.

use std::path::Path;
use std::process::Command;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../control-plane/tests/fixtures/inject/workloads.yaml")
}

#[test]
fn without_the_mesh_ca_inject_refuses_and_says_where_to_get_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["inject", "--ca-bundle", "/nonexistent/mesh-ca.pem", "-f"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no half-injected YAML on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubectl -n trellis-system get secret trellis-ca"),
        "{err}"
    );
}

#[test]
fn with_the_mesh_ca_every_proxy_gets_it() {
    let ca = testkit::pki::TestCa::new("mesh");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("mesh-ca.pem");
    std::fs::write(&pem, &ca.root_pem).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("inject")
        .arg("--ca-bundle")
        .arg(&pem)
        .arg("-f")
        .arg(fixture())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    let injected = err.matches(" injected").count();
    assert!(injected >= 2, "{err}");
    // One TRELLIS_CA_BUNDLE per injected pod template, holding the certificate.
    assert_eq!(
        yaml.matches("TRELLIS_CA_BUNDLE").count(),
        injected,
        "{yaml}"
    );
    let first_line = ca.root_pem.lines().nth(1).unwrap();
    assert!(yaml.contains(first_line), "the PEM itself is in the output");
}
