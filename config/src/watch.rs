//! Watching config on disk. The folder is watched, not the file: editors save by rename and
//! Kubernetes swaps ConfigMaps through a `..data` symlink, and a watch on the old inode
//! would go quiet.

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Keeps the watch alive; dropping it stops the watch and its thread.
pub struct Watcher {
    _inner: RecommendedWatcher,
}

/// Calls `on_change` on a background thread whenever the config at `path` (a file, or a
/// folder of YAML files) may have changed. A burst of events from one save is coalesced.
pub fn watch(path: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<Watcher> {
    let target = path.to_path_buf();
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let (tx, rx) = mpsc::channel();
    let mut inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = ev
            && !e.kind.is_access()
            && e.paths.iter().any(|p| is_config_path(&target, p))
        {
            let _ = tx.send(());
        }
    })?;
    inner.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // One save is several events (truncate, write, rename): let them settle.
                std::thread::sleep(Duration::from_millis(25));
                while rx.try_recv().is_ok() {}
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Watcher { _inner: inner })
}

/// Whether a change to `changed` can change the config at `target` (a file or a folder).
/// Other files in the folder, such as a log file, must not trigger reloads.
fn is_config_path(target: &Path, changed: &Path) -> bool {
    let name = changed.file_name().and_then(|n| n.to_str()).unwrap_or("");
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
