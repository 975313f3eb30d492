//! Network-namespace test support for the interception tests: namespaces deleted on drop,
//! commands run inside them, the proxy as UID 1337, and the root/iptables check that skips
//! (or, under .ci/run, fails) when they cannot run.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

pub const PROXY_UID: &str = "1337";

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

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
    pub async fn create(suffix: &str) -> Netns {
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

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program])
            .kill_on_drop(true);
        c
    }

    pub async fn run(&self, program: &str, args: &[&str]) -> Output {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.cmd(program).args(args).stdin(Stdio::null()).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} finishes within 30s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// Runs and returns stdout; panics with stderr when it fails.
    pub async fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args).await;
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn nat_rules(&self, family: &str) -> String {
        self.ok(&format!("{family}-save"), &["-t", "nat"]).await
    }

    /// A TCP client, as the app: connects, waits for the first bytes, reports them and how
    /// long they took.
    pub async fn app_connect(&self, addr: &str, port: u16) -> Value {
        let out = self
            .ok("python3", &["-c", APP_CLIENT, addr, &port.to_string()])
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
    }

    pub async fn metrics(&self) -> String {
        self.ok("curl", &["-s", "-m", "5", "http://127.0.0.1:15000/metrics"])
            .await
    }
}

/// The value of `name` on the first series carrying every label in `labels`, else 0.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub const APP_CLIENT: &str = r#"
import json, socket, sys, time
start = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
try:
    data = s.recv(100)
except OSError:
    data = b""
print(json.dumps({"elapsed": time.monotonic() - start, "data": data.decode("latin-1")}))
"#;

/// Root and iptables, or one line saying why the test is skipped. Under .ci/run
/// (`TRELLIS_REQUIRE_SYSTEM_TESTS`) a missing requirement fails the test instead.
pub fn can_run() -> bool {
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
pub fn proxy_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("trellis-proxy");
    std::fs::copy(env!("CARGO_BIN_EXE_trellis-proxy"), &bin).expect("copy the proxy");
    bin
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Python for the namespace tests' upstreams: `serve(addr, port, name)` runs an HTTP server
/// (IPv4 or IPv6 by the address) that answers every GET with `name + " " + path`.
pub const PY_HTTP: &str = r#"
import http.server, socket, threading
def serve(addr, port, name):
    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (name + " " + self.path).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    Server((addr, port), Handler).serve_forever()
def background(*args):
    threading.Thread(target=serve, args=args, daemon=True).start()
"#;

/// Writes `mesh` as `dir/mesh.yaml` and a standalone bootstrap for `trip-0` reading it, with
/// the given inbound listener address; returns the bootstrap's path.
pub fn standalone(dir: &Path, mesh: &str, inbound: &str) -> PathBuf {
    std::fs::write(dir.join("mesh.yaml"), mesh).unwrap();
    let boot = dir.join("bootstrap.yaml");
    std::fs::write(
        &boot,
        format!(
            "workload: {{name: trip-0, namespace: rides, labels: {{app: trip}}}}\n\
             listeners: {{outbound: 127.0.0.1:15001, inbound: {inbound}, admin: 127.0.0.1:15000}}\n\
             app: {{address: 127.0.0.1}}\nmeshFile: mesh.yaml\n"
        ),
    )
    .unwrap();
    boot
}

pub struct Proxy {
    _child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Runs the proxy in `ns` as UID 1337, logging to a file in `dir`.
    pub fn start(ns: &Netns, dir: &Path, bin: &str, boot: &Path) -> Proxy {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
