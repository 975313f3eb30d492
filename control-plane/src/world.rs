//! One generation of the mesh as proxies see it: the valid config plus the proxies that
//! registered themselves, compiled for each kind of proxy that asks.

// What every proxy shares (Services, routes, clusters) is compiled and encoded once per
// generation; each kind of proxy (namespace and labels) adds only its small Mesh resource, so
// 1,000 proxies of 10 kinds cost one compilation and 10 small ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use trellis_config::compile::Common;
use trellis_config::resources::{
    self, CLUSTER, Encoded, GATEWAY, Key, MESH, MeshResource, SERVICE,
};
use trellis_config::{MeshConfig, NodeIdentity, Snapshot};

/// The resources of one kind of proxy, ready to diff and send.
pub(crate) struct Compiled {
    pub version: String,
    pub resources: BTreeMap<Key, Arc<Encoded>>,
    mesh: MeshResource,
}

pub struct World {
    pub generation: u64,
    pub config: MeshConfig,
    common: Common,
    shared: BTreeMap<Key, Arc<Encoded>>,
    cache: Mutex<HashMap<KindKey, Arc<Compiled>>>,
}

/// What of a node changes its snapshot: its namespace and labels.
#[derive(Clone, PartialEq, Eq, Hash)]
struct KindKey {
    namespace: String,
    labels: BTreeMap<String, String>,
}

impl World {
    pub(crate) fn new(generation: u64, config: MeshConfig) -> World {
        let common = Common::new(&config);
        let mut shared = BTreeMap::new();
        for (name, svc) in &common.services {
            shared.insert(
                (SERVICE.to_string(), name.clone()),
                Arc::new(resources::encode(svc)),
            );
        }
        for (name, c) in &common.clusters {
            shared.insert(
                (CLUSTER.to_string(), name.clone()),
                Arc::new(resources::encode(c)),
            );
        }
        for (name, g) in &common.gateways {
            shared.insert(
                (GATEWAY.to_string(), name.clone()),
                Arc::new(resources::encode(g)),
            );
        }
        World {
            generation,
            config,
            common,
            shared,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The resources for `node`, built at most once per kind and generation.
    pub(crate) fn compiled_for(
        &self,
        node: &NodeIdentity,
        compilations: &prometheus_client::metrics::counter::Counter,
    ) -> Arc<Compiled> {
        let key = KindKey {
            namespace: node.namespace.clone(),
            labels: node.labels.clone(),
        };
        if let Some(c) = self.lock().get(&key) {
            return c.clone();
        }
        compilations.inc();
        let mesh = Common::mesh_resource(&self.config, node);
        let mut resources = self.shared.clone();
        resources.insert(
            (MESH.to_string(), "mesh".to_string()),
            Arc::new(resources::encode(&mesh)),
        );
        let version = resources::version_of(resources.iter().map(|(k, e)| (k, e.hash.as_str())));
        let compiled = Arc::new(Compiled {
            version,
            resources,
            mesh,
        });
        self.lock().entry(key).or_insert(compiled).clone()
    }

    /// The whole snapshot behind `c`, for the admin API.
    pub(crate) fn snapshot(&self, c: &Compiled) -> Snapshot {
        Snapshot {
            version: c.version.clone(),
            node: c.mesh.node.clone(),
            mesh: c.mesh.mesh.clone(),
            services: self.common.services.clone(),
            clusters: self.common.clusters.clone(),
            inbound_services: c.mesh.inbound_services.clone(),
            gateways: self.common.gateways.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KindKey, Arc<Compiled>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
