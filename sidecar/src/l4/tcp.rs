//! Opaque TCP: bytes in, bytes out, balanced over a cluster's endpoints with a connect
//! timeout, outlier ejection on connect failures, byte counts and half-close both ways.

// Reached from intercepted connections (`listen/dispatch.rs`) and, in local mode, from the
// bootstrap's `tcp` forwards, which `serve` accepts. Between sidecars it runs over mTLS (ALPN
// `trellis-tcp`) when both hold a mesh identity, with the transport preface inside.

use crate::clock;
use crate::config::runtime::{RtCluster, RtPort, RtService, Runtime};
use crate::http::errors::ProxyError;
use crate::inbound::authz;
use crate::l4::carry::{self, Carry, Recheck};
use crate::shared::Shared;
use crate::tls::accept::Io;
use crate::upstream::endpoint::InFlight;
use crate::upstream::ring::hash_key;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use trellis_config::model::{AppProtocol, DEFAULT_TCP_IDLE_TIMEOUT};
use trellis_identity::SpiffeId;
use trellis_proto::listen::Listener;

/// Accepts on `listener` and forwards each connection to the Service named `service`
/// (`name[.namespace][:port]`).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, service: String) {
    let max = shared.bootstrap.limits.max_connections;
    let mut listener = Listener::new(listener, "tcp", max);
    loop {
        tokio::select! {
            (stream, peer, permit) = listener.accept() => {
                let (shared, service) = (shared.clone(), service.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = forward_named(&shared, &service, stream, peer).await {
                        tracing::warn!(%peer, %service, error = %e, "tcp connection refused");
                    }
                });
            }
            _ = shared.drain.wait() => break,
        }
    }
    drop(listener);
    let limit = shared.bootstrap.limits.drain_timeout;
    let _ = tokio::time::timeout(limit, shared.drain.opaque_closed()).await;
}

async fn forward_named(
    shared: &Shared,
    service: &str,
    down: TcpStream,
    peer: SocketAddr,
) -> Result<(), ProxyError> {
    let rt = shared.config.current_full().ok_or(ProxyError::NotReady)?;
    let (host, port) = match service.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (service, None),
    };
    let svc = rt
        .service(host)
        .ok_or_else(|| match rt.outside_scope(Some(host), None) {
            Some(label) => rt.not_in_scope(label),
            None => ProxyError::NoService {
                host: host.to_string(),
            },
        })?;
    let port = svc.port(port).ok_or_else(|| ProxyError::NoServicePort {
        service: svc.label.to_string(),
        port: port.unwrap_or(0),
    })?;
    let cluster = cluster_for(svc, port)?;
    to_cluster(
        shared,
        &cluster,
        &svc.label,
        down,
        peer,
        Direction::Outbound,
    )
    .await
}

/// The cluster opaque TCP to `port` of `svc` goes to: the backend of its first rule, by
/// weight (HTTPRoutes do not apply to bytes).
pub fn cluster_for(svc: &RtService, port: &RtPort) -> Result<Arc<RtCluster>, ProxyError> {
    let rule = port.rules.first().ok_or_else(|| ProxyError::NoBackend {
        route: svc.label.to_string(),
    })?;
    let backend = rule.pick_backend().ok_or_else(|| ProxyError::NoBackend {
        route: rule.route.to_string(),
    })?;
    Ok(backend.cluster.clone())
}

/// Connects to an endpoint of `cluster` and carries bytes both ways until both directions
/// are done (`carry.rs`).
pub async fn to_cluster<D>(
    shared: &Shared,
    cluster: &Arc<RtCluster>,
    destination: &Arc<String>,
    down: D,
    peer: SocketAddr,
    how: Direction,
) -> Result<(), ProxyError>
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let up = connect(shared, cluster, peer).await?;
    carry_to(shared, cluster, destination, down, up, how).await
}

/// Carries bytes between `down` and `up`, a connection to an endpoint of `cluster` opened
/// early, while detecting the protocol (`listen/detect.rs`).
pub async fn carry_to<D, U>(
    shared: &Shared,
    cluster: &Arc<RtCluster>,
    destination: &Arc<String>,
    down: D,
    up: U,
    how: Direction,
) -> Result<(), ProxyError>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let carry = how.carry(shared, cluster, destination);
    carry::carry(shared, down, up, carry).await;
    Ok(())
}

