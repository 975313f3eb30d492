//! Cluster objects → mesh documents. Each object becomes one document in the form file mode
//! reads, named `kubernetes:<Kind>/<namespace>/<name>`, and all of them go through the same
//! loader and validation as files: one model, one set of errors.

use crate::inject::INBOUND_PORT;
use crate::inject::overrides::INJECTED;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use trellis_config::{ConfigErrors, Loader, MeshConfig};

/// Everything the watchers hold at one instant.
#[derive(Default, Clone)]
pub struct ClusterState {
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
    pub http_routes: Vec<Arc<DynamicObject>>,
    pub grpc_routes: Vec<Arc<DynamicObject>>,
    pub gateways: Vec<Arc<DynamicObject>>,
    /// The trellis.dev kinds, by kind (`Mesh`, `Workload`, ...). They are read untyped so
    /// that one bad object is one file:line error from the loader, not a failed watch.
    pub trellis: BTreeMap<&'static str, Vec<Arc<DynamicObject>>>,
}

/// The `gatewayClassName` of the Gateways Trellis serves (with the `trellis-gateway`
/// Deployment, k8s/gateway/). Gateways of other classes belong to other controllers.
pub const GATEWAY_CLASS: &str = "trellis";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

/// The trellis-class Gateways, by `(namespace, name)`, and whether any of their listeners
/// admits routes from every namespace (`allowedRoutes.namespaces.from: All`); the Gateway
/// API's default is `Same`. `Selector` is not supported and counts as `Same`.
fn trellis_gateways(state: &ClusterState) -> BTreeMap<(String, String), bool> {
    state
        .gateways
        .iter()
        .filter(|g| g.data["spec"]["gatewayClassName"].as_str() == Some(GATEWAY_CLASS))
        .map(|g| {
            let all = g.data["spec"]["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["allowedRoutes"]["namespaces"]["from"].as_str() == Some("All"));
            ((g.namespace().unwrap_or_default(), g.name_any()), all)
        })
        .collect()
}

/// A Gateway in the model's form: name, port, protocol and hostname of each listener.
/// `allowedRoutes` is applied when routes are translated; `tls` is dropped, and an HTTPS
/// listener keeps its protocol so that the loader refuses it with its reason.
fn gateway_spec(spec: &Value) -> Value {
    let listeners: Vec<Value> = spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let mut out = json!({"name": l["name"], "port": l["port"], "protocol": l["protocol"]});
            if let Some(h) = l.get("hostname").filter(|h| h.is_string()) {
                out["hostname"] = h.clone();
            }
            out
        })
        .collect();
    json!({"gatewayClassName": GATEWAY_CLASS, "listeners": listeners})
}

/// The trellis.dev kinds the control plane watches, with their plural names.
pub const TRELLIS_KINDS: [(&str, &str); 4] = [
    ("Mesh", "meshes"),
    ("Workload", "workloads"),
    ("ResiliencePolicy", "resiliencepolicies"),
    ("AuthorizationPolicy", "authorizationpolicies"),
];

/// Translates and loads the cluster state: the same `MeshConfig` the file loader makes.
pub fn mesh_config(state: &ClusterState, loader: &Loader) -> Result<MeshConfig, ConfigErrors> {
    let (docs, sidecars) = documents_and_sidecars(state);
    let mut cfg = loader.load_texts(docs.iter().map(|(n, t)| (n.as_str(), t.as_str())))?;
    // An injected pod's proxy holds a mesh certificate: it is in the EndpointSlice only once
    // ready, and its readiness waits for the certificate. Callers may use mTLS to it.
    for w in &mut cfg.workloads {
        if sidecars.contains(&*w.file) {
            std::sync::Arc::make_mut(&mut w.object).spec.sidecar_mtls = true;
        }
    }
    Ok(cfg)
}

/// Every document as `(source name, text)`, sorted by name so the result is stable.
pub fn documents(state: &ClusterState) -> Vec<(String, String)> {
    documents_and_sidecars(state).0
}

