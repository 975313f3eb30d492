//! What the proxy's config is and what it becomes: the bootstrap (a file, or the pod's
//! environment under Kubernetes), the store that swaps snapshots whole, and the compiled
//! `Runtime` that requests read. What feeds the store while the proxy runs is `control/`.

pub(crate) mod app_clusters;
pub(crate) mod bootstrap;
pub(crate) mod delivery;
pub(crate) mod dns;
pub(crate) mod kubernetes;
pub(crate) mod registry;
pub(crate) mod routing;
pub(crate) mod runtime;
pub(crate) mod store;