/// Which side a connection is carried on, and what that side knows about it.
pub enum Direction {
    /// The app's own connection to a Service port: its idle timeout and protocol come from
    /// the cluster.
    Outbound,
    /// To this workload's app port: the port's protocol and idle timeout come from the
    /// Service ports that target it, and the caller is authorized again on config changes.
    Inbound {
        port: u16,
        identity: Option<Arc<SpiffeId>>,
    },
}

impl Direction {
    fn carry(self, shared: &Shared, cluster: &RtCluster, destination: &Arc<String>) -> Carry {
        match self {
            Direction::Outbound => Carry {
                series: shared.metrics.tcp("outbound", destination),
                idle: cluster.resilience.tcp_idle,
                protocol: cluster.upstream.protocol,
                recheck: None,
            },
            Direction::Inbound { port, identity } => {
                let (protocol, idle) = match shared.config.current().as_ref() {
                    Some(rt) => rt.port_policies.opaque(port),
                    None => (AppProtocol::Tcp, Some(DEFAULT_TCP_IDLE_TIMEOUT)),
                };
                Carry {
                    series: shared.metrics.tcp("inbound", destination),
                    idle,
                    protocol,
                    recheck: Some(Recheck { port, identity }),
                }
            }
        }
    }
}

/// An open connection to one endpoint of a cluster (plain TCP, or mTLS to its sidecar),
/// counted as in flight on it while open.
pub struct Connected {
    io: Box<dyn Io>,
    _in_flight: InFlight,
}

/// Connects to an endpoint of `cluster`: TLS to a sidecar that has an identity, then the
/// transport preface that names the Service port. A refused or timed-out connect moves on
/// to the next endpoint (nothing was sent yet) and counts as a failure for outlier detection.
pub async fn connect(
    shared: &Shared,
    cluster: &Arc<RtCluster>,
    peer: SocketAddr,
) -> Result<Connected, ProxyError> {
    let hash = Some(hash_key(peer.ip()));
    let mut tried = Vec::new();
    let timeout = shared.bootstrap.limits.connect_timeout;
    let outlier = cluster.upstream.outlier.as_ref();
    let (up, ep) = loop {
        let ep = cluster
            .upstream
            .balancer
            .pick(hash, &tried)
            .ok_or_else(|| ProxyError::NoHealthyEndpoints {
                cluster: cluster.upstream.name.to_string(),
                ejected: cluster.upstream.balancer.ejected(),
            })?
            .clone();
        let result = match tokio::time::timeout(timeout, TcpStream::connect(ep.addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            )),
        };
        if let Some(o) = outlier {
            o.record(
                &ep,
                &cluster.upstream.balancer.endpoints,
                result.is_err(),
                clock::now(),
            );
        }
        match result {
            Ok(s) => break (s, ep),
            Err(e) => {
                tracing::debug!(cluster = %cluster.upstream.name, endpoint = %ep.addr, error = %e, "tcp connect failed");
                tried.push(ep.addr);
            }
        }
    };
    let _ = up.set_nodelay(true);
    let in_flight = InFlight::new(ep.clone());
    let failed = |source: crate::http::errors::BoxError| ProxyError::Connect {
        cluster: cluster.upstream.name.to_string(),
        endpoint: ep.addr,
        source,
    };
    let preface = ep.sidecar.then(|| {
        let c = cluster;
        let (ns, name) = c.service.split_once('/').unwrap_or(("", &c.service));
        format!("{name}.{ns}:{}", c.port)
    });
    let mut io = match (&ep.tls, &shared.tls) {
        (Some(name), Some(tls)) => {
            // The peer sidecar learns from the ALPN that opaque bytes follow the handshake.
            let connector = tokio_rustls::TlsConnector::from(tls.client_tcp.clone());
            let up = connector
                .connect((**name).clone(), up)
                .await
                .map_err(|e| failed(Box::new(e)))?;
            Box::new(up) as Box<dyn Io>
        }
        _ => Box::new(up),
    };
    if let Some(a) = &preface {
        crate::l4::preface::write(&mut io, a)
            .await
            .map_err(|e| failed(e.into()))?;
    }
    Ok(Connected {
        io,
        _in_flight: in_flight,
    })
}

