//! Inbound transparent interception: a peer namespace reaches a pod namespace over a veth
//! pair; `trellis-proxy init`'s PREROUTING rules send its connections to the pod's inbound
//! listener, which delivers them to the app port they were sent to. Needs root and
//! iptables, like interception.rs.

mod netns;

use netns::*;
use std::process::Stdio;
use std::time::Duration;

/// The pod's app: HTTP on 8080 and 8081 (two ports, told apart by their answers), a banner
/// on 7000, and a banner on an excluded port, 9100.
fn app() -> String {
    format!(
        "{PY_HTTP}{BANNERS}background('127.0.0.1', 8081, 'admin-port')\nserve('127.0.0.1', 8080, 'app-inbound')\n"
    )
}

const BANNERS: &str = r#"
def banner(addr, port, text):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(text)
        c.close()
threading.Thread(target=banner, args=("127.0.0.1", 7000, b"220 app banner\r\n"), daemon=True).start()
threading.Thread(target=banner, args=("0.0.0.0", 9100, b"excluded\r\n"), daemon=True).start()
"#;

/// Inbound redirection needs traffic that arrives on an interface, so a second namespace,
/// the peer, reaches the pod over a veth pair. Its addresses (10.200.0.1 and .2) exist only
/// on that pair, inside the two namespaces this test creates: they never leave the machine.
#[tokio::test]
async fn inbound_traffic_is_redirected_to_the_app_port_it_was_sent_to() {
    if !can_run() {
        return;
    }
    let pod = Netns::create("pod").await;
    let peer = Netns::create("peer").await;
    let id = std::process::id() % 100_000;
    let (a, b) = (format!("tpod{id}"), format!("tpeer{id}"));
    let link = std::process::Command::new("ip")
        .args([
            "link", "add", &a, "netns", &pod.0, "type", "veth", "peer", "name", &b, "netns",
            &peer.0,
        ])
        .status()
        .expect("ip runs");
    assert!(link.success(), "cannot create the veth pair");
    pod.ok("ip", &["addr", "add", "10.200.0.1/24", "dev", &a])
        .await;
    pod.ok("ip", &["link", "set", &a, "up"]).await;
    peer.ok("ip", &["addr", "add", "10.200.0.2/24", "dev", &b])
        .await;
    peer.ok("ip", &["link", "set", &b, "up"]).await;

    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bin = proxy_copy(dir.path());
    let bin = bin.to_str().unwrap();
    pod.ok(bin, &["init", "--exclude-inbound-ports", "9100"])
        .await;
    let _app = pod
        .cmd("python3")
        .args(["-c", &app()])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    std::fs::write(dir.path().join("mesh.yaml"), "").unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        "workload: {name: billing-0, namespace: rides, labels: {app: billing}}\n\
         listeners: {outbound: 127.0.0.1:15001, inbound: 0.0.0.0:15006, admin: 127.0.0.1:15000}\n\
         app: {address: 127.0.0.1, ports: {http: 8080, admin: 8081, greet: 7000}}\nmeshFile: mesh.yaml\n\
         protocolDetection: {timeout: 1s}\n",
    )
    .unwrap();
    let proxy = Proxy::start(&pod, dir.path(), bin, &boot);
    testkit::eventually(
        Duration::from_secs(20),
        "the proxy and the app to be ready",
        || async {
            let ready = pod
                .run("curl", &["-sf", "-m", "2", "http://127.0.0.1:15000/ready"])
                .await;
            let app = pod
                .run("curl", &["-sf", "-m", "2", "http://127.0.0.1:8080/"])
                .await;
            (ready.status.success() && app.status.success()).then_some(())
        },
    )
    .await;

    // HTTP from the peer to the pod's port 8080 passes through the inbound listener to the
    // app, which listens on the pod's localhost only.
    let body = peer
        .ok("curl", &["-s", "-m", "10", "http://10.200.0.1:8080/pay"])
        .await;
    assert_eq!(body, "app-inbound /pay", "proxy log:\n{}", proxy.log());
    let m = pod.metrics().await;
    let inbound = [
        "direction=\"inbound\"",
        "destination_service=\"billing.rides\"",
        "response_code=\"200\"",
    ];
    assert_eq!(metric(&m, "trellis_requests_total", &inbound), 1.0, "{m}");

    // A second HTTP port, called with a Host that names no port (a client outside the mesh
    // may send anything): the request goes to the port it was sent to, not the default.
    let body = peer
        .ok(
            "curl",
            &[
                "-s",
                "-m",
                "10",
                "-H",
                "Host: billing",
                "http://10.200.0.1:8081/stats",
            ],
        )
        .await;
    assert_eq!(body, "admin-port /stats", "proxy log:\n{}", proxy.log());

    // A server-speaks-first app port that no Service declares: the proxy connects to the app
    // while the client is silent, and its banner decides opaque TCP, delivered to port 7000
    // without waiting for the detection timeout (1 s here), which is not counted.
    let r = peer.app_connect("10.200.0.1", 7000).await;
    assert_eq!(
        r["data"],
        "220 app banner\r\n",
        "proxy log:\n{}",
        proxy.log()
    );
    println!(
        "banner first byte after {:.1} ms",
        r["elapsed"].as_f64().unwrap() * 1000.0
    );
    let m = pod.metrics().await;
    assert_eq!(
        metric(&m, "trellis_protocol_detect_timeouts_total", &["inbound"]),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "trellis_protocol_detect_server_first_total",
            &["inbound"]
        ),
        1.0,
        "{m}"
    );
    let opened = ["direction=\"inbound\""];
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &opened),
        1.0,
        "{m}"
    );

    // An excluded inbound port reaches the app directly: the proxy sees nothing of it.
    let r = peer.app_connect("10.200.0.1", 9100).await;
    assert_eq!(r["data"], "excluded\r\n");
    let m = pod.metrics().await;
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &opened),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "trellis_protocol_detect_timeouts_total", &["inbound"]),
        0.0,
        "{m}"
    );
}
