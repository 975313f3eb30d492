//! `trellis shift`: set an HTTPRoute's backend weights, write the change back to the YAML
//! document it came from, and wait until every affected proxy has ACKed it.

use crate::state::ControlPlane;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Status;
use trellis_proto::v1::ShiftResponse;

/// Sets `route`'s backend weights where it came from (its file, or the cluster) and waits
/// until every proxy whose config it changes has ACKed, or `timeout` has passed.
pub async fn shift(
    cp: &ControlPlane,
    route: &str,
    weights: &HashMap<String, u32>,
    timeout: Duration,
) -> Result<ShiftResponse, Status> {
    if !route.contains('/') {
        return Err(Status::invalid_argument(format!(
            "route {route:?} must be namespace/name, e.g. rides/billing"
        )));
    }
    if weights.is_empty() {
        return Err(Status::invalid_argument("give at least one BACKEND=WEIGHT"));
    }
    if let Some((b, w)) = weights.iter().find(|(_, w)| **w > 1_000_000) {
        return Err(Status::invalid_argument(format!(
            "weight {w} for {b} is out of range 0-1000000"
        )));
    }
    let world = cp.world().ok_or_else(|| {
        Status::failed_precondition(
            "no valid config is loaded yet; see trellis status for the errors",
        )
    })?;
    let doc = world
        .config
        .http_routes
        .iter()
        .find(|r| r.key() == route)
        .ok_or_else(|| Status::not_found(format!("no HTTPRoute {route}; see trellis routes")))?;
    let known: BTreeSet<&str> = doc
        .object
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.backend_refs)
        .map(|b| b.name.value.as_str())
        .collect();
    if let Some(missing) = weights.keys().find(|b| !known.contains(b.as_str())) {
        return Err(Status::invalid_argument(format!(
            "{missing} is not a backend of {route}; its backends are {known:?}"
        )));
    }
    let file = doc.file.to_string();
    let before: HashMap<u64, String> = cp
        .registry
        .lock()
        .iter()
        .filter(|(_, e)| e.connected)
        .map(|(id, e)| (*id, e.latest_version.clone()))
        .collect();

    let started = Instant::now();
    if file.starts_with("kubernetes:") {
        shift_in_cluster(cp, route, &file, weights, started + timeout).await?;
    } else {
        shift_in_file(cp, &file, doc.line, weights)?;
    }

    let world = cp
        .world()
        .ok_or_else(|| Status::internal("the config vanished during the shift"))?;
    let targets: Vec<(u64, String, String)> = cp
        .registry
        .snapshot_with_ids()
        .into_iter()
        .filter_map(|(id, e)| {
            // The version the proxy itself is sent: a gateway's includes its certificates.
            let identity = cp.serving_identity(&e.identity);
            let target = (world.compiled_for_proxy(
                &identity,
                e.gateway.as_deref(),
                e.protocol,
                &cp.metrics.compilations,
            ))
            .version
            .clone();
            let changed = before.get(&id).is_some_and(|v| *v != target);
            changed.then(|| {
                (
                    id,
                    format!("{}/{}", e.node.namespace, e.node.workload),
                    target,
                )
            })
        })
        .collect();
    let deadline = started + timeout;
    let failures = loop {
        let entries = cp.registry.lock().clone();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        for (id, name, target) in &targets {
            match entries.get(id) {
                Some(e) if e.acked_version == *target => {}
                Some(e) if e.last_nack.as_ref().is_some_and(|(v, _)| v == target) => {
                    failed.push(format!(
                        "{name} refused {target}: {}",
                        e.last_nack.as_ref().map_or("", |n| n.1.as_str())
                    ));
                }
                Some(e) if !e.connected => {
                    failed.push(format!("{name} disconnected before it ACKed {target}"))
                }
                None => failed.push(format!("{name} went away before it ACKed {target}")),
                Some(_) => pending.push(name.clone()),
            }
        }
        if pending.is_empty() {
            break failed;
        }
        if Instant::now() >= deadline {
            failed.extend(
                pending
                    .into_iter()
                    .map(|n| format!("{n} did not ACK within {timeout:?}")),
            );
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let converged_ms = started.elapsed().as_millis() as u64;
    tracing::info!(%route, %file, proxies = targets.len(), converged_ms, "weights shifted");
    Ok(ShiftResponse {
        file,
        proxies_updated: targets.len() as u32,
        converged_ms,
        failures,
    })
}

/// File mode: rewrite the route's document in place and reload at once.
fn shift_in_file(
    cp: &ControlPlane,
    file: &str,
    line: u64,
    weights: &HashMap<String, u32>,
) -> Result<(), Status> {
    trellis_config::rewrite_document(Path::new(file), line, |v| {
        let rules = v["spec"]["rules"]
            .as_array_mut()
            .ok_or("the document has no spec.rules")?;
        for rule in rules {
            for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
                if let Some(w) = b["name"].as_str().and_then(|n| weights.get(n)) {
                    b["weight"] = serde_json::json!(w);
                }
            }
        }
        Ok(())
    })
    .map_err(|e| Status::failed_precondition(e.to_string()))?;
    // Apply now rather than wait for the file watcher; it will find nothing new.
    cp.reload().map_err(|e| {
        Status::failed_precondition(format!(
            "{file} was written but the result is refused:\n{e}"
        ))
    })?;
    Ok(())
}

/// Kubernetes mode: patch the HTTPRoute or GRPCRoute the route came from, then wait until
/// the watch has brought the new weights into the served config.
async fn shift_in_cluster(
    cp: &ControlPlane,
    route: &str,
    file: &str,
    weights: &HashMap<String, u32>,
    deadline: Instant,
) -> Result<(), Status> {
    let client = cp.kube.get().cloned().ok_or_else(|| {
        Status::failed_precondition("the route came from Kubernetes but no client is set")
    })?;
    let (ns, name) = route.split_once('/').unwrap_or(("default", route));
    let kind = crate::kubernetes::cluster::kind_of(file);
    crate::kubernetes::shift::shift(client, kind, ns, name, weights)
        .await
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    loop {
        let applied = cp.world().is_some_and(|w| {
            w.config.http_routes.iter().any(|r| {
                r.key() == route
                    && r.object
                        .spec
                        .rules
                        .iter()
                        .flat_map(|r| &r.backend_refs)
                        .all(|b| {
                            weights
                                .get(&b.name.value)
                                .is_none_or(|w| b.weight == Some(*w))
                        })
            })
        });
        if applied {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "{kind} {route} was patched but the watch did not bring the change back in time; see trellis status"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