/// The documents, and the names of the Workload documents made from injected pods.
fn documents_and_sidecars(state: &ClusterState) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    let mut grpc_docs: Vec<(String, Value)> = Vec::new();
    let mut put = |kind: &str,
                   api: &str,
                   ns: Option<String>,
                   name: String,
                   labels: &BTreeMap<String, String>,
                   spec: Value| {
        let ns_part = ns.clone().unwrap_or_default();
        let mut meta = Map::new();
        meta.insert("name".into(), Value::from(name.clone()));
        if let Some(ns) = ns {
            meta.insert("namespace".into(), Value::from(ns));
        }
        if !labels.is_empty() {
            meta.insert("labels".into(), json!(labels));
        }
        docs.insert(
            format!("kubernetes:{kind}/{ns_part}/{name}"),
            json!({"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}),
        );
    };

    for s in &state.services {
        if let Some(spec) = service_spec(s) {
            put(
                "Service",
                "v1",
                s.namespace(),
                s.name_any(),
                s.labels(),
                spec,
            );
        }
    }
    let gateways = trellis_gateways(state);
    for g in &state.gateways {
        let key = (g.namespace().unwrap_or_default(), g.name_any());
        if gateways.contains_key(&key) {
            let spec = gateway_spec(&g.data["spec"]);
            put(
                "Gateway",
                GATEWAY_API,
                g.namespace(),
                key.1,
                g.labels(),
                spec,
            );
        }
    }
    for r in &state.http_routes {
        let ns = r.namespace().unwrap_or_default();
        if let Some(spec) = mesh_route_spec(&r.data["spec"], &ns, &gateways) {
            put(
                "HTTPRoute",
                GATEWAY_API,
                r.namespace(),
                r.name_any(),
                r.labels(),
                spec,
            );
        }
    }
    // A GRPCRoute is an HTTPRoute whose matches name gRPC methods: it becomes one, under its
    // own source name, so it compiles, validates and reports errors as HTTPRoutes do.
    for r in &state.grpc_routes {
        let ns = r.namespace().unwrap_or_default();
        if let Some(spec) = mesh_route_spec(&r.data["spec"], &ns, &gateways).map(grpc_to_http) {
            let name = r.name_any();
            grpc_docs.push((
                format!("kubernetes:GRPCRoute/{ns}/{name}"),
                json!({"apiVersion": GATEWAY_API, "kind": "HTTPRoute",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec}),
            ));
        }
    }
    let api = "trellis.dev/v1alpha1";
    // Pods first: a Workload resource of the same name replaces the one from its Pod.
    let mut sidecars = BTreeSet::new();
    for ((ns, name), (labels, spec)) in pod_workloads(state) {
        if spec.get("sidecarInbound").is_some() {
            sidecars.insert(format!("kubernetes:Workload/{ns}/{name}"));
        }
        put("Workload", api, Some(ns), name, &labels, spec);
    }
    for (kind, objects) in &state.trellis {
        for o in objects {
            let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
            if *kind == "Workload" {
                let ns = o.namespace().unwrap_or_default();
                sidecars.remove(&format!("kubernetes:Workload/{ns}/{}", o.name_any()));
            }
            put(kind, api, o.namespace(), o.name_any(), o.labels(), spec);
        }
    }
    docs.extend(grpc_docs);
    let docs = docs
        .into_iter()
        .map(|(name, doc)| {
            // JSON is YAML; pretty-printed, errors still point at a useful line.
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            (name, text)
        })
        .collect();
    (docs, sidecars)
}

/// The mesh's view of a Service: selector and TCP ports. Services without a selector
/// (ExternalName, manual endpoints) are not mesh Services.
fn service_spec(s: &Service) -> Option<Value> {
    let spec = s.spec.as_ref()?;
    let selector = spec.selector.clone().filter(|s| !s.is_empty())?;
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .flatten()
        // The mesh carries TCP only; UDP and SCTP ports are left to kube-proxy.
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| {
            let mut port = json!({"port": p.port});
            if let Some(n) = &p.name {
                port["name"] = json!(n);
            }
            match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                    port["targetPort"] = json!(i)
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n)) => {
                    port["targetPort"] = json!(n)
                }
                None => {}
            }
            if let Some(proto) = p.app_protocol.as_deref().and_then(app_protocol) {
                port["appProtocol"] = json!(proto);
            }
            port
        })
        .collect();
    if ports.is_empty() {
        return None;
    }
    Some(json!({"selector": selector, "ports": ports}))
}

/// Kubernetes `appProtocol` values the mesh understands; others are treated as HTTP's default.
fn app_protocol(p: &str) -> Option<&'static str> {
    match p {
        "http" => Some("http"),
        "http2" | "kubernetes.io/h2c" => Some("http2"),
        "grpc" => Some("grpc"),
        "tcp" => Some("tcp"),
        _ => None,
    }
}

/// A route Trellis serves: keep the `parentRefs` that name a Service (a mesh, GAMMA route)
/// or a trellis-class Gateway that admits the route's namespace. A route attached only to
/// other controllers' Gateways is none of Trellis' business.
fn mesh_route_spec(
    spec: &Value,
    route_ns: &str,
    gateways: &BTreeMap<(String, String), bool>,
) -> Option<Value> {
    let mut spec = spec.clone();
    let parents = spec.get_mut("parentRefs")?.as_array_mut()?;
    parents.retain_mut(|p| {
        // Gateway API defaults: group gateway.networking.k8s.io, kind Gateway.
        let group = p["group"].as_str().unwrap_or(GATEWAY_GROUP);
        let kind = p["kind"].as_str().unwrap_or("Gateway");
        if kind == "Service" && group.is_empty() {
            return true;
        }
        if kind != "Gateway" || group != GATEWAY_GROUP {
            return false;
        }
        let ns = p["namespace"].as_str().unwrap_or(route_ns).to_string();
        let Some(name) = p["name"].as_str() else {
            return false;
        };
        let admitted = match gateways.get(&(ns.clone(), name.to_string())) {
            Some(all) => *all || ns == route_ns,
            None => false,
        };
        if admitted {
            p["group"] = json!(GATEWAY_GROUP);
            p["kind"] = json!("Gateway");
        }
        admitted
    });
    if parents.is_empty() {
        return None;
    }
    Some(spec)
}

