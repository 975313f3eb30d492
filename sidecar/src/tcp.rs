//! Opaque TCP: a Service port with `appProtocol: tcp` is proxied as bytes, balanced like HTTP.
//! In local mode each such Service gets a listener from the bootstrap's `tcp` list.

use crate::balance::{InFlight, ring::hash_key};
use crate::errors::ProxyError;
use crate::routing::pick_backend;
use crate::{Shared, authz};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use trellis_identity::SpiffeId;

/// Accepts on `listener` and forwards each connection to the Service named `service`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, service: String) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let (shared, service) = (shared.clone(), service.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward(&shared, &service, stream, peer).await {
                        tracing::warn!(%peer, %service, error = %e, "tcp connection refused");
                    }
                });
            }
            _ = shared.drain.wait() => return,
        }
    }
}

async fn forward(
    shared: &Shared,
    service: &str,
    mut down: TcpStream,
    peer: SocketAddr,
) -> Result<(), ProxyError> {
    let rt = shared.config.current_full().ok_or(ProxyError::NotReady)?;
    let (host, port) = match service.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (service, None),
    };
    let svc = rt.service(host).ok_or_else(|| ProxyError::NoService {
        host: host.to_string(),
    })?;
    let port = svc.port(port).ok_or_else(|| ProxyError::NoServicePort {
        service: svc.label.to_string(),
        port: port.unwrap_or(0),
    })?;
    let rule = port.rules.first().ok_or_else(|| ProxyError::NoBackend {
        route: svc.label.to_string(),
    })?;
    let backend = pick_backend(rule).ok_or_else(|| ProxyError::NoBackend {
        route: rule.route.to_string(),
    })?;
    let cluster = &backend.cluster;
    let hash = Some(hash_key(peer.ip()));
    let mut tried = Vec::new();
    // Nothing has been sent yet, so a refused connect may move on to the next endpoint.
    let (mut up, ep) = loop {
        let ep = cluster
            .balancer
            .pick(hash, &tried)
            .ok_or_else(|| ProxyError::NoHealthyEndpoints {
                cluster: cluster.name.to_string(),
                ejected: cluster.balancer.ejected(),
            })?
            .clone();
        let connect = tokio::time::timeout(
            shared.bootstrap.limits.connect_timeout,
            TcpStream::connect(ep.addr),
        )
        .await;
        match connect {
            Ok(Ok(s)) => break (s, ep),
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %ep.addr, error = %e, "tcp connect failed");
                tried.push(ep.addr);
            }
            Err(_) => tried.push(ep.addr),
        }
    };
    let _ = up.set_nodelay(true);
    let _in_flight = InFlight::new(ep.clone());
    match (&ep.tls, &shared.tls) {
        (Some(name), Some(tls)) => {
            // The peer sidecar learns from the ALPN that opaque bytes follow the handshake.
            let connector = tokio_rustls::TlsConnector::from(tls.client_tcp.clone());
            let mut up =
                connector
                    .connect(name.clone(), up)
                    .await
                    .map_err(|e| ProxyError::Connect {
                        cluster: cluster.name.to_string(),
                        endpoint: ep.addr,
                        source: Box::new(e),
                    })?;
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
        _ => {
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
    }
    Ok(())
}

/// Inbound opaque TCP that arrived over mTLS: authorized by the caller's identity alone,
/// then carried to the app's port as bytes. A denied connection is closed unanswered.
pub async fn inbound<S>(shared: &Shared, mut down: S, peer: SocketAddr, id: Arc<SpiffeId>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(rt) = shared.config.current_full() {
        let policies = &rt.snapshot.mesh.authorization;
        if let Err(denied) = authz::check(policies, None, Some(&id), &authz::Call::Tcp) {
            let _ = crate::inbound::denial(shared, None, Some(&id), &denied);
            return;
        }
    }
    let Some(app) = shared.app.default_cluster() else {
        tracing::warn!(%peer, "opaque TCP arrived but the bootstrap lists no app port");
        return;
    };
    let Some(ep) = app.balancer.endpoints.first() else {
        return;
    };
    match TcpStream::connect(ep.addr).await {
        Ok(mut up) => {
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        }
        Err(e) => tracing::warn!(app = %ep.addr, error = %e, "cannot reach the app for opaque TCP"),
    }
}
