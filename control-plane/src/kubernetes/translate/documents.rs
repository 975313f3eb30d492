//! One cluster object → one mesh document, in the form file mode reads: Services, Gateways,
//! HTTPRoutes and GRPCRoutes (as HTTPRoutes), pod endpoints as Workloads, and the trellis.dev kinds.

use crate::inject::{INBOUND_PORT, INJECTED};
use crate::kubernetes::cluster::ClusterState;
use crate::kubernetes::kinds::{GATEWAY_CLASS, GATEWAY_GROUP};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use trellis_config::model::AppProtocol;

pub(super) const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
pub(super) const GATEWAY_API_BETA: &str = "gateway.networking.k8s.io/v1beta1";
pub(super) const TRELLIS_API: &str = "trellis.dev/v1alpha1";

/// A Gateway in the model's form: name, port, protocol, hostname and tls of each listener.
/// `allowedRoutes` is applied when routes are translated.
pub(super) fn gateway_spec(spec: &Value) -> Value {
    let listeners: Vec<Value> = spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let mut out = json!({"name": l["name"], "port": l["port"], "protocol": l["protocol"]});
            if let Some(h) = l.get("hostname").filter(|h| h.is_string()) {
                out["hostname"] = h.clone();
            }
            if let Some(tls) = l.get("tls").filter(|t| t.is_object()) {
                out["tls"] = tls.clone();
            }
            out
        })
        .collect();
    json!({"gatewayClassName": GATEWAY_CLASS, "listeners": listeners})
}

/// The Secrets (namespace, name) that trellis Gateways' listeners name in
/// `tls.certificateRefs`: the only Secrets that become documents.
pub(super) fn gateway_secrets(
    state: &ClusterState,
    gateways: &BTreeMap<(String, String), bool>,
) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for g in &state.gateways {
        let ns = g.namespace().unwrap_or_default();
        if !gateways.contains_key(&(ns.clone(), g.name_any())) {
            continue;
        }
        for l in g.data["spec"]["listeners"].as_array().into_iter().flatten() {
            for r in l["tls"]["certificateRefs"].as_array().into_iter().flatten() {
                if let Some(name) = r["name"].as_str() {
                    let rns = r["namespace"].as_str().unwrap_or(&ns);
                    out.insert((rns.to_string(), name.to_string()));
                }
            }
        }
    }
    out
}

/// A TLS Secret as a mesh document: its type and the two entries a listener reads, still
/// base64 as the API server gives them.
pub(super) fn secret_doc(s: &Secret) -> Value {
    let data: Map<String, Value> = (s.data.iter().flatten())
        .filter(|(k, _)| matches!(k.as_str(), "tls.crt" | "tls.key"))
        .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": s.name_any(), "namespace": s.namespace().unwrap_or_default()},
        "type": s.type_,
        "data": data,
    })
}

/// One document in the form file mode reads: the object's name, namespace and labels.
pub(super) fn doc<K: Resource>(kind: &str, api: &str, o: &K, spec: Value) -> Value {
    let m = o.meta();
    let mut meta = Map::new();
    meta.insert("name".into(), json!(m.name.as_deref().unwrap_or("")));
    if let Some(ns) = &m.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    if let Some(labels) = m.labels.as_ref().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), json!(labels));
    }
    // The mesh's own annotations, on the kinds that read them: a Service's mTLS mode and
    // trace sampling, a Gateway's trace sampling. Others (kubectl's last-applied config, and
    // so on) would only make the document change when nothing the mesh reads did.
    if matches!(kind, "Service" | "Gateway") {
        let ours: BTreeMap<&String, &String> = (m.annotations.iter().flatten())
            .filter(|(k, _)| k.starts_with("trellis.dev/"))
            .collect();
        if !ours.is_empty() {
            meta.insert("annotations".into(), json!(ours));
        }
    }
    json!({"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec})
}

/// The mesh's view of a Service: selector and TCP ports. Services without a selector
/// (ExternalName, manual endpoints) are not mesh Services.
pub(super) fn service_spec(s: &Service) -> Option<Value> {
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

/// Kubernetes `appProtocol` values the mesh understands (docs/reference/mesh.md); others
/// are treated as HTTP's default.
fn app_protocol(p: &str) -> Option<&'static str> {
    match p {
        "kubernetes.io/h2c" => Some("http2"),
        "postgres" => Some("postgresql"),
        _ => AppProtocol::ALL
            .iter()
            .map(|a| a.name())
            .find(|name| *name == p),
    }
}

/// A route Trellis serves: keep the `parentRefs` that name a Service (a mesh, GAMMA route)
/// or a trellis-class Gateway that admits the route's namespace. A route attached only to
/// other controllers' Gateways is none of Trellis' business.
pub(super) fn mesh_route_spec(
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

/// Every ready Pod endpoint of the EndpointSlices, once per pod, with its address. Each
/// becomes a Workload with the Pod's labels, service account and named ports. For a pod with
/// a sidecar, traffic goes to the sidecar's inbound port. The cluster, not the proxies'
/// registrations, says which endpoints exist, so every replica of the control plane serves
/// the same endpoints whichever replica a proxy uses.
pub(super) fn pod_endpoints(state: &ClusterState) -> Vec<(&Pod, &str)> {
    let pods: HashMap<(&str, &str), &Pod> = state
        .pods
        .iter()
        .map(|p| {
            let m = &p.metadata;
            (
                (
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or(""),
                ),
                p.as_ref(),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for slice in &state.endpoint_slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let slice_ns = slice.metadata.namespace.as_deref().unwrap_or("");
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
                target.namespace.as_deref().unwrap_or(slice_ns),
                target.name.as_deref().unwrap_or(""),
            );
            let (Some(pod), Some(address)) = (pods.get(&key), ep.addresses.first()) else {
                continue; // the Pod watch has not seen it yet; the next event fills it in
            };
            if seen.insert(key) {
                out.push((*pod, address.as_str()));
            }
        }
    }
    out
}

/// The Workload document of one pod endpoint.
pub(super) fn pod_workload(pod: &Pod, address: &str) -> Value {
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
    doc("Workload", TRELLIS_API, pod, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meshs_annotations_reach_the_service_document_and_no_others() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "billing", "namespace": "rides", "annotations": {
                "trellis.dev/trace-sampling-percentage": "10",
                "trellis.dev/mtls-mode": "STRICT",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"selector": {"app": "billing"}, "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        let d = doc("Service", "v1", &svc, service_spec(&svc).unwrap());
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"trellis.dev/mtls-mode": "STRICT", "trellis.dev/trace-sampling-percentage": "10"})
        );
        let w = doc("Workload", TRELLIS_API, &svc, json!({}));
        assert!(w["metadata"].get("annotations").is_none(), "{w}");
    }
}