/// A GRPCRoute spec as an HTTPRoute spec. gRPC calls are `POST /<service>/<method>`, so a
/// method match becomes a path match: both names exact → `Exact /S/M`; one of them, or
/// `type: RegularExpression` → a full-match regular expression where a missing name is any
/// one path segment. Header matches, filters and backendRefs have the same shape in both.
fn grpc_to_http(mut spec: Value) -> Value {
    let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return spec;
    };
    for rule in rules {
        let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) else {
            continue;
        };
        for m in matches {
            let Some(obj) = m.as_object_mut() else {
                continue;
            };
            let Some(method) = obj.remove("method") else {
                continue;
            };
            let service = method["service"].as_str();
            let name = method["method"].as_str();
            let path = match (method["type"].as_str().unwrap_or("Exact"), service, name) {
                ("Exact", Some(s), Some(n)) => {
                    json!({"type": "Exact", "value": format!("/{s}/{n}")})
                }
                ("Exact", s, n) => {
                    let part = |v: Option<&str>| v.map_or_else(|| "[^/]+".to_string(), escape);
                    json!({"type": "RegularExpression", "value": format!("/{}/{}", part(s), part(n))})
                }
                (_, s, n) => {
                    let part =
                        |v: Option<&str>| v.map_or("[^/]+".to_string(), |v| format!("(?:{v})"));
                    json!({"type": "RegularExpression", "value": format!("/{}/{}", part(s), part(n))})
                }
            };
            obj.insert("path".into(), path);
        }
    }
    spec
}

/// A literal for a regular expression.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One Workload per ready Pod endpoint of an EndpointSlice, with the Pod's labels, service
/// account and named ports. For a pod with a sidecar, traffic goes to the sidecar's inbound
/// port. The cluster, not the proxies' registrations, says which endpoints exist, so every
/// replica of the control plane serves the same endpoints whichever replica a proxy uses.
fn pod_workloads(
    state: &ClusterState,
) -> BTreeMap<(String, String), (BTreeMap<String, String>, Value)> {
    let pods: BTreeMap<(String, String), &Pod> = state
        .pods
        .iter()
        .map(|p| {
            (
                (p.namespace().unwrap_or_default(), p.name_any()),
                p.as_ref(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for slice in &state.endpoint_slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        for ep in &slice.endpoints {
            // Ready unless the API says otherwise (absent means ready, per discovery/v1).
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(target) = ep
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
            else {
                continue;
            };
            let key = (
                target
                    .namespace
                    .clone()
                    .or_else(|| slice.namespace())
                    .unwrap_or_default(),
                target.name.clone().unwrap_or_default(),
            );
            let (Some(pod), Some(address)) = (pods.get(&key), ep.addresses.first()) else {
                continue; // the Pod watch has not seen it yet; the next event fills it in
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let spec = pod.spec.as_ref();
            let ports: BTreeMap<String, i32> = spec
                .into_iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect();
            let mut w = json!({"address": address, "ports": ports});
            if let Some(sa) = spec.and_then(|s| s.service_account_name.clone()) {
                w["serviceAccount"] = json!(sa);
            }
            if pod.annotations().contains_key(INJECTED) {
                w["sidecarInbound"] = json!(INBOUND_PORT);
            }
            out.insert(key, (pod.labels().clone(), w));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(method: Value) -> Value {
        let spec = json!({"parentRefs": [{"kind": "Service", "name": "trip"}],
                          "rules": [{"matches": [{"method": method, "headers": [{"name": "x-a", "value": "1"}]}]}]});
        let out = grpc_to_http(spec);
        let m = &out["rules"][0]["matches"][0];
        assert!(m.get("method").is_none(), "no GRPCRoute field is left: {m}");
        assert_eq!(m["headers"][0]["name"], "x-a", "header matches are kept");
        m["path"].clone()
    }

    #[test]
    fn grpc_method_matches_become_path_matches() {
        assert_eq!(
            path_of(json!({"service": "rides.v1.Trip", "method": "Start"})),
            json!({"type": "Exact", "value": "/rides.v1.Trip/Start"})
        );
        assert_eq!(
            path_of(json!({"type": "Exact", "service": "rides.v1.Trip"})),
            json!({"type": "RegularExpression", "value": "/rides\\.v1\\.Trip/[^/]+"})
        );
        assert_eq!(
            path_of(json!({"method": "Check"})),
            json!({"type": "RegularExpression", "value": "/[^/]+/Check"})
        );
        assert_eq!(
            path_of(
                json!({"type": "RegularExpression", "service": "rides\\..*", "method": "St.*"})
            ),
            json!({"type": "RegularExpression", "value": "/(?:rides\\..*)/(?:St.*)"})
        );
    }
}
