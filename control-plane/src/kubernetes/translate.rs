//! Cluster objects → mesh documents. Each object becomes one document in the form file mode
//! reads, named `kubernetes:<Kind>/<namespace>/<name>`, and all of them go through the same
//! loader and validation as files: one model, one set of errors.

use crate::inject::INBOUND_PORT;
use crate::inject::INJECTED;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use trellis_config::{ConfigError, ConfigErrors, Loader, MeshConfig};

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
pub(crate) fn trellis_gateways(state: &ClusterState) -> BTreeMap<(String, String), bool> {
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
/// Strict: any refused object refuses the whole state, as a file would.
pub fn mesh_config(state: &ClusterState, loader: &Loader) -> Result<MeshConfig, ConfigErrors> {
    let t = Translator::default().translate(state, loader);
    match t.config {
        Ok(_) if !t.held_back.is_empty() => Err(ConfigErrors(
            t.held_back.into_values().flat_map(|h| h.errors).collect(),
        )),
        other => other,
    }
}

/// How many loads one translation may try while it sets refused objects aside. Each pass
/// sets aside at least one more object; a chain longer than this (a Service refused, so its
/// routes are, so ...) refuses the whole change.
const MAX_PASSES: usize = 8;

/// The kinds a translation may leave out when a new object of that kind is refused. The
/// others fail closed: leaving out a new AuthorizationPolicy could open what it denies, and
/// leaving out the Mesh would change the trust domain and mTLS mode; for those the whole
/// change is refused and the previous config keeps serving, as in file mode.
const OMITTABLE: [&str; 6] = [
    "Service",
    "Workload",
    "HTTPRoute",
    "GRPCRoute",
    "Gateway",
    "ResiliencePolicy",
];

/// One object the loader refused, and what serves in its place.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldBack {
    /// The loader's errors for this object's current version.
    pub errors: Vec<ConfigError>,
    /// `true`: the last version of the object that loaded still serves; `false`: the object
    /// is left out (it never loaded, or its last good version no longer does).
    pub previous_serves: bool,
}

/// The outcome of one translation.
pub struct Translation {
    /// The config to serve, or why the whole change is refused.
    pub config: Result<MeshConfig, ConfigErrors>,
    /// Objects refused on their own, by source name (`kubernetes:<Kind>/<ns>/<name>`),
    /// while the rest of the cluster applied.
    pub held_back: BTreeMap<String, HeldBack>,
}

/// Every document as `(source name, text)`, sorted by name so the result is stable.
pub fn documents(state: &ClusterState) -> Vec<(String, String)> {
    Translator::default()
        .documents(state)
        .0
        .into_iter()
        .map(|(n, t)| (n, t.to_string()))
        .collect()
}

/// A rendered document (`None`: the object makes no document) and what it was made from.
type Rendered = (String, Option<Arc<str>>);

/// Translates the cluster again after each change, re-rendering only the documents whose
/// objects changed: each document remembers the resourceVersions it was made from. In a
/// cluster of 10,000 pods one EndpointSlice change would otherwise pretty-print 11,000
/// documents (bench/kubernetes.sh).
///
/// One refused object does not hold up the cluster: in a shared cluster, one team's bad
/// HTTPRoute must not freeze every other team's endpoints. The translator loads, sets aside
/// each object the errors name (its last version that loaded serves in its place, or, for a
/// new object of an omittable kind, it is left out), and loads again.
#[derive(Default)]
pub struct Translator {
    cache: HashMap<String, Rendered>,
    /// The text of every document in the last config that loaded.
    last_good: HashMap<String, Arc<str>>,
}

impl Translator {
    pub fn translate(&mut self, state: &ClusterState, loader: &Loader) -> Translation {
        let (docs, sidecars) = self.documents(state);
        let mut docs: BTreeMap<String, Arc<str>> = docs.into_iter().collect();
        let mut held_back = BTreeMap::new();
        for _ in 0..MAX_PASSES {
            let errors = match loader.load_texts(docs.iter().map(|(n, t)| (n.as_str(), &**t))) {
                Ok(mut cfg) => {
                    // An injected pod's proxy holds a mesh certificate: it is in the
                    // EndpointSlice only once ready, and its readiness waits for the
                    // certificate. Callers may use mTLS to it.
                    for w in &mut cfg.workloads {
                        if sidecars.contains(&*w.file) {
                            Arc::make_mut(&mut w.object).spec.sidecar_mtls = true;
                        }
                    }
                    self.last_good = docs.into_iter().collect();
                    return Translation {
                        config: Ok(cfg),
                        held_back,
                    };
                }
                Err(errors) => errors,
            };
            if let Err(fatal) = self.set_aside(&mut docs, &mut held_back, &errors) {
                return Translation {
                    config: Err(fatal),
                    held_back: BTreeMap::new(),
                };
            }
        }
        let errors = held_back.into_values().flat_map(|h| h.errors).collect();
        Translation {
            config: Err(ConfigErrors(errors)),
            held_back: BTreeMap::new(),
        }
    }

