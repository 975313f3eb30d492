//! cargo run --release -p trellis-control --example propagation -- --proxies 1000
//!
//! Propagation benchmark: N simulated proxies (light gRPC clients that ACK every update)
//! subscribe to a real trellis-control process; the mesh file is rewritten R times and each
//! proxy's time from the write to receiving (and ACKing) the new version is recorded.
//! Prints p50/p99/max per proxy and the control plane's RSS. Not a test: bench/ runs it.
//! `--calls N` puts each kind of proxy under a Scope of N Services.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_config::resources;
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::{Ack, DiscoveryRequest, Node, Subscribe};

struct Args {
    proxies: usize,
    services: usize,
    endpoints: usize,
    kinds: usize,
    rounds: usize,
    /// With N > 0, each kind of proxy is under a Scope of N Services (svc-0, whose route
    /// every round rewrites, and N-1 others); 0: unscoped.
    calls: usize,
    control: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        proxies: 100,
        services: 1000,
        endpoints: 10_000,
        kinds: 10,
        rounds: 20,
        calls: 0,
        control: PathBuf::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--proxies" => a.proxies = v.parse().expect("--proxies N"),
            "--services" => a.services = v.parse().expect("--services N"),
            "--endpoints" => a.endpoints = v.parse().expect("--endpoints N"),
            "--kinds" => a.kinds = v.parse().expect("--kinds N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--calls" => a.calls = v.parse().expect("--calls N"),
            "--control" => a.control = PathBuf::from(v),
            other => panic!("unknown flag {other}; see the first comment of this file"),
        }
    }
    if a.control.as_os_str().is_empty() {
        // Next to this example's binary: target/release/examples/propagation -> target/release.
        let exe = std::env::current_exe().expect("own path");
        a.control = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("trellis-control");
    }
    a
}

/// `services` Services with `endpoints` Workloads spread over them, and an HTTPRoute on the
/// first Service whose weight `round` flips.
fn mesh(a: &Args, round: usize) -> String {
    let mut s = String::with_capacity(a.endpoints * 200);
    for i in 0..a.services {
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
             spec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n"
        );
    }
    for e in 0..a.endpoints {
        let i = e % a.services;
        let _ = write!(
            s,
            "apiVersion: trellis.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w-{e}, namespace: bench, labels: {{app: svc-{i}}}}}\n\
             spec: {{address: 10.{}.{}.{}}}\n---\n",
            (e >> 16) & 255,
            (e >> 8) & 255,
            e & 255
        );
    }
    if a.calls > 0 {
        for k in 0..a.kinds {
            let mut calls = vec!["svc-0".to_string()];
            let others = a.services.saturating_sub(1).max(1);
            calls.extend(
                (0..a.calls - 1).map(|j| format!("svc-{}", 1 + (k * a.calls + j) % others)),
            );
            let _ = write!(
                s,
                "apiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {{name: kind-{k}, namespace: bench}}\n\
                 spec: {{selector: {{app: kind-{k}}}, calls: [{}]}}\n---\n",
                calls.join(", ")
            );
        }
    }
    let w = 10 + round % 80;
    let _ = write!(
        s,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc-0, namespace: bench}}\n\
         spec: {{parentRefs: [{{name: svc-0}}], rules: [{{backendRefs: [{{name: svc-1, port: 80, weight: {w}}}, {{name: svc-2, port: 80, weight: {}}}]}}]}}\n",
        100 - w
    );
    s
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// When each proxy received each of its updates.
type Arrivals = Arc<Mutex<Vec<Vec<Instant>>>>;

