//! The inbound listener's front door: mTLS or plaintext by the workload's mode (see
//! `tls/accept.rs`), the peer's identity attached to each request, opaque TCP for the
//! `trellis-tcp` ALPN. Then the same dispatch as any connection.

use super::accept::{Conn, accept_loop};
use super::original_dst::original_dst;
use crate::shared::Shared;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use trellis_config::model::MtlsMode;

/// The inbound listener: mTLS or plaintext by the workload's mode (see `tls::accept`), the
/// peer's identity attached to each request, opaque TCP for the `trellis-tcp` ALPN.
pub async fn serve_inbound(listener: TcpListener, shared: Arc<Shared>) {
    accept_loop(listener, "inbound", shared, inbound_connection).await
}

async fn inbound_connection(conn: Conn) {
    use crate::tls::accept::{Accepted, accept};
    let Conn {
        stream,
        peer,
        shared,
        builder,
        watcher,
    } = conn;
    // A connection iptables redirected carries the app port it was sent to. It comes from a
    // client outside the mesh (sidecars call this listener's port, which is not redirected),
    // so a silent client (server speaks first) waits only the detection timeout, and an
    // opaque port is not read at all unless STRICT must refuse plaintext.
    let orig = original_dst(&stream);
    // Without a config the mode is unknown, and the connection is taken as PERMISSIVE only so
    // that an HTTP client hears why: every path past this one refuses to deliver to the app
    // until a config arrives (503 `not-ready`, TCP closed).
    let rt = shared.config.current_full();
    let mode = (rt.as_ref())
        .map(|rt| rt.snapshot.mesh.inbound_mtls_mode)
        .unwrap_or_default();
    let opaque = orig.is_some_and(|dst| {
        let inbound = super::dispatch::Side::Inbound;
        super::dispatch::is_opaque(&shared, rt.as_deref(), inbound, dst) && mode != MtlsMode::Strict
    });
    drop(rt);
    // Outside STRICT, a client silent past `earlyConnect` is plaintext, and detection goes on
    // in `dispatch.rs`, which lets a server that speaks first decide.
    let detection = &shared.bootstrap.protocol_detection;
    let first_byte = orig.map(|_| match mode {
        MtlsMode::Strict => detection.timeout,
        _ => detection.early_connect.min(detection.timeout),
    });
    let accepted = match shared.tls.as_deref() {
        Some(_) if opaque => Accepted::Plain(stream),
        tls => {
            match accept(
                tls,
                mode,
                stream,
                peer,
                shared.bootstrap.limits.header_read_timeout,
                first_byte,
            )
            .await
            {
                Ok(a) => a,
                Err(refused) => {
                    let e = &refused.error;
                    let reason = crate::tls::accept::reason(e);
                    shared
                        .metrics
                        .security
                        .handshake_errors
                        .get_or_create(&crate::tls::metrics::HandshakeLabels {
                            direction: "inbound",
                            reason,
                        })
                        .inc();
                    tracing::info!(%peer, error = %e, "inbound connection refused");
                    // Closed only now: a client that sees the close also sees the count.
                    drop(refused);
                    return;
                }
            }
        }
    };
    let (io, id): (Box<dyn crate::tls::accept::Io>, _) = match accepted {
        Accepted::Plain(stream) => {
            let conn = Conn {
                stream,
                peer,
                shared,
                builder,
                watcher,
            };
            super::dispatch::connection(conn, super::dispatch::Side::Inbound, orig).await;
            return;
        }
        Accepted::Tls(s, id) => {
            if s.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_TCP) {
                crate::l4::tcp::inbound(&shared, *s, peer, id).await;
                return;
            }
            (Box::new(*s) as Box<dyn crate::tls::accept::Io>, Some(id))
        }
    };
    let peer_id = Arc::new(crate::inbound::authz::PeerIdentity::new(id));
    let svc = service_fn(move |req: Request<Incoming>| {
        let caller = Some(peer_id.clone());
        crate::inbound::handler::handle(shared.clone(), peer, orig, caller, req)
    });
    let c = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    if let Err(e) = watcher.watch(c).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