    /// Sets aside every document `errors` names: its last good text replaces it, or it is
    /// left out. `Err` (every error so far) when an error cannot be isolated that way.
    fn set_aside(
        &self,
        docs: &mut BTreeMap<String, Arc<str>>,
        held_back: &mut BTreeMap<String, HeldBack>,
        errors: &ConfigErrors,
    ) -> Result<(), ConfigErrors> {
        let mut by_doc: BTreeMap<&str, Vec<ConfigError>> = BTreeMap::new();
        for e in &errors.0 {
            by_doc.entry(e.file.as_str()).or_default().push(e.clone());
        }
        let fatal = |held_back: &BTreeMap<String, HeldBack>| {
            let mut all: Vec<ConfigError> =
                held_back.values().flat_map(|h| h.errors.clone()).collect();
            all.extend(errors.0.iter().cloned());
            ConfigErrors(all)
        };
        for (name, errs) in by_doc {
            let Some(current) = docs.get(name) else {
                return Err(fatal(held_back));
            };
            // The last good version, unless that is what was just refused.
            let previous = self
                .last_good
                .get(name)
                .filter(|p| !Arc::ptr_eq(p, current) && ***p != **current)
                .cloned();
            let previous_serves = match previous {
                Some(p) => {
                    docs.insert(name.to_string(), p);
                    true
                }
                None if OMITTABLE.contains(&kind_of(name)) => {
                    docs.remove(name);
                    false
                }
                None => return Err(fatal(held_back)),
            };
            // The errors of the object's own version are what its owner needs to see; a
            // later pass only refusing the last good version too keeps them.
            let entry = held_back.entry(name.to_string()).or_insert(HeldBack {
                errors: errs,
                previous_serves,
            });
            entry.previous_serves = previous_serves;
        }
        Ok(())
    }

    /// The documents, and the names of the Workload documents made from injected pods.
    fn documents(&mut self, state: &ClusterState) -> (Vec<(String, Arc<str>)>, BTreeSet<String>) {
        let mut b = Builder {
            old: std::mem::take(&mut self.cache),
            new: HashMap::new(),
            docs: BTreeMap::new(),
        };
        for s in &state.services {
            b.put("Service", s.as_ref(), version(s.as_ref()), || {
                Some(doc("Service", "v1", s.as_ref(), service_spec(s)?))
            });
        }
        let gateways = trellis_gateways(state);
        // Which parents a route keeps depends on the Gateways too.
        let gateways_version = format!("{gateways:?}");
        for g in &state.gateways {
            if gateways.contains_key(&(g.namespace().unwrap_or_default(), g.name_any())) {
                b.put("Gateway", g.as_ref(), version(g.as_ref()), || {
                    let spec = gateway_spec(&g.data["spec"]);
                    Some(doc("Gateway", GATEWAY_API, g.as_ref(), spec))
                });
            }
        }
        for (kind, routes) in [
            ("HTTPRoute", &state.http_routes),
            ("GRPCRoute", &state.grpc_routes),
        ] {
            for r in routes {
                let v = version(r.as_ref()).map(|v| format!("{v} {gateways_version}"));
                // A GRPCRoute is an HTTPRoute whose matches name gRPC methods: it becomes one,
                // under its own source name, so it compiles, validates and reports errors as
                // HTTPRoutes do.
                b.put(kind, r.as_ref(), v, || {
                    let ns = r.namespace().unwrap_or_default();
                    let spec = mesh_route_spec(&r.data["spec"], &ns, &gateways)?;
                    let spec = if kind == "GRPCRoute" {
                        grpc_to_http(spec)
                    } else {
                        spec
                    };
                    Some(doc("HTTPRoute", GATEWAY_API, r.as_ref(), spec))
                });
            }
        }
        // Pods first: a Workload resource of the same name replaces the one from its Pod.
        let mut sidecars = BTreeSet::new();
        for (pod, address) in pod_endpoints(state) {
            let name = doc_name("Workload", pod);
            if pod.annotations().contains_key(INJECTED) {
                sidecars.insert(name);
            }
            let v = version(pod).map(|v| format!("pod {v} {address}"));
            b.put("Workload", pod, v, || Some(pod_workload(pod, address)));
        }
        for (kind, objects) in &state.trellis {
            for o in objects {
                if *kind == "Workload" {
                    sidecars.remove(&doc_name("Workload", o.as_ref()));
                }
                b.put(kind, o.as_ref(), version(o.as_ref()), || {
                    let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
                    Some(doc(kind, TRELLIS_API, o.as_ref(), spec))
                });
            }
        }
        self.cache = b.new;
        (b.docs.into_iter().collect(), sidecars)
    }
}

