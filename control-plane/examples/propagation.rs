//! cargo run --release -p trellis-control --example propagation -- --proxies 1000
//!
//! Propagation benchmark: N simulated proxies (light gRPC clients that decode every resource
//! and ACK every update) subscribe to a real trellis-control process. Three phases, each
//! timed per proxy from the mesh-file write to the arrival of the update that carries it:
//!
//! 1. the mesh file is rewritten R times (an HTTPRoute's weights flip);
//! 2. `--churn C`: the same, while simulated pods of a rolling deploy come and go, C
//!    endpoint changes a second (each one a real proxy subscribing and registering as an
//!    endpoint, or leaving); before the rewrites, the control plane's CPU per endpoint
//!    change is measured with churn alone;
//! 3. `--reconnect`: the control plane is killed and started again, and every proxy
//!    reconnects at once, subscribing with the version it holds; timed until the control
//!    plane's status shows every proxy connected and in sync.
//!
//! The proxies fall into `--kinds K` Deployments (same labels, own names); `--calls N` puts
//! each Deployment under a Scope of N Services. Prints the figures and the control plane's
//! RSS, and with `--results FILE` appends them as one JSON line. Not a test: bench/ runs it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_config::resources::{self, Decoded};
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::{Ack, DiscoveryRequest, Node, StatusRequest, Subscribe};

struct Args {
    proxies: usize,
    services: usize,
    endpoints: usize,
    kinds: usize,
    rounds: usize,
    /// With N > 0, each kind of proxy is under a Scope of N Services (svc-0, whose route
    /// every round rewrites, and N-1 others); 0: unscoped.
    calls: usize,
    /// Endpoint changes a second in the churn phase; 0 skips it.
    churn: usize,
    reconnect: bool,
    results: Option<PathBuf>,
    name: String,
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
        churn: 0,
        reconnect: false,
        results: None,
        name: String::new(),
        control: PathBuf::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--reconnect" {
            a.reconnect = true;
            continue;
        }
        let v = argv.next().unwrap_or_default();
        match flag.as_str() {
            "--proxies" => a.proxies = v.parse().expect("--proxies N"),
            "--services" => a.services = v.parse().expect("--services N"),
            "--endpoints" => a.endpoints = v.parse().expect("--endpoints N"),
            "--kinds" => a.kinds = v.parse().expect("--kinds N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--calls" => a.calls = v.parse().expect("--calls N"),
            "--churn" => a.churn = v.parse().expect("--churn N"),
            "--results" => a.results = Some(PathBuf::from(v)),
            "--name" => a.name = v,
            "--control" => a.control = PathBuf::from(v),
            other => panic!("unknown flag {other}; see the first comment of this file"),
        }
    }
    assert!(
        a.rounds < 80,
        "--rounds must be under 80: each round's weight must be new"
    );
    assert!(a.services >= 3, "--services must be at least 3");
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

/// The weight that round `round`'s rewrite gives svc-0's first backend.
fn weight(round: usize) -> u32 {
    10 + (round % 80) as u32
}

/// `services` Services with `endpoints` Workloads spread over them, and an HTTPRoute on the
/// first Service whose weight `round` sets.
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
        // The pods of the rolling deploy call svc-0 and the Service they serve.
        let _ = write!(
            s,
            "apiVersion: trellis.dev/v1alpha1\nkind: Scope\nmetadata: {{name: rollout, namespace: bench}}\n\
             spec: {{selector: {{rollout: \"yes\"}}, calls: [svc-0]}}\n---\n"
        );
    }
    let w = weight(round);
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

fn proc_field(pid: u32, file: &str, pick: impl Fn(&str) -> Option<f64>) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    pick(&s).unwrap_or(0.0)
}

