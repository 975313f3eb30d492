//! The status writes one translation asks for: per route, one `status.parents` entry per
//! parent Trellis serves it for; per trellis-class Gateway, its conditions and listeners.

use super::condition::{Condition, refusal};
use super::gateway::{gateway_service, gateway_status, with_times};
use crate::kubernetes::cluster::{ClusterState, doc_name, trellis_gateways};
use crate::kubernetes::kinds::{CONTROLLER, GATEWAY_CLASS, GATEWAY_GROUP};
use crate::kubernetes::translate::HeldBack;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use trellis_config::gateway_tls::CertProblem;

/// One status write: a JSON merge patch of an object's `status` subresource.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `{"metadata": {"resourceVersion": ...}, "status": {...}}`.
    pub body: Value,
}

/// Everything `patches` reads: the routes' and Gateways' resourceVersions (a status write
/// changes them too) and the refusals. Equal inputs give equal patches.
#[derive(PartialEq)]
pub struct Inputs {
    versions: Vec<Option<String>>,
    held_back: BTreeMap<String, HeldBack>,
    certificates: Vec<CertProblem>,
}

impl Inputs {
    pub fn of(
        state: &ClusterState,
        held_back: &BTreeMap<String, HeldBack>,
        certificates: &[CertProblem],
    ) -> Inputs {
        // The stores list in no fixed order; resourceVersions are unique, so sorted they
        // name the same set of object versions.
        let mut versions: Vec<_> = [&state.http_routes, &state.grpc_routes, &state.gateways]
            .into_iter()
            .flatten()
            .map(|o| o.metadata.resource_version.clone())
            .collect();
        // The Services in front of trellis Gateways: their load-balancer addresses.
        for key in trellis_gateways(state).keys() {
            if let Some(s) = gateway_service(state, key) {
                versions.push(s.metadata.resource_version.clone());
            }
        }
        versions.sort_unstable();
        Inputs {
            versions,
            held_back: held_back.clone(),
            certificates: certificates.to_vec(),
        }
    }
}

/// The status writes that bring every route and trellis-class Gateway up to date with one
/// translation. A route gets one `status.parents` entry per parent Trellis serves it for (a
/// Service, for mesh routes, or a trellis-class Gateway), with `Accepted` and `ResolvedRefs`;
/// entries of other controllers are kept as they are. A trellis-class Gateway gets `Accepted`
/// and `Programmed`, its addresses (from the Service of the same name), and per listener the
/// number of attached routes. Every replica computes the same patches from the same watches,
/// and a status already equal to the wanted one gets no patch, so the writes stop once the
/// objects are up to date. `held_back`: the objects the translation refused on their own. `now`: the
/// RFC 3339 time a condition that changes gets as its `lastTransitionTime`.
pub fn patches(
    state: &ClusterState,
    held_back: &BTreeMap<String, HeldBack>,
    certificates: &[CertProblem],
    now: &str,
) -> Vec<StatusPatch> {
    let gateways = trellis_gateways(state);
    let mut out = Vec::new();
    // The routes attached to each Gateway (namespace, name), each with the listener its
    // parentRef names (`None`: every listener), for attachedRoutes.
    let mut attached: BTreeMap<(String, String), Vec<Option<String>>> = BTreeMap::new();
    for (kind, routes) in [
        ("HTTPRoute", &state.http_routes),
        ("GRPCRoute", &state.grpc_routes),
    ] {
        for r in routes {
            let route_ns = r.namespace().unwrap_or_default();
            let held = held_back.get(&doc_name(kind, r.as_ref()));
            let generation = r.metadata.generation;
            let served = held.is_none_or(|h| h.previous_serves);
            let mut ours = Vec::new();
            for p in r.data["spec"]["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let accepted = match parent(p, &route_ns, &gateways) {
                    Parent::NotOurs => continue,
                    Parent::Service => accepted(held),
                    Parent::Gateway {
                        key,
                        admitted: true,
                    } => {
                        if served {
                            let section = p["sectionName"].as_str().map(str::to_string);
                            attached.entry(key).or_default().push(section);
                        }
                        accepted(held)
                    }
                    Parent::Gateway {
                        key,
                        admitted: false,
                    } => Condition::new(
                        "Accepted",
                        false,
                        "NotAllowedByListeners",
                        format!(
                            "Gateway {}/{} admits routes from its own namespace only; set allowedRoutes.namespaces.from: All on a listener to admit this one",
                            key.0, key.1
                        ),
                    ),
                };
                let conditions = [accepted, resolved_refs(held)];
                ours.push((p.clone(), conditions));
            }
            let old = r.data["status"]["parents"].as_array().cloned();
            let old = old.unwrap_or_default();
            let mut parents: Vec<Value> = old
                .iter()
                .filter(|e| e["controllerName"].as_str() != Some(CONTROLLER))
                .cloned()
                .collect();
            for (parent_ref, conditions) in ours {
                let previous = old.iter().find(|e| {
                    e["controllerName"].as_str() == Some(CONTROLLER) && e["parentRef"] == parent_ref
                });
                let conditions: Vec<Value> = conditions
                    .iter()
                    .map(|c| c.to_json(generation, previous.map(|e| &e["conditions"]), now))
                    .collect();
                parents.push(json!({
                    "parentRef": parent_ref,
                    "controllerName": CONTROLLER,
                    "conditions": conditions,
                }));
            }
            if parents != old {
                out.push(patch(kind, r, json!({"parents": parents})));
            }
        }
    }
    for g in &state.gateways {
        if g.data["spec"]["gatewayClassName"].as_str() != Some(GATEWAY_CLASS) {
            continue;
        }
        let key = (g.namespace().unwrap_or_default(), g.name_any());
        let service = gateway_service(state, &key);
        let status = gateway_status(
            g,
            held_back.get(&doc_name("Gateway", g.as_ref())),
            &attached,
            &key,
            service,
            certificates,
        );
        let old = &g.data["status"];
        let status = with_times(status, old, g.metadata.generation, now);
        if old["conditions"] != status["conditions"]
            || old["listeners"] != status["listeners"]
            || old["addresses"] != status["addresses"]
        {
            out.push(patch("Gateway", g, status));
        }
    }
    out
}