const TRELLIS_API: &str = "trellis.dev/v1alpha1";

/// Collects the documents of one pass, reusing the previous pass's text where the objects
/// a document is made from are unchanged.
struct Builder {
    old: HashMap<String, Rendered>,
    new: HashMap<String, Rendered>,
    docs: BTreeMap<String, Arc<str>>,
}

impl Builder {
    /// The document for `object` as `kind`, made by `make` unless `version` equals the one
    /// it was last made from. `version: None` (an object without a resourceVersion) is
    /// always made afresh.
    fn put<K: Resource>(
        &mut self,
        kind: &str,
        object: &K,
        version: Option<String>,
        make: impl FnOnce() -> Option<Value>,
    ) {
        let name = doc_name(kind, object);
        // JSON is YAML; pretty-printed, errors still point at a useful line.
        let render = |d: Option<Value>| {
            d.map(|d| Arc::from(serde_json::to_string_pretty(&d).unwrap_or_default()))
        };
        let text = match version {
            Some(v) => {
                let text = match self.old.remove(&name) {
                    Some((old, text)) if old == v => text,
                    _ => render(make()),
                };
                self.new.insert(name.clone(), (v, text.clone()));
                text
            }
            None => render(make()),
        };
        match text {
            Some(t) => {
                self.docs.insert(name, t);
            }
            None => {
                self.docs.remove(&name);
            }
        }
    }
}

fn version<K: Resource>(o: &K) -> Option<String> {
    o.meta().resource_version.clone()
}

/// The kind in a source name `kubernetes:<Kind>/<namespace>/<name>`.
pub fn kind_of(doc_name: &str) -> &str {
    doc_name
        .strip_prefix("kubernetes:")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// `kubernetes:<Kind>/<namespace>/<name>`: the source name errors cite.
pub(crate) fn doc_name<K: Resource>(kind: &str, o: &K) -> String {
    let m = o.meta();
    format!(
        "kubernetes:{kind}/{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// One document in the form file mode reads: the object's name, namespace and labels.
fn doc<K: Resource>(kind: &str, api: &str, o: &K, spec: Value) -> Value {
    let m = o.meta();
    let mut meta = Map::new();
    meta.insert("name".into(), json!(m.name.as_deref().unwrap_or("")));
    if let Some(ns) = &m.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    if let Some(labels) = m.labels.as_ref().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), json!(labels));
    }
    json!({"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec})
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

/// Every ready Pod endpoint of the EndpointSlices, once per pod, with its address. Each
/// becomes a Workload with the Pod's labels, service account and named ports. For a pod with
/// a sidecar, traffic goes to the sidecar's inbound port. The cluster, not the proxies'
/// registrations, says which endpoints exist, so every replica of the control plane serves
/// the same endpoints whichever replica a proxy uses.
fn pod_endpoints(state: &ClusterState) -> Vec<(&Pod, &str)> {
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
fn pod_workload(pod: &Pod, address: &str) -> Value {
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

    fn service(name: &str, rv: &str, port: u16) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "rides", "resourceVersion": rv},
                "spec": {"selector": {"app": name}, "ports": [{"port": port}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn only_objects_whose_resource_version_changed_are_rendered_again() {
        let mut state = ClusterState {
            services: vec![service("trip", "1", 80), service("billing", "1", 80)],
            ..Default::default()
        };
        let mut t = Translator::default();
        let first: BTreeMap<String, Arc<str>> = t.documents(&state).0.into_iter().collect();
        state.services[1] = service("billing", "2", 8080);
        let second: BTreeMap<String, Arc<str>> = t.documents(&state).0.into_iter().collect();
        let (trip, billing) = (
            "kubernetes:Service/rides/trip",
            "kubernetes:Service/rides/billing",
        );
        assert!(
            Arc::ptr_eq(&first[trip], &second[trip]),
            "unchanged: reused"
        );
        assert!(second[billing].contains("8080"), "changed: rendered again");
        // A deleted object leaves nothing behind, in the documents or the cache.
        state.services.truncate(1);
        let third = t.documents(&state).0;
        assert_eq!(third.len(), 1);
        assert_eq!(t.cache.len(), 1);
    }

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
