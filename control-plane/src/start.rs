//! Starting the control plane: the CA, both listeners, the config source and the background
//! tasks (warm-up, rebuild coalescing, registration expiry), assembled in one place.

use crate::options::Options;
use crate::state::ControlPlane;
use crate::{admin, certify, dashboard, discovery, http, identity, kubernetes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

/// A started control plane.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The dashboard's listener, unless it is off.
    pub dashboard: Option<SocketAddr>,
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

/// Why the control plane did not start.
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
    ServingCert(#[from] identity::serving::ServingCertError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
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
    let mut authority =
        identity::authority::Authority::new(identity::ca::Ca::load(&opts.ca)?, opts.cert_ttl);
    if let Source::Kubernetes(client) = &source {
        // Pods prove who they are with their projected token, beside join tokens.
        authority.add_proof(Arc::new(kubernetes::token_review::TokenReviewProof::new(
            client.clone(),
        )));
        authority.certificate_renewal = false;
    }
    let grpc = bind(opts.grpc_addr, "gRPC", "--grpc-addr").await?;
    let http = bind(opts.http_addr, "HTTP", "--http-addr").await?;
    let (grpc_addr, http_addr) = (
        grpc.local_addr().expect("bound"),
        http.local_addr().expect("bound"),
    );
    let dashboard = match opts.dashboard_addr {
        Some(addr) => Some(bind(addr, "dashboard", "--dashboard-addr").await?),
        None => None,
    };
    let dashboard_addr = dashboard.as_ref().map(|l| l.local_addr().expect("bound"));
    let serving = Arc::new(trellis_identity::CurrentCert::default());
    identity::serving::issue(&authority.ca, &opts.server_names, &serving)?;
    let tls = identity::serving::server_config(serving.clone(), &authority.ca.roots)?;
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
            let namespaces = cp.opts.gateway_secret_namespaces.as_deref();
            let watches = kubernetes::watch::watch_all(&client, namespaces);
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
            let gone = expirer.registry.expire(expirer.opts.registration_grace);
            if gone.iter().any(|node| expirer.registration_matters(node)) {
                expirer.request_rebuild();
            }
        }
    });
    tokio::spawn(http::serve(http, cp.clone()));
    if let Some(listener) = dashboard {
        let _ = cp.dashboard.set(listener.local_addr().expect("bound"));
        tokio::spawn(dashboard::serve(
            listener,
            cp.clone(),
            cp.opts.dashboard_shift,
        ));
    }
    // In a cluster the gRPC port is a Service every pod can reach; the admin API (status,
    // config, shift) is for operators, who reach it through `kubectl port-forward`.
    let admin_loopback_only = cp.kube.get().is_some();
    let server = tonic::transport::Server::builder()
        .add_service(discovery::DiscoveryServer::new(
            discovery::DiscoveryService(cp.clone()),
        ))
        .add_service(
            trellis_proto::v1::admin_server::AdminServer::with_interceptor(
                admin::AdminService(cp.clone()),
                admin::admit(admin_loopback_only),
            ),
        )
        .add_service(trellis_proto::v1::identity_server::IdentityServer::new(
            certify::IdentityService(cp.clone()),
        ))
        .serve_with_incoming(identity::serving::incoming(grpc, tls));
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    if let Some(d) = dashboard_addr {
        tracing::info!("dashboard at http://{d}/");
    }
    tracing::info!(grpc = %grpc_addr, http = %http_addr, config = %cp.opts.config.display(), "trellis-control listening");
    Ok(Running {
        grpc: grpc_addr,
        http: http_addr,
        dashboard: dashboard_addr,
        cp,
        _watcher: watcher,
        _kubernetes: kubernetes,
    })
}

/// Binds one of the control plane's listeners; the error names the flag that moves it.
async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what,
            flag,
            addr,
            source,
        })
}
