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

#[path = "fleet/mod.rs"]
mod fleet;

use fleet::{Cp, Fleet, QUIET, cpu_ms, rss_mib, sample_peak, summary};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trellis_proto::v1::Node;

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
        a.control = fleet::control_binary();
    }
    a
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
    let w = fleet::weight(round);
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
            .args(["--dashboard-addr", "off"])
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
        fleet::wait_listening(self.grpc, "trellis-control").await;
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

/// Rewrites the mesh file `rounds` times; returns every proxy's write-to-arrival times and
/// the slowest proxy's of each round, in ms.
async fn rounds(a: &Args, path: &Path, fleet: &Fleet, first: usize) -> (Vec<f64>, Vec<f64>) {
    fleet::rounds(fleet, first, a.rounds, |round| {
        write_atomically(path, &mesh(a, round))
    })
    .await
}

/// Simulated pods of a rolling deploy: every `1/rate` s one starts (a real stream whose
/// inbound becomes an endpoint of one Service) or one of those running stops (its endpoint
/// goes after the registration grace). Returns the number of changes made so far.
fn churn(addr: Arc<[Arc<str>]>, a: &Args, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
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
                running.push_back(tokio::spawn(fleet::proxy(addr.clone(), 0, node, None)));
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
        grpc: fleet::free_port(),
        http: fleet::free_port(),
    };
    let mut cp = control.start();
    let mut pid = cp.0.id();
    let addr: Arc<[Arc<str>]> = Arc::new([format!("https://127.0.0.1:{}", control.grpc).into()]);
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
    let _ = fleet::CA_BUNDLE.set(std::fs::read(&ca).expect("trellis-control's CA"));
    let fleet: Fleet = fleet::fleet(a.proxies);
    let synced = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(pid, stop.clone());
    for i in 0..a.proxies {
        let node = fleet_node(i, a.kinds);
        tokio::spawn(fleet::proxy(
            addr.clone(),
            0,
            node,
            Some((fleet.clone(), i)),
        ));
        // Proxies start over a second or two, as a fleet does, not in one instant.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Initial sync: every proxy holds a snapshot.
    loop {
        if fleet::all_hold_one(&fleet) {
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
    let count = || fleet::updates(&fleet);
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
        "loadavg_at_start": fleet::loadavg(),
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
        while fleet::synced(&addr[0], "p-").await != Some(a.proxies) {
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
        let resumes = fleet::resumes(control.http).await;
        println!(
            "control plane restarted: every proxy reconnected and in sync after {took:.1}s; RSS peak {peak:.0} MiB; resumes {resumes}"
        );
        out["reconnect"] =
            serde_json::json!({ "in_sync_s": took, "peak_rss_mib": peak, "resumes": resumes });
    }
    out["rss_at_end_mib"] = rss_mib(pid).into();
    if let Some(file) = &a.results {
        fleet::append_result(file, &out);
    }
    QUIET.store(true, Ordering::Relaxed);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
