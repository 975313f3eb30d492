//! The real binary as a process: SIGTERM drains in-flight requests and exits 0, and a bad
//! bootstrap exits with a message that names the file.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `mesh` and a bootstrap (workload trip-0, listeners on free ports, `extra` lines)
/// into `dir`; returns the outbound and admin addresses.
fn write_proxy(
    dir: &std::path::Path,
    mesh: &str,
    extra: &str,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    std::fs::write(dir.join("mesh.yaml"), mesh).unwrap();
    let (outbound, admin) = (free_port(), free_port());
    std::fs::write(
        dir.join("bootstrap.yaml"),
        format!(
            "workload: {{name: trip-0, namespace: rides}}\n\
             listeners: {{outbound: 127.0.0.1:{outbound}, inbound: 127.0.0.1:0, admin: 127.0.0.1:{admin}}}\n\
             app: {{address: 127.0.0.1, ports: {{http: 1}}}}\nmeshFile: mesh.yaml\n{extra}"
        ),
    )
    .unwrap();
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    (addr(outbound), addr(admin))
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let up = Upstream::start("billing-v1").await;
    let dir = tempfile::tempdir().unwrap();
    let (out_addr, admin_addr) = write_proxy(
        dir.path(),
        &(service("billing-v1", "") + &workload("billing-v1", &up)),
        "limits: {drainTimeout: 5s}\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("--bootstrap")
        .arg(dir.path().join("bootstrap.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trellis-proxy");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    eventually(Duration::from_secs(10), "the proxy to be ready", || {
        let client = client.clone();
        async move {
            let r = client
                .request(req(admin_addr, "admin", "/ready"))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    // A slow request is in flight when SIGTERM arrives.
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request(req(out_addr, "billing-v1", "/sleep/700"))
                .await
                .map(|r| r.status())
        }
    });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the upstream",
        || async { (up.hits() == 1).then_some(()) },
    )
    .await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    let exit = eventually(Duration::from_secs(10), "the proxy to exit", || {
        let e = child.try_wait().unwrap();
        async move { e }
    })
    .await;
    assert!(exit.success(), "exit status {exit:?}");
    // New connections are refused once it is gone.
    assert!(tokio::net::TcpStream::connect(out_addr).await.is_err());
}

#[tokio::test]
async fn bad_bootstrap_exits_2_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(&boot, "workload: {name: x}\nlisteners: {outbound: 127.0.0.1:0, inbound: 127.0.0.1:0, admin: 127.0.0.1:0}\napp: {address: 127.0.0.1}\nmeshfile: m.yaml\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("--bootstrap")
        .arg(&boot)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bootstrap.yaml:4:") && err.contains("meshfile"),
        "{err}"
    );
}

#[tokio::test]
async fn the_access_log_names_the_request_its_timeout_and_its_trace() {
    let up = Upstream::start("billing-v1").await;
    let dir = tempfile::tempdir().unwrap();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
        metadata: {name: billing, namespace: rides}\n\
        spec:\n  parentRefs: [{kind: Service, name: billing-v1}]\n  rules:\n  \
        - backendRefs: [{name: billing-v1, port: 80}]\n    timeouts: {request: 2500ms}\n";
    let (out_addr, _admin) = write_proxy(
        dir.path(),
        &(service("billing-v1", "") + &workload("billing-v1", &up) + route),
        "accessLog: true\n",
    );
    let log = dir.path().join("stdout.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trellis-proxy"))
        .arg("--bootstrap")
        .arg(dir.path().join("bootstrap.yaml"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trellis-proxy");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let status = eventually(
        Duration::from_secs(10),
        "a request through the proxy",
        || {
            let client = client.clone();
            async move {
                let r = client
                    .request(req(out_addr, "billing-v1", "/charge?ride=7"))
                    .await
                    .ok()?;
                (r.status() == 200).then_some(r.status())
            }
        },
    )
    .await;
    assert_eq!(status, 200);
    let line = eventually(Duration::from_secs(5), "the access-log line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["status"] == 200)
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["direction"], "outbound", "{line}");
    assert_eq!(line["path"], "/charge", "{line}");
    assert_eq!(line["route"], "rides/billing", "{line}");
    assert_eq!(
        line["timeout_ms"], 2500,
        "the route's request timeout: {line}"
    );
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(line["upstream"], up.addr.to_string(), "{line}");
}