fn rss_mib(pid: u32) -> f64 {
    proc_field(pid, "status", |s| {
        let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(l.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    })
}

/// User plus system CPU time of `pid`, in milliseconds (clock ticks are 10 ms on Linux).
fn cpu_ms(pid: u32) -> f64 {
    proc_field(pid, "stat", |s| {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) * 10.0)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What each simulated proxy saw: when each round's weight reached it, and the version it
/// holds (which it subscribes with after a reconnect).
struct Seen {
    /// (arrival, svc-0's first weight) for each update that changed svc-0.
    arrivals: Vec<(Instant, u32)>,
    version: String,
    /// Updates received.
    updates: usize,
}

type Fleet = Arc<Vec<Mutex<Seen>>>;

/// One simulated proxy: subscribe, decode and ACK every update; when the stream fails,
/// reconnect as a real proxy does, with jittered exponential backoff.
async fn proxy(addr: Arc<str>, node: Node, seen: Option<(Fleet, usize)>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        if let Err(e) = subscribe(&addr, &node, seen.as_ref()).await {
            // Streams end on purpose: a restart of the control plane, the end of the run.
            if !QUIET.load(Ordering::Relaxed) {
                eprintln!("proxy {}: {e}; retrying", node.workload);
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        let jitter = 0.5 + rand::random::<f64>();
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe(
    addr: &str,
    node: &Node,
    seen: Option<&(Fleet, usize)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let pem = CA_BUNDLE.get().ok_or("the CA bundle is not read yet")?;
    let channel = trellis_proto::connect::endpoint(addr, pem)?
        .connect()
        .await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let version = seen
        .map(|(f, i)| f[*i].lock().unwrap().version.clone())
        .unwrap_or_default();
    tx.send(DiscoveryRequest {
        kind: Some(Kind::Subscribe(Subscribe {
            node: Some(node.clone()),
            version,
            protocol: trellis_proto::PROTOCOL,
            release: env!("CARGO_PKG_VERSION").into(),
            // It keeps no resources, so it names none: with the version it holds, an
            // unchanged control plane resumes it without a resend.
            held: Vec::new(),
        })),
    })
    .await?;
    let mut updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut weight = None;
    while let Some(u) = updates.message().await? {
        // Decode and check every resource, as a real proxy would, so that the wire's cost is
        // part of the figure.
        for r in &u.upserted {
            let (key, body) = resources::from_wire(r)?;
            if let Decoded::Service(s) = resources::decode(&key, &body)?
                && key.1 == "bench/svc-0"
            {
                weight = s.ports[0].routes[0].backends.first().map(|b| b.weight);
            }
        }
        if u.more {
            continue; // a part of a split update; the last part completes it
        }
        if let Some((fleet, i)) = seen {
            let mut seen = fleet[*i].lock().unwrap();
            if let Some(w) = weight.take() {
                seen.arrivals.push((Instant::now(), w));
            }
            seen.version.clone_from(&u.version);
            seen.updates += 1;
        }
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
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A trellis-control process, killed when dropped.
struct Cp(Child);
impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Set when streams are about to end on purpose, so their errors are not printed.
static QUIET: AtomicBool = AtomicBool::new(false);

/// The mesh CA that trellis-control's gRPC certificate chains to.
static CA_BUNDLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

struct Control {
    bin: PathBuf,
    dir: PathBuf,
    mesh: PathBuf,
    grpc: u16,
    http: u16,
}

impl Control {
    fn start(&self) -> Cp {
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.mesh)
            .args(["--grpc-addr", &format!("127.0.0.1:{}", self.grpc)])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http)])
            .args(["--registration-grace", "1s"])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env("TRELLIS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; build it with cargo build --release -p trellis-control",
                    self.bin.display()
                )
            });
        Cp(child)
    }

    async fn wait_listening(&self) {
        let t = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.grpc))
            .await
            .is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "trellis-control did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The fleet proxy `i`: its own name, the labels of its Deployment.
fn fleet_node(i: usize, kinds: usize) -> Node {
    Node {
        workload: format!("p-{i}"),
        namespace: "bench".into(),
        labels: [("app".to_string(), format!("kind-{}", i % kinds))].into(),
        inbound: format!("127.0.{}.{}:15006", (i >> 8) & 255, i & 255),
        ..Default::default()
    }
}

/// Samples the control plane's RSS until `stop`, keeping the peak.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak.max(rss_mib(pid))
    })
}

