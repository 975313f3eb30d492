//! What a connection is, and who serves it, in phases: accept → original destination →
//! (inbound: mTLS, `listen/inbound.rs`) → detect protocol → dispatch to HTTP (hyper) or opaque TCP.

use crate::config::runtime::{RtCluster, Runtime};
use crate::http::errors::ProxyError;
use crate::inbound::authz;
use crate::l4::tcp;
use crate::listen::accept::{Conn, accept_loop};
use crate::listen::detect::{Protocol, detect, detect_or_server_first};
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
use trellis_config::model::OutboundMode;

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

/// Whether a redirected connection to `dst` skips detection: the Service port declares an
/// opaque `appProtocol` (`tcp`, `kafka`, `mysql`, ...), or the port is listed in
/// `protocolDetection.opaquePorts`. Outbound, the Service is the one whose `clusterIP:port`
/// is `dst`; inbound, those that target the app port.
pub fn is_opaque(shared: &Shared, rt: Option<&Runtime>, side: Side, dst: SocketAddr) -> bool {
    let declared = |rt: &Runtime| match side {
        Side::Outbound => rt
            .by_original_dst(dst)
            .is_some_and(|(_, p)| p.protocol.is_opaque()),
        Side::Inbound => rt.port_policies.is_opaque(dst.port()),
    };
    shared
        .bootstrap
        .protocol_detection
        .opaque_ports
        .contains(&dst.port())
        || rt.is_some_and(declared)
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
            opaque: is_opaque(&shared, rt.as_deref(), side, dst),
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
    let mut early = None;
    let detected = match (&target, &rt) {
        (Target::Known { opaque: true, .. }, _) => Ok(Some((
            Protocol::Tcp,
            PeekedIo::new(Vec::new(), stream),
            false,
        ))),
        (Target::Direct, _) if side == Side::Outbound => Ok(Some((
            Protocol::Http1,
            PeekedIo::new(Vec::new(), stream),
            false,
        ))),
        // The destination is known, so a server that speaks first need not wait: connect
        // early and let its banner decide (`detect_or_server_first`).
        (Target::Known { dst, .. }, Some(rt)) => {
            // Inbound, only if policy would admit opaque TCP, asked without counting a
            // denial: the client may yet speak HTTP.
            let allowed =
                side == Side::Outbound || authz::allows(rt, dst.port(), None, &authz::Call::Tcp);
            let target = allowed.then(|| opaque_target(&shared, rt, side, *dst).ok());
            let connect = async { tcp::connect(&shared, &target??.0, peer).await.ok() };
            let raced =
                detect_or_server_first(stream, detection.timeout, detection.early_connect, connect)
                    .await;
            raced.map(|r| {
                r.map(|r| {
                    if r.server_first {
                        shared.metrics.detect_server_first(side.label());
                    }
                    early = r.upstream;
                    (r.detected.protocol, r.detected.io, r.detected.timed_out)
                })
            })
        }
        _ => detect(stream, detection.timeout)
            .await
            .map(|d| d.map(|d| (d.protocol, d.io, d.timed_out))),
    };
    let (protocol, io) = match detected {
        Ok(Some((protocol, io, timed_out))) => {
            if timed_out {
                shared.metrics.detect_timeout(side.label());
            }
            (protocol, io)
        }
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection failed during protocol detection");
            return Ok(());
        }
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
                            crate::inbound::handler::handle(shared, peer, dst, None, req).await
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
        (_, side, Some(dst)) => {
            let rt = rt.ok_or(ProxyError::NotReady)?;
            let how = match side {
                Side::Inbound => {
                    tcp::authorize(&shared, &rt, dst.port(), None)?;
                    tcp::Direction::Inbound {
                        port: dst.port(),
                        identity: None,
                    }
                }
                Side::Outbound => tcp::Direction::Outbound,
            };
            let (cluster, label) = opaque_target(&shared, &rt, side, dst)?;
            // A connection may stay open for days: it must not pin this snapshot for as long.
            drop(rt);
            match early {
                Some(up) => tcp::carry_to(&shared, &cluster, &label, io, up, how).await,
                None => tcp::to_cluster(&shared, &cluster, &label, io, peer, how).await,
            }
        }
    }
}

/// Where opaque bytes to `dst` go, and the destination's metric label: outbound, the
/// cluster of the Service port whose `clusterIP:port` it is; inbound, the app port. The
/// caller authorizes an inbound connection first.
fn opaque_target(
    shared: &Shared,
    rt: &Runtime,
    side: Side,
    dst: SocketAddr,
) -> Result<(Arc<RtCluster>, Arc<String>), ProxyError> {
    match side {
        Side::Inbound => {
            let port = dst.port();
            let cluster = shared.app.for_exact_port(port).cloned().ok_or_else(|| {
                ProxyError::NoServicePort {
                    service: shared.labels.inbound_service.to_string(),
                    port,
                }
            })?;
            Ok((cluster, shared.labels.inbound_service.clone()))
        }
        Side::Outbound => {
            let (svc, port) = rt.by_original_dst(dst).ok_or(ProxyError::NotReady)?;
            Ok((tcp::cluster_for(svc, port)?, svc.label.clone()))
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
    if is_opaque(shared, Some(rt), Side::Outbound, dst) {
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
