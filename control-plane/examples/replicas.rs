//! cargo run --release -p trellis-control --example replicas -- --proxies 10000 --replicas 3
//!
//! Replicas benchmark: several `trellis-control --kubernetes` processes over one API server,
//! with N simulated proxies spread over them (light gRPC clients that decode every resource
//! and ACK every update, fleet/mod.rs). No Kubernetes API server can run on these machines,
//! so the API server is the tests' mock (tests/k8s/mock_api.rs), served over HTTP from this
//! process and reached through a kubeconfig; it holds the cluster: S Services, one
//! EndpointSlice each, and the N pods whose proxies are simulated (pod i serves Service
//! i mod S, so each Service has N/S endpoints), each Deployment under a Scope of C Services.
//!
//! 1. initial sync: each proxy dials replica i mod R; timed until every proxy holds a
//!    snapshot, with each replica's CPU and RSS;
//! 2. `--rounds K` changes of an HTTPRoute's weights through the watch, each timed per
//!    proxy from the API server's event to the update's arrival;
//! 3. failover: replica 0 is killed (SIGKILL); its proxies reconnect to the others, each
//!    subscribing with the version it holds; timed until the survivors' status shows every
//!    proxy connected and in sync, with how the survivors resumed the streams (`unchanged`:
//!    nothing resent; `delta`; `replace`: a whole snapshot).
//!
//! Prints the figures, and with `--results FILE` appends them as one JSON line. Not a test:
//! bench/replicas.sh runs it.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "../tests/k8s/mock_api.rs"]
#[allow(dead_code)] // the tests use the rest
mod mock_api;

use fleet::{Cp, Fleet, QUIET, cpu_ms, rss_mib, sample_peak, summary};
use mock_api::MockApi;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use trellis_proto::v1::Node;

const NS: &str = "bench";
const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const SCOPES: &str = "/apis/trellis.dev/v1alpha1/scopes";

struct Args {
    proxies: usize,
    replicas: usize,
    services: usize,
    calls: usize,
    rounds: usize,
    results: Option<PathBuf>,
    name: String,
    control: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        proxies: 10_000,
        replicas: 3,
        services: 1000,
        calls: 20,
        rounds: 10,
        results: None,
        name: String::new(),
        control: PathBuf::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let v = argv.next().unwrap_or_default();
        match flag.as_str() {
            "--proxies" => a.proxies = v.parse().expect("--proxies N"),
            "--replicas" => a.replicas = v.parse().expect("--replicas N"),
            "--services" => a.services = v.parse().expect("--services N"),
            "--calls" => a.calls = v.parse().expect("--calls N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--results" => a.results = Some(PathBuf::from(v)),
            "--name" => a.name = v,
            "--control" => a.control = PathBuf::from(v),
            other => panic!("unknown flag {other}; see the first comment of this file"),
        }
    }
    assert!(
        a.replicas >= 2,
        "--replicas must be at least 2: one is killed"
    );
    assert!(a.services >= 3, "--services must be at least 3");
    assert!(
        a.rounds < 80,
        "--rounds must be under 80: each round's weight must be new"
    );
    if a.control.as_os_str().is_empty() {
        a.control = fleet::control_binary();
    }
    a
}

/// Pod `i`'s address: 10.x.y.z from its index.
fn pod_ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "1000"}, "items": items})
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": NS, "resourceVersion": "1", "uid": format!("uid-{name}")})
}

/// The HTTPRoute on svc-0 whose weights each round changes.
fn route(round: usize) -> Value {
    let w = fleet::weight(round);
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": meta("svc-0"),
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "svc-0", "port": 80}],
                    "rules": [{"backendRefs": [{"name": "svc-1", "port": 80, "weight": w},
                                               {"name": "svc-2", "port": 80, "weight": 100 - w}]}]}})
}