/// Rewrites the mesh file `rounds` times; returns every proxy's write-to-arrival times and
/// the slowest proxy's of each round, in ms.
async fn rounds(a: &Args, path: &Path, fleet: &Fleet, first: usize) -> (Vec<f64>, Vec<f64>) {
    let mut per_proxy = Vec::new();
    let mut per_round_last = Vec::new();
    for round in first..first + a.rounds {
        let w = weight(round);
        let t0 = Instant::now();
        write_atomically(path, &mesh(a, round));
        let deadline = t0 + Duration::from_secs(120);
        let lat = loop {
            let got: Option<Vec<f64>> = fleet
                .iter()
                .map(|s| {
                    let s = s.lock().unwrap();
                    let (at, _) = s
                        .arrivals
                        .iter()
                        .rev()
                        .find(|(at, x)| *x == w && *at >= t0)?;
                    Some(at.duration_since(t0).as_secs_f64() * 1000.0)
                })
                .collect();
            if let Some(lat) = got {
                break lat;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not every proxy got the update within 120s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        per_round_last.push(lat.iter().cloned().fold(0.0, f64::max));
        per_proxy.extend(lat);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    per_proxy.sort_by(f64::total_cmp);
    per_round_last.sort_by(f64::total_cmp);
    (per_proxy, per_round_last)
}

fn summary(per_proxy: &[f64], last: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50_ms": pct(per_proxy, 0.5),
        "p99_ms": pct(per_proxy, 0.99),
        "max_ms": per_proxy.last().copied().unwrap_or(0.0),
        "last_ack_p50_ms": pct(last, 0.5),
        "last_ack_p99_ms": pct(last, 0.99),
    })
}

/// Simulated pods of a rolling deploy: every `1/rate` s one starts (a real stream whose
/// inbound becomes an endpoint of one Service) or one of those running stops (its endpoint
/// goes after the registration grace). Returns the number of changes made so far.
fn churn(addr: Arc<str>, a: &Args, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let made = Arc::new(AtomicUsize::new(0));
    let (rate, services) = (a.churn, a.services);
    let count = made.clone();
    tokio::spawn(async move {
        let mut running: std::collections::VecDeque<tokio::task::JoinHandle<()>> =
            Default::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            // Alternate: a new pod, then the oldest one leaves, keeping about `rate / 2`
            // running, as a rolling deploy keeps its surge.
            if running.len() < rate.div_ceil(2).max(1) || n.is_multiple_of(2) {
                let svc = 3 + n % (services - 3);
                let node = Node {
                    workload: format!("rollout-{n}"),
                    namespace: "bench".into(),
                    labels: [
                        ("app".to_string(), format!("svc-{svc}")),
                        ("rollout".to_string(), "yes".to_string()),
                    ]
                    .into(),
                    inbound: format!("127.1.{}.{}:15006", (n >> 8) & 255, n & 255),
                    ..Default::default()
                };
                running.push_back(tokio::spawn(proxy(addr.clone(), node, None)));
            } else if let Some(pod) = running.pop_front() {
                pod.abort();
            }
            n += 1;
            count.fetch_add(1, Ordering::Relaxed);
        }
        for pod in running {
            pod.abort();
        }
    });
    made
}

/// Whether the control plane's status shows every fleet proxy connected and holding the
/// version it should.
async fn in_sync(addr: &str, proxies: usize) -> bool {
    let Some(pem) = CA_BUNDLE.get() else {
        return false;
    };
    let Ok(endpoint) = trellis_proto::connect::endpoint(addr, pem) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let Ok(status) = AdminClient::new(channel).status(StatusRequest {}).await else {
        return false;
    };
    let synced = (status.into_inner().proxies.iter())
        .filter(|p| p.workload.starts_with("p-"))
        .filter(|p| p.connected && !p.latest_version.is_empty())
        .filter(|p| p.latest_version == p.acked_version)
        .count();
    synced == proxies
}

