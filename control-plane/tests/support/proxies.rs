//! trellis-proxy instances in-process, in control-plane mode: each with its own bootstrap
//! file and a join token for its service account.

use super::{ControlPlane, eventually, get};
use std::net::SocketAddr;
use std::time::Duration;

/// A proxy in control-plane mode for workload `name` labelled `labels` (YAML flow map),
/// delivering inbound traffic to `app_port`.
pub async fn proxy(
    cp: &ControlPlane,
    name: &str,
    labels: &str,
    app_port: u16,
) -> trellis_proxy::Running {
    proxy_as(cp, name, name, labels, app_port, "").await
}

/// A proxy running as service account `rides/<sa>` (with a join token for it), with `extra`
/// bootstrap lines (e.g. `tcp:` forwards). Returns once it is ready.
pub async fn proxy_as(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    app_port: u16,
    extra: &str,
) -> trellis_proxy::Running {
    let ports = format!("{{http: {app_port}}}");
    let running = start_proxy(cp, name, sa, labels, &ports, extra).await;
    wait_ready(name, running.admin).await;
    running
}

/// A ready proxy whose app listens on `ports` (a YAML flow map of names to ports).
pub async fn proxy_with_ports(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    ports: &str,
) -> trellis_proxy::Running {
    let running = start_proxy(cp, name, sa, labels, ports, "").await;
    wait_ready(name, running.admin).await;
    running
}

/// A proxy started without waiting for it to be ready: the control plane may be down.
pub async fn start_unready(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    app_port: u16,
) -> trellis_proxy::Running {
    start_proxy(cp, name, sa, labels, &format!("{{http: {app_port}}}"), "").await
}

async fn start_proxy(
    cp: &ControlPlane,
    name: &str,
    sa: &str,
    labels: &str,
    ports: &str,
    extra: &str,
) -> trellis_proxy::Running {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    // Beside the CA, so it outlives this function: renewals read it again.
    let token = cp.state.path().join(format!("{name}.token"));
    std::fs::write(&token, cp.token(&format!("rides/{sa}"), "1h")).unwrap();
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: {name}, namespace: rides, serviceAccount: {sa}, labels: {labels}}}\n\
             listeners: {{outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
             app: {{address: 127.0.0.1, ports: {ports}}}\n\
             controlPlane: {{address: {}, caBundle: {}, tokenFile: {}}}\nlimits: {{drainTimeout: 2s}}\n{extra}",
            cp.url(),
            cp.ca_bundle().display(),
            token.display(),
        ),
    )
    .unwrap();
    let b = trellis_proxy::Bootstrap::load(&boot).unwrap_or_else(|e| panic!("{e}"));
    trellis_proxy::start(b).await.expect("proxy starts")
}

async fn wait_ready(name: &str, admin: SocketAddr) {
    eventually(
        Duration::from_secs(15),
        &format!("{name} to be ready"),
        || async move {
            let r = get(admin, "/ready").await?;
            (r.0 == 200).then_some(())
        },
    )
    .await;
}