enum Parent {
    NotOurs,
    Service,
    Gateway {
        key: (String, String),
        admitted: bool,
    },
}

/// Whose parent a `parentRef` is, with the Gateway API's defaults (group
/// gateway.networking.k8s.io, kind Gateway, the route's namespace).
fn parent(p: &Value, route_ns: &str, gateways: &BTreeMap<(String, String), bool>) -> Parent {
    let group = p["group"].as_str().unwrap_or(GATEWAY_GROUP);
    let kind = p["kind"].as_str().unwrap_or("Gateway");
    if kind == "Service" && group.is_empty() {
        return Parent::Service;
    }
    let (Some(name), "Gateway", GATEWAY_GROUP) = (p["name"].as_str(), kind, group) else {
        return Parent::NotOurs;
    };
    let ns = p["namespace"].as_str().unwrap_or(route_ns).to_string();
    let key = (ns, name.to_string());
    match gateways.get(&key) {
        Some(all) => Parent::Gateway {
            admitted: *all || key.0 == route_ns,
            key,
        },
        None => Parent::NotOurs,
    }
}

/// `Accepted` for a parent that admits the route: true unless the route was refused.
fn accepted(held: Option<&HeldBack>) -> Condition {
    let Some(h) = held else {
        return Condition::new("Accepted", true, "Accepted", "served by the Trellis mesh");
    };
    let parent_missing = h
        .errors
        .iter()
        .any(|e| e.field.contains("parentRefs") && e.message.starts_with("no Service"));
    let reason = if parent_missing {
        "NoMatchingParent"
    } else {
        "UnsupportedValue"
    };
    Condition::new("Accepted", false, reason, refusal(h, None))
}

/// `ResolvedRefs`: false when the refusal names a backendRef.
fn resolved_refs(held: Option<&HeldBack>) -> Condition {
    let backend_errors = |h: &HeldBack| {
        h.errors
            .iter()
            .filter(|e| e.field.contains("backendRefs"))
            .map(|e| e.field.ends_with(".kind"))
            .collect::<Vec<bool>>()
    };
    match held.map(|h| (h, backend_errors(h))) {
        Some((h, kinds)) if !kinds.is_empty() => {
            let reason = if kinds.contains(&true) {
                "InvalidKind"
            } else {
                "BackendNotFound"
            };
            Condition::new(
                "ResolvedRefs",
                false,
                reason,
                refusal(h, Some("backendRefs")),
            )
        }
        _ => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every backendRef resolved",
        ),
    }
}

fn patch(kind: &'static str, o: &DynamicObject, status: Value) -> StatusPatch {
    StatusPatch {
        kind,
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
        body: json!({
            "metadata": {"resourceVersion": o.metadata.resource_version},
            "status": status,
        }),
    }
}