/// The cluster the replicas watch, in the mock API server.
fn cluster(a: &Args) -> MockApi {
    let api = MockApi::default();
    let s_count = a.services;
    let services = (0..s_count)
        .map(|s| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(&format!("svc-{s}")),
                   "spec": {"selector": {"app": format!("svc-{s}")}, "clusterIP": format!("10.96.{}.{}", s / 250, s % 250 + 1),
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
        })
        .collect();
    let pods = (0..a.proxies)
        .map(|i| {
            let s = i % s_count;
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                       "name": format!("p-{i}"), "namespace": NS, "resourceVersion": "1", "uid": format!("uid-p-{i}"),
                       "labels": {"app": format!("svc-{s}")}, "annotations": {"trellis.dev/injected": env!("CARGO_PKG_VERSION")}},
                   "spec": {"serviceAccountName": format!("svc-{s}"),
                            "containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]},
                   "status": {"phase": "Running", "podIP": pod_ip(i), "podIPs": [{"ip": pod_ip(i)}]}})
        })
        .collect();
    let slices = (0..s_count)
        .map(|s| {
            let endpoints: Vec<Value> = (s..a.proxies)
                .step_by(s_count)
                .map(|i| {
                    json!({"addresses": [pod_ip(i)], "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "namespace": NS, "name": format!("p-{i}")}})
                })
                .collect();
            let mut m = meta(&format!("svc-{s}-abcde"));
            m["labels"] = json!({"kubernetes.io/service-name": format!("svc-{s}")});
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
                   "addressType": "IPv4", "endpoints": endpoints,
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
        })
        .collect();
    // Each Deployment (the pods of one Service) calls svc-0, whose route the rounds change,
    // and `calls - 1` others.
    let scopes = if a.calls == 0 {
        Vec::new()
    } else {
        (0..s_count)
            .map(|k| {
                let others = s_count - 1;
                let mut calls = vec!["svc-0".to_string()];
                calls.extend((0..a.calls - 1).map(|j| format!("svc-{}", 1 + (k * a.calls + j) % others)));
                json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "Scope", "metadata": meta(&format!("kind-{k}")),
                       "spec": {"selector": {"app": format!("svc-{k}")}, "calls": calls}})
            })
            .collect()
    };
    api.serve(SERVICES, list("Service", "v1", services));
    api.serve(PODS, list("Pod", "v1", pods));
    api.serve(SLICES, list("EndpointSlice", "discovery.k8s.io/v1", slices));
    let gateway_api = "gateway.networking.k8s.io/v1";
    api.serve(ROUTES, list("HTTPRoute", gateway_api, vec![route(0)]));
    for (kind, plural) in [
        ("GRPCRoute", "grpcroutes"),
        ("Gateway", "gateways"),
        ("GatewayClass", "gatewayclasses"),
    ] {
        api.serve(
            &format!("/apis/{gateway_api}/{plural}"),
            list(kind, gateway_api, Vec::new()),
        );
    }
    for (kind, plural) in [
        ("Mesh", "meshes"),
        ("Workload", "workloads"),
        ("ResiliencePolicy", "resiliencepolicies"),
        ("AuthorizationPolicy", "authorizationpolicies"),
        ("ClientRateLimit", "clientratelimits"),
    ] {
        let path = format!("/apis/trellis.dev/v1alpha1/{plural}");
        api.serve(&path, list(kind, "trellis.dev/v1alpha1", Vec::new()));
    }
    api.serve(SCOPES, list("Scope", "trellis.dev/v1alpha1", scopes));
    let grants = "gateway.networking.k8s.io/v1beta1";
    api.serve(
        &format!("/apis/{grants}/referencegrants"),
        list("ReferenceGrant", grants, Vec::new()),
    );
    // The shared CA, as the first replica of a real cluster would have created it.
    let ca = trellis_control::kubernetes::ca::generate_ca().expect("a CA");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let _ = fleet::CA_BUNDLE.set(ca.cert.clone().into_bytes());
    api.serve(
        "/api/v1/secrets",
        list("Secret", "v1", vec![json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "trellis-ca", "namespace": "trellis-system", "resourceVersion": "1"},
            "type": "kubernetes.io/tls", "data": {"tls.crt": b64(&ca.cert), "tls.key": b64(&ca.key)}})]),
    );
    api
}

struct Replica {
    cp: Option<Cp>,
    pid: u32,
    grpc: u16,
    http: u16,
}

