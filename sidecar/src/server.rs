//! Accepting downstream connections: hyper's HTTP/1.1 and h2c server with the proxy's limits,
//! the inbound listener's mTLS, and the drain that stops accepting and lets in-flight requests
//! finish. Protocol detection and opaque TCP dispatch live in `accept.rs`.

use crate::Shared;
use crate::body::Body;
use crate::bootstrap::Limits;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use trellis_config::model::MtlsMode;
use trellis_proto::listen::Listener;

/// Set once, on SIGTERM or `POST /drain`; every listener watches it.
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    pub fn start(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

/// hyper's server for downstream HTTP/1.1 and h2c, with the proxy's limits.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 itself past its read buffer; below that the handlers check the exact
    // limit and answer 431 with a trellis-error header.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes + 16 * 1024).unwrap_or(u32::MAX),
        )
        .adaptive_window(true)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves HTTP on `listener` (`name` in its log lines) with `handler` until the drain starts,
/// then waits up to the drain timeout for open connections to finish their requests.
pub async fn serve<H, F>(listener: TcpListener, name: &'static str, shared: Arc<Shared>, handler: H)
where
    H: Fn(Arc<Shared>, SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    accept_loop(listener, name, shared, move |conn| {
        let handler = handler.clone();
        async move {
            let Conn {
                stream,
                peer,
                shared,
                builder,
                watcher,
            } = conn;
            let svc = service_fn(move |req| handler(shared.clone(), peer, req));
            let c = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(c).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

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
    let orig = crate::original_dst::original_dst(&stream);
    // Without a config the mode is unknown, and the connection is taken as PERMISSIVE only so
    // that an HTTP client hears why: every path past this one refuses to deliver to the app
    // until a config arrives (503 `not-ready`, TCP closed).
    let mode = shared
        .config
        .current_full()
        .map(|rt| rt.snapshot.mesh.inbound_mtls_mode)
        .unwrap_or_default();
    let opaque = orig.is_some_and(|dst| {
        crate::accept::is_opaque(&shared, None, dst) && mode != MtlsMode::Strict
    });
    let first_byte = orig.map(|_| shared.bootstrap.protocol_detection.timeout);
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
                Err(e) => {
                    let reason = crate::tls::accept::reason(&e);
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
            crate::accept::connection(conn, crate::accept::Side::Inbound, orig).await;
            return;
        }
        Accepted::Tls(s, id) => {
            if s.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_TCP) {
                crate::tcp::inbound(&shared, *s, peer, id).await;
                return;
            }
            (Box::new(*s) as Box<dyn crate::tls::accept::Io>, Some(id))
        }
    };
    let peer_id = crate::authz::PeerIdentity(id);
    let svc = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer_id.clone());
        crate::inbound::handle(shared.clone(), peer, orig, req)
    });
    let c = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    if let Err(e) = watcher.watch(c).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// One accepted connection and what serving it needs.
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub shared: Arc<Shared>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub watcher: Watcher,
}

/// Accepts until the drain starts and runs `on_conn`'s future for each connection on its own
/// task, then waits up to the drain timeout for open connections to finish their requests.
/// `name` labels the listener's log lines; each listener has its own `limits.maxConnections`.
pub(crate) async fn accept_loop<F>(
    listener: TcpListener,
    name: &'static str,
    shared: Arc<Shared>,
    on_conn: impl Fn(Conn) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(builder(&shared.bootstrap.limits));
    let mut listener = Listener::new(listener, name, shared.bootstrap.limits.max_connections);
    loop {
        tokio::select! {
            (stream, peer, permit) = listener.accept() => {
                let conn = on_conn(Conn { stream, peer, shared: shared.clone(), builder: builder.clone(), watcher: graceful.watcher() });
                // The task holds the permit, so the connection counts against the cap until
                // it is served. An upgraded (WebSocket) connection is handed off by hyper and
                // stops counting then.
                tokio::spawn(async move {
                    let _permit = permit;
                    conn.await
                });
            }
            _ = shared.drain.wait() => break,
        }
    }
    drop(listener);
    let limit = shared.bootstrap.limits.drain_timeout;
    if tokio::time::timeout(limit, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?limit,
            "drain timeout passed; closing the connections still open"
        );
    }
}
