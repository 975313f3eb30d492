//! One generation of the mesh as proxies see it: the valid config plus the proxies that
//! registered themselves, compiled for each kind of proxy that asks.

// What every proxy shares (Services, routes, clusters) is compiled and encoded once per
// generation; each kind of proxy (namespace and labels) adds only its small Mesh resource, so
// 1,000 proxies of 10 kinds cost one compilation and 10 small ones. A scoped kind takes the
// subset of those shared, already-encoded resources that its Scope allows.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use trellis_config::compile::Common;
use trellis_config::resources::{
    self, CERTIFICATE, CLUSTER, Encoded, GATEWAY, Key, MESH, MeshResource, SERVICE,
};
use trellis_config::sorted::{Side, join};
use trellis_config::{MeshConfig, NodeIdentity, Snapshot};

/// The resources of one kind of proxy, ready to diff and send.
pub(crate) struct Compiled {
    pub version: String,
    held: Held,
    /// Its Mesh resource, the one part that is its own.
    mesh_key: Key,
    mesh_encoded: Arc<Ready>,
    mesh: MeshResource,
    /// The delta to this snapshot from each version that proxies held when they were pushed
    /// it, computed once and shared by every proxy that held that version.
    deltas: Mutex<HashMap<String, Arc<Delta>>>,
}

/// One resource as the control plane sends it: the hash of its message, and the message
/// framed as one `upserted` entry of a `DiscoveryResponse` (`resources::upserted_entry`),
/// encoded once for every proxy it goes to.
pub(crate) struct Ready {
    pub hash: String,
    pub entry: Bytes,
}

impl Ready {
    fn new(key: &Key, e: Encoded) -> Arc<Ready> {
        Arc::new(Ready {
            entry: resources::upserted_entry(key, &e),
            hash: e.hash,
        })
    }
}

/// The shared resources a kind of proxy holds besides its Mesh resource.
enum Held {
    /// Every one of its generation's: not a copy, so an unscoped kind costs O(1) to build.
    All(Arc<Shared>),
    /// The few its Scope lets it call; or, for a proxy that serves a Gateway with HTTPS
    /// listeners, what it would hold otherwise plus that Gateway's certificates.
    Scoped(BTreeMap<Key, Arc<Ready>>),
}

/// What brings a proxy from one snapshot to another: the resources whose hash changed or that
/// are new, in key order, and the keys that went.
#[derive(Clone, Default)]
pub(crate) struct Delta {
    pub upserted: Vec<(Key, Arc<Ready>)>,
    pub removed: Vec<Key>,
}

impl Compiled {
    /// Every resource, in key order.
    pub(crate) fn resources(&self) -> impl Iterator<Item = (&Key, &Arc<Ready>)> {
        let shared = match &self.held {
            Held::All(s) => &s.resources,
            Held::Scoped(m) => m,
        };
        let k = &self.mesh_key;
        (shared.range::<Key, _>(..k))
            .chain([(k, &self.mesh_encoded)])
            .chain(shared.range::<Key, _>((Bound::Excluded(k), Bound::Unbounded)))
    }

    /// Whether the snapshot holds resource `key`.
    pub(crate) fn holds(&self, key: &Key) -> bool {
        *key == self.mesh_key
            || match &self.held {
                Held::All(s) => s.resources.contains_key(key),
                Held::Scoped(m) => m.contains_key(key),
            }
    }

    /// The delta from `prev`. A profile of 1,000 proxies on one push showed three quarters
    /// of the control plane's CPU in each proxy's own diff (a map lookup with string compares
    /// per resource per proxy); proxies of one kind hold the same version, so the diff is
    /// done once per version and kind. Between two unscoped snapshots only the Mesh resource
    /// is a kind's own: the rest of the delta is its generation's, computed once for all.
    pub(crate) fn delta_from(&self, prev: &Compiled) -> Arc<Delta> {
        let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = deltas.get(&prev.version) {
            return d.clone();
        }
        let delta = match (&self.held, &prev.held) {
            (Held::All(now), Held::All(before)) => {
                let shared = now.delta_from(before);
                if self.mesh_encoded.hash == prev.mesh_encoded.hash {
                    shared
                } else {
                    let mut d = (*shared).clone();
                    let at = d.upserted.partition_point(|(k, _)| *k < self.mesh_key);
                    d.upserted
                        .insert(at, (self.mesh_key.clone(), self.mesh_encoded.clone()));
                    Arc::new(d)
                }
            }
            _ => {
                let prev_hashes = prev.resources().map(|(k, e)| (k, e.hash.as_str()));
                Arc::new(diff(prev_hashes, self.resources()))
            }
        };
        deltas.insert(prev.version.clone(), delta.clone());
        delta
    }

