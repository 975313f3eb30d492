//! Transparent interception in a network namespace this test creates: `trellis-proxy init`
//! installs the iptables rules, an app makes plain connections to Services' clusterIPs, and
//! the proxy (running as UID 1337, as in a pod) routes them.
//!
//! Addresses: everything lives on the namespace's own loopback interface, so no address
//! leaves the namespace and no veth or `route_localnet` is needed. 127.0.0.0/8 is local
//! there, so clusterIPs (127.100.0.x) and endpoints (127.0.0.2-4) are all reachable, and only
//! 127.0.0.1 is excluded from redirection as the app's own localhost. Needs root and
//! iptables; without them the test prints one line and returns. Run as root with iptables
//! present it never skips.

mod netns;

use netns::*;
use std::process::Stdio;
use std::time::Duration;

/// Billing's HTTP upstream and two banner servers (one a Service's endpoint, one outside
/// the mesh), in the namespace.
fn servers() -> String {
    format!("{PY_HTTP}{BANNERS}serve('127.0.0.2', 8080, 'billing-upstream')\n")
}

const BANNERS: &str = r#"
def echo(c):
    while True:
        d = c.recv(4096)
        if not d:
            break
        c.sendall(d)
    c.close()
def banner(addr, port, text):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(text)
        threading.Thread(target=echo, args=(c,), daemon=True).start()
threading.Thread(target=banner, args=("127.0.0.3", 7000, b"220 banner ready\r\n"), daemon=True).start()
threading.Thread(target=banner, args=("127.0.0.4", 9999, b"outside the mesh\r\n"), daemon=True).start()
"#;

fn mesh(policy: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{outboundTrafficPolicy: {{mode: {policy}}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: billing, namespace: rides}}\n\
         spec: {{clusterIP: 127.100.0.10, selector: {{app: billing}}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: billing-0, namespace: rides, labels: {{app: billing}}}}\n\
         spec: {{address: 127.0.0.2, ports: {{http: 8080}}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: banner, namespace: rides}}\n\
         spec: {{clusterIP: 127.100.0.11, selector: {{app: banner}}, ports: [{{name: greet, port: 7000}}]}}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: banner-0, namespace: rides, labels: {{app: banner}}}}\n\
         spec: {{address: 127.0.0.3}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: nats, namespace: rides}}\n\
         spec: {{clusterIP: 127.100.0.12, selector: {{app: nats}}, ports: [{{name: client, port: 4222}}]}}\n---\n\
         apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: nats-0, namespace: rides, labels: {{app: nats}}}}\n\
         spec: {{address: 127.0.0.5}}\n"
    )
}

/// Whether Debian's nats-server is here; CI installs it, so there it must be.
fn have_nats() -> bool {
    let ok = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "nats-server is missing but TRELLIS_REQUIRE_SYSTEM_TESTS is set"
        );
        println!(
            "skipped the NATS step: nats-server is not installed (apt-get install nats-server)"
        );
    }
    ok
}

