//! The running config: the `ArcSwap`ped runtime that requests read, the last load error, and
//! the one door (`apply`) through which a new snapshot, from a file or the control plane, is
//! built and swapped in whole.

use super::registry::{BuildError, StateRegistry};
use super::runtime::Runtime;
use crate::config::delivery::AppPorts;
use crate::telemetry::metrics::Metrics;
use arc_swap::{ArcSwapOption, Guard};
use std::sync::Arc;
use std::time::SystemTime;
use trellis_config::{ConfigErrors, Snapshot};

/// The config the request path reads. Requests load the current `Arc` once and keep it, so a
/// swap never changes a request half way.
#[derive(Default)]
pub struct ConfigStore {
    current: ArcSwapOption<Runtime>,
    last_error: ArcSwapOption<LoadError>,
    registry: StateRegistry,
    /// Serialises building and swapping runtimes: a config update and a DNS refresh must not
    /// race each other into storing an older snapshot. Never taken on the request path.
    applying: std::sync::Mutex<()>,
    /// Bumped after every swap; background tasks (`control/resolve.rs`, span export) each
    /// hold a receiver.
    changed: tokio::sync::watch::Sender<u64>,
    /// The last good addresses of ExternalName Services.
    pub dns: crate::config::dns::Resolved,
    /// Reparses only the mesh documents that changed since the last load.
    pub loader: trellis_config::Loader,
}

impl ConfigStore {
    /// A store for a proxy whose app listens on `app_ports`. With `mtls` (the proxy has a
    /// mesh identity) its endpoints originate mTLS.
    pub fn new(mtls: bool, app_ports: AppPorts) -> ConfigStore {
        let mut s = ConfigStore::default();
        s.registry.app_ports = app_ports;
        s.registry
            .originate_mtls
            .store(mtls, std::sync::atomic::Ordering::Relaxed);
        s
    }
}

/// A refused config: what was wrong and when.
#[derive(Debug, serde::Serialize)]
pub struct LoadError {
    pub errors: ConfigErrors,
    pub at_unix_secs: u64,
}

impl ConfigStore {
    /// The runtime a request should use for its whole life, if a config is loaded.
    pub fn current_full(&self) -> Option<Arc<Runtime>> {
        self.current().as_ref().cloned()
    }

    pub fn current(&self) -> Guard<Option<Arc<Runtime>>> {
        self.current.load()
    }

    pub fn last_error(&self) -> Option<Arc<LoadError>> {
        self.last_error.load_full()
    }

    /// Swaps in `snap` unless it equals what is served. Returns whether anything changed, or
    /// why the snapshot cannot be served (the current one then stays).
    pub fn apply(&self, mut snap: Snapshot, metrics: &Metrics) -> Result<bool, BuildError> {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|rt| rt.snapshot.version == snap.version)
        {
            self.last_error.store(None);
            return Ok(false);
        }
        self.dns.fill(&mut snap);
        let prev = self.current.load_full();
        let rt = self
            .registry
            .build(Arc::new(snap), prev.as_deref(), metrics)?;
        self.current.store(Some(Arc::new(rt)));
        // The runtime before is dropped here, off the request path, unless requests still
        // hold it.
        drop(prev);
        self.last_error.store(None);
        self.changed.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// Rebuilds the served runtime with the latest ExternalName addresses; same version.
    pub fn refresh_dns(&self, metrics: &Metrics) {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rt) = self.current.load_full() else {
            return;
        };
        let mut snap = (*rt.snapshot).clone();
        self.dns.fill(&mut snap);
        match self.registry.build(Arc::new(snap), Some(&rt), metrics) {
            Ok(rt) => self.current.store(Some(Arc::new(rt))),
            Err(e) => tracing::error!("cannot apply new ExternalName addresses: {e}"),
        }
    }

    /// A receiver whose `changed()` resolves after each config change (at once if one
    /// happened since it last looked).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn reject(&self, errors: ConfigErrors) {
        let at_unix_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_error.store(Some(Arc::new(LoadError {
            errors,
            at_unix_secs,
        })));
    }
}
