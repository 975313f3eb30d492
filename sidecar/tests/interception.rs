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

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

const PROXY_UID: &str = "1337";

/// A network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

impl Netns {
    /// A new namespace with its loopback up. Root with iptables can always do this, so a
    /// failure fails the test rather than skipping it.
    async fn create(suffix: &str) -> Netns {
        let ns = Netns(format!("trellis-{suffix}-{}", std::process::id()));
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .expect("ip runs");
        assert!(
            made.success(),
            "root with iptables must be able to create a network namespace"
        );
        ns.ok("ip", &["link", "set", "lo", "up"]).await;
        ns
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program])
            .kill_on_drop(true);
        c
    }

    async fn run(&self, program: &str, args: &[&str]) -> Output {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.cmd(program).args(args).stdin(Stdio::null()).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} finishes within 30s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// Runs and returns stdout; panics with stderr when it fails.
    async fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args).await;
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn nat_rules(&self, family: &str) -> String {
        self.ok(&format!("{family}-save"), &["-t", "nat"]).await
    }

    /// A TCP client, as the app: connects, waits for the first bytes, reports them and how
    /// long they took.
    async fn app_connect(&self, addr: &str, port: u16) -> Value {
        let out = self
            .ok("python3", &["-c", APP_CLIENT, addr, &port.to_string()])
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
    }

    async fn metrics(&self) -> String {
        self.ok("curl", &["-s", "-m", "5", "http://127.0.0.1:15000/metrics"])
            .await
    }
}

/// The value of `name` on the first series carrying every label in `labels`, else 0.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const SERVERS: &str = r#"
import http.server, socket, threading
class Billing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("billing-upstream " + self.path).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
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
http.server.ThreadingHTTPServer(("127.0.0.2", 8080), Billing).serve_forever()
"#;

const APP_CLIENT: &str = r#"
import json, socket, sys, time
start = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
try:
    data = s.recv(100)
except OSError:
    data = b""
print(json.dumps({"elapsed": time.monotonic() - start, "data": data.decode("latin-1")}))
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
         spec: {{address: 127.0.0.3}}\n"
    )
}

/// Root and iptables, or one line saying why the test is skipped. Under .ci/run
/// (`TRELLIS_REQUIRE_SYSTEM_TESTS`) a missing requirement fails the test instead.
fn can_run() -> bool {
    let ok = requirements();
    assert!(
        ok || std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
        "TRELLIS_REQUIRE_SYSTEM_TESTS is set: the interception tests must run (as root, with iptables)"
    );
    ok
}

fn requirements() -> bool {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        println!(
            "skipped the interception tests: they need root to create network namespaces (uid is {uid:?})"
        );
        return false;
    }
    let iptables = std::process::Command::new("iptables")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !iptables {
        println!(
            "skipped the interception tests: iptables is not installed (Debian: apt-get install iptables)"
        );
        return false;
    }
    true
}

/// The proxy binary, copied where UID 1337 can run it (a checkout under /root cannot be).
fn proxy_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("trellis-proxy");
    std::fs::copy(env!("CARGO_BIN_EXE_trellis-proxy"), &bin).expect("copy the proxy");
    bin
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

struct Proxy {
    _child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Runs the proxy in `ns` as UID 1337, logging to a file in `dir`.
    fn start(ns: &Netns, dir: &Path, bin: &str, boot: &Path) -> Proxy {
        let log = dir.join("proxy.log");
        let child = ns
            .cmd("setpriv")
            .args([
                "--reuid",
                PROXY_UID,
                "--regid",
                PROXY_UID,
                "--clear-groups",
                bin,
                "--bootstrap",
            ])
            .arg(boot)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv runs");
        Proxy { _child: child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
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
        .args(["-c", SERVERS])
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
         app: {address: 127.0.0.1, ports: {http: 9000}}\nmeshFile: mesh.yaml\n",
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

    // A server that speaks first: detection gives up quickly and the banner flows.
    let r = ns.app_connect("127.100.0.11", 7000).await;
    assert_eq!(
        r["data"],
        "220 banner ready\r\n",
        "proxy log:\n{}",
        proxy.log()
    );
    let elapsed = r["elapsed"].as_f64().unwrap();
    assert!(elapsed < 1.0, "first byte after {elapsed}s");
    println!("banner first byte after {:.0} ms", elapsed * 1000.0);
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_protocol_detect_timeouts_total", &["outbound"]),
        1.0,
        "{m}"
    );
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
    let m = ns.metrics().await;
    assert_eq!(
        metric(&m, "trellis_outbound_refused_total", &["registry-only"]),
        1.0,
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

const APP: &str = r#"
import http.server, socket, threading
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("app-inbound " + self.path).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
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
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), App).serve_forever()
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
        .args(["-c", APP])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    std::fs::write(dir.path().join("mesh.yaml"), "").unwrap();
    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        "workload: {name: billing-0, namespace: rides, labels: {app: billing}}\n\
         listeners: {outbound: 127.0.0.1:15001, inbound: 0.0.0.0:15006, admin: 127.0.0.1:15000}\n\
         app: {address: 127.0.0.1, ports: {http: 8080, greet: 7000}}\nmeshFile: mesh.yaml\n\
         protocolDetection: {timeout: 150ms}\n",
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

    // A server-speaks-first app port: detection falls back to TCP, delivered to port 7000.
    let r = peer.app_connect("10.200.0.1", 7000).await;
    assert_eq!(
        r["data"],
        "220 app banner\r\n",
        "proxy log:\n{}",
        proxy.log()
    );
    assert!(r["elapsed"].as_f64().unwrap() < 1.0, "{r}");
    let m = pod.metrics().await;
    assert_eq!(
        metric(&m, "trellis_protocol_detect_timeouts_total", &["inbound"]),
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
        1.0,
        "{m}"
    );
}
