//! Where the running config comes from and how it changes: the `ArcSwap`ped runtime, the
//! last load error, and the mesh-file watcher that hot-reloads it.

use crate::Shared;
use crate::runtime::{Runtime, StateRegistry};
use arc_swap::{ArcSwapOption, Guard};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use trellis_config::{ConfigErrors, NodeIdentity, Snapshot};

/// The config the request path reads. Requests load the current `Arc` once and keep it, so a
/// swap never changes a request half way.
#[derive(Default)]
pub struct ConfigStore {
    current: ArcSwapOption<Runtime>,
    last_error: ArcSwapOption<LoadError>,
    registry: StateRegistry,
}

/// A refused config: what was wrong and when.
#[derive(Debug, serde::Serialize)]
pub struct LoadError {
    pub errors: ConfigErrors,
    pub at_unix_secs: u64,
}

impl ConfigStore {
    pub fn current(&self) -> Guard<Option<Arc<Runtime>>> {
        self.current.load()
    }

    pub fn last_error(&self) -> Option<Arc<LoadError>> {
        self.last_error.load_full()
    }

    /// Swaps in `snap` unless it equals what is served. Returns whether anything changed.
    pub fn apply(&self, snap: Snapshot) -> bool {
        self.last_error.store(None);
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|rt| rt.snapshot.version == snap.version)
        {
            return false;
        }
        let rt = self.registry.build(Arc::new(snap));
        self.current.store(Some(Arc::new(rt)));
        true
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

/// Loads, validates and compiles a mesh file for `node`.
pub fn compile_mesh_file(path: &Path, node: &NodeIdentity) -> Result<Snapshot, ConfigErrors> {
    let cfg = trellis_config::load_dir_or_file(path)?;
    Ok(trellis_config::compile(&cfg, node))
}

/// Loads the mesh file now and records the outcome (applied, or refused with its errors).
pub fn reload(shared: &Shared, path: &Path) {
    match compile_mesh_file(path, &shared.node) {
        Ok(snap) => {
            let version = snap.version.clone();
            if shared.config.apply(snap) {
                shared.metrics.config_applied(&version);
                tracing::info!(%version, file = %path.display(), "config applied");
            }
        }
        Err(errors) => {
            shared.metrics.config_rejected();
            let served = shared
                .config
                .current()
                .as_ref()
                .map(|rt| rt.snapshot.version.clone());
            tracing::error!(
                file = %path.display(),
                still_serving = served.as_deref().unwrap_or("nothing"),
                "config refused; fix the file and save it again:\n{errors}"
            );
            shared.config.reject(errors);
        }
    }
}

/// Watches the mesh file's folder and reloads on any change there. The folder, not the file:
/// editors replace files by rename and Kubernetes swaps ConfigMaps through a symlink, and a
/// watch on the old inode would go quiet.
pub fn watch(shared: Arc<Shared>, path: PathBuf) -> notify::Result<()> {
    let dir = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let target = path.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = ev
            && !e.kind.is_access()
            && e.paths.iter().any(|p| is_config_path(&target, p))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let _watcher = watcher; // lives as long as this task
        while rx.recv().await.is_some() {
            // Coalesce the burst of events one save makes (truncate, write, rename).
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            let (shared, path) = (shared.clone(), path.clone());
            // Parsing and compiling are CPU work; keep them off the request-serving threads.
            let _ = tokio::task::spawn_blocking(move || reload(&shared, &path)).await;
        }
    });
    Ok(())
}

/// Whether a change to `changed` can change the config at `target` (a file or a folder).
/// Other files in the folder, such as a log file, must not trigger reloads.
fn is_config_path(target: &Path, changed: &Path) -> bool {
    let name = changed.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // Kubernetes ConfigMap volumes publish new files by swapping the `..data` symlink.
    if name.starts_with("..data") {
        return true;
    }
    if target.is_dir() {
        name.ends_with(".yaml") || name.ends_with(".yml")
    } else {
        changed.file_name() == target.file_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_files_trigger_reloads() {
        let mesh = Path::new("/etc/trellis/mesh.yaml");
        assert!(is_config_path(mesh, Path::new("/etc/trellis/mesh.yaml")));
        assert!(is_config_path(mesh, Path::new("/etc/trellis/..data")));
        assert!(!is_config_path(mesh, Path::new("/etc/trellis/proxy.log")));
        assert!(!is_config_path(mesh, Path::new("/etc/trellis/other.yaml")));
    }
}
