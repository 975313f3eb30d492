//! The dashboard's one JSON document: the service graph, each Service's page, the proxies,
//! and the routes with their backends' weights and numbers (the canary view). It is built
//! from the golden window (`golden/`), the proxy registry and the config, so that the page
//! only draws. docs/dashboard.md says where each number comes from.

use crate::golden::unix_now;
use crate::state::ControlPlane;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use trellis_proto::stat::{Totals, group_by};
use trellis_proto::v1::StatResponse;

/// The numbers of summed counts over `covered` seconds.
fn numbers(t: &Totals, covered: f64) -> Value {
    json!({
        "requests": t.requests,
        "rps": t.rps(covered),
        "successRate": t.success_rate(),
        "p50": t.quantile_ms(0.5),
        "p95": t.quantile_ms(0.95),
        "p99": t.quantile_ms(0.99),
        // Every request of the edge went over mTLS.
        "mtls": t.requests > 0 && t.mtls == t.requests,
        "mtlsRequests": t.mtls,
    })
}

/// How bad a breaker state is, to show the worst of an edge's callers.
fn severity(state: &str) -> u8 {
    match state {
        "open" | "forced_open" => 3,
        "half_open" => 2,
        "closed" => 1,
        _ => 0,
    }
}

pub async fn build(cp: &ControlPlane, window: Duration, page: Option<&str>) -> Value {
    let now = unix_now();
    let stat = crate::golden::peers::gather(&cp.golden, &cp.opts.peers, window).await;
    let covered = stat.covered_seconds;
    let registry = cp.registry.snapshot();
    let routes = crate::admin::routes(cp, "").unwrap_or_default();
    let world = cp.world();

    // Which Services each proxy serves, and which workload an endpoint address is.
    let mut instances: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut workload_at: HashMap<String, String> = HashMap::new();
    let health: HashMap<(String, String), &trellis_proto::v1::ProxyHealth> = (stat.proxies.iter())
        .map(|p| ((p.namespace.clone(), p.workload.clone()), p))
        .collect();
    let mut proxies = Vec::new();
    for e in &registry {
        let key = (e.node.namespace.clone(), e.node.workload.clone());
        let h = health.get(&key);
        let services = match (h, &world) {
            (Some(h), _) => h.services.clone(),
            (None, Some(w)) => trellis_config::compile::services_selecting(
                &w.config,
                &e.identity.namespace,
                &e.identity.labels,
            ),
            (None, None) => Vec::new(),
        };
        workload_at.insert(e.node.inbound.clone(), format!("{}/{}", key.0, key.1));
        let (nack_version, nack_error) = e.last_nack.clone().unwrap_or_default();
        let p = json!({
            "workload": e.node.workload,
            "namespace": e.node.namespace,
            "services": services,
            "connected": e.connected,
            "connectedSince": e.connected_since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "latestVersion": e.latest_version,
            "ackedVersion": e.acked_version,
            "lastNackVersion": nack_version,
            "lastNackError": nack_error,
            "mtls": e.node.mtls,
            "inbound": e.node.inbound,
            "certificateExpiry": h.map(|h| h.certificate_expiry_unix).filter(|t| *t > 0),
            "lastSummary": h.map(|h| h.last_summary_unix),
        });
        for s in &services {
            instances.entry(s.clone()).or_default().push(p.clone());
        }
        proxies.push(p);
    }

    // A cluster guards its own Service (a backend, such as billing-v2) and every Service
    // whose routes send to it (billing, for a split), as the callers' counts show.
    let mut guards: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for e in stat.edges.iter().filter(|e| !e.inbound) {
        guards.entry(&e.backend).or_default().insert(&e.destination);
    }
    // Breakers and ejections, as each caller's proxy last said, by the Service they guard.
    let mut breakers: HashMap<(String, String), String> = HashMap::new();
    let mut ejected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &stat.proxies {
        let from = p
            .services
            .first()
            .cloned()
            .unwrap_or_else(|| format!("{}.{}", p.workload, p.namespace));
        for c in &p.clusters {
            let mut services = guards.get(c.cluster.as_str()).cloned().unwrap_or_default();
            services.insert(&c.service);
            for s in services {
                if !c.breaker.is_empty() {
                    let slot = breakers.entry((from.clone(), s.to_string())).or_default();
                    if severity(&c.breaker) > severity(slot) {
                        *slot = c.breaker.clone();
                    }
                }
                for addr in &c.ejected {
                    let who = workload_at
                        .get(addr)
                        .cloned()
                        .unwrap_or_else(|| addr.clone());
                    ejected.entry(s.to_string()).or_default().insert(who);
                }
            }
        }
    }

    let edges: Vec<Value> = group_by(&stat.edges, false, |e| {
        Some((e.source.clone(), e.destination.clone()))
    })
    .iter()
    .map(|((from, to), t)| {
        let mut v = numbers(t, covered);
        v["from"] = json!(from);
        v["to"] = json!(to);
        v["breaker"] = json!(breakers.get(&(from.clone(), to.clone())));
        v
    })
    .collect();

    // Nodes: every Service of the config, every caller seen, every callee seen.
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Some(w) = &world {
        for s in &w.config.services {
            names.insert(format!(
                "{}.{}",
                s.object.metadata.name, s.object.metadata.namespace
            ));
        }
    }
    let configured = names.clone();
    for e in stat.edges.iter().filter(|e| !e.inbound) {
        names.insert(e.source.clone());
        names.insert(e.destination.clone());
    }
    let inbound_by_service = group_by(&stat.edges, true, |e| Some(e.destination.clone()));
    let callers_view = group_by(&stat.edges, false, |e| Some(e.destination.clone()));
    let errors = errors_by_service(&stat);
    let policies = world
        .as_ref()
        .map(|w| policies(&w.config))
        .unwrap_or_default();
    let services: Vec<Value> = names
        .iter()
        .map(|name| {
            let guarding = || breakers.iter().filter(|((_, to), _)| to == name);
            let open = guarding().filter(|(_, s)| severity(s) == 3).count();
            // The worst of its callers' breakers for it.
            let worst = guarding()
                .map(|(_, s)| s.as_str())
                .max_by_key(|s| severity(s))
                .unwrap_or("closed");
            json!({
                "name": name,
                // A Service of the config, or a workload that calls and that no Service
                // selects (a gateway, a job).
                "service": configured.contains(name),
                // As its callers' proxies saw it (proxy-generated errors included).
                "callers": callers_view.get(name).map(|t| numbers(t, covered)),
                // As its own proxies saw it (callers outside the mesh included).
                "inbound": inbound_by_service.get(name).map(|t| numbers(t, covered)),
                "instances": instances.get(name).cloned().unwrap_or_default(),
                "ejected": ejected.get(name).cloned().unwrap_or_default(),
                "openBreakers": open,
                "breaker": worst,
                "policies": policies.get(name).cloned().unwrap_or_default(),
                "errors": errors.get(name).cloned().unwrap_or_default(),
                // Only for the Service whose page is open.
                "series": (page == Some(name.as_str())).then(|| series(cp, name, now)),
            })
        })
        .collect();

    // Each route with its backends' weights and numbers, for the canary view.
    let route_rows: Vec<Value> = routes
        .iter()
        .map(|r| {
            let backends: Vec<Value> = r
                .backends
                .iter()
                .map(|b| {
                    let (cluster, weight) = b.rsplit_once('=').unwrap_or((b, "0"));
                    let t = Totals::of(
                        (stat.edges.iter())
                            .filter(|e| !e.inbound && e.route == r.route && e.backend == cluster),
                    );
                    let mut v = numbers(&t, covered);
                    v["cluster"] = json!(cluster);
                    v["weight"] = json!(weight.parse::<u64>().unwrap_or(0));
                    v
                })
                .collect();
            json!({
                "service": r.service,
                "port": r.port,
                "route": r.route,
                "match": r.r#match,
                "backends": backends,
            })
        })
        .collect();

    json!({
        "now": now.as_secs(),
        "windowSeconds": stat.window_seconds,
        "coveredSeconds": covered,
        "replicas": stat.replicas,
        "dropped": stat.dropped,
        "unreachable": stat.unreachable,
        "services": services,
        "edges": edges,
        "routes": route_rows,
        "proxies": proxies,
        "configErrors": cp.config_errors().map(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

fn errors_by_service(stat: &StatResponse) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &stat.errors {
        out.entry(e.destination.clone())
            .or_default()
            .push(json!({"code": e.code, "count": e.count}));
    }
    out
}

/// The ResiliencePolicies and AuthorizationPolicies of the config by the Service they target
/// (`name.namespace`): one pass over the policies per build, not one per Service.
fn policies(config: &trellis_config::MeshConfig) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for p in &config.resilience_policies {
        let m = &p.object.metadata;
        if let Some(t) = &p.object.spec.target_ref {
            let line = format!("ResiliencePolicy {}/{}", m.namespace, m.name);
            out.entry(format!("{}.{}", t.name.value, m.namespace))
                .or_default()
                .push(line);
        }
    }
    for p in &config.authorization_policies {
        let m = &p.object.metadata;
        let line = format!("AuthorizationPolicy {}/{}", m.namespace, m.name);
        let target = format!("{}.{}", p.object.spec.target_ref.name.value, m.namespace);
        out.entry(target).or_default().push(line);
    }
    out
}

/// The Service's requests and successes per 10 s slot over the window, as its callers saw
/// them: the sparkline of its page.
fn series(cp: &ControlPlane, name: &str, now: Duration) -> Vec<(u64, u64)> {
    cp.golden
        .series(now, |k| !k.inbound && &*k.destination == name)
}
