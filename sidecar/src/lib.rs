//! trellis-proxy, the Trellis sidecar: load a [`Bootstrap`] (a file, or [`bootstrap_from_env`]
//! under Kubernetes) and [`start`] a proxy from it; [`init`] installs the init container's
//! iptables rules. ARCHITECTURE.md at the repo root maps the modules.

// The proxy carries a workload's inbound and outbound HTTP, gRPC, WebSocket and TCP traffic
// under a config snapshot it can swap without dropping requests.

mod admin;
mod clock;
mod config;
mod control;
mod drain;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod http;
mod inbound;
pub mod init;
mod l4;
mod listen;
mod outbound;
mod resilience;
mod shared;
mod telemetry;
mod tls;
mod upstream;

pub use config::bootstrap::Bootstrap;
pub use config::kubernetes::bootstrap_from_env;
/// The path normalization every listener applies, exposed for the path-cost bench.
pub use http::normalize::normalize_path;

use config::app_clusters::AppClusters;
use config::bootstrap::ControlPlane;
use config::store::ConfigStore;
use drain::Drain;
use shared::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use telemetry::access_log::AccessLog;
use telemetry::metrics::Metrics;
use telemetry::observe::Labels;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use upstream::pool::Upstreams;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot listen on {addr} ({which}): {source}; is another proxy using it? set listeners.{which} in the bootstrap"
    )]
    Bind {
        which: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch the mesh file: {0}")]
    Watch(#[from] notify::Error),
    #[error("controlPlane: {0}")]
    ControlPlane(#[from] trellis_proto::connect::AddressError),
    #[error("controlPlane: {0}")]
    CaBundle(#[from] config::bootstrap::CaBundleError),
}

/// A started proxy: its bound addresses, and the tasks that serve them.
pub struct Running {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// The bound address of each `tcp` forward, in bootstrap order.
    pub tcp: Vec<SocketAddr>,
    /// Gateway mode: the bound address of each Gateway listener, by listener name.
    pub gateway: std::collections::BTreeMap<String, SocketAddr>,
    pub(crate) shared: Arc<Shared>,
    serving: JoinSet<()>,
    _watcher: Option<trellis_config::watch::Watcher>,
}

impl Running {
    /// The proxy's metrics in the Prometheus text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// Starts the drain: stop accepting, finish in-flight requests.
    pub fn drain(&self) {
        self.shared.drain.start();
    }

    /// Starts the drain on SIGTERM or Ctrl-C, as a pod's sidecar must.
    pub fn drain_on_signal(&self) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("signal received; draining");
                shared.drain.start();
            }
        });
    }

    /// Resolves when every traffic listener has drained and the spans of the last requests
    /// have gone to the collector (or 2 s have passed).
    pub async fn wait(mut self) {
        while self.serving.join_next().await.is_some() {}
        (self.shared.spans)
            .flush(std::time::Duration::from_secs(2))
            .await;
    }
}

async fn bind(which: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            which: which.to_string(),
            addr,
            source,
        })
}

/// The IPv6 twin of an IPv4 listener on loopback or every address (`[::1]` or `[::]`, same
/// port, IPv6 only), so that connections ip6tables redirects have somewhere to go. `None`
/// for other addresses, or where IPv6 is off.
fn ipv6_twin(l: &TcpListener) -> Option<TcpListener> {
    let v4 = l.local_addr().ok()?;
    let ip = match v4.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => std::net::Ipv6Addr::LOCALHOST,
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv6Addr::UNSPECIFIED,
        _ => return None,
    };
    let addr = SocketAddr::new(ip.into(), v4.port());
    let bound = (|| {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    })();
    match bound {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(%addr, error = %e, "no IPv6 twin listener");
            None
        }
    }
}

