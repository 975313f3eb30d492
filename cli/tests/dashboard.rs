//! The dashboard in a real browser: Debian's chromium, headless, driven over the Chrome
//! DevTools protocol, against the demo's mesh (the real `trellis demo` binary with its
//! control plane, sidecars and gateway as child processes). It checks that the graph shows
//! the Services and their edges, that billing's node shows its breaker open a few seconds
//! after the breaker opens in trip's proxy, and that the canary view shows new weights after
//! `trellis shift`. Screenshots go to target/dashboard-screenshots/ (CI keeps them).
//!
//! chromium comes from the Debian package (`.ci/run` installs it). Without it the test
//! says so in one line and passes, so that a machine without a browser can still run the
//! rest; with TRELLIS_REQUIRE_SYSTEM_TESTS set (as in CI), it fails instead.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|b| std::env::split_paths(&path).map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines a child writes, read on a thread of their own.
fn lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the first line for which `pick` gives a value, printing every line read.
fn wait_line<T>(
    rx: &mpsc::Receiver<String>,
    within: Duration,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no expected line within {within:?}"));
        eprintln!("| {line}");
        if let Some(v) = pick(&line) {
            return v;
        }
    }
}

/// One page of chromium, over the DevTools protocol.
struct Browser {
    _process: Killed,
    _profile: tempfile::TempDir,
    ws: Socket,
    session: String,
    next: u64,
}

