//! The injector's HTTPS endpoint, called by curl the way the API server calls it: TLS with a
//! serving certificate issued from the mesh CA for the Service's DNS name, verified against
//! that CA (the webhook's caBundle), POSTing an AdmissionReview to /inject.

mod k8s;

use serde_json::Value;
use std::sync::Arc;
use tokio::process::Command;
use trellis_control::inject::{InjectConfig, webhook};
use trellis_control::kubernetes::ca;

const HOST: &str = "trellis-control.trellis-system.svc";

async fn start() -> (
    std::net::SocketAddr,
    tempfile::TempDir,
    tokio::task::JoinHandle<()>,
) {
    let authority = ca::generate_ca().unwrap();
    let (chain, key) = ca::issue_serving_cert(&authority, &[HOST.to_string()]).unwrap();
    let tls = webhook::acceptor(chain.as_bytes(), key.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(webhook::serve(
        listener,
        tls,
        Arc::new(InjectConfig::default()),
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &authority.cert).unwrap();
    (addr, dir, task)
}

async fn curl(
    addr: std::net::SocketAddr,
    ca: Option<&std::path::Path>,
    body: &std::path::Path,
) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.kill_on_drop(true)
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{HOST}:{}:127.0.0.1", addr.port()))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://{HOST}:{}/inject", addr.port()));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.output().await.expect("curl runs")
}

#[tokio::test]
async fn the_webhook_answers_an_admission_review_over_tls_verified_by_the_ca() {
    let (addr, dir, _task) = start().await;
    let body = k8s::fixture("admission/pod.json");
    let out = curl(addr, Some(&dir.path().join("ca.pem")), &body).await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let req: Value = serde_json::from_slice(&std::fs::read(&body).unwrap()).unwrap();
    assert_eq!(resp["response"]["uid"], req["request"]["uid"]);
    assert_eq!(resp["response"]["allowed"], true);
    let pod = k8s::patched(&req, &resp);
    assert_eq!(pod["spec"]["initContainers"][1]["name"], "trellis-proxy");
}

#[tokio::test]
async fn a_client_without_the_ca_refuses_the_webhooks_certificate() {
    let (addr, _dir, _task) = start().await;
    let out = curl(addr, None, &k8s::fixture("admission/pod.json")).await;
    assert!(!out.status.success());
    // curl's exit code 60: the peer certificate cannot be authenticated with known CAs.
    assert_eq!(
        out.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_ca_kept_in_the_secret_is_one_the_identity_module_loads_and_signs_with() {
    let dir = tempfile::tempdir().unwrap();
    let authority = ca::generate_ca().unwrap();
    let source = ca::write_files(&authority, dir.path()).unwrap();
    let loaded = trellis_control::identity::ca::Ca::load(&source).unwrap();
    let names = vec![HOST.to_string()];
    assert!(
        loaded
            .sign_server(&names, std::time::Duration::from_secs(3600))
            .is_ok()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("cluster-ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
