//! What the Kubernetes side costs at cluster scale, for bench/kubernetes.sh: translating and
//! loading a cluster of S Services with P ready pods each (every tenth Service with an
//! HTTPRoute, half the pods injected) from scratch and after one EndpointSlice changes, and
//! answering one AdmissionReview. Prints one line per figure; asserts nothing.
//!
//!     cargo run --release -p trellis-control --example k8s_scale -- --services 1000 --pods 10

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_control::inject::InjectConfig;
use trellis_control::inject::admission::review;
use trellis_control::kubernetes::status::patches;
use trellis_control::kubernetes::translate::{ClusterState, Translator, mesh_config};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("valid API JSON"))
}

fn slice(s: usize, pods: usize, generation: usize) -> Value {
    let endpoints: Vec<Value> = (0..pods)
        .map(|p| {
            json!({"addresses": [format!("10.{}.{}.{}", s / 250, s % 250, p + 1)],
                   "conditions": {"ready": true},
                   "targetRef": {"kind": "Pod", "namespace": "apps", "name": format!("svc{s}-pod{p}")}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("svc{s}-abcde"), "namespace": "apps", "resourceVersion": (1000 + generation).to_string(),
                        "labels": {"kubernetes.io/service-name": format!("svc{s}"), "generation": generation.to_string()}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

fn cluster(services: usize, pods: usize) -> ClusterState {
    let mut state = ClusterState::default();
    for s in 0..services {
        state.services.push(obj(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc{s}"), "namespace": "apps", "resourceVersion": "1"},
            "spec": {"selector": {"app": format!("svc{s}")},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})));
        state.endpoint_slices.push(obj(slice(s, pods, 0)));
        for p in 0..pods {
            let mut annotations = json!({});
            if p % 2 == 0 {
                annotations["trellis.dev/injected"] = json!("0.1.0");
            }
            state.pods.push(obj(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("svc{s}-pod{p}"), "namespace": "apps", "resourceVersion": "1",
                             "labels": {"app": format!("svc{s}"), "version": "v1"}, "annotations": annotations},
                "spec": {"serviceAccountName": format!("svc{s}"),
                         "containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]}})));
        }
        if s % 10 == 0 && s + 1 < services {
            state.http_routes.push(obj(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": format!("svc{s}"), "namespace": "apps", "resourceVersion": "1"},
                "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": format!("svc{s}"), "port": 80}],
                         "rules": [{"backendRefs": [
                             {"name": format!("svc{s}"), "port": 80, "weight": 90},
                             {"name": format!("svc{}", s + 1), "port": 80, "weight": 10}]}]}})));
        }
    }
    state
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let services = arg("--services", 1000);
    let pods = arg("--pods", 10);
    let rounds = arg("--rounds", 5);
    let mut state = cluster(services, pods);
    println!(
        "cluster: {services} Services, {} pods, {} EndpointSlices, {} HTTPRoutes",
        state.pods.len(),
        state.endpoint_slices.len(),
        state.http_routes.len()
    );

    let mut cold = Vec::new();
    let mut workloads = 0;
    for _ in 0..arg("--cold-rounds", rounds) {
        let loader = trellis_config::Loader::default();
        let t = Instant::now();
        let cfg = mesh_config(&state, &loader).unwrap_or_else(|e| panic!("{e}"));
        cold.push(t.elapsed());
        workloads = cfg.workloads.len();
    }
    println!(
        "translate+load, cold loader: median {:.1} ms ({workloads} workloads)",
        median(cold).as_secs_f64() * 1e3
    );

    // One EndpointSlice changes, as a rollout's pod turning ready does. As the control
    // plane runs: one translator, which re-renders only changed objects, and one loader,
    // which reparses only changed texts.
    let loader = trellis_config::Loader::default();
    let mut translator = Translator::default();
    let applies = |translator: &mut Translator, state: &ClusterState, refused: usize| {
        let t = translator.translate(state, &loader);
        let cfg = t.config.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.held_back.len(), refused, "{:?}", t.held_back.keys());
        cfg
    };
    applies(&mut translator, &state, 0);
    let mut warm = Vec::new();
    for r in 0..rounds {
        state.endpoint_slices[r % services] = obj(slice(r % services, pods, r + 1));
        let t = Instant::now();
        applies(&mut translator, &state, 0);
        warm.push(t.elapsed());
    }
    println!(
        "translate+load after one EndpointSlice change: median {:.1} ms",
        median(warm).as_secs_f64() * 1e3
    );
    // The same with one HTTPRoute refused (its backend does not exist): the translator
    // loads, sets the route aside and loads again, so every change costs two loads.
    state.http_routes.push(obj(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "broken", "namespace": "apps", "resourceVersion": "1"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "svc0", "port": 80}],
                 "rules": [{"backendRefs": [{"name": "no-such-service", "port": 80}]}]}}),
    ));
    let mut refused = Vec::new();
    for r in 0..rounds {
        state.endpoint_slices[r % services] = obj(slice(r % services, pods, 2 * rounds + r + 1));
        let t = Instant::now();
        applies(&mut translator, &state, 1);
        refused.push(t.elapsed());
    }
    // The Gateway API status of every route, as computed after a change to a route (a
    // change to anything else skips it).
    let held = translator.translate(&state, &loader).held_back;
    let mut status = Vec::new();
    let mut written = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        written = patches(&state, &held, &[], "2026-11-27T00:00:00Z").len();
        status.push(t.elapsed());
    }
    state.http_routes.pop();
    println!(
        "  the same with one HTTPRoute refused and set aside: median {:.1} ms",
        median(refused).as_secs_f64() * 1e3
    );
    let status_line = format!(
        "status of {} routes, computed from scratch: median {:.2} ms ({written} to write)",
        state.http_routes.len() + 1,
        median(status).as_secs_f64() * 1e3
    );
    // The same without the translator's cache: every object rendered again.
    let mut uncached = Vec::new();
    for r in 0..rounds {
        state.endpoint_slices[r % services] = obj(slice(r % services, pods, rounds + r + 1));
        let t = Instant::now();
        mesh_config(&state, &loader).unwrap();
        uncached.push(t.elapsed());
    }
    println!(
        "  the same, rendering every object again: median {:.1} ms",
        median(uncached).as_secs_f64() * 1e3
    );
    println!("{status_line}");

    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/deployment-pod.json"
    ))
    .unwrap();
    let cfg = InjectConfig::default();
    let n = 20_000;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += review(&body, &cfg).len();
    }
    let per = t.elapsed() / n;
    println!(
        "AdmissionReview in, patch out (one Deployment pod): {:.1} µs each, {} bytes answered",
        per.as_secs_f64() * 1e6,
        bytes / n as usize
    );
}