fn start_replica(
    a: &Args,
    r: usize,
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> Replica {
    let (grpc, http) = (fleet::free_port(), fleet::free_port());
    let child = Command::new(&a.control)
        .arg("--kubernetes")
        .args(["--namespace", "trellis-system"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        // Several replicas on one host: none takes the default dashboard port.
        .args(["--dashboard-addr", "off"])
        .args([
            "--webhook-addr",
            &format!("127.0.0.1:{}", fleet::free_port()),
        ])
        .arg("--state-dir")
        .arg(dir.join(format!("state-{r}")))
        .env("KUBECONFIG", kubeconfig)
        // The mock serves no webhook configuration or ConfigMaps, so publishing the CA
        // bundle and root fails, as expected here.
        .env(
            "TRELLIS_LOG",
            "warn,trellis_control::kubernetes::in_cluster=off",
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; build it with cargo build --release -p trellis-control",
                a.control.display()
            )
        });
    let pid = child.id();
    Replica {
        cp: Some(Cp(child)),
        pid,
        grpc,
        http,
    }
}

fn addr(port: u16) -> Arc<str> {
    format!("https://127.0.0.1:{port}").into()
}

/// Each live replica's RSS peak while `phase` runs.
async fn peaks<T>(
    replicas: &[Replica],
    phase: impl std::future::Future<Output = T>,
) -> (T, Vec<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let samplers: Vec<_> = replicas
        .iter()
        .filter(|r| r.cp.is_some())
        .map(|r| sample_peak(r.pid, stop.clone()))
        .collect();
    let out = phase.await;
    stop.store(true, Ordering::Relaxed);
    let mut peaks = Vec::new();
    for s in samplers {
        peaks.push(s.await.unwrap_or(0.0));
    }
    (out, peaks)
}

/// How many fleet proxies each replica holds, from the simulated proxies' side.
fn spread(fleet: &Fleet, replicas: usize) -> Vec<usize> {
    let mut n = vec![0; replicas];
    for s in fleet.iter() {
        n[s.lock().unwrap().on] += 1;
    }
    n
}

/// Waits until the replica's `/ready` answers 200: it has read the cluster and built its
/// first config.
async fn wait_ready(http: u16) {
    let t = Instant::now();
    loop {
        let text = fleet::http_get(http, "/ready").await;
        if text.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "a replica was not ready within 2 minutes: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn resumes(replicas: &[Replica]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in replicas {
        out.push(fleet::resumes(r.http).await);
    }
    out
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("trellis-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = cluster(&a);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        mock_api::kubeconfig(listener.local_addr().unwrap()),
    )
    .unwrap();
    tokio::spawn(mock_api::serve_http(api.clone(), listener));

    let mut replicas: Vec<Replica> = (0..a.replicas)
        .map(|r| start_replica(&a, r, &dir, &kubeconfig))
        .collect();
    for r in &replicas {
        fleet::wait_listening(r.grpc, "trellis-control --kubernetes").await;
    }
    for r in &replicas {
        wait_ready(r.http).await;
    }
    // What a replica holds for the cluster alone, before any proxy connects.
    let base_rss: Vec<f64> = replicas.iter().map(|r| round1(rss_mib(r.pid))).collect();
    let addrs: Arc<[Arc<str>]> = replicas.iter().map(|r| addr(r.grpc)).collect();
    let fleet = fleet::fleet(a.proxies);
    let loadavg_at_start = fleet::loadavg();

    // Phase 1: the initial sync, proxy i on replica i mod R.
    let cpu0: Vec<f64> = replicas.iter().map(|r| cpu_ms(r.pid)).collect();
    let started = Instant::now();
    let (sync_s, sync_peaks) = peaks(&replicas, async {
        for i in 0..a.proxies {
            let s = i % a.services;
            let node = Node {
                workload: format!("p-{i}"),
                namespace: NS.into(),
                labels: [("app".to_string(), format!("svc-{s}"))].into(),
                service_account: format!("svc-{s}"),
                inbound: format!("{}:15006", pod_ip(i)),
                ..Default::default()
            };
            tokio::spawn(fleet::proxy(
                addrs.clone(),
                i % a.replicas,
                node,
                Some((fleet.clone(), i)),
            ));
            // Proxies start over a second or two, as a fleet does, not in one instant.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while !fleet::all_hold_one(&fleet) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "initial sync took over 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed().as_secs_f64();
        // Let the fleet settle: no update for 1.5 s.
        let mut last = usize::MAX;
        while fleet::updates(&fleet) != last {
            last = fleet::updates(&fleet);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        took
    })
    .await;
    let versions: std::collections::BTreeSet<String> = fleet
        .iter()
        .map(|s| s.lock().unwrap().version.clone())
        .collect();
    let per_replica: Vec<Value> = replicas
        .iter()
        .enumerate()
        .map(|(r, rep)| {
            json!({"proxies": spread(&fleet, a.replicas)[r], "rss_before_proxies_mib": base_rss[r], "sync_cpu_s": round1((cpu_ms(rep.pid) - cpu0[r]) / 1000.0),
                   "sync_peak_rss_mib": round1(sync_peaks[r]), "rss_after_sync_mib": round1(rss_mib(rep.pid))})
        })
        .collect();
    let scope = match a.calls {
        0 => "unscoped".to_string(),
        n => format!("each Deployment scoped to {n} Services"),
    };
    println!(
        "{} proxies over {} replicas, {} Services, {scope}: initial sync {sync_s:.1}s; {} distinct versions; per replica {}",
        a.proxies,
        a.replicas,
        a.services,
        versions.len(),
        Value::from(per_replica.clone())
    );
    let mut out = json!({
        "name": a.name, "proxies": a.proxies, "replicas": a.replicas, "services": a.services,
        "scoped_calls": a.calls, "loadavg_at_start": loadavg_at_start,
        "initial_sync_s": sync_s, "per_replica": per_replica,
    });

    // Phase 2: route changes through the watch, every replica seeing each one.
    if a.rounds > 0 {
        let cpu0: Vec<f64> = replicas.iter().map(|r| cpu_ms(r.pid)).collect();
        let ((per_proxy, last), round_peaks) = peaks(
            &replicas,
            fleet::rounds(&fleet, 1, a.rounds, |round| {
                api.event(ROUTES, "MODIFIED", route(round));
            }),
        )
        .await;
        let mut s = summary(&per_proxy, &last);
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        let cpu: Vec<f64> = replicas
            .iter()
            .enumerate()
            .map(|(r, rep)| round1((cpu_ms(rep.pid) - cpu0[r]) / a.rounds as f64))
            .collect();
        println!(
            "route changes: API event -> arrival per proxy over {} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU per change per replica {cpu:?} ms; RSS peaks {round_peaks:.0?} MiB",
            a.rounds,
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms")
        );
        s["rounds"] = a.rounds.into();
        s["cpu_ms_per_change_per_replica"] = cpu.into();
        s["peak_rss_mib_per_replica"] = round_peaks.into();
        out["changes"] = s;
    }

    // Phase 3: replica 0 dies; its proxies move to the others.
    let before = resumes(&replicas[1..]).await;
    let moved = spread(&fleet, a.replicas)[0];
    QUIET.store(true, Ordering::Relaxed);
    let killed = Instant::now();
    drop(replicas[0].cp.take());
    let (failover_s, failover_peaks) = peaks(&replicas, async {
        let deadline = killed + Duration::from_secs(600);
        loop {
            let mut n = 0;
            for r in &replicas[1..] {
                n += fleet::synced(&addr(r.grpc), "p-").await.unwrap_or(0);
            }
            if n == a.proxies {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet did not move within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killed.elapsed().as_secs_f64()
    })
    .await;
    QUIET.store(false, Ordering::Relaxed);
    let after = resumes(&replicas[1..]).await;
    // What the survivors did with the moved streams: counts since the kill.
    let mut resumed = serde_json::Map::new();
    for (b, a) in before.iter().zip(&after) {
        for (k, v) in a.as_object().into_iter().flatten() {
            let was = b[k].as_f64().unwrap_or(0.0);
            let e = resumed.entry(k.clone()).or_insert(json!(0.0));
            *e = json!(e.as_f64().unwrap_or(0.0) + v.as_f64().unwrap_or(0.0) - was);
        }
    }
    let survivors: Vec<Value> = replicas[1..]
        .iter()
        .enumerate()
        .map(|(j, r)| json!({"proxies_after": spread(&fleet, a.replicas)[j + 1], "failover_peak_rss_mib": round1(failover_peaks[j]), "rss_after_mib": round1(rss_mib(r.pid))}))
        .collect();
    println!(
        "replica 0 killed: its {moved} proxies moved and every proxy was in sync again after {failover_s:.1}s; resumes on the survivors {}; survivors {}",
        Value::from(resumed.clone()),
        Value::from(survivors.clone())
    );
    out["failover"] = json!({"moved": moved, "in_sync_s": failover_s, "resumes": resumed, "survivors": survivors});
    if let Some(file) = &a.results {
        fleet::append_result(file, &out);
    }
    QUIET.store(true, Ordering::Relaxed);
    drop(replicas);
    let _ = std::fs::remove_dir_all(&dir);
}
