//! What the fleet benchmarks share (propagation.rs, one control plane; replicas.rs, several
//! in Kubernetes mode): the simulated proxy, which decodes every resource and ACKs every
//! update as a real one does, and the readings of a control-plane process.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_config::resources::{self, Decoded};
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::{Ack, DiscoveryRequest, Node, StatusRequest, Subscribe};

/// Set when streams are about to end on purpose, so their errors are not printed.
pub static QUIET: AtomicBool = AtomicBool::new(false);

/// Set to make every simulated proxy send a golden-metrics Summary as often as the control
/// plane asks (summaries.rs); a proxy labelled `app: svc-D` calls three Services and is
/// called by three, at 10 requests a second each.
pub static SUMMARIES: AtomicBool = AtomicBool::new(false);

/// How many Services the simulated proxies' summaries spread their calls over.
pub static SERVICES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(100);

/// A task aborted when dropped: a stream's summary sender ends with the stream.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a simulated proxy of `app: svc-D` (of `services`) reports after `ticks` intervals.
pub fn simulated_summary(
    d: usize,
    services: usize,
    ticks: u64,
    started_unix_ms: i64,
) -> trellis_proto::v1::Summary {
    use trellis_proto::v1::{ErrorCount, Summary, TrafficCounts};
    let buckets = trellis_proto::LATENCY_BOUNDS.len() + 1;
    let counts = |inbound: bool, destination: String, caller: String| {
        let requests = ticks * 50;
        let mut latency = vec![0; buckets];
        latency[2] = requests * 7 / 10;
        latency[4] = requests * 2 / 10;
        latency[7] = requests - latency[2] - latency[4];
        TrafficCounts {
            inbound,
            route: if inbound {
                "unknown".into()
            } else {
                format!("bench/{destination}")
            },
            backend: if inbound {
                String::new()
            } else {
                format!("{destination}:80")
            },
            destination,
            caller,
            requests,
            successes: requests - ticks,
            latency,
            mtls: requests,
        }
    };
    let mut traffic: Vec<TrafficCounts> = (1..=3)
        .map(|k| {
            counts(
                false,
                format!("svc-{}.bench", (d + k) % services),
                String::new(),
            )
        })
        .collect();
    for k in 1..=3 {
        let caller = format!("bench/svc-{}", (d + services - k) % services);
        traffic.push(counts(true, format!("svc-{d}.bench"), caller));
    }
    Summary {
        started_unix_ms,
        traffic,
        clusters: Vec::new(),
        errors: vec![ErrorCount {
            destination: format!("svc-{}.bench", (d + 1) % services),
            code: "upstream-timeout".into(),
            count: ticks,
        }],
        certificate_expiry_unix: 0,
    }
}

/// The mesh CA that trellis-control's gRPC certificate chains to.
pub static CA_BUNDLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// The weight that round `round`'s change gives svc-0's first backend.
pub fn weight(round: usize) -> u32 {
    10 + (round % 80) as u32
}

/// trellis-control next to this example's binary:
/// target/release/examples/NAME -> target/release/trellis-control.
pub fn control_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("target dir")
        .join("trellis-control")
}

fn proc_field(pid: u32, file: &str, pick: impl Fn(&str) -> Option<f64>) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    pick(&s).unwrap_or(0.0)
}

