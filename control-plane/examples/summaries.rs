//! cargo run --release -p trellis-control --example summaries -- --proxies 1000
//!
//! What the golden-metrics summaries cost the control plane (docs/dashboard.md):
//!
//! 1. In this process: a `Golden` window filled to its 15 minutes by `--proxies` proxies of
//!    `--services` Deployments, each calling three Services and called by three, one
//!    Summary every 5 s each (180 per proxy). Prints the time an intake takes, the memory
//!    the full window holds (this process's RSS before and after; the system allocator),
//!    and how long a Stat of 1 and 15 minutes takes.
//! 2. Live: a real trellis-control (release) in file mode with `--services` Services and
//!    the same simulated proxies connected (fleet/mod.rs, which decode and ACK as real
//!    proxies do). The control plane's CPU and RSS are read for `--seconds` with the
//!    proxies sending no summaries, then for as long with them sending one every 5 s.
//!
//! Not a test: bench/summaries.sh runs it and keeps its output.

#[path = "fleet/mod.rs"]
#[allow(dead_code)] // what the propagation benchmarks use of it
mod fleet;

use fleet::{Cp, Fleet, cpu_ms, rss_mib};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use trellis_control::golden::{Golden, unix_now};
use trellis_proto::v1::Node;

struct Args {
    proxies: usize,
    services: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        proxies: 1000,
        services: 100,
        seconds: 60,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let v = argv.next().unwrap_or_default();
        match flag.as_str() {
            "--proxies" => a.proxies = v.parse().expect("--proxies N"),
            "--services" => a.services = v.parse().expect("--services N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            other => panic!("unknown flag {other}; see the first comment of this file"),
        }
    }
    assert!(a.services >= 4, "--services must be at least 4");
    a
}

/// This process's resident memory.
fn own_rss_mib() -> f64 {
    rss_mib(std::process::id())
}

/// Part 1: the window, filled in this process.
fn window(a: &Args) {
    let interval = Duration::from_secs(5);
    let start = unix_now();
    let g = Golden::new(interval, start);
    let started_ms = start.as_millis() as i64;
    let services = |i: usize| vec![format!("svc-{}.bench", i % a.services)];
    let before = own_rss_mib();
    let rounds = 180;
    let mut took = Duration::ZERO;
    for r in 1..=rounds {
        let now = start + interval * r as u32;
        for i in 0..a.proxies {
            let s = fleet::simulated_summary(i % a.services, a.services, r as u64, started_ms);
            let proxy = ("bench".to_string(), format!("p-{i}"));
            let t = Instant::now();
            g.intake(now, &proxy, services(i), s);
            took += t.elapsed();
        }
    }
    let after = own_rss_mib();
    let now = start + interval * rounds as u32;
    let t = Instant::now();
    let full = g.stat(now, Duration::from_secs(900));
    let stat_15m = t.elapsed();
    let t = Instant::now();
    let one = g.stat(now, Duration::from_secs(60));
    let stat_1m = t.elapsed();
    let (entries, per_proxy) = g.entries();
    let intakes = (rounds * a.proxies) as f64;
    println!(
        "window: {} proxies x {rounds} summaries: {:.1} µs per intake ({:.1} ms of CPU a second at one Summary per proxy every 5 s); \
         full 15-minute window {entries} slot entries + {per_proxy} per-proxy bases, RSS +{:.1} MiB; \
         Stat 15m {:.1} ms ({} edges, {} bytes encoded), Stat 1m {:.1} ms",
        a.proxies,
        took.as_secs_f64() * 1e6 / intakes,
        took.as_secs_f64() * 1e3 / intakes * (a.proxies as f64 / 5.0),
        after - before,
        stat_15m.as_secs_f64() * 1e3,
        full.edges.len(),
        prost::Message::encoded_len(&full),
        stat_1m.as_secs_f64() * 1e3,
    );
    assert_eq!(one.proxies.len(), a.proxies);
}

/// `services` Services, each selecting the simulated proxies labelled `app: svc-N`.
fn mesh(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
             spec: {{selector: {{app: svc-{i}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n"
        );
    }
    s
}

/// Part 2: a real control plane, its CPU and RSS with and without summaries.
async fn live(a: &Args) {
    fleet::SERVICES.store(a.services, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("trellis-summaries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, mesh(a.services)).unwrap();
    let (grpc, http) = (fleet::free_port(), fleet::free_port());
    let bin = fleet::control_binary();
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--dashboard-addr", "off"])
        .args(["--registration-grace", "1s", "--summary-interval", "5s"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("TRELLIS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let cp = Cp(child);
    let pid = cp.0.id();
    fleet::wait_listening(grpc, "trellis-control").await;
    let ca = dir.join("state/ca.pem");
    while !ca.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = fleet::CA_BUNDLE.set(std::fs::read(&ca).unwrap());
    let addr: Arc<[Arc<str>]> = Arc::new([format!("https://127.0.0.1:{grpc}").into()]);
    let fleet: Fleet = fleet::fleet(a.proxies);
    for i in 0..a.proxies {
        let node = Node {
            workload: format!("p-{i}"),
            namespace: "bench".into(),
            labels: [("app".to_string(), format!("svc-{}", i % a.services))].into(),
            inbound: format!("127.0.{}.{}:15006", (i >> 8) & 255, i & 255),
            ..Default::default()
        };
        tokio::spawn(fleet::proxy(
            addr.clone(),
            0,
            node,
            Some((fleet.clone(), i)),
        ));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    while !fleet::all_hold_one(&fleet) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Registration settles: no update for 3 s.
    let mut last = usize::MAX;
    while fleet::updates(&fleet) != last {
        last = fleet::updates(&fleet);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let measure = |label: &'static str| async move {
        let (cpu0, t) = (cpu_ms(pid), Instant::now());
        let summaries0 = summaries(http).await;
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        let cpu = (cpu_ms(pid) - cpu0) / t.elapsed().as_secs_f64();
        let got = summaries(http).await - summaries0;
        println!(
            "live, {label}: {} proxies, control plane {cpu:.1} ms of CPU a second, RSS {:.0} MiB, {:.0} summaries a second (load {})",
            a.proxies,
            rss_mib(pid),
            got / t.elapsed().as_secs_f64(),
            fleet::loadavg(),
        );
        cpu
    };
    let off = measure("no summaries").await;
    fleet::SUMMARIES.store(true, Ordering::Relaxed);
    // One interval for every proxy's first Summary (the bases) to arrive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let on = measure("a summary per proxy every 5 s").await;
    println!(
        "summaries cost {:.1} ms of CPU a second ({:.2}% of one core)",
        on - off,
        (on - off) / 10.0
    );
    fleet::QUIET.store(true, Ordering::Relaxed);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `trellis_control_summaries_total` from the control plane's `/metrics`.
async fn summaries(http: u16) -> f64 {
    let text = fleet::http_get(http, "/metrics").await;
    (text.lines())
        .find_map(|l| l.strip_prefix("trellis_control_summaries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let a = args();
    window(&a);
    live(&a).await;
}
