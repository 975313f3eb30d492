//! trellis-control: the Trellis control plane. It loads mesh YAML, compiles one snapshot per
//! kind of proxy, streams deltas to every proxy, records their ACKs and NACKs, and serves the
//! admin API that the `trellis` CLI uses.

pub mod admin;
pub mod discovery;
pub mod http;
pub mod identity;
pub mod inject;
pub mod kubernetes;
pub mod metrics;
pub mod registry;
pub mod shift;
pub mod world;

use metrics::{Metrics, ResultLabel};
use registry::Registry;
use serde_saphyr::{Location, Spanned};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use trellis_config::load::Doc;
use trellis_config::model::{Metadata, Object, WorkloadSpec};
use trellis_config::{ConfigErrors, MeshConfig};
use world::World;

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// A mesh YAML file, or a folder of them.
    pub config: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long a proxy stays an endpoint after its stream ends (it may be reconnecting).
    pub registration_grace: Duration,
    /// The CA: operator files, or a root generated into a state directory.
    pub ca: identity::ca::CaSource,
    /// Lifetime of proxies' certificates.
    pub cert_ttl: Duration,
    /// Names (DNS or IP) in the control plane's own serving certificate.
    pub server_names: Vec<String>,
}

impl Options {
    /// Loopback ports, a generated CA under `state_dir`, 24 h certificates: what tests and
    /// local runs want.
    pub fn local(config: PathBuf, state_dir: PathBuf) -> Options {
        Options {
            config,
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            registration_grace: Duration::from_secs(10),
            ca: identity::ca::CaSource::StateDir(state_dir),
            cert_ttl: Duration::from_secs(24 * 3600),
            server_names: default_server_names(),
        }
    }
}

