//! What a connection is, and who serves it, in phases: accept → original destination →
//! (inbound: mTLS, `listen/inbound.rs`) → detect protocol → dispatch to HTTP (hyper) or opaque TCP.

use crate::config::runtime::Runtime;
use crate::http::errors::ProxyError;
use crate::l4::tcp;
use crate::listen::accept::{Conn, accept_loop};
use crate::listen::detect::{Protocol, detect};
use crate::listen::original_dst::original_dst;
use crate::listen::peeked::PeekedIo;
use crate::shared::Shared;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use trellis_config::model::{AppProtocol, OutboundMode};

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Outbound,
    Inbound,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Outbound => "outbound",
            Side::Inbound => "inbound",
        }
    }
}

/// The outbound listener: the app's own connections, redirected by iptables or sent to the
/// listener directly (explicit proxy).
pub async fn serve_outbound(listener: TcpListener, shared: Arc<Shared>) {
    accept_loop(listener, "outbound", shared, |conn| async move {
        let orig = original_dst(&conn.stream);
        connection(conn, Side::Outbound, orig).await;
    })
    .await
}

/// Whether a redirected connection to `dst` skips detection: the Service port says
/// `appProtocol: tcp`, or the port is listed in `protocolDetection.opaquePorts`.
pub fn is_opaque(shared: &Shared, rt: Option<&Runtime>, dst: SocketAddr) -> bool {
    shared
        .bootstrap
        .protocol_detection
        .opaque_ports
        .contains(&dst.port())
        || rt
            .and_then(|rt| rt.by_original_dst(dst))
            .is_some_and(|(_, p)| p.protocol == AppProtocol::Tcp)
}

/// Where a connection was going, as the config sees it.
enum Target {
    /// Not redirected: the client connected to the listener itself.
    Direct,
    /// Outbound: a Service's `clusterIP:port`. Inbound: the app port it was sent to.
    Known { dst: SocketAddr, opaque: bool },
    /// Outbound: an address no Service claims.
    Unknown(SocketAddr),
}

/// Serves one plaintext connection; `orig` is its original destination, if redirected.
/// Failures are logged here: there is nobody else to tell.
pub(crate) async fn connection(conn: Conn, side: Side, orig: Option<SocketAddr>) {
    let peer = conn.peer;
    if let Err(e) = dispatch(conn, side, orig).await {
        tracing::warn!(%peer, direction = side.label(), error = %e, "connection refused");
    }
}

async fn dispatch(conn: Conn, side: Side, orig: Option<SocketAddr>) -> Result<(), ProxyError> {
    let shared = conn.shared.clone();
    let detection = &shared.bootstrap.protocol_detection;

    // Phase 1: the original destination, when iptables redirected the connection.
    let rt = match orig {
        // Without a config, a redirected connection has no policy to follow.
        Some(_) => Some(shared.config.current_full().ok_or(ProxyError::NotReady)?),
        None => None,
    };
    let target = match (side, orig, &rt) {
        (_, None, _) | (_, _, None) => Target::Direct,
        (Side::Outbound, Some(dst), Some(rt)) if rt.by_original_dst(dst).is_none() => {
            Target::Unknown(dst)
        }
        (_, Some(dst), rt) => Target::Known {
            dst,
            opaque: is_opaque(&shared, rt.as_deref(), dst),
        },
    };
    if let (Target::Unknown(dst), Some(rt)) = (&target, &rt) {
        return outside_mesh(&shared, rt, *dst, conn).await;
    }

    // Phase 2: what the client speaks. Opaque ports are not read, so a server that speaks
    // first is never kept waiting. A client that connected to the outbound listener itself
    // (explicit proxy: the `Host` names the Service) speaks HTTP, since without an original
    // destination nothing else could be routed.
    let Conn {
        stream,
        peer,
        builder,
        watcher,
        ..
    } = conn;
    let (protocol, io) = match target {
        Target::Known { opaque: true, .. } => (Protocol::Tcp, PeekedIo::new(Vec::new(), stream)),
        Target::Direct if side == Side::Outbound => {
            (Protocol::Http1, PeekedIo::new(Vec::new(), stream))
        }
        _ => match detect(stream, detection.timeout).await {
            Ok(Some(d)) => {
                if d.timed_out {
                    shared.metrics.detect_timeout(side.label());
                }
                (d.protocol, d.io)
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection failed during protocol detection");
                return Ok(());
            }
        },
    };

    // Phase 3: dispatch.
    let dst = match target {
        Target::Known { dst, .. } => Some(dst),
        _ => None,
    };
    match (protocol, side, dst) {
        // Without a preface or an original destination, bytes that are not recognisably
        // HTTP still go to hyper, which answers 400 (or 408 when they stall).
        (Protocol::Http1 | Protocol::Http2, _, _)
        | (Protocol::Tcp | Protocol::Tls, _, None)
        | (_, Side::Outbound, None) => {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    match side {
                        Side::Outbound => {
                            crate::outbound::handler::handle(shared, peer, dst, req).await
                        }
                        Side::Inbound => {
                            crate::inbound::handler::handle(shared, peer, dst, req).await
                        }
                    }
                }
            });
            let c = builder
                .serve_connection_with_upgrades(TokioIo::new(io), svc)
                .into_owned();
            if let Err(e) = watcher.watch(c).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            Ok(())
        }
        (Protocol::MeshTcp, Side::Inbound, _) => tcp::from_sidecar(&shared, io, peer, None).await,
        (_, Side::Inbound, Some(dst)) => {
            let port = dst.port();
            let rt = rt.as_ref().ok_or(ProxyError::NotReady)?;
            tcp::authorize(&shared, rt, port, None)?;
            let cluster = shared
                .app
                .for_exact_port(port)
                .ok_or_else(|| ProxyError::NoServicePort {
                    service: shared.labels.inbound_service.to_string(),
                    port,
                })?
                .clone();
            let label = &shared.labels.inbound_service;
            tcp::to_cluster(&shared, &cluster, label, io, peer, "inbound").await
        }
        (_, Side::Outbound, Some(dst)) => {
            let (svc, port) = rt
                .as_ref()
                .and_then(|rt| rt.by_original_dst(dst))
                .ok_or(ProxyError::NotReady)?;
            let cluster = tcp::cluster_for(svc, port)?;
            tcp::to_cluster(&shared, &cluster, &svc.label, io, peer, "outbound").await
        }
    }
}