/// One simulated proxy: subscribe, record and ACK every update; on a failed connect, retry
/// as a real proxy would.
async fn proxy(addr: String, i: usize, kinds: usize, arrivals: Arrivals) {
    loop {
        if let Err(e) = subscribe(&addr, i, kinds, &arrivals).await {
            // Once the rounds are over the control plane is stopped on purpose, and 1,000
            // streams ending would bury the figures.
            if !FINISHED.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("proxy {i}: {e}; retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn subscribe(
    addr: &str,
    i: usize,
    kinds: usize,
    arrivals: &Arrivals,
) -> Result<(), Box<dyn std::error::Error>> {
    let pem = CA_BUNDLE.get().ok_or("the CA bundle is not read yet")?;
    let channel = trellis_proto::connect::endpoint(addr, pem)?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let node = Node {
        workload: format!("p-{i}"),
        namespace: "bench".into(),
        labels: [("app".to_string(), format!("kind-{}", i % kinds))].into(),
        inbound: format!("127.0.{}.{}:15006", (i >> 8) & 255, i & 255),
        ..Default::default()
    };
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(Subscribe {
            node: Some(node),
            protocol: trellis_proto::PROTOCOL,
            release: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(u) = updates.message().await? {
        // Decode and check every resource, as a real proxy would, so that the wire's cost is
        // part of the figure.
        for r in &u.upserted {
            let (key, body) = resources::from_wire(r)?;
            resources::decode(&key, &body)?;
        }
        if u.more {
            continue; // a part of a split update; the last part completes it
        }
        arrivals.lock().unwrap()[i].push(Instant::now());
        tx.send(DiscoveryRequest {
            kind: Some(Kind::Ack(Ack {
                version: u.version,
                nonce: u.nonce,
            })),
        })
        .await?;
    }
    Ok(())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Cp(Child);
impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Set when the rounds are over, before the control plane is stopped.
static FINISHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The mesh CA that trellis-control's gRPC certificate chains to.
static CA_BUNDLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("trellis-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, mesh(&a, 0)).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(&a.control)
        .args([
            "--config",
            path.to_str().unwrap(),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ])
        .args(["--registration-grace", "1s"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; build it with cargo build --release -p trellis-control",
                a.control.display()
            )
        });
    let cp = Cp(child);
    let pid = cp.0.id();
    let addr = format!("https://127.0.0.1:{grpc}");
    // Wait for the port, then connect every proxy.
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", grpc))
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "trellis-control did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The control plane generates its CA at first start, as it binds its ports.
    let ca = dir.join("state/ca.pem");
    while !ca.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "trellis-control wrote no CA"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = CA_BUNDLE.set(std::fs::read(&ca).expect("trellis-control's CA"));
    let arrivals: Arrivals = Arc::new(Mutex::new(vec![Vec::new(); a.proxies]));
    for i in 0..a.proxies {
        tokio::spawn(proxy(addr.clone(), i, a.kinds, arrivals.clone()));
        // Proxies start over a second or so, as a fleet does, not in one instant.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Initial sync: every proxy holds a snapshot, and registration churn has settled.
    let synced = Instant::now();
    loop {
        if arrivals.lock().unwrap().iter().all(|v| !v.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n: usize = arrivals.lock().unwrap().iter().map(Vec::len).sum();
        if n == last {
            break;
        }
        last = n;
    }
    println!(
        "{} proxies of {} kinds, {} services, {} endpoints: initial sync {:.1}s, control plane RSS {:.0} MiB; {}",
        a.proxies,
        a.kinds,
        a.services,
        a.endpoints,
        synced.elapsed().as_secs_f64(),
        rss_mib(pid),
        match a.calls {
            0 => "unscoped".to_string(),
            n => format!("each kind scoped to {n} Services"),
        }
    );

    let mut per_proxy = Vec::new();
    let mut per_round_last = Vec::new();
    let mut peak_rss: f64 = 0.0;
    for round in 1..=a.rounds {
        let before: Vec<usize> = arrivals.lock().unwrap().iter().map(Vec::len).collect();
        let text = mesh(&a, round);
        let t0 = Instant::now();
        write_atomically(&path, &text);
        let before2 = before.clone();
        let arr = arrivals.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = arr
                .lock()
                .unwrap()
                .iter()
                .zip(&before2)
                .all(|(v, b)| v.len() > *b);
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not every proxy got the update within 60s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let lat: Vec<f64> = arr
            .lock()
            .unwrap()
            .iter()
            .zip(&before)
            .map(|(v, b)| v[*b].duration_since(t0).as_secs_f64() * 1000.0)
            .collect();
        per_round_last.push(lat.iter().cloned().fold(0.0, f64::max));
        per_proxy.extend(lat);
        peak_rss = peak_rss.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    per_proxy.sort_by(f64::total_cmp);
    per_round_last.sort_by(f64::total_cmp);
    println!(
        "write -> ACK per proxy over {} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; last ACK per round: p50 {:.1} ms, p99 {:.1} ms",
        a.rounds,
        pct(&per_proxy, 0.5),
        pct(&per_proxy, 0.99),
        per_proxy.last().copied().unwrap_or(0.0),
        pct(&per_round_last, 0.5),
        pct(&per_round_last, 0.99),
    );
    println!(
        "control plane RSS after the rounds: {:.0} MiB (peak sampled {:.0} MiB)",
        rss_mib(pid),
        peak_rss
    );
    FINISHED.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
