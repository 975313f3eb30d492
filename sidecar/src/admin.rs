//! The admin port: `/ready`, `/live`, `/metrics`, `/config_dump`, `/clusters`, `POST /drain`,
//! `POST /breaker` to force a cluster's circuit breaker, and `/app-health/...`: kubelet's
//! rewritten probes (`inbound/probes.rs`).

use crate::clock;
use crate::config::runtime::{RtCluster, Runtime};
use crate::inbound::probes;
use crate::resilience::breaker::state::State;
use crate::shared::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use trellis_config::snapshot::Cluster;
use trellis_proto::listen::Listener;

/// What a peer outside the pod may ask: kubelet's probes and Prometheus. The rest shows the
/// mesh's config or changes the proxy (drain, breakers), so it answers loopback only — the
/// admin port listens on the pod IP in Kubernetes, where kubelet must reach it.
const REMOTE_PATHS: [&str; 3] = ["/live", "/ready", "/metrics"];

/// Open admin connections at once. Its clients are kubelet, Prometheus and an operator, a few
/// connections each; the cap keeps a flood from taking descriptors the traffic listeners need.
const MAX_CONNECTIONS: usize = 256;

/// Serves the admin API until the process exits (it stays up during a drain, for `/ready`).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut listener = Listener::new(listener, "admin", MAX_CONNECTIONS);
    // Without it a client that never finishes its request head holds a connection, and one
    // of the few permits, for good (slowloris).
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.bootstrap.limits.header_read_timeout);
    loop {
        let (stream, peer, permit) = listener.accept().await;
        let (shared, http) = (shared.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let path = req.uri().path();
                    let response = if let Some(key) = path.strip_prefix(probes::PREFIX) {
                        if req.method() == Method::GET {
                            probes::check(&shared, key).await
                        } else {
                            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n")
                        }
                    } else if !peer.ip().to_canonical().is_loopback()
                        && !REMOTE_PATHS.contains(&path)
                    {
                        reply(
                            StatusCode::FORBIDDEN,
                            "text/plain",
                            "only /live, /ready, /metrics and /app-health/ answer from outside the pod; use kubectl port-forward for the rest\n",
                        )
                    } else {
                        handle(&shared, req)
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )
}

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let rt = shared.config.current_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => reply(StatusCode::OK, "text/plain", "live\n"),
        (&Method::GET, "/ready") => match (&rt, shared.drain.is_draining()) {
            (_, true) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n"),
            (None, _) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no config loaded yet; see /config_dump\n",
            ),
            (Some(_), _) if shared.tls.as_ref().is_some_and(|t| !t.is_serving()) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no mesh certificate yet, or not yet registered as an mTLS endpoint; see the proxy's log\n",
            ),
            (Some(rt), _) => reply(
                StatusCode::OK,
                "text/plain",
                format!("ready {}\n", rt.snapshot.version),
            ),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.render(),
        ),
        (&Method::GET, "/config_dump") => json(&serde_json::json!({
            "version": rt.as_ref().map(|r| r.snapshot.version.clone()),
            "source": shared.source.clone(),
            "lastError": shared.config.last_error().map(|e| serde_json::json!({
                "at": e.at_unix_secs,
                "errors": e.errors.0.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            })),
            "snapshot": rt.as_ref().map(|r| r.snapshot.as_ref()),
            // Public facts about the certificate only: never key material.
            "identity": shared.tls.as_ref().and_then(|t| t.info.load_full()).map(|i| serde_json::json!({
                "spiffeId": i.id.to_string(),
                "serial": i.serial,
                "notBefore": i.not_before,
                "notAfter": i.not_after,
            })),
        })),
        (&Method::GET, "/clusters") => {
            let now = clock::now();
            let mut clusters: Vec<serde_json::Value> = Vec::new();
            if let Some(rt) = &rt {
                for (name, c) in &rt.clusters {
                    let snapshot = rt.snapshot.clusters.get(&**name).map(|c| &**c);
                    clusters.push(cluster_json(c, snapshot, now));
                }
            }
            json(&serde_json::json!({ "clusters": clusters }))
        }
        (&Method::POST, "/breaker") => force_breaker(rt.as_deref(), req.uri().query()),
        (_, "/breaker") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /breaker?cluster=NAME&state=CLOSED|DISABLED|FORCED_OPEN\n",
        ),
        (&Method::POST, "/drain") => {
            tracing::info!("drain requested on the admin port");
            shared.drain.start();
            reply(StatusCode::ACCEPTED, "text/plain", "draining\n")
        }
        (_, "/drain") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /drain\n",
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /ready, /live, /metrics, /config_dump, /clusters, POST /breaker or POST /drain\n",
        ),
    }
}