    /// The delta to this snapshot from `held`, the key and hash of each resource that a
    /// subscribing proxy says it holds (a proxy resuming on another replica, or after a
    /// restart, whose snapshot is a generation behind or ahead).
    pub(crate) fn delta_from_held(&self, held: &BTreeMap<Key, String>) -> Delta {
        // Not cached, unlike `delta_from`: the key would come from the proxy, and anyone who
        // can open a stream could grow the cache with made-up sets. One walk per resuming
        // proxy costs about what decoding its Subscribe did.
        diff(held.iter().map(|(k, h)| (k, h.as_str())), self.resources())
    }
}

/// `prev` (each resource's key and hash) and `next` are both sorted by key, so one walk over
/// both finds every change.
fn diff<'a>(
    prev: impl Iterator<Item = (&'a Key, &'a str)>,
    next: impl Iterator<Item = (&'a Key, &'a Arc<Ready>)>,
) -> Delta {
    let (mut upserted, mut removed) = (Vec::new(), Vec::new());
    for (k, side) in join(prev, next) {
        match side {
            Side::Left(_) => removed.push(k.clone()),
            Side::Both(held, e) if held == e.hash => {}
            Side::Right(e) | Side::Both(_, e) => upserted.push((k.clone(), Arc::clone(e))),
        }
    }
    Delta { upserted, removed }
}

/// What every proxy of one generation shares: each Service, cluster and Gateway, compiled and
/// encoded once.
struct Shared {
    generation: u64,
    resources: BTreeMap<Key, Arc<Ready>>,
    /// Their part of a snapshot's version (`resources::version_of` is a sum over resources).
    sum: u64,
    /// The delta to these resources from an older generation's, by that generation: computed
    /// once, whatever the number of kinds.
    deltas: Mutex<HashMap<u64, Arc<Delta>>>,
}

impl Shared {
    fn delta_from(&self, before: &Shared) -> Arc<Delta> {
        if before.generation == self.generation {
            return Arc::default();
        }
        let mut deltas = self.deltas.lock().unwrap_or_else(|e| e.into_inner());
        (deltas.entry(before.generation))
            .or_insert_with(|| {
                let prev = before.resources.iter().map(|(k, e)| (k, e.hash.as_str()));
                Arc::new(diff(prev, self.resources.iter()))
            })
            .clone()
    }
}

pub struct World {
    pub generation: u64,
    pub config: MeshConfig,
    common: Common,
    shared: Arc<Shared>,
    /// Every Service by name and address, which every scoped kind holds: encoded once, and
    /// only when the config has a Scope.
    service_names: Option<Arc<Ready>>,
    /// Each HTTPS listener's certificate, encoded once; kept apart from `shared`, since
    /// only the proxies of its Gateway are sent it.
    certificates: BTreeMap<Key, Arc<Ready>>,
    /// `shared` as proxies of discovery protocol 2 can read it (`trellis_config::protocol`):
    /// built the first time such a proxy asks, and sharing every resource that needs no
    /// change.
    older: std::sync::OnceLock<Arc<Shared>>,
    cache: Mutex<HashMap<KindKey, Arc<Compiled>>>,
}

/// What of a node changes its snapshot: its namespace and labels, the Gateway whose
/// certificates it may hold, and whether its protocol needs the older view.
#[derive(Clone, PartialEq, Eq, Hash)]
struct KindKey {
    namespace: String,
    labels: BTreeMap<String, String>,
    gateway: Option<String>,
    older: bool,
}