/// An intercepted destination that no Service's `clusterIP:port` names.
async fn outside_mesh(
    shared: &Shared,
    rt: &Runtime,
    dst: SocketAddr,
    conn: Conn,
) -> Result<(), ProxyError> {
    // A mesh Service that the proxy's Scope leaves out is refused whatever the outbound
    // policy: passed through, the call would skip mTLS and every policy of the Service.
    if let Some(label) = rt.outside_scope(None, Some(dst.ip())) {
        let err = rt.not_in_scope(label);
        shared.metrics.refused("not-in-scope");
        tracing::info!(peer = %conn.peer, destination = %dst, "connection refused: {err}");
        return refuse(shared, rt, dst, conn, err).await;
    }
    match rt.snapshot.mesh.outbound_traffic_policy {
        OutboundMode::AllowAny => tcp::passthrough(shared, dst, conn.stream).await,
        OutboundMode::RegistryOnly => {
            shared.metrics.refused("registry-only");
            tracing::info!(peer = %conn.peer, destination = %dst, "connection refused: no Service has this clusterIP and port and outboundTrafficPolicy is REGISTRY_ONLY");
            refuse(
                shared,
                rt,
                dst,
                conn,
                ProxyError::RegistryOnly { destination: dst },
            )
            .await
        }
    }
}

/// Refuses an intercepted connection: an HTTP client gets an answer that says why (`err`'s
/// status and `trellis-error`); anything else, or an opaque port, is closed unread.
async fn refuse(
    shared: &Shared,
    rt: &Runtime,
    dst: SocketAddr,
    conn: Conn,
    err: ProxyError,
) -> Result<(), ProxyError> {
    if is_opaque(shared, Some(rt), dst) {
        return Ok(());
    }
    let timeout = shared.bootstrap.protocol_detection.timeout;
    let Ok(Some(d)) = detect(conn.stream, timeout).await else {
        return Ok(());
    };
    if !matches!(d.protocol, Protocol::Http1 | Protocol::Http2) {
        return Ok(());
    }
    let err = Arc::new(err);
    let svc = service_fn(move |req: Request<Incoming>| {
        let err = err.clone();
        async move {
            Ok::<_, std::convert::Infallible>(crate::http::respond::error_response(
                &err,
                crate::http::respond::is_grpc(&req),
            ))
        }
    });
    let c = conn
        .builder
        .serve_connection_with_upgrades(TokioIo::new(d.io), svc)
        .into_owned();
    if let Err(e) = conn.watcher.watch(c).await {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
    Ok(())
}