/// Inbound opaque TCP that arrived over mTLS: authorized by the caller's identity alone,
/// then carried to the app port its preface names. A denied connection is closed unanswered.
pub async fn inbound<S>(shared: &Shared, down: S, peer: SocketAddr, id: Arc<SpiffeId>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match from_sidecar(shared, down, peer, Some(&id)).await {
        Ok(()) => {}
        // Already logged, with the policy, where it was denied.
        Err(e @ ProxyError::Unauthorized { .. }) => {
            tracing::debug!(%peer, identity = %id, error = %e, "inbound opaque TCP refused");
        }
        Err(e) => tracing::warn!(%peer, identity = %id, error = %e, "inbound opaque TCP refused"),
    }
}

/// Whether AuthorizationPolicy lets opaque TCP from `id` (`None`: plaintext) into app port
/// `port`. A denial is recorded the way inbound HTTP records it.
pub fn authorize(
    shared: &Shared,
    rt: &Runtime,
    port: u16,
    id: Option<&Arc<SpiffeId>>,
) -> Result<(), ProxyError> {
    crate::inbound::authz::authorize(shared, rt, port, id.map(|i| &**i), &authz::Call::Tcp)
}

/// Another sidecar's opaque TCP: read the transport preface, authorize for the app port its
/// Service port maps to (its `targetPort`), and deliver the rest there.
pub async fn from_sidecar<S>(
    shared: &Shared,
    mut down: S,
    peer: SocketAddr,
    id: Option<&Arc<SpiffeId>>,
) -> Result<(), ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Fail closed: without a config there is no policy to check.
    let rt = shared.config.current_full().ok_or(ProxyError::NotReady)?;
    let wait = shared
        .bootstrap
        .protocol_detection
        .timeout
        .max(std::time::Duration::from_secs(1));
    let authority = match tokio::time::timeout(wait, crate::l4::preface::read(&mut down)).await {
        Ok(Ok(a)) => a,
        _ => return Err(ProxyError::BadRequest("invalid trellis transport preface")),
    };
    let authority = http::uri::Authority::try_from(authority.as_str()).map_err(|_| {
        ProxyError::BadRequest("invalid authority in the trellis transport preface")
    })?;
    let port = crate::inbound::app_port::app_port(&rt, &shared.app.ports, None, Some(&authority))?;
    authorize(shared, &rt, port, id)?;
    // A connection may stay open for days: it must not pin this snapshot for as long.
    drop(rt);
    let cluster = shared.app.cluster(port)?;
    let label = &shared.labels.inbound_service;
    let how = Direction::Inbound {
        port,
        identity: id.cloned(),
    };
    to_cluster(shared, &cluster, label, down, peer, how).await
}

/// Passes `down` through to `dst` unchanged: an intercepted destination outside the mesh
/// under `ALLOW_ANY`.
pub async fn passthrough<D>(shared: &Shared, dst: SocketAddr, down: D) -> Result<(), ProxyError>
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = shared.bootstrap.limits.connect_timeout;
    let connect_err = |source: crate::http::errors::BoxError| ProxyError::Connect {
        cluster: "passthrough".to_string(),
        endpoint: dst,
        source,
    };
    let up = tokio::time::timeout(timeout, TcpStream::connect(dst))
        .await
        .map_err(|e| connect_err(e.into()))?
        .map_err(|e| connect_err(e.into()))?;
    let _ = up.set_nodelay(true);
    let how = Carry {
        series: shared.metrics.tcp("outbound", &shared.labels.passthrough),
        idle: Some(DEFAULT_TCP_IDLE_TIMEOUT),
        protocol: AppProtocol::Tcp,
        recheck: None,
    };
    carry::carry(shared, down, up, how).await;
    Ok(())
}

// === impl Connected ===

impl AsyncRead for Connected {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connected {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