pub fn rss_mib(pid: u32) -> f64 {
    proc_field(pid, "status", |s| {
        let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(l.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    })
}

/// User plus system CPU time of `pid`, in milliseconds (clock ticks are 10 ms on Linux).
pub fn cpu_ms(pid: u32) -> f64 {
    proc_field(pid, "stat", |s| {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) * 10.0)
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What each simulated proxy saw: when each round's weight reached it, and the version it
/// holds (which it subscribes with after a reconnect).
pub struct Seen {
    /// (arrival, svc-0's first weight) for each update that changed svc-0.
    pub arrivals: Vec<(Instant, u32)>,
    pub version: String,
    /// Updates received.
    pub updates: usize,
    /// The control plane it is connected to, as an index into the addresses it was given.
    pub on: usize,
}

pub type Fleet = Arc<Vec<Mutex<Seen>>>;

pub fn fleet(proxies: usize) -> Fleet {
    Arc::new(
        (0..proxies)
            .map(|_| {
                Mutex::new(Seen {
                    arrivals: Vec::new(),
                    version: String::new(),
                    updates: 0,
                    on: 0,
                })
            })
            .collect(),
    )
}

/// Whether every proxy of the fleet holds a snapshot.
pub fn all_hold_one(fleet: &Fleet) -> bool {
    fleet.iter().all(|s| !s.lock().unwrap().version.is_empty())
}

/// Updates the fleet has received in all.
pub fn updates(fleet: &Fleet) -> usize {
    fleet.iter().map(|s| s.lock().unwrap().updates).sum()
}

/// One simulated proxy: subscribe to `addrs[first]`, decode and ACK every update; when the
/// stream fails, reconnect as a real proxy does, with jittered exponential backoff. With
/// several addresses (replicas behind one Service), a new connection goes to any of them at
/// random, as a Service's load balancing picks among its endpoints; one that is gone refuses
/// it, and the proxy tries again.
pub async fn proxy(addrs: Arc<[Arc<str>]>, first: usize, node: Node, seen: Option<(Fleet, usize)>) {
    let mut backoff = Duration::from_millis(100);
    let mut at = first;
    loop {
        let started = Instant::now();
        let addr = &addrs[at % addrs.len()];
        if let Some((fleet, i)) = &seen {
            fleet[*i].lock().unwrap().on = at % addrs.len();
        }
        if let Err(e) = subscribe(addr, &node, seen.as_ref()).await {
            // Streams end on purpose: a restart of the control plane, the end of the run.
            if !QUIET.load(Ordering::Relaxed) {
                eprintln!("proxy {}: {e}; retrying", node.workload);
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        at = rand::random_range(0..addrs.len());
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
    let response = client.stream(ReceiverStream::new(rx)).await?;
    let interval = (response
        .metadata()
        .get(trellis_proto::SUMMARY_INTERVAL_HEADER))
    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut updates = response.into_inner();
    let app = node
        .labels
        .get("app")
        .and_then(|a| a.strip_prefix("svc-")?.parse::<usize>().ok());
    let _summaries = match (interval, app) {
        (Some(secs), Some(d)) => {
            let tx = tx.clone();
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as i64);
            let services = SERVICES.load(Ordering::Relaxed).max(1);
            Some(AbortOnDrop(tokio::spawn(async move {
                let mut ticks = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    if !SUMMARIES.load(Ordering::Relaxed) {
                        continue;
                    }
                    ticks += 1;
                    let s = simulated_summary(d, services, ticks, started);
                    let msg = DiscoveryRequest {
                        kind: Some(Kind::Summary(s)),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            })))
        }
        _ => None,
    };
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

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A trellis-control process, killed when dropped.
pub struct Cp(pub Child);
impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Samples a process's RSS until `stop`, keeping the peak.
pub fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak.max(rss_mib(pid))
    })
}

/// Makes the change of each round in `first..first + rounds` with `change`; returns every
/// proxy's change-to-arrival times and the slowest proxy's of each round, in ms.
pub async fn rounds(
    fleet: &Fleet,
    first: usize,
    rounds: usize,
    mut change: impl FnMut(usize),
) -> (Vec<f64>, Vec<f64>) {
    let mut per_proxy = Vec::new();
    let mut per_round_last = Vec::new();
    for round in first..first + rounds {
        let w = weight(round);
        let t0 = Instant::now();
        change(round);
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

pub fn summary(per_proxy: &[f64], last: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50_ms": pct(per_proxy, 0.5),
        "p99_ms": pct(per_proxy, 0.99),
        "max_ms": per_proxy.last().copied().unwrap_or(0.0),
        "last_ack_p50_ms": pct(last, 0.5),
        "last_ack_p99_ms": pct(last, 0.99),
    })
}

/// How many fleet proxies (workloads named `fleet_prefix`...) the control plane at `addr`
/// shows connected and holding the version it should; `None` when it does not answer.
pub async fn synced(addr: &str, fleet_prefix: &str) -> Option<usize> {
    let pem = CA_BUNDLE.get()?;
    let channel = trellis_proto::connect::endpoint(addr, pem)
        .ok()?
        .connect()
        .await
        .ok()?;
    let status = AdminClient::new(channel)
        .status(StatusRequest {})
        .await
        .ok()?;
    let n = (status.into_inner().proxies.iter())
        .filter(|p| p.workload.starts_with(fleet_prefix))
        .filter(|p| p.connected && !p.latest_version.is_empty())
        .filter(|p| p.latest_version == p.acked_version)
        .count();
    Some(n)
}

/// GET `path` from the control plane's HTTP port: the whole response, head and body, or ""
/// when it does not answer.
pub async fn http_get(http: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = String::new();
    if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", http)).await {
        let req = format!("GET {path} HTTP/1.1\r\nHost: cp\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_ok() {
            let _ = s.read_to_string(&mut text).await;
        }
    }
    text
}

/// Appends one run's figures to `file` as a JSON line.
pub fn append_result(file: &std::path::Path, out: &serde_json::Value) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("results file");
    writeln!(f, "{out}").expect("write results");
}

/// `trellis_control_resumes_total` by result, from the control plane's `/metrics`.
pub async fn resumes(http: u16) -> serde_json::Value {
    let text = http_get(http, "/metrics").await;
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

/// Waits until something accepts connections on `port`.
pub async fn wait_listening(port: u16, what: &str) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
