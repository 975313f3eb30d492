//! The control plane's shared state: the served config (or why a change was refused), the
//! proxies registered with it, and the `World` each new generation publishes.

use crate::identity::authority::Authority;
use crate::metrics::{Metrics, ResultLabel};
use crate::options::Options;
use crate::registry::Registry;
use crate::world::World;
use serde_saphyr::{Location, Spanned};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use trellis_config::load::Doc;
use trellis_config::model::{Metadata, Object, Read, WorkloadSpec};
use trellis_config::{ConfigErrors, MeshConfig};

/// One control plane: what it serves and to whom. Shared by every task and gRPC service.
pub struct ControlPlane {
    pub(crate) opts: Options,
    pub(crate) registry: Registry,
    pub metrics: Metrics,
    /// The proxies' golden-metrics summaries (`golden/`).
    pub(crate) golden: crate::golden::Golden,
    /// Where the dashboard listens, once bound.
    pub(crate) dashboard: std::sync::OnceLock<std::net::SocketAddr>,
    state: Mutex<ConfigState>,
    world: watch::Sender<Option<Arc<World>>>,
    pub(crate) rebuild: Notify,
    generation: AtomicU64,
    /// False until the warm-up after start has passed; see `start`.
    pub(crate) warm: AtomicBool,
    /// Reparses only the documents that changed since the last load.
    loader: trellis_config::Loader,
    /// Full snapshots in flight at once (see `discovery::Session::push`).
    pub(crate) full_pushes: Arc<tokio::sync::Semaphore>,
    /// The CA and the identity proofs it accepts.
    pub(crate) authority: Arc<Authority>,
    /// Set in Kubernetes mode: `trellis shift` patches HTTPRoutes through it.
    pub(crate) kube: std::sync::OnceLock<kube::Client>,
    /// Kubernetes mode: the Pod watch, which says what labels and service account a
    /// proxy's pod has (`cluster_identity`).
    pub(crate) pods:
        std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>>,
}

#[derive(Default)]
struct ConfigState {
    valid: Option<MeshConfig>,
    errors: Option<ConfigErrors>,
    /// `errors` names objects refused one by one while the rest of the change applied.
    partial: bool,
}

impl ControlPlane {
    pub(crate) fn new(opts: Options, authority: Authority) -> ControlPlane {
        ControlPlane {
            golden: crate::golden::Golden::new(opts.summary_interval, crate::golden::unix_now()),
            authority: Arc::new(authority),
            opts,
            registry: Registry::default(),
            metrics: Metrics::default(),
            dashboard: std::sync::OnceLock::new(),
            state: Mutex::default(),
            world: watch::channel(None).0,
            rebuild: Notify::new(),
            generation: AtomicU64::new(0),
            warm: AtomicBool::new(false),
            loader: trellis_config::Loader::default(),
            full_pushes: Arc::new(tokio::sync::Semaphore::new(32)),
            kube: std::sync::OnceLock::new(),
            pods: std::sync::OnceLock::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConfigState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the config source. A valid config replaces the served one at once; an invalid
    /// one is refused, recorded for `trellis status`, and the previous one keeps serving.
    /// A Gateway certificate that cannot serve does not refuse the config (its listener
    /// serves the others): the config applies, and the problem is recorded as a refused
    /// object for `trellis status`, the metrics and the log.
    pub(crate) fn reload(&self) -> Result<(), ConfigErrors> {
        let source = self.opts.config.display().to_string();
        match self.loader.load_dir_or_file(&self.opts.config) {
            Ok(cfg) => {
                let problems = certificate_problems(&cfg);
                if problems.is_empty() {
                    self.apply(&source, Ok(cfg))
                } else {
                    self.apply_partial(&source, cfg, problems);
                    Ok(())
                }
            }
            Err(e) => self.apply(&source, Err(e)),
        }
    }

    /// The loader every source parses with; it caches documents by their text.
    pub(crate) fn loader(&self) -> &trellis_config::Loader {
        &self.loader
    }

    /// Applies one load of a config source (files, or the cluster): a valid config replaces
    /// the served one at once; an invalid one is recorded and the previous one keeps serving.
    pub(crate) fn apply(
        &self,
        source: &str,
        loaded: Result<MeshConfig, ConfigErrors>,
    ) -> Result<(), ConfigErrors> {
        match loaded {
            Ok(cfg) => {
                {
                    let mut st = self.state();
                    st.valid = Some(cfg);
                    st.errors = None;
                    st.partial = false;
                }
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "applied" })
                    .inc();
                self.rebuild_now();
                Ok(())
            }
            Err(errors) => {
                tracing::error!(%source, "config refused; the previous config keeps serving:\n{errors}");
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
                {
                    let mut st = self.state();
                    st.errors = Some(errors.clone());
                    st.partial = false;
                }
                Err(errors)
            }
        }
    }

