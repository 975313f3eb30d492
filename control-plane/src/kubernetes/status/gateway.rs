//! A trellis-class Gateway's status: `Accepted` and `Programmed`, its addresses (from the
//! Service in front of it), and each listener's conditions and attached routes.

use super::condition::{Condition, refusal, stamp_condition};
use crate::kubernetes::cluster::ClusterState;
use crate::kubernetes::kinds::GATEWAY_GROUP;
use crate::kubernetes::translate::HeldBack;
use k8s_openapi::api::core::v1::Service;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use trellis_config::gateway_tls::CertProblem;

/// The Service in front of a Gateway's proxies: the one with the Gateway's name in its
/// namespace, as k8s/gateway/ ships them (Gateway and Service `trellis-system/trellis-gateway`).
pub(super) fn gateway_service<'a>(
    state: &'a ClusterState,
    key: &(String, String),
) -> Option<&'a Service> {
    state
        .services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(key.0.as_str())
                && s.metadata.name.as_deref() == Some(key.1.as_str())
        })
        .map(AsRef::as_ref)
}

/// Where clients reach a Gateway: its Service's load-balancer addresses, or its cluster IP
/// for a Service that is not a LoadBalancer. `None`: a LoadBalancer still waiting for one.
fn gateway_addresses(service: &Service) -> Option<Vec<Value>> {
    let ingress: Vec<Value> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) => Some(json!({"type": "IPAddress", "value": ip})),
            (None, Some(h)) => Some(json!({"type": "Hostname", "value": h})),
            (None, None) => None,
        })
        .collect();
    let spec = service.spec.as_ref();
    if !ingress.is_empty() {
        return Some(ingress);
    }
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        return None;
    }
    Some(
        spec.and_then(|s| s.cluster_ip.as_deref())
            .filter(|ip| *ip != "None")
            .map(|ip| json!({"type": "IPAddress", "value": ip}))
            .into_iter()
            .collect(),
    )
}

/// A trellis-class Gateway's status without times: conditions and listeners.
pub(super) fn gateway_status(
    g: &DynamicObject,
    held: Option<&HeldBack>,
    attached: &BTreeMap<(String, String), Vec<Option<String>>>,
    key: &(String, String),
    service: Option<&Service>,
    certificates: &[CertProblem],
) -> Value {
    let addresses = service.map(gateway_addresses);
    let accepted = match held {
        None => Condition::new(
            "Accepted",
            true,
            "Accepted",
            "served by the Trellis gateway",
        ),
        Some(h) => Condition::new("Accepted", false, "Invalid", refusal(h, None)),
    };
    let programmed = match held {
        Some(h) if h.previous_serves => {
            Condition::new("Programmed", true, "Programmed", refusal(h, None))
        }
        Some(h) => Condition::new("Programmed", false, "Invalid", refusal(h, None)),
        None if matches!(addresses, Some(None)) => Condition::new(
            "Programmed",
            false,
            "AddressNotAssigned",
            format!(
                "the LoadBalancer Service {}/{} has no address yet",
                key.0, key.1
            ),
        ),
        None => Condition::new(
            "Programmed",
            true,
            "Programmed",
            "sent to the trellis-gateway proxies",
        ),
    };
    let routes = attached.get(key).map(Vec::as_slice).unwrap_or_default();
    let listeners: Vec<Value> = g.data["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let name = l["name"].as_str().unwrap_or_default();
            let protocol = l["protocol"].as_str().unwrap_or_default();
            let attached_routes = routes
                .iter()
                .filter(|section| section.as_deref().is_none_or(|s| s == name))
                .count();
            let gateway = format!("{}/{}", key.0, key.1);
            let problems: Vec<&CertProblem> = (certificates.iter())
                .filter(|p| p.gateway == gateway && p.listener == name)
                .collect();
            let refs = l["tls"]["certificateRefs"].as_array().map_or(0, Vec::len);
            let conditions = if protocol == "HTTP" {
                vec![
                    Condition::new("Accepted", true, "Accepted", "listener accepted"),
                    Condition::new("Programmed", true, "Programmed", "listener programmed"),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", "no references to resolve"),
                ]
            } else if protocol == "HTTPS" {
                let resolved = match problems.first() {
                    None => Condition::new("ResolvedRefs", true, "ResolvedRefs", "every certificateRef resolved to a serving certificate"),
                    Some(first) => Condition::new(
                        "ResolvedRefs",
                        false,
                        first.reason.as_str(),
                        problems.iter().map(|p| format!("{}: {}", p.error.field, p.error.message)).collect::<Vec<_>>().join("; "),
                    ),
                };
                // Programmed while at least one certificate serves: a client whose name
                // only a bad one covers gets the default instead.
                let programmed = if problems.len() < refs {
                    Condition::new("Programmed", true, "Programmed", "listener programmed")
                } else {
                    Condition::new("Programmed", false, "Invalid", "no certificateRef resolved to a serving certificate; every TLS handshake on this listener fails")
                };
                vec![
                    Condition::new("Accepted", true, "Accepted", "listener accepted"),
                    programmed,
                    resolved,
                ]
            } else {
                let why = format!(
                    "protocol {protocol:?} is not supported; the trellis gateway serves HTTP and HTTPS listeners"
                );
                vec![
                    Condition::new("Accepted", false, "UnsupportedProtocol", why.clone()),
                    Condition::new("Programmed", false, "Invalid", why),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", "no references to resolve"),
                ]
            };
            json!({
                "name": name,
                "supportedKinds": [
                    {"group": GATEWAY_GROUP, "kind": "HTTPRoute"},
                    {"group": GATEWAY_GROUP, "kind": "GRPCRoute"},
                ],
                "attachedRoutes": attached_routes,
                "conditions": conditions.iter().map(Condition::untimed).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut status = json!({
        "conditions": [accepted.untimed(), programmed.untimed()],
        "listeners": listeners,
    });
    // Null removes addresses a merge patch wrote before (the Service went away).
    status["addresses"] = match addresses {
        Some(Some(a)) if !a.is_empty() => json!(a),
        _ => Value::Null,
    };
    status
}

/// Gives the Gateway's conditions (and its listeners') their observedGeneration and
/// lastTransitionTime, keeping the old time of a condition whose status did not change.
pub(super) fn with_times(
    mut status: Value,
    old: &Value,
    generation: Option<i64>,
    now: &str,
) -> Value {
    let stamp = |conditions: &mut Value, old: &Value| {
        for c in conditions.as_array_mut().into_iter().flatten() {
            stamp_condition(c, old, generation, now);
        }
    };
    stamp(&mut status["conditions"], &old["conditions"]);
    for l in status["listeners"].as_array_mut().into_iter().flatten() {
        let old_listener = old["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["name"] == l["name"])
            .map(|o| o["conditions"].clone())
            .unwrap_or_default();
        stamp(&mut l["conditions"], &old_listener);
    }
    status
}
