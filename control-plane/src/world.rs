//! One generation of the mesh as proxies see it: the valid config plus the proxies that
//! registered themselves, and a cache of compiled snapshots keyed by what shapes them.
//! Proxies of one kind (namespace and labels) share one compilation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use trellis_config::resources::{self, Encoded, Key};
use trellis_config::{MeshConfig, NodeIdentity, Snapshot};

/// A compiled snapshot and its resources, ready to diff and send.
pub struct Compiled {
    pub snapshot: Arc<Snapshot>,
    pub resources: BTreeMap<Key, Encoded>,
}

pub struct World {
    pub generation: u64,
    pub config: MeshConfig,
    cache: Mutex<HashMap<KindKey, Arc<Compiled>>>,
}

/// What of a node changes its snapshot: its namespace and labels.
#[derive(Clone, PartialEq, Eq, Hash)]
struct KindKey {
    namespace: String,
    labels: BTreeMap<String, String>,
}

impl World {
    pub fn new(generation: u64, config: MeshConfig) -> World {
        World {
            generation,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The snapshot for `node`, compiled at most once per kind and generation.
    pub fn compiled_for(
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
        // Compile outside the lock; a racing compile of the same kind gives an equal result.
        compilations.inc();
        let snapshot = trellis_config::compile(&self.config, node);
        let compiled = Arc::new(Compiled {
            resources: resources::split(&snapshot),
            snapshot: Arc::new(snapshot),
        });
        self.lock().entry(key).or_insert(compiled).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KindKey, Arc<Compiled>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
