//! Accepting downstream connections: the accept loop every listener runs (connection cap,
//! drain), and hyper's HTTP/1.1 and h2c server with the proxy's limits. What each connection
//! then is, and who serves it, is decided in `dispatch.rs` (and first `inbound.rs` for mTLS).

use crate::config::bootstrap::Limits;
use crate::http::body::Body;
use crate::shared::Shared;
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
use trellis_proto::listen::Listener;

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
