//! Standalone mode's config source: the mesh file (or folder), loaded and compiled in the
//! proxy, and reloaded whenever it changes.

use crate::shared::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use trellis_config::{ConfigErrors, NodeIdentity, Snapshot};

/// Loads, validates and compiles a mesh file for `node`, serving `gateway` (its
/// `namespace/name`) if it is a gateway: then its HTTPS listeners' certificates come with it,
/// and each that cannot serve is logged with its file:line.
pub fn compile_mesh_file(
    loader: &trellis_config::Loader,
    path: &Path,
    node: &NodeIdentity,
    gateway: Option<&str>,
) -> Result<Snapshot, ConfigErrors> {
    let cfg = loader.load_dir_or_file(path)?;
    let common = trellis_config::compile::Common::new(&cfg);
    for p in (common.certificates.problems.iter()).filter(|p| Some(p.gateway.as_str()) == gateway) {
        tracing::warn!(listener = %p.listener, reason = p.reason.as_str(), "a certificate of this gateway cannot serve; the listener serves the others, or fails its handshakes: {}", p.error);
    }
    Ok(common.into_snapshot(&cfg, node, gateway))
}

/// Loads the mesh file now and records the outcome (applied, or refused with its errors).
pub fn reload(shared: &Shared, path: &Path) {
    let started = Instant::now();
    let gateway = (shared.bootstrap.gateway.as_ref()).map(|g| g.key(&shared.node.namespace));
    match compile_mesh_file(
        &shared.config.loader,
        path,
        &shared.node,
        gateway.as_deref(),
    ) {
        Ok(snap) => {
            let version = snap.version.clone();
            match shared.config.apply(snap, &shared.metrics) {
                Ok(true) => {
                    shared.metrics.config_applied(&version, started.elapsed());
                    tracing::info!(%version, file = %path.display(), "config applied");
                }
                Ok(false) => {}
                Err(e) => {
                    shared.metrics.config_rejected(started.elapsed());
                    tracing::error!(file = %path.display(), "config refused: {e}");
                    shared
                        .config
                        .reject(ConfigErrors::from(trellis_config::ConfigError {
                            file: path.display().to_string(),
                            line: 0,
                            field: String::new(),
                            message: e.to_string(),
                        }));
                }
            }
        }
        Err(errors) => {
            shared.metrics.config_rejected(started.elapsed());
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

/// Reloads the mesh file whenever it changes, until the returned watcher is dropped.
pub fn watch(shared: Arc<Shared>, path: PathBuf) -> notify::Result<trellis_config::watch::Watcher> {
    // The watcher's own thread parses and compiles: CPU work kept off the serving threads.
    let watched = path.clone();
    trellis_config::watch::watch(&watched, move || reload(&shared, &path))
}