impl Browser {
    async fn open(binary: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let err = lines(child.stderr.take().unwrap());
        let process = Killed(child);
        let endpoint = wait_line(&err, Duration::from_secs(30), |l| {
            l.split_once("DevTools listening on ")
                .map(|(_, u)| u.trim().to_string())
        });
        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        let mut b = Browser {
            _process: process,
            _profile: profile,
            ws,
            session: String::new(),
            next: 0,
        };
        let target = b.call("Target.createTarget", json!({"url": url})).await;
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// Sends one command (to the page once attached) and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30s"))
                .expect("DevTools closed")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; returns how long that took.
    async fn until(&mut self, what: &str, within: Duration, expression: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(expression).await == json!(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "timed out after {within:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// A value from a demo bootstrap file's flow maps: `key: value`.
fn field(text: &str, key: &str) -> String {
    let at = text
        .find(&format!("{key}: "))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    text[at + key.len() + 2..]
        .split([',', '}', '\n'])
        .next()
        .unwrap()
        .trim()
        .to_string()
}

async fn post(addr: &str, path: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// The state of trip-0's breakers for billing's clusters, from its admin `/clusters`.
async fn trip_breaker_open(admin: &str) -> bool {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /clusters HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    (v["clusters"].as_array().into_iter().flatten()).any(|c| {
        c["name"].as_str().is_some_and(|n| n.contains("billing"))
            && c["circuitBreaker"]["state"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("open"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_mesh_a_breaker_and_a_shift_in_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("TRELLIS_REQUIRE_SYSTEM_TESTS").is_none(),
            "no chromium on PATH, and TRELLIS_REQUIRE_SYSTEM_TESTS is set: apt-get install chromium"
        );
        eprintln!("skipped: no chromium on PATH (.ci/run installs Debian's chromium package)");
        return;
    };
    let trellis = env!("CARGO_BIN_EXE_trellis");
    let mut demo = Command::new(trellis)
        .args([
            "demo",
            "--no-tui",
            "--scenario",
            "deny",
            "--duration",
            "300s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start trellis demo");
    let out = lines(demo.stdout.take().unwrap());
    let _demo = Killed(demo);
    let url = wait_line(&out, Duration::from_secs(90), |l| {
        l.split_once("dashboard: ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .map(str::to_string)
    });
    let (control_plane, ca) = wait_line(&out, Duration::from_secs(30), |l| {
        let cp = l
            .split_once("TRELLIS_CONTROL_PLANE=")?
            .1
            .split_whitespace()
            .next()?;
        let ca = l
            .split_once("TRELLIS_CA_BUNDLE=")?
            .1
            .split_whitespace()
            .next()?;
        Some((cp.to_string(), PathBuf::from(ca)))
    });
    // The demo's folder holds each instance's bootstrap: where its app and admin listen.
    let dir = ca.parent().and_then(Path::parent).unwrap().to_path_buf();
    let boot =
        |name: &str| std::fs::read_to_string(dir.join(format!("{name}.bootstrap.yaml"))).unwrap();
    // Drain the demo's output from here on, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in out {
            eprintln!("| {line}")
        }
    });

    let mut page = Browser::open(&chromium, &url).await;

    // The graph: every Service of the demo, and the calls between them once summaries came.
    page.until(
        "the graph's nodes and the trip → billing edge",
        Duration::from_secs(30),
        r#"document.querySelectorAll('[data-node]').length >= 6
           && !!document.querySelector('[data-edge="trip.rides->billing.rides"]')
           && !!document.querySelector('[data-edge="passenger.rides->trip.rides"]')"#,
    )
    .await;
    let nodes = page
        .eval("[...document.querySelectorAll('[data-node]')].map(n => n.dataset.node).sort().join(',')")
        .await;
    for s in [
        "billing.rides",
        "driver.rides",
        "notification.rides",
        "passenger.rides",
        "trip.rides",
    ] {
        assert!(nodes.as_str().unwrap().contains(s), "{nodes}");
    }
    assert_eq!(
        page.eval(
            r#"document.querySelector('[data-edge="trip.rides->billing.rides"]').dataset.mtls"#
        )
        .await,
        json!("true"),
        "calls between sidecars are mTLS"
    );
    assert_eq!(
        page.eval(r#"document.querySelector('[data-node="billing.rides"]').dataset.breaker"#)
            .await,
        json!("closed")
    );
    page.screenshot("graph").await;

    // Billing turns slow, as in the demo's cascade: trip's breaker opens, and the billing
    // node shows it within a few seconds (one summary, one push).
    let admin = field(&boot("trip-0"), "admin");
    for b in ["billing-v1-0", "billing-v2-0"] {
        let app = format!("127.0.0.1:{}", field(&boot(b), "http"));
        post(&app, "/fault?delayMs=600").await;
    }
    let t = Instant::now();
    while !trip_breaker_open(&admin).await {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "trip's breaker for billing never opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "trip-0's breaker opened {:?} after billing slowed",
        t.elapsed()
    );
    let shown = page
        .until(
            "billing's node to show the open breaker",
            Duration::from_secs(15),
            r#"document.querySelector('[data-node="billing.rides"]').dataset.breaker === 'open'"#,
        )
        .await;
    eprintln!("the dashboard showed it {shown:?} later");
    page.screenshot("breaker-open").await;
    page.eval("location.hash = '#/service/billing.rides'; true")
        .await;
    page.until(
        "billing's page",
        Duration::from_secs(10),
        "document.querySelector('h2')?.textContent === 'billing.rides'",
    )
    .await;
    // Its page asks for its own 15-minute series, and draws it.
    page.until(
        "billing's sparkline",
        Duration::from_secs(10),
        r#"!!document.querySelector('svg[aria-label="requests per 10s"]')"#,
    )
    .await;
    page.screenshot("service").await;
    for b in ["billing-v1-0", "billing-v2-0"] {
        let app = format!("127.0.0.1:{}", field(&boot(b), "http"));
        post(&app, "/fault").await;
    }

    // The canary view, before and after `trellis shift`.
    page.eval("location.hash = '#/canary'; true").await;
    let weight = |backend: &str| {
        format!(
            r#"document.querySelector('[data-canary-route="rides/billing"] [data-backend^="{backend}."]')?.dataset.weight"#
        )
    };
    page.until(
        "the canary view at 90/10",
        Duration::from_secs(10),
        &format!("{} === '90'", weight("billing-v1")),
    )
    .await;
    let shift = Command::new(trellis)
        .args(["shift", "rides/billing", "billing-v1=40", "billing-v2=60"])
        .env("TRELLIS_CONTROL_PLANE", &control_plane)
        .env("TRELLIS_CA_BUNDLE", &ca)
        .output()
        .unwrap();
    assert!(
        shift.status.success(),
        "{}",
        String::from_utf8_lossy(&shift.stderr)
    );
    page.until(
        "the canary view at 40/60",
        Duration::from_secs(10),
        &format!(
            "{} === '40' && {} === '60'",
            weight("billing-v1"),
            weight("billing-v2")
        ),
    )
    .await;
    page.screenshot("canary").await;
    page.eval("location.hash = '#/proxies'; true").await;
    page.until(
        "the proxies page",
        Duration::from_secs(10),
        "document.querySelectorAll('[data-proxy]').length >= 9",
    )
    .await;
    page.screenshot("proxies").await;
}
