//! Accepting downstream connections: the accept loop every listener runs (connection cap,
//! drain), and hyper's HTTP/1.1 and h2c server with the proxy's limits. What each connection
//! then is, and who serves it, is decided in `dispatch.rs` (first `inbound.rs` for mTLS,
//! and `gateway.rs` for a Gateway listener).

use crate::config::bootstrap::Limits;
use crate::shared::Shared;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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
    // HTTP connections close as their last request ends; opaque ones when either side
    // closes. Whatever is still open when the limit passes is closed with the process.
    let limit = shared.bootstrap.limits.drain_timeout;
    let both = async {
        graceful.shutdown().await;
        shared.drain.opaque_closed().await;
    };
    if tokio::time::timeout(limit, both).await.is_err() {
        tracing::warn!(
            ?limit,
            "drain timeout passed; closing the connections still open"
        );
    }
}
