//! Gateway API status: what `kubectl get httproute,grpcroute,gateway` and `kubectl describe`
//! show about the objects Trellis serves.
//!
//! - A route gets one `status.parents` entry per parent Trellis serves it for (a Service, for
//!   mesh routes, or a trellis-class Gateway), with `Accepted` and `ResolvedRefs`. Entries of
//!   other controllers are kept as they are.
//! - A trellis-class Gateway gets `Accepted` and `Programmed`, its addresses (from the
//!   Service of the same name), and per listener the number of attached routes.
//!
//! Every replica computes the same statuses from the same watches; a status already equal to
//! the wanted one is not written, so the writes stop once the objects are up to date. Each
//! write carries the object's resourceVersion: a write that raced a change is refused (409)
//! and the change's own watch event computes the status again.

use super::translate::{ClusterState, GATEWAY_CLASS, HeldBack, doc_name, trellis_gateways};
use super::{gateway_resource, grpc_route_resource, http_route_resource};
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// The `controllerName` of the `trellis` GatewayClass (k8s/gateway/gatewayclass.yaml), and
/// the name Trellis signs its route status entries with.
pub const CONTROLLER: &str = "trellis.dev/gateway";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

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
}

impl Inputs {
    pub fn of(state: &ClusterState, held_back: &BTreeMap<String, HeldBack>) -> Inputs {
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
        }
    }
}

/// The status writes that bring every route and trellis-class Gateway up to date with one
/// translation. `held_back`: the objects the translation refused on their own. `now`: the
/// RFC 3339 time a condition that changes gets as its `lastTransitionTime`.
pub fn patches(
    state: &ClusterState,
    held_back: &BTreeMap<String, HeldBack>,
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

/// A refusal as a condition message: the loader's errors (those whose field contains
/// `only`, if given) and what serves meanwhile.
fn refusal(h: &HeldBack, only: Option<&str>) -> String {
    let errors: Vec<String> = h
        .errors
        .iter()
        .filter(|e| only.is_none_or(|f| e.field.contains(f)))
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect();
    let serves = if h.previous_serves {
        "the previous version of this object keeps serving"
    } else {
        "this object is not served"
    };
    let mut message = format!("refused: {}; {serves}", errors.join("; "));
    // The API server caps condition messages at 32,768 characters.
    if message.len() > 4096 {
        let mut end = 4096;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" ...");
    }
    message
}

/// A trellis-class Gateway's status without times: conditions and listeners.
/// The Service in front of a Gateway's proxies: the one with the Gateway's name in its
/// namespace, as k8s/gateway/ ships them (Gateway and Service `trellis-system/trellis-gateway`).
fn gateway_service<'a>(state: &'a ClusterState, key: &(String, String)) -> Option<&'a Service> {
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

fn gateway_status(
    g: &DynamicObject,
    held: Option<&HeldBack>,
    attached: &BTreeMap<(String, String), Vec<Option<String>>>,
    key: &(String, String),
    service: Option<&Service>,
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
            let conditions = if protocol == "HTTP" {
                vec![
                    Condition::new("Accepted", true, "Accepted", "listener accepted"),
                    Condition::new("Programmed", true, "Programmed", "listener programmed"),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", "no references to resolve"),
                ]
            } else {
                let why = format!(
                    "protocol {protocol:?} is not supported; the trellis gateway serves HTTP listeners"
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
fn with_times(mut status: Value, old: &Value, generation: Option<i64>, now: &str) -> Value {
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

fn stamp_condition(c: &mut Value, old: &Value, generation: Option<i64>, now: &str) {
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    let same = old
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["type"] == c["type"] && o["status"] == c["status"]);
    c["lastTransitionTime"] = match same.and_then(|o| o.get("lastTransitionTime")) {
        Some(t) => t.clone(),
        None => json!(now),
    };
}

/// A status condition before its times are known.
struct Condition {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

impl Condition {
    fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }

    fn untimed(&self) -> Value {
        json!({
            "type": self.kind,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        })
    }

    fn to_json(&self, generation: Option<i64>, old: Option<&Value>, now: &str) -> Value {
        let mut c = self.untimed();
        stamp_condition(&mut c, old.unwrap_or(&Value::Null), generation, now);
        c
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

fn resource(kind: &str) -> ApiResource {
    match kind {
        "HTTPRoute" => http_route_resource(),
        "GRPCRoute" => grpc_route_resource(),
        _ => gateway_resource(),
    }
}

/// Marks the `trellis` GatewayClass `Accepted`, if it names Trellis' controller and is not
/// marked yet. `true` once there is nothing left to do (accepted, or another controller's).
async fn accept_class(client: &Client, now: &str) -> bool {
    let gvk = kube::api::GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "GatewayClass");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "gatewayclasses");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let class = match api.get_opt(GATEWAY_CLASS).await {
        Ok(Some(c)) => c,
        Ok(None) => return false, // not created yet; tried again on the next change
        Err(e) => {
            tracing::debug!("GatewayClass {GATEWAY_CLASS} not read: {e}");
            return false;
        }
    };
    if class.data["spec"]["controllerName"].as_str() != Some(CONTROLLER) {
        tracing::warn!(
            "GatewayClass {GATEWAY_CLASS} names controller {}, not {CONTROLLER}; Trellis serves its Gateways but leaves its status alone",
            class.data["spec"]["controllerName"]
        );
        return true;
    }
    let accepted = Condition::new(
        "Accepted",
        true,
        "Accepted",
        "handled by the Trellis control plane",
    );
    let old = &class.data["status"]["conditions"];
    let conditions = json!([accepted.to_json(class.metadata.generation, Some(old), now)]);
    if *old == conditions {
        return true;
    }
    let body = json!({"metadata": {"resourceVersion": class.metadata.resource_version}, "status": {"conditions": conditions}});
    api.patch_status(GATEWAY_CLASS, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .is_ok()
}

/// Writes the latest set of status patches, forever. A newer set replaces one not yet
/// written; each write is independent, and a failed one waits for the next change.
pub async fn write(client: Client, mut wanted: watch::Receiver<Vec<StatusPatch>>) {
    static FORBIDDEN_LOGGED: AtomicBool = AtomicBool::new(false);
    let mut class_done = false;
    loop {
        if !class_done {
            class_done = accept_class(&client, &super::now()).await;
        }
        if wanted.changed().await.is_err() {
            return;
        }
        let batch = wanted.borrow_and_update().clone();
        for p in batch {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &p.namespace, &resource(p.kind));
            match api
                .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&p.body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(kind = p.kind, namespace = %p.namespace, name = %p.name, "status written")
                }
                // Changed meanwhile (409) or deleted (404): its watch event brings a new pass.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    if !FORBIDDEN_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            kind = p.kind,
                            "may not write status ({}); the ClusterRole in k8s/install/rbac.yaml grants patch on httproutes/status, grpcroutes/status and gateways/status",
                            e.message
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = p.kind, namespace = %p.namespace, name = %p.name, "status not written: {e}")
                }
            }
        }
    }
}