    /// Applies a config that loaded while some objects were refused on their own (the
    /// cluster source sets them aside, kubernetes::translate): the config serves, and the
    /// refusals are recorded for `trellis status` and the metrics. They are logged when they
    /// change, not on every endpoint update.
    pub(crate) fn apply_partial(&self, source: &str, cfg: MeshConfig, refused: ConfigErrors) {
        let refused_objects = refused
            .0
            .iter()
            .map(|e| e.file.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let errors = (!refused.is_empty()).then_some(refused);
        let changed = {
            let mut st = self.state();
            st.valid = Some(cfg);
            let changed = st.errors != errors;
            st.partial = errors.is_some();
            st.errors = errors.clone();
            changed
        };
        match &errors {
            Some(e) if changed => {
                tracing::warn!(%source, "{refused_objects} object(s) refused; the rest of the config applies:\n{e}")
            }
            None if changed => tracing::info!(%source, "no object refused any more"),
            _ => {}
        }
        self.metrics.refused_objects.set(refused_objects as i64);
        let result = if refused_objects == 0 {
            "applied"
        } else {
            "partial"
        };
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        self.rebuild_now();
    }

    /// The trust domain identities are issued in: the Mesh's, or the default before a Mesh
    /// document is loaded.
    pub(crate) fn trust_domain(&self) -> String {
        self.state()
            .valid
            .as_ref()
            .and_then(|c| c.mesh.as_ref())
            .map(|m| m.object.spec.trust_domain.clone())
            .unwrap_or_else(trellis_config::model::default_trust_domain)
    }

    /// Kubernetes mode: the identity of the pod a proxy names (its namespace and pod name),
    /// with the labels and service account the cluster says it has now, when they differ
    /// from what the proxy claimed. The proxy read its labels once, at start, from the
    /// downward API; this way relabelling a pod changes its proxy's config without a
    /// restart, and a proxy cannot claim another workload's labels. `None`: not in a
    /// cluster, no such pod (a proxy outside the cluster), or nothing differs.
    pub fn cluster_identity(
        &self,
        claimed: &trellis_config::NodeIdentity,
    ) -> Option<trellis_config::NodeIdentity> {
        let at = kube::runtime::reflector::ObjectRef::new(&claimed.name).within(&claimed.namespace);
        let pod = self.pods.get()?.get(&at)?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone());
        if labels == claimed.labels && service_account == claimed.service_account {
            return None;
        }
        Some(trellis_config::NodeIdentity {
            name: claimed.name.clone(),
            namespace: claimed.namespace.clone(),
            labels,
            service_account,
        })
    }