/// Binds every listener, loads the config, and starts serving. Port 0 binds any free port;
/// `Running` tells which.
pub async fn start(bootstrap: Bootstrap) -> Result<Running, StartError> {
    let l = &bootstrap.listeners;
    let (outbound, inbound, admin) = (
        bind("outbound", l.outbound).await?,
        bind("inbound", l.inbound).await?,
        bind("admin", l.admin).await?,
    );
    let mut tcp = Vec::new();
    for (i, f) in bootstrap.tcp.iter().enumerate() {
        tcp.push((
            bind(&format!("tcp[{i}]"), f.listen).await?,
            f.service.clone(),
        ));
    }
    let mut gateway = Vec::new();
    if let Some(g) = &bootstrap.gateway {
        let key: Arc<str> = Arc::from(g.key(&bootstrap.workload.namespace));
        for (name, addr) in &g.listen {
            let id = outbound::gateway::ListenerId {
                gateway: key.clone(),
                listener: Arc::from(name.as_str()),
            };
            gateway.push((bind(&format!("gateway.listen.{name}"), *addr).await?, id));
        }
    }
    let w = &bootstrap.workload;
    let labels = Labels {
        workload: Arc::new(w.name.clone()),
        namespace: Arc::new(w.namespace.clone()),
        identity: Arc::new(
            w.service_account
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        ),
        unknown: Arc::new("unknown".to_string()),
        empty: Arc::default(),
        passthrough: Arc::new("passthrough".to_string()),
        inbound_service: Arc::new(format!(
            "{}.{}",
            w.labels.get("app").unwrap_or(&w.name),
            w.namespace
        )),
    };
    let mesh_file = bootstrap.mesh_file.clone();
    let control_plane = match &bootstrap.control_plane {
        Some(cp) => Some(control_plane_endpoint(cp)?),
        None => None,
    };
    let mesh_tls = bootstrap
        .control_plane
        .as_ref()
        .and_then(|cp| cp.token_file.as_ref())
        .map(|_| tls::MeshTls::new());
    let app = AppClusters::new(&bootstrap);
    let config = ConfigStore::new(mesh_tls.is_some(), app.ports.clone());
    let metrics = Metrics::default();
    let dropped = metrics.access_log_dropped();
    let connections = metrics.connections();
    let shared = Arc::new(Shared {
        node: bootstrap.node(),
        config,
        access_log: if bootstrap.access_log {
            AccessLog::stdout(dropped)
        } else {
            AccessLog::off(dropped)
        },
        metrics,
        upstreams: Arc::new(Upstreams::new(
            bootstrap.limits.connect_timeout,
            mesh_tls.clone(),
            bootstrap.upstream.multiplex,
            connections,
        )),
        drain: Drain::default(),
        app,
        labels,
        spans: Default::default(),
        source: match (&mesh_file, &bootstrap.control_plane) {
            (Some(p), _) => format!("meshFile: {}", p.display()),
            (None, Some(cp)) => format!("controlPlane: {}", cp.address),
            (None, None) => String::new(),
        },
        tls: mesh_tls,
        bootstrap,
    });
    let mut watcher = None;
    if let Some(path) = mesh_file {
        control::mesh_file::reload(&shared, &path);
        watcher = Some(control::mesh_file::watch(shared.clone(), path)?);
    }

    let addr = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
    let (out_addr, in_addr, admin_addr) = (addr(&outbound), addr(&inbound), addr(&admin));
    let tcp_addrs = tcp.iter().map(|(l, _)| addr(l)).collect();
    let gateway_addrs = gateway
        .iter()
        .map(|(l, id)| (id.listener.to_string(), addr(l)))
        .collect();
    let mut serving = JoinSet::new();
    // IPv6 twins: `trellis-proxy init` redirects IPv6 too, to the same ports.
    let (outbound6, inbound6) = (ipv6_twin(&outbound), ipv6_twin(&inbound));
    serving.spawn(listen::dispatch::serve_outbound(outbound, shared.clone()));
    serving.spawn(listen::inbound::serve_inbound(inbound, shared.clone()));
    if let Some(l) = outbound6 {
        serving.spawn(listen::dispatch::serve_outbound(l, shared.clone()));
    }
    if let Some(l) = inbound6 {
        serving.spawn(listen::inbound::serve_inbound(l, shared.clone()));
    }
    for (listener, id) in gateway {
        serving.spawn(listen::gateway::serve(listener, shared.clone(), id));
    }
    for (listener, service) in tcp {
        serving.spawn(l4::tcp::serve(listener, shared.clone(), service));
    }
    if let Some(endpoint) = control_plane {
        let node = node(&shared.bootstrap, out_addr, in_addr, admin_addr);
        if let (Some(tls), Some(token)) = (
            &shared.tls,
            shared
                .bootstrap
                .control_plane
                .as_ref()
                .and_then(|c| c.token_file.clone()),
        ) {
            tokio::spawn(control::certify::run(
                shared.clone(),
                tls.clone(),
                endpoint.connect_lazy(),
                token,
            ));
        }
        tokio::spawn(control::discovery::run(shared.clone(), endpoint, node));
    }
    tokio::spawn(admin::serve(admin, shared.clone()));
    tokio::spawn(control::resolve::run(shared.clone()));
    tokio::spawn(control::collector::run(shared.clone()));
    tracing::info!(outbound = %out_addr, inbound = %in_addr, admin = %admin_addr, "trellis-proxy listening");
    Ok(Running {
        outbound: out_addr,
        inbound: in_addr,
        admin: admin_addr,
        tcp: tcp_addrs,
        gateway: gateway_addrs,
        shared,
        serving,
        _watcher: watcher,
    })
}

/// The control plane's gRPC endpoint: TLS, trusting only the bootstrap's CA bundle.
fn control_plane_endpoint(cp: &ControlPlane) -> Result<tonic::transport::Endpoint, StartError> {
    let pem = cp.ca_pem()?;
    Ok(trellis_proto::connect::endpoint(&cp.address, &pem)?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true))
}

/// This proxy as the control plane sees it: identity, labels, app and bound listeners.
fn node(
    b: &Bootstrap,
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
) -> trellis_proto::v1::Node {
    let w = &b.workload;
    trellis_proto::v1::Node {
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone().unwrap_or_default(),
        labels: w.labels.clone().into_iter().collect(),
        app_address: b.app.address.to_string(),
        app_ports: b
            .app
            .ports
            .iter()
            .map(|(k, v)| (k.clone(), u32::from(*v)))
            .collect(),
        outbound: outbound.to_string(),
        inbound: match b.advertise_address {
            Some(ip) => SocketAddr::new(ip, inbound.port()).to_string(),
            None => inbound.to_string(),
        },
        admin: admin.to_string(),
        mtls: false,
        gateway: (b.gateway.as_ref())
            .map(|g| g.key(&w.namespace))
            .unwrap_or_default(),
    }
}
