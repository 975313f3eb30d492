//! A Gateway listener's connections: plain HTTP, or, for an HTTPS listener, TLS terminated
//! here with the certificate its SNI names (`tls/gateway.rs`), then HTTP/2 or HTTP/1.1 as
//! ALPN chose. Which one a connection gets is the config's word at the moment it is
//! accepted, so a listener that turns HTTPS, or a rotated certificate, takes effect for the
//! next connection while the open ones carry on.

use super::accept::{Conn, accept_loop};
use crate::outbound::gateway::{ListenerId, handle};
use crate::outbound::handler::Scheme;
use crate::shared::Shared;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, id: ListenerId) {
    accept_loop(listener, "gateway", shared, move |conn| {
        connection(conn, id.clone())
    })
    .await
}

async fn connection(conn: Conn, id: ListenerId) {
    let Conn {
        stream,
        peer,
        shared,
        builder,
        watcher,
    } = conn;
    let tls = (shared.config.current_full()).and_then(|rt| {
        let l = rt.gateways.get(&*id.gateway)?.get(&*id.listener)?;
        Some(l.tls.as_ref()?.config.clone())
    });
    let Some(config) = tls else {
        return serve_http(stream, Scheme::Http, shared, id, peer, builder, watcher).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // The same bound as a request head's: a client that opens a connection and never
    // finishes its handshake holds a slot no longer than a slow header would.
    let limit = shared.bootstrap.limits.header_read_timeout;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            tracing::trace!(%peer, sni = ?s.get_ref().1.server_name(), "TLS accepted");
            serve_http(s, Scheme::Https, shared, id, peer, builder, watcher).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, gateway = %id.gateway, listener = %id.listener, error = %e, "TLS handshake failed");
            count_refused(&shared, "handshake-failed");
        }
        Err(_) => count_refused(&shared, "handshake-timeout"),
    }
}

/// HTTP/1.1 or HTTP/2 on `io`, plain or TLS (generic, so a plain connection is not boxed).
async fn serve_http<I: crate::tls::accept::Io>(
    io: I,
    scheme: Scheme,
    shared: Arc<Shared>,
    id: ListenerId,
    peer: std::net::SocketAddr,
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let svc = service_fn(move |req| handle(shared.clone(), id.clone(), peer, scheme, req));
    let c = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    if let Err(e) = watcher.watch(c).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn count_refused(shared: &Shared, reason: &'static str) {
    (shared.metrics.security.handshake_errors)
        .get_or_create(&crate::tls::metrics::HandshakeLabels {
            direction: "gateway",
            reason,
        })
        .inc();
}