/// `trellis_control_resumes_total` by result, from the control plane's `/metrics`.
async fn resumes(http: u16) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = String::new();
    if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await {
        let req = "GET /metrics HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).await.is_ok() {
            let _ = s.read_to_string(&mut text).await;
        }
    }
    let mut out = serde_json::Map::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("trellis_control_resumes_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let result = labels.split('"').nth(1).unwrap_or("?").to_string();
        out.insert(result, value.parse::<f64>().unwrap_or(0.0).into());
    }
    out.into()
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("trellis-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, mesh(&a, 0)).unwrap();
    let control = Control {
        bin: a.control.clone(),
        dir: dir.clone(),
        mesh: path.clone(),
        grpc: free_port(),
        http: free_port(),
    };
    let mut cp = control.start();
    let mut pid = cp.0.id();
    let addr: Arc<str> = format!("https://127.0.0.1:{}", control.grpc).into();
    control.wait_listening().await;
    // The control plane generates its CA at first start, as it binds its ports.
    let ca = dir.join("state/ca.pem");
    let t = Instant::now();
    while !ca.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "trellis-control wrote no CA"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = CA_BUNDLE.set(std::fs::read(&ca).expect("trellis-control's CA"));
    let fleet: Fleet = Arc::new(
        (0..a.proxies)
            .map(|_| {
                Mutex::new(Seen {
                    arrivals: Vec::new(),
                    version: String::new(),
                    updates: 0,
                })
            })
            .collect(),
    );
    let synced = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(pid, stop.clone());
    for i in 0..a.proxies {
        let node = fleet_node(i, a.kinds);
        tokio::spawn(proxy(addr.clone(), node, Some((fleet.clone(), i))));
        // Proxies start over a second or two, as a fleet does, not in one instant.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Initial sync: every proxy holds a snapshot.
    loop {
        if fleet.iter().all(|s| !s.lock().unwrap().version.is_empty()) {
            break;
        }
        assert!(
            synced.elapsed() < Duration::from_secs(600),
            "initial sync took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sync_s = synced.elapsed().as_secs_f64();
    // Let registration churn settle: no update for 1.5 s.
    let count = || -> usize { fleet.iter().map(|s| s.lock().unwrap().updates).sum() };
    let mut last = usize::MAX;
    while count() != last {
        last = count();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sync_peak = peak.await.unwrap_or(0.0);
    let scope = match a.calls {
        0 => "unscoped".to_string(),
        n => format!("each Deployment scoped to {n} Services"),
    };
    println!(
        "{} proxies in {} Deployments, {} Services, {} endpoints, {scope}: initial sync {sync_s:.1}s, control plane RSS {:.0} MiB (peak {sync_peak:.0} MiB)",
        a.proxies,
        a.kinds,
        a.services,
        a.endpoints,
        rss_mib(pid),
    );
    let mut out = serde_json::json!({
        "name": a.name,
        "proxies": a.proxies,
        "deployments": a.kinds,
        "services": a.services,
        "endpoints": a.endpoints,
        "scoped_calls": a.calls,
        "initial_sync_s": sync_s,
        "initial_sync_peak_rss_mib": sync_peak,
        "rss_after_sync_mib": rss_mib(pid),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
    });

    // Phase 1: the rewrites alone.
    let mut next_round = 1;
    if a.rounds > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample_peak(pid, stop.clone());
        let (per_proxy, last) = rounds(&a, &path, &fleet, next_round).await;
        next_round += a.rounds;
        stop.store(true, Ordering::Relaxed);
        let peak = peak.await.unwrap_or(0.0);
        let s = summary(&per_proxy, &last);
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        println!(
            "rewrites: write -> ACK per proxy over {} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; last ACK per round: p50 {:.1} ms, p99 {:.1} ms; RSS peak {peak:.0} MiB",
            a.rounds,
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms"),
            f("last_ack_p50_ms"),
            f("last_ack_p99_ms")
        );
        let mut s = s;
        s["rounds"] = a.rounds.into();
        s["peak_rss_mib"] = peak.into();
        out["rewrites"] = s;
    }

    // Phase 2: churn alone for the CPU per change, then churn with the rewrites.
    if a.churn > 0 {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample_peak(pid, stop.clone());
        let made = churn(addr.clone(), &a, stop.clone());
        tokio::time::sleep(Duration::from_secs(2)).await; // past the first grace periods
        let (cpu0, made0) = (cpu_ms(pid), made.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (cpu1, made1) = (cpu_ms(pid), made.load(Ordering::Relaxed));
        let per_change = (cpu1 - cpu0) / (made1 - made0).max(1) as f64;
        // Without rounds, the churn phase measures only the CPU per change.
        let (per_proxy, last) = rounds(&a, &path, &fleet, next_round).await;
        next_round += a.rounds;
        QUIET.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let peak = peak.await.unwrap_or(0.0);
        let mut s = summary(&per_proxy, &last);
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        println!(
            "with {} endpoint changes/s: control-plane CPU {per_change:.2} ms per change (churn alone); write -> ACK p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS peak {peak:.0} MiB",
            a.churn,
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms")
        );
        if a.rounds == 0 {
            for k in [
                "p50_ms",
                "p99_ms",
                "max_ms",
                "last_ack_p50_ms",
                "last_ack_p99_ms",
            ] {
                s[k] = serde_json::Value::Null;
            }
        }
        s["changes_per_s"] = a.churn.into();
        s["changes_made"] = made.load(Ordering::Relaxed).into();
        s["cpu_ms_per_change"] = per_change.into();
        s["peak_rss_mib"] = peak.into();
        out["churn"] = s;
        tokio::time::sleep(Duration::from_secs(2)).await; // the pods' endpoints expire
        QUIET.store(false, Ordering::Relaxed);
    }
    let _ = next_round;

    // Phase 3: the control plane restarts; every proxy reconnects at once.
    if a.reconnect {
        QUIET.store(true, Ordering::Relaxed);
        drop(cp);
        cp = control.start();
        pid = cp.0.id();
        let restarted = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample_peak(pid, stop.clone());
        let deadline = restarted + Duration::from_secs(600);
        while !in_sync(&addr, a.proxies).await {
            assert!(
                Instant::now() < deadline,
                "the fleet did not resync within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = restarted.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let peak = peak.await.unwrap_or(0.0);
        // How the restarted control plane brought each stream back: resumed with nothing
        // sent, with a delta, or with a whole snapshot.
        let resumes = resumes(control.http).await;
        println!(
            "control plane restarted: every proxy reconnected and in sync after {took:.1}s; RSS peak {peak:.0} MiB; resumes {resumes}"
        );
        out["reconnect"] =
            serde_json::json!({ "in_sync_s": took, "peak_rss_mib": peak, "resumes": resumes });
    }
    out["rss_at_end_mib"] = rss_mib(pid).into();
    if let Some(file) = &a.results {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .expect("results file");
        writeln!(f, "{out}").expect("write results");
    }
    QUIET.store(true, Ordering::Relaxed);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