    /// The identity a proxy is served as: `cluster_identity`, or what it claimed.
    pub fn serving_identity<'a>(
        &self,
        claimed: &'a trellis_config::NodeIdentity,
    ) -> std::borrow::Cow<'a, trellis_config::NodeIdentity> {
        match self.cluster_identity(claimed) {
            Some(id) => std::borrow::Cow::Owned(id),
            None => std::borrow::Cow::Borrowed(claimed),
        }
    }

    /// The last refused change, if the latest change was refused, or the objects the
    /// cluster source refused on their own while the rest applied.
    pub fn config_errors(&self) -> Option<ConfigErrors> {
        self.state().errors.clone()
    }

    /// `true` when `config_errors` names objects refused one by one while the latest change
    /// applied; `false` when the whole latest change was refused (or nothing was).
    pub(crate) fn config_partial(&self) -> bool {
        self.state().partial
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.world.borrow().is_some()
    }

    pub fn world(&self) -> Option<Arc<World>> {
        self.world.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<World>>> {
        self.world.subscribe()
    }

    /// Whether a proxy that connects as `node` changes what proxies are sent, so that a new
    /// generation must be built. In Kubernetes mode it never does (EndpointSlices say who
    /// serves); in file mode only when it registers as some Service's endpoint. Every other
    /// connection used to rebuild the world as well: with 10,000 proxies connecting, a
    /// thousand identical generations, each compiled again for every kind of proxy, and the
    /// older ones kept alive by the streams not yet moved to the newest.
    pub(crate) fn registration_matters(&self, node: &trellis_config::NodeIdentity) -> bool {
        if self.kube.get().is_some() {
            return false;
        }
        // Before the first generation there is nothing to compare with; the warm-up builds it.
        self.world().is_none_or(|w| w.is_endpoint(node))
    }

    /// Asks for a rebuild soon; bursts of registrations are coalesced into one.
    pub(crate) fn request_rebuild(&self) {
        self.rebuild.notify_one();
    }

    /// Builds and publishes a new generation: the valid config plus registered proxies.
    pub(crate) fn rebuild_now(&self) {
        if !self.warm.load(Ordering::Acquire) {
            return;
        }
        let Some(mut cfg) = self.state().valid.clone() else {
            return;
        };
        // In Kubernetes mode the EndpointSlices say which pods serve; a proxy registered
        // with this replica is not an endpoint until its pod is ready in the cluster.
        let registered = if self.kube.get().is_some() {
            Vec::new()
        } else {
            self.registry.snapshot()
        };
        // A set, not a scan per proxy: 1,000 registered proxies against 10,000 Workloads made
        // this loop a fifth of the control plane's CPU (perf, bench/propagation.sh).
        let mut named: HashSet<(String, String)> = cfg
            .workloads
            .iter()
            .map(|w| {
                let m = &w.object.metadata;
                (m.namespace.clone(), m.name.clone())
            })
            .collect();
        for e in registered {
            let Ok(ip) = e.node.inbound.parse::<SocketAddr>() else {
                continue;
            };
            let key = (e.node.namespace.clone(), e.node.workload.clone());
            if !named.insert(key) {
                continue; // a static Workload of that name wins
            }
            cfg.workloads.push(registered_workload(&e.node, ip));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.world
            .send_replace(Some(Arc::new(World::new(generation, cfg))));
    }
}

/// A self-registered proxy as a Workload: its labels, and its inbound listener as the address.
fn registered_workload(node: &trellis_proto::v1::Node, inbound: SocketAddr) -> Doc<WorkloadSpec> {
    let spanned = |v: String| Spanned::new(v, Location::UNKNOWN, Location::UNKNOWN);
    Doc {
        file: Arc::from("<registered proxy>"),
        line: 0,
        object: Arc::new(Object {
            api_version: Read,
            kind: Read,
            metadata: Metadata {
                name: node.workload.clone(),
                namespace: node.namespace.clone(),
                labels: node.labels.clone().into_iter().collect(),
                annotations: Default::default(),
            },
            spec: WorkloadSpec {
                address: spanned(inbound.ip().to_string()),
                ports: node
                    .app_ports
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
                    .collect(),
                service_account: Some(node.service_account.clone()).filter(|s| !s.is_empty()),
                sidecar_inbound: Some(inbound.port()),
                sidecar_mtls: node.mtls,
            },
        }),
    }
}

/// Every Gateway listener certificate of `cfg` that cannot serve now, as config errors.
pub(crate) fn certificate_problems(cfg: &MeshConfig) -> ConfigErrors {
    let now = trellis_identity::cert::unix_now();
    let resolved = trellis_config::gateway_tls::resolve(cfg, now);
    ConfigErrors(resolved.problems.into_iter().map(|p| p.error).collect())
}