/// `localhost` and the loopback addresses, plus the in-cluster names of the Service.
pub fn default_server_names() -> Vec<String> {
    [
        "localhost",
        "127.0.0.1",
        "::1",
        "trellis-control",
        "trellis-control.trellis-system",
        "trellis-control.trellis-system.svc",
        "trellis-control.trellis-system.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec()
}

pub struct ControlPlane {
    pub opts: Options,
    pub registry: Registry,
    pub metrics: Metrics,
    state: Mutex<ConfigState>,
    world: watch::Sender<Option<Arc<World>>>,
    rebuild: Notify,
    generation: AtomicU64,
    /// False until the warm-up after start has passed; see `start`.
    warm: AtomicBool,
    /// Reparses only the documents that changed since the last load.
    loader: trellis_config::Loader,
    /// Full snapshots in flight at once (see `discovery::Session::push`).
    pub full_pushes: Arc<tokio::sync::Semaphore>,
    /// The CA and the identity proofs it accepts.
    pub authority: Arc<identity::Authority>,
    /// Set in Kubernetes mode: `trellis shift` patches HTTPRoutes through it.
    pub kube: std::sync::OnceLock<kube::Client>,
    /// Kubernetes mode: the Pod watch, which says what labels and service account a
    /// proxy's pod has (`cluster_identity`).
    pods: std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>>,
}

#[derive(Default)]
struct ConfigState {
    valid: Option<MeshConfig>,
    errors: Option<ConfigErrors>,
    /// `errors` names objects refused one by one while the rest of the change applied.
    partial: bool,
}

impl ControlPlane {
    pub fn new(opts: Options, authority: identity::Authority) -> ControlPlane {
        ControlPlane {
            authority: Arc::new(authority),
            opts,
            registry: Registry::default(),
            metrics: Metrics::default(),
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
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let source = self.opts.config.display().to_string();
        self.apply(&source, self.loader.load_dir_or_file(&self.opts.config))
    }

    /// The loader every source parses with; it caches documents by their text.
    pub fn loader(&self) -> &trellis_config::Loader {
        &self.loader
    }

    /// Applies one load of a config source (files, or the cluster): a valid config replaces
    /// the served one at once; an invalid one is recorded and the previous one keeps serving.
    pub fn apply(
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
    pub fn apply_partial(&self, source: &str, cfg: MeshConfig, refused: ConfigErrors) {
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
    pub fn trust_domain(&self) -> String {
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
    pub fn config_partial(&self) -> bool {
        self.state().partial
    }

    pub fn is_ready(&self) -> bool {
        self.world.borrow().is_some()
    }

    pub fn world(&self) -> Option<Arc<World>> {
        self.world.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<World>>> {
        self.world.subscribe()
    }

    /// Asks for a rebuild soon; bursts of registrations are coalesced into one.
    pub fn request_rebuild(&self) {
        self.rebuild.notify_one();
    }

    /// Builds and publishes a new generation: the valid config plus registered proxies.
    pub fn rebuild_now(&self) {
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
        for e in registered {
            let Ok(ip) = e.node.inbound.parse::<SocketAddr>() else {
                continue;
            };
            let key = (e.node.namespace.clone(), e.node.workload.clone());
            if cfg.workloads.iter().any(|w| {
                (&w.object.metadata.namespace, &w.object.metadata.name) == (&key.0, &key.1)
            }) {
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
            api_version: "trellis.dev/v1alpha1".into(),
            kind: "Workload".into(),
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

/// A started control plane.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub cp: Arc<ControlPlane>,
    _watcher: Option<trellis_config::watch::Watcher>,
    _kubernetes: Option<AbortOnDrop>,
}

/// Where the control plane reads the mesh from.
pub enum Source {
    /// `Options::config`: a file or folder, watched.
    Files,
    /// The cluster, through this client (`--kubernetes`).
    Kubernetes(kube::Client),
}

/// Stops a background task when the `Running` that owns it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr} for {what}: {source}; is another trellis-control running? set {flag}"
    )]
    Bind {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mesh CA: {0}")]
    Ca(#[from] identity::ca::CaError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: notify::Error },
}

/// Binds both ports, loads the config files, and serves until the process ends.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    start_with(opts, Source::Files).await
}

/// Like [`start`], reading the mesh from `source`.
pub async fn start_with(opts: Options, source: Source) -> Result<Running, StartError> {
    // The CA first: a client that finds the port open can rely on the CA being on disk.
    let mut authority = identity::Authority::new(identity::ca::Ca::load(&opts.ca)?, opts.cert_ttl);
    if let Source::Kubernetes(client) = &source {
        // Pods prove who they are with their projected token, beside join tokens.
        authority.add_proof(Arc::new(kubernetes::token_review::TokenReviewProof::new(
            client.clone(),
        )));
        authority.certificate_renewal = false;
    }
    let grpc = TcpListener::bind(opts.grpc_addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "gRPC",
            flag: "--grpc-addr",
            addr: opts.grpc_addr,
            source,
        })?;
    let http = TcpListener::bind(opts.http_addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "HTTP",
            flag: "--http-addr",
            addr: opts.http_addr,
            source,
        })?;
    let (grpc_addr, http_addr) = (
        grpc.local_addr().expect("bound"),
        http.local_addr().expect("bound"),
    );
    let serving = Arc::new(trellis_identity::CurrentCert::default());
    identity::serving::issue(&authority.ca, &opts.server_names, &serving)
        .map_err(StartError::Tls)?;
    let tls = identity::serving::server_config(serving.clone(), &authority.ca.roots)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let cp = Arc::new(ControlPlane::new(opts, authority));
    identity::serving::renew_in_background(
        cp.authority.clone(),
        cp.opts.server_names.clone(),
        serving,
    );
    let (watcher, kubernetes) = match source {
        Source::Files => {
            let _ = cp.reload();
            let cp = cp.clone();
            let path = cp.opts.config.clone();
            let watcher = trellis_config::watch::watch(&path, move || {
                let _ = cp.reload();
            })
            .map_err(|source| StartError::Watch {
                path: path.display().to_string(),
                source,
            })?;
            (Some(watcher), None)
        }
        Source::Kubernetes(client) => {
            let watches = kubernetes::watch_all(&client);
            let _ = cp.kube.set(client.clone());
            let _ = cp.pods.set(watches.pods());
            let task = tokio::spawn(kubernetes::run(cp.clone(), watches, client));
            (None, Some(AbortOnDrop(task)))
        }
    };

    // Warm-up: a restarted control plane knows no registered proxy yet. Pushing now would
    // strip every self-registered endpoint from every proxy until each re-registers, so the
    // first generation waits one grace period for the proxies to reconnect. In Kubernetes
    // mode endpoints come from the cluster, so there is nothing to wait for.
    let grace = if cp.kube.get().is_some() {
        Duration::ZERO
    } else {
        cp.opts.registration_grace
    };
    let warming = cp.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        warming.warm.store(true, Ordering::Release);
        warming.rebuild_now();
        tracing::info!(
            proxies = warming.registry.lock().len(),
            "warm-up over; pushing config"
        );
    });
    // Coalesce registration churn: one rebuild per burst.
    let rebuilder = cp.clone();
    tokio::spawn(async move {
        loop {
            rebuilder.rebuild.notified().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            rebuilder.rebuild_now();
        }
    });
    // Proxies whose stream ended stop being endpoints after the grace period.
    let expirer = cp.clone();
    tokio::spawn(async move {
        let tick = (expirer.opts.registration_grace / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(tick).await;
            if expirer.registry.expire(expirer.opts.registration_grace) {
                expirer.request_rebuild();
            }
        }
    });
    tokio::spawn(http::serve(http, cp.clone()));
    // In a cluster the gRPC port is a Service every pod can reach; the admin API (status,
    // config, shift) is for operators, who reach it through `kubectl port-forward`.
    let admin_loopback_only = cp.kube.get().is_some();
    let server = tonic::transport::Server::builder()
        .add_service(trellis_proto::v1::discovery_server::DiscoveryServer::new(
            discovery::DiscoveryService(cp.clone()),
        ))
        .add_service(
            trellis_proto::v1::admin_server::AdminServer::with_interceptor(
                admin::AdminService(cp.clone()),
                admin::admit(admin_loopback_only),
            ),
        )
        .add_service(trellis_proto::v1::identity_server::IdentityServer::new(
            identity::IdentityService(cp.clone()),
        ))
        .serve_with_incoming(identity::serving::incoming(grpc, tls));
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    tracing::info!(grpc = %grpc_addr, http = %http_addr, config = %cp.opts.config.display(), "trellis-control listening");
    Ok(Running {
        grpc: grpc_addr,
        http: http_addr,
        cp,
        _watcher: watcher,
        _kubernetes: kubernetes,
    })
}