impl World {
    pub(crate) fn new(generation: u64, config: MeshConfig) -> World {
        let common = Common::new(&config);
        let mut shared = BTreeMap::new();
        let mut add = |kind: &str, name: &String, e: Encoded| {
            let key = (kind.to_string(), name.clone());
            shared.insert(key.clone(), Ready::new(&key, e));
        };
        for (name, svc) in &common.services {
            add(SERVICE, name, resources::encode(svc));
        }
        for (name, c) in &common.clusters {
            add(CLUSTER, name, resources::encode(c));
        }
        for (name, g) in &common.gateways {
            add(GATEWAY, name, resources::encode(g));
        }
        let sum = resources::sum_of(shared.iter().map(|(k, e)| (k, e.hash.as_str())));
        let service_names = (!config.scopes.is_empty()).then(|| {
            let names = resources::encode(&Common::service_names(&config));
            Ready::new(&resources::service_names_key(), names)
        });
        let certificates = (common.certificates.certificates.iter())
            .map(|(name, c)| {
                let key = (CERTIFICATE.to_string(), name.clone());
                let ready = Ready::new(&key, resources::encode(c.as_ref()));
                (key, ready)
            })
            .collect();
        World {
            service_names,
            certificates,
            older: std::sync::OnceLock::new(),
            generation,
            config,
            common,
            shared: Arc::new(Shared {
                generation,
                resources: shared,
                sum,
                deltas: Mutex::default(),
            }),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `node`, registered as a Workload, would be an endpoint of some Service: if
    /// not, its registering or leaving changes nothing any proxy is sent.
    pub(crate) fn is_endpoint(&self, node: &NodeIdentity) -> bool {
        (self.common).is_endpoint(&self.config, &node.namespace, &node.labels)
    }

    /// The resources for `node`, built at most once per kind and generation.
    pub(crate) fn compiled_for(
        &self,
        node: &NodeIdentity,
        compilations: &prometheus_client::metrics::counter::Counter,
    ) -> Arc<Compiled> {
        self.compiled_for_proxy(node, None, trellis_proto::PROTOCOL, compilations)
    }

    /// The resources for a proxy of discovery `protocol` that may hold the certificates of
    /// `gateway` (`namespace/name`): what it would hold otherwise, plus those. A proxy of an
    /// older protocol is sent what it can read (`trellis_config::protocol`), and never a
    /// certificate.
    pub(crate) fn compiled_for_proxy(
        &self,
        node: &NodeIdentity,
        gateway: Option<&str>,
        protocol: u32,
        compilations: &prometheus_client::metrics::counter::Counter,
    ) -> Arc<Compiled> {
        let older = trellis_config::protocol::needs_older_view(protocol);
        let gateway = gateway.filter(|_| !older);
        let key = KindKey {
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
            gateway: gateway.map(str::to_string),
            older,
        };
        let base = if older {
            self.older()
        } else {
            self.shared.clone()
        };
        if let Some(c) = self.lock().get(&key) {
            return c.clone();
        }
        compilations.inc();
        let mesh = self.common.mesh_resource(&self.config, node);
        let mesh_key = (MESH.to_string(), "mesh".to_string());
        let mesh_encoded = Ready::new(&mesh_key, resources::encode(&mesh));
        let mesh_sum = resources::entry_hash(&mesh_key, &mesh_encoded.hash);
        let certificates: Vec<(Key, Arc<Ready>)> = (gateway.into_iter())
            .flat_map(|g| self.common.certificates.of_gateway(g).into_keys())
            .filter_map(|name| {
                let key = (CERTIFICATE.to_string(), name);
                let ready = self.certificates.get(&key)?.clone();
                Some((key, ready))
            })
            .collect();
        let (held, sum) = match &mesh.mesh.scope {
            None if certificates.is_empty() => (Held::All(base.clone()), base.sum),
            None => {
                let mut held = base.resources.clone();
                held.extend(certificates);
                let sum = resources::sum_of(held.iter().map(|(k, e)| (k, e.hash.as_str())));
                (Held::Scoped(held), sum)
            }
            Some(scope) => {
                let (services, clusters) = self.common.in_scope(&self.config, scope);
                // Looked up, not filtered: a kind holds a few dozen of the thousands.
                let shared = &base.resources;
                let lookup = |kind: &str, name: &str| {
                    let key = (kind.to_string(), name.to_string());
                    shared.get(&key).map(|e| (key, e.clone()))
                };
                let mut held: BTreeMap<Key, Arc<Ready>> = (services.iter())
                    .filter_map(|s| lookup(SERVICE, s))
                    .chain(clusters.iter().filter_map(|c| lookup(CLUSTER, c)))
                    .collect();
                // And every Gateway, the shared map's one other kind (see `new`).
                let gateways = (GATEWAY.to_string(), String::new())..;
                held.extend(
                    (shared.range(gateways))
                        .take_while(|((kind, _), _)| kind == GATEWAY)
                        .map(|(k, e)| (k.clone(), e.clone())),
                );
                // A node is scoped only by a Scope of the config, so the names were built.
                if let Some(names) = &self.service_names {
                    held.insert(resources::service_names_key(), names.clone());
                }
                held.extend(certificates);
                let sum = resources::sum_of(held.iter().map(|(k, e)| (k, e.hash.as_str())));
                (Held::Scoped(held), sum)
            }
        };
        let compiled = Arc::new(Compiled {
            version: resources::version_hex(sum.wrapping_add(mesh_sum)),
            held,
            mesh_key,
            mesh_encoded,
            mesh,
            deltas: Mutex::default(),
        });
        self.lock().entry(key).or_insert(compiled).clone()
    }

    /// The shared resources as a protocol-2 proxy can read them, built once per generation:
    /// each Service or Gateway that uses what protocol 3 added is encoded again without it,
    /// and every other resource is the same `Arc` as in `shared`.
    fn older(&self) -> Arc<Shared> {
        self.older
            .get_or_init(|| {
                use trellis_config::protocol::{gateway_for_protocol_2, service_for_protocol_2};
                let mut resources = self.shared.resources.clone();
                let mut replace = |kind: &str, name: &String, e: Encoded| {
                    let key = (kind.to_string(), name.clone());
                    resources.insert(key.clone(), Ready::new(&key, e));
                };
                for (name, svc) in &self.common.services {
                    if let Some(older) = service_for_protocol_2(svc) {
                        replace(SERVICE, name, resources::encode(&older));
                    }
                }
                for (name, g) in &self.common.gateways {
                    if let Some(older) = gateway_for_protocol_2(g) {
                        replace(GATEWAY, name, resources::encode(&older));
                    }
                }
                let sum = resources::sum_of(resources.iter().map(|(k, e)| (k, e.hash.as_str())));
                Arc::new(Shared {
                    generation: self.generation,
                    resources,
                    sum,
                    deltas: Mutex::default(),
                })
            })
            .clone()
    }

    /// The whole snapshot behind `c`, for the admin API.
    pub(crate) fn snapshot(&self, c: &Compiled) -> Snapshot {
        let held = |kind: &str, name: &String| c.holds(&(kind.into(), name.clone()));
        Snapshot {
            version: c.version.clone(),
            node: c.mesh.node.clone(),
            mesh: c.mesh.mesh.clone(),
            services: (self.common.services.iter())
                .filter(|(k, _)| held(SERVICE, k))
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            clusters: (self.common.clusters.iter())
                .filter(|(k, _)| held(CLUSTER, k))
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            inbound_services: c.mesh.inbound_services.clone(),
            gateways: self.common.gateways.clone(),
            service_names: (c.mesh.mesh.scope.is_some())
                .then(|| Arc::new(Common::service_names(&self.config))),
            certificates: (self.common.certificates.certificates.iter())
                .filter(|(k, _)| held(CERTIFICATE, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KindKey, Arc<Compiled>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(hash: &str) -> Arc<Ready> {
        let key = key(CLUSTER, hash);
        Ready::new(
            &key,
            Encoded {
                payload: trellis_proto::resource::Payload::Cluster(bytes::Bytes::from(
                    hash.to_string(),
                )),
                hash: hash.to_string(),
            },
        )
    }

    fn key(kind: &str, name: &str) -> Key {
        (kind.to_string(), name.to_string())
    }

    fn hashes(m: &BTreeMap<Key, Arc<Ready>>) -> impl Iterator<Item = (&Key, &str)> {
        m.iter().map(|(k, e)| (k, e.hash.as_str()))
    }

    #[test]
    fn the_delta_holds_what_changed_and_what_went_in_key_order() {
        let same = enc("b1");
        let prev = BTreeMap::from([
            (key(CLUSTER, "a"), enc("a1")),
            (key(CLUSTER, "b"), same.clone()),
            (key(SERVICE, "c"), enc("c1")),
            (key(SERVICE, "e"), enc("e1")),
        ]);
        let next = BTreeMap::from([
            (key(CLUSTER, "b"), same),
            (key(SERVICE, "c"), enc("c2")),
            (key(SERVICE, "d"), enc("d1")),
            // Re-encoded with the same bytes: a new Arc, the same hash, nothing to send.
            (key(SERVICE, "e"), enc("e1")),
        ]);
        let d = diff(hashes(&prev), next.iter());
        let up: Vec<(&str, &str)> = d
            .upserted
            .iter()
            .map(|((_, n), v)| (n.as_str(), v.hash.as_str()))
            .collect();
        assert_eq!(up, [("c", "c2"), ("d", "d1")]);
        assert_eq!(d.removed, [key(CLUSTER, "a")]);
        assert!(diff(hashes(&next), next.iter()).upserted.is_empty());
        let everything = diff(std::iter::empty(), next.iter());
        assert_eq!(everything.upserted.len(), 4);
        assert!(everything.removed.is_empty());
    }

    fn world(generation: u64, yaml: &str) -> World {
        let cfg = trellis_config::load_str("mesh.yaml", yaml).expect("valid mesh");
        World::new(generation, cfg)
    }

    fn service(name: &str, app: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: rides}}\n\
             spec: {{selector: {{app: {app}}}, ports: [{{name: http, port: 80}}]}}\n---\n"
        )
    }

    fn node(app: &str) -> NodeIdentity {
        NodeIdentity {
            name: format!("{app}-0"),
            namespace: "rides".into(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            service_account: None,
        }
    }

    fn keys_and_hashes(d: &Delta) -> (Vec<(Key, String)>, Vec<Key>) {
        let up = (d.upserted.iter())
            .map(|(k, e)| (k.clone(), e.hash.clone()))
            .collect();
        (up, d.removed.clone())
    }

    #[test]
    fn kinds_share_their_generation_and_their_deltas_match_a_full_walk() {
        let counter = prometheus_client::metrics::counter::Counter::default();
        let scope = "apiVersion: trellis.dev/v1alpha1\nkind: Scope\n\
                     metadata: {name: narrow, namespace: rides}\n\
                     spec: {selector: {app: narrow}, calls: [trip]}\n---\n";
        let base = format!(
            "{}{}{scope}",
            service("trip", "trip"),
            service("billing", "billing")
        );
        let one = world(1, &base);
        // Generation 2 adds a Service that selects the `driver` node, which changes that
        // kind's own Mesh resource (what it serves) as well as what everyone shares.
        let two = world(2, &format!("{base}{}", service("driver", "driver")));
        for app in ["trip", "driver", "narrow"] {
            let (a, b) = (
                one.compiled_for(&node(app), &counter),
                two.compiled_for(&node(app), &counter),
            );
            for c in [&a, &b] {
                let keys: Vec<&Key> = c.resources().map(|(k, _)| k).collect();
                assert!(
                    keys.windows(2).all(|w| w[0] < w[1]),
                    "{app}: not in key order"
                );
                assert!(c.holds(&(MESH.to_string(), "mesh".to_string())));
                let hashes = c.resources().map(|(k, e)| (k, e.hash.as_str()));
                assert_eq!(c.version, resources::version_of(hashes), "{app}");
            }
            let walked = diff(
                a.resources().map(|(k, e)| (k, e.hash.as_str())),
                b.resources(),
            );
            assert_eq!(
                keys_and_hashes(&b.delta_from(&a)),
                keys_and_hashes(&walked),
                "{app}"
            );
            assert!(
                !walked.upserted.is_empty() || app == "narrow",
                "{app}: nothing changed"
            );
        }
        let (trip, driver) = (
            one.compiled_for(&node("trip"), &counter),
            one.compiled_for(&node("driver"), &counter),
        );
        assert!(
            matches!((&trip.held, &driver.held), (Held::All(x), Held::All(y)) if Arc::ptr_eq(x, y))
        );
        let narrow = one.compiled_for(&node("narrow"), &counter);
        assert!(!narrow.holds(&(SERVICE.to_string(), "rides/billing".to_string())));
        assert!(narrow.holds(&(SERVICE.to_string(), "rides/trip".to_string())));
    }
}