#[tokio::test]
async fn intercepted_traffic_is_routed_counted_and_cleaned_up() {
    if !can_run() {
        return;
    }
    let ns = Netns::create("out").await;

    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let bin = proxy_copy(dir.path());
    let bin = bin.to_str().unwrap();

    // --dry-run prints the rules and installs nothing.
    let dry = ns.ok(bin, &["init", "--dry-run"]).await;
    assert!(
        dry.contains("iptables -t nat -A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN"),
        "{dry}"
    );
    assert!(
        dry.contains("iptables -t nat -A OUTPUT -p tcp -j TRELLIS_OUTPUT"),
        "{dry}"
    );
    assert!(
        !ns.nat_rules("iptables").await.contains("TRELLIS"),
        "--dry-run changed nothing"
    );

    // Twice, as a restarted init container would: one set of rules remains.
    let first = ns.ok(bin, &["init"]).await;
    let once = ns.nat_rules("iptables").await;
    let second = ns.ok(bin, &["init"]).await;
    assert_eq!(first, second);
    let twice = ns.nat_rules("iptables").await;
    let rules = |save: &str| -> Vec<String> {
        save.lines()
            .filter(|l| l.starts_with("-A"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        rules(&once),
        rules(&twice),
        "a second run leaves the same rules"
    );
    let jumps = |save: &str| {
        save.lines()
            .filter(|l| *l == "-A OUTPUT -p tcp -j TRELLIS_OUTPUT")
            .count()
    };
    assert_eq!(jumps(&twice), 1);
    let v6 = first.contains("ip6tables: installed");
    if v6 {
        assert_eq!(
            jumps(&ns.nat_rules("ip6tables").await),
            1,
            "ip6tables got one set too"
        );
    }

    // The upstreams, then the proxy as UID 1337.
    let _servers = ns
        .cmd("python3")
        .args(["-c", &servers()])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mesh_path = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_path, mesh("ALLOW_ANY")).unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        "workload: {name: trip-0, namespace: rides, labels: {app: trip}}\n\
         listeners: {outbound: 127.0.0.1:15001, inbound: 127.0.0.1:15006, admin: 127.0.0.1:15000}\n\
         app: {address: 127.0.0.1, ports: {http: 9000}}\nmeshFile: mesh.yaml\n\
         protocolDetection: {timeout: 1s}\n",
    )
    .unwrap();
    let proxy = Proxy::start(&ns, dir.path(), bin, &boot);
    testkit::eventually(
        Duration::from_secs(20),
        "the proxy and the upstreams to be ready",
        || async {
            let ready = ns
                .run("curl", &["-sf", "-m", "2", "http://127.0.0.1:15000/ready"])
                .await;
            // As the proxy's UID, so that this check is not itself intercepted.
            let billing = ns
                .run(
                    "setpriv",
                    &[
                        "--reuid",
                        PROXY_UID,
                        "--regid",
                        PROXY_UID,
                        "--clear-groups",
                        "curl",
                        "-sf",
                        "-m",
                        "2",
                        "http://127.0.0.2:8080/",
                    ],
                )
                .await;
            (ready.status.success() && billing.status.success()).then_some(())
        },
    )
    .await;

    // A plain request to billing's clusterIP is intercepted and routed to billing's endpoint.
    let body = ns
        .ok("curl", &["-s", "-m", "10", "http://127.100.0.10/hello"])
        .await;
    assert_eq!(
        body,
        "billing-upstream /hello",
        "proxy log:\n{}",
        proxy.log()
    );
    let m = ns.metrics().await;
    let billing = [
        "direction=\"outbound\"",
        "destination_service=\"billing.rides\"",
        "response_code=\"200\"",
    ];
    // Exactly one: the proxy's own connection to 127.0.0.2 was not redirected back into it.
    assert_eq!(metric(&m, "trellis_requests_total", &billing), 1.0, "{m}");
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &["passthrough"]),
        0.0,
        "{m}"
    );

    // A server that speaks first on a port nobody declared: the proxy connects upstream while
    // the client is silent, and the banner decides opaque TCP. The detection timeout (1 s here) is
    // not waited for, and not counted.
    let r = ns.app_connect("127.100.0.11", 7000).await;
    assert_eq!(
        r["data"],
        "220 banner ready\r\n",
        "proxy log:\n{}",
        proxy.log()
    );
    let elapsed = r["elapsed"].as_f64().unwrap();
    println!("banner first byte after {:.1} ms", elapsed * 1000.0);
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_protocol_detect_timeouts_total", &["outbound"]),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "trellis_protocol_detect_server_first_total",
            &["outbound"]
        ),
        1.0,
        "{m}"
    );

    // NATS on 4222, a port on no default opaque list and declared by no Service: its INFO
    // banner arrives the same way.
    if have_nats() {
        let _nats = ns
            .cmd("nats-server")
            .args(["-a", "127.0.0.5", "-p", "4222"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let r = testkit::eventually(Duration::from_secs(10), "nats-server to greet", || async {
            let r = ns.app_connect("127.100.0.12", 4222).await;
            r["data"].as_str()?.starts_with("INFO {").then_some(r)
        })
        .await;
        println!(
            "NATS INFO first byte after {:.1} ms",
            r["elapsed"].as_f64().unwrap() * 1000.0
        );
        let m = ns.metrics().await;
        assert_eq!(
            metric(&m, "trellis_protocol_detect_timeouts_total", &["outbound"]),
            0.0,
            "{m}"
        );
        assert!(
            metric(
                &m,
                "trellis_protocol_detect_server_first_total",
                &["outbound"]
            ) >= 2.0,
            "{m}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "trellis_tcp_connections_opened_total",
            &["banner.rides"]
        ),
        1.0,
        "{m}"
    );

    // ALLOW_ANY: a destination outside the mesh is passed through.
    let r = ns.app_connect("127.0.0.4", 9999).await;
    assert_eq!(r["data"], "outside the mesh\r\n");
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &["passthrough"]),
        1.0,
        "{m}"
    );

    // REGISTRY_ONLY: the same connection is refused and counted.
    std::fs::write(dir.path().join("mesh.tmp"), mesh("REGISTRY_ONLY")).unwrap();
    std::fs::rename(dir.path().join("mesh.tmp"), &mesh_path).unwrap();
    testkit::eventually(
        Duration::from_secs(10),
        "the REGISTRY_ONLY config",
        || async {
            let m = ns.metrics().await;
            (metric(&m, "trellis_config_reloads_total", &["applied"]) >= 2.0).then_some(())
        },
    )
    .await;
    let r = ns.app_connect("127.0.0.4", 9999).await;
    assert_eq!(r["data"], "", "refused without a byte");
    // An HTTP client is told why: 502 and `trellis-error: registry-only`.
    let head = ns
        .ok(
            "curl",
            &[
                "-s",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "http://127.0.0.4:9999/out",
            ],
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("trellis-error: registry-only"),
        "{head}"
    );
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_outbound_refused_total", &["registry-only"]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &["passthrough"]),
        1.0
    );
    // Services still work under REGISTRY_ONLY.
    let body = ns
        .ok("curl", &["-s", "-m", "10", "http://127.100.0.10/again"])
        .await;
    assert_eq!(body, "billing-upstream /again");

    // A Scope that lets trip call billing only: under ALLOW_ANY again, banner's clusterIP is
    // still a mesh Service, so it is refused, never passed through to its endpoint.
    let scoped = mesh("ALLOW_ANY")
        + "---\napiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {name: trip, namespace: rides}\n\
           spec: {selector: {app: trip}, calls: [billing]}\n";
    std::fs::write(dir.path().join("mesh.tmp"), scoped).unwrap();
    std::fs::rename(dir.path().join("mesh.tmp"), &mesh_path).unwrap();
    testkit::eventually(Duration::from_secs(10), "the scoped config", || async {
        let m = ns.metrics().await;
        (metric(&m, "trellis_config_reloads_total", &["applied"]) >= 3.0).then_some(())
    })
    .await;
    let r = ns.app_connect("127.100.0.11", 7000).await;
    assert_eq!(r["data"], "", "refused without a byte");
    let head = ns
        .ok(
            "curl",
            &[
                "-s",
                "-m",
                "10",
                "-D",
                "-",
                "http://127.100.0.11:7000/greet",
            ],
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("trellis-error: not-in-scope"), "{head}");
    assert!(
        head.contains("banner.rides is a mesh Service outside this workload's Scope (rides/trip)"),
        "says which Service and which Scope: {head}"
    );
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_outbound_refused_total", &["not-in-scope"]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "trellis_tcp_connections_opened_total", &["passthrough"]),
        1.0,
        "nothing more was passed through: {m}"
    );
    // What the Scope allows still works, and a destination outside the mesh still passes.
    let body = ns
        .ok("curl", &["-s", "-m", "10", "http://127.100.0.10/scoped"])
        .await;
    assert_eq!(body, "billing-upstream /scoped");
    let r = ns.app_connect("127.0.0.4", 9999).await;
    assert_eq!(r["data"], "outside the mesh\r\n");

    // --cleanup removes every rule; the clusterIP is then just an address nobody serves.
    ns.ok(bin, &["init", "--cleanup"]).await;
    assert!(!ns.nat_rules("iptables").await.contains("TRELLIS"));
    if v6 {
        assert!(!ns.nat_rules("ip6tables").await.contains("TRELLIS"));
    }
    let after = ns
        .run("curl", &["-s", "-m", "5", "http://127.100.0.10/hello"])
        .await;
    assert!(
        !after.status.success(),
        "without the rules nothing answers on the clusterIP"
    );
}