/// A cluster as `/clusters` shows it: balancer, resilience state, and each endpoint's health.
fn cluster_json(
    c: &RtCluster,
    snapshot: Option<&Cluster>,
    now: std::time::Duration,
) -> serde_json::Value {
    let r = &c.resilience;
    let breaker = r.breaker.as_ref().map(|b| {
        let s = b.status(now);
        serde_json::json!({
            "state": s.state.name(),
            "calls": s.window.calls,
            "failureRate": s.window.failure_rate(),
            "slowCallRate": s.window.slow_rate(),
            "openUntilUnixMs": s.open_until.map(clock::unix_millis),
        })
    });
    let bulkhead = r.bulkhead.as_ref().map(|b| {
        serde_json::json!({
            "active": b.active(),
            "pending": b.pending(),
        })
    });
    // The workload behind each address is in the snapshot; the live state holds only what
    // changes.
    let workloads: HashMap<SocketAddr, &str> = snapshot
        .map(|c| {
            (c.endpoints.iter())
                .map(|e| (e.address, &*e.workload))
                .collect()
        })
        .unwrap_or_default();
    let endpoints: Vec<serde_json::Value> = c
        .upstream
        .balancer
        .endpoints
        .iter()
        .map(|e| {
            let until = e.health.ejected_until(now);
            serde_json::json!({
                "address": e.addr.to_string(),
                "workload": workloads.get(&e.addr),
                "health": if until.is_some() { "ejected" } else { "healthy" },
                "ejectedUntilUnixMs": until.map(clock::unix_millis),
                "ejections": e.health.ejections(),
                "activeRequests": e.active.load(Ordering::Relaxed),
                "ewmaMillis": e.ewma.rtt().as_secs_f64() * 1000.0,
            })
        })
        .collect();
    serde_json::json!({
        "name": c.upstream.name.as_str(),
        "service": c.service,
        "policy": c.upstream.balancer.policy,
        "circuitBreaker": breaker,
        "bulkhead": bulkhead,
        "endpoints": endpoints,
    })
}

/// `POST /breaker?cluster=NAME&state=CLOSED|DISABLED|FORCED_OPEN`: an operator's override,
/// as resilience4j's `transitionToForcedOpenState`, `transitionToDisabledState` and
/// `transitionToClosedState`.
fn force_breaker(rt: Option<&Runtime>, query: Option<&str>) -> Response<Full<Bytes>> {
    let usage = "use POST /breaker?cluster=NAME&state=CLOSED|DISABLED|FORCED_OPEN";
    let bad = |msg: String| reply(StatusCode::BAD_REQUEST, "text/plain", msg + "\n");
    let (mut cluster, mut state) = (None, None);
    for (k, v) in query_pairs(query.unwrap_or("")) {
        match k.as_str() {
            "cluster" => cluster = Some(v),
            "state" => state = Some(v),
            _ => {}
        }
    }
    let (Some(cluster), Some(state)) = (cluster, state) else {
        return bad(format!("cluster and state are required; {usage}"));
    };
    let to = match State::parse(&state) {
        Some(s @ (State::Closed | State::Disabled | State::ForcedOpen)) => s,
        _ => return bad(format!("state {state:?} cannot be set; {usage}")),
    };
    let Some(c) = rt.and_then(|rt| rt.clusters.get(cluster.as_str())) else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no cluster {cluster:?}; GET /clusters lists them\n"),
        );
    };
    let Some(b) = &c.resilience.breaker else {
        return reply(
            StatusCode::CONFLICT,
            "text/plain",
            format!(
                "cluster {cluster:?} has no circuit breaker; add spec.circuitBreaker to the ResiliencePolicy of its Service\n"
            ),
        );
    };
    let from = b.force(to, clock::now());
    json(&serde_json::json!({
        "cluster": cluster,
        "from": from.name(),
        "state": to.name(),
    }))
}

/// `application/x-www-form-urlencoded` pairs of a query string: `+` is a space, and `%XX`
/// escapes are decoded (cluster names hold `:` and, when inherited, spaces).
fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&').filter(|p| !p.is_empty()).map(move |p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}
