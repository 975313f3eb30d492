//! Cluster → `MeshConfig`: every object becomes a document (`documents`) that goes through
//! the same loader and validation as files, and an object the loader refuses is set aside
//! while the rest of the cluster applies.

mod documents;

pub use super::cluster::ClusterState;

use super::cluster::{doc_name, kind_of, trellis_gateways};
use crate::inject::INJECTED;
use documents::{
    GATEWAY_API, GATEWAY_API_BETA, TRELLIS_API, doc, gateway_secrets, gateway_spec,
    mesh_route_spec, pod_endpoints, pod_workload, secret_doc, service_spec,
};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use trellis_config::{ConfigError, ConfigErrors, Loader, MeshConfig};

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
/// change is refused and the previous config keeps serving, as in file mode. A Scope left
/// out leaves its workloads unscoped: their proxies hold more, never less, than they call.
const OMITTABLE: [&str; 10] = [
    "ClientRateLimit",
    "Secret",
    "ReferenceGrant",
    "Service",
    "Workload",
    "HTTPRoute",
    "GRPCRoute",
    "Gateway",
    "ResiliencePolicy",
    "Scope",
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
        // Only the Secrets a trellis Gateway's listener names become documents: the others
        // are none of the mesh's business, and no key is held in more places than it must.
        let wanted = gateway_secrets(state, &gateways);
        for s in &state.secrets {
            let key = (s.namespace().unwrap_or_default(), s.name_any());
            let used = wanted.contains(&key);
            let v = version(s.as_ref()).map(|v| format!("{v} {used}"));
            b.put("Secret", s.as_ref(), v, || used.then(|| secret_doc(s)));
        }
        for g in &state.reference_grants {
            b.put("ReferenceGrant", g.as_ref(), version(g.as_ref()), || {
                let spec = g.data.get("spec").cloned().unwrap_or(Value::Null);
                Some(doc("ReferenceGrant", GATEWAY_API_BETA, g.as_ref(), spec))
            });
        }
        for (kind, routes) in [
            ("HTTPRoute", &state.http_routes),
            ("GRPCRoute", &state.grpc_routes),
        ] {
            for r in routes {
                let v = version(r.as_ref()).map(|v| format!("{v} {gateways_version}"));
                // A GRPCRoute stays one: the loader reads it as such (its errors name its own
                // fields) and turns it into the HTTPRoute it means, as in a mesh file.
                b.put(kind, r.as_ref(), v, || {
                    let ns = r.namespace().unwrap_or_default();
                    let spec = mesh_route_spec(&r.data["spec"], &ns, &gateways)?;
                    Some(doc(kind, GATEWAY_API, r.as_ref(), spec))
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

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
}
