//! The `--kubernetes` flag of the real binary: outside an injected pod it stops at once and
//! names what is missing, rather than starting half-configured.

use std::process::Command;

#[test]
fn outside_an_injected_pod_kubernetes_mode_names_the_missing_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("--kubernetes")
        .env_clear()
        .env(
            "TRELLIS_CONTROL_PLANE",
            "https://trellis-control.trellis-system.svc:15010",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TRELLIS_CA_BUNDLE"), "{err}");
    assert!(err.contains("trellis inject"), "says how to fix it: {err}");

    let out = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .args(["--kubernetes", "--bootstrap", "b.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the two sources conflict");
}
