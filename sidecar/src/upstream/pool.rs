//! Each endpoint's own connection pool, and how its connections are made: plain TCP to the
//! app or to a workload outside the mesh, mTLS to another sidecar.
//!
//! A pool lives in its endpoint's state (`EndpointState::pool`), so it is found without a
//! lookup, survives every config swap that keeps the endpoint (same address, same expected
//! identity), and closes its connections when the endpoint leaves the config. Nothing here
//! is shared between endpoints: an HTTP/2 connection is read through an `ArcSwap`, and the
//! idle HTTP/1.1 connections sit behind their endpoint's own short lock.
//!
//! HTTP/2 to an endpoint is one connection that every request multiplexes on. HTTP/1.1 is
//! one request per connection at a time: a connection goes back to the idle list when its
//! response body has been read (`http::idle::Lease`).

use crate::http::body::Body;
use crate::http::errors::BoxError;
use crate::http::headers::same_head;
use crate::http::idle::{IdleConns, Lease};
use crate::telemetry::metrics::ConnectionCounters;
use crate::tls::MeshTls;
use crate::tls::accept::Io;
use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;

type ServerName = rustls_pki_types::ServerName<'static>;
/// A server name, shared by every endpoint whose sidecar runs as the same identity.
pub type SharedName = Arc<ServerName>;

/// How long a connection may sit unused before its pool closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How connections are made: settings shared by every endpoint's pool, read-only.
pub struct Upstreams {
    connect_timeout: Duration,
    tls: Option<Arc<MeshTls>>,
    /// HTTP/1.1 to another sidecar rides the HTTP/2 connection to it (see `Call::send`).
    pub multiplex: bool,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    opened: ConnectionCounters,
}

/// One endpoint's connections.
#[derive(Default)]
pub struct Pool(Arc<Connections>);

#[derive(Default)]
struct Connections {
    http1: Arc<IdleConns<Body>>,
    http2: ArcSwapOption<http2::SendRequest<Body>>,
    /// Held while an HTTP/2 connection is being made, so that a burst of first requests
    /// makes one connection, not one each.
    dialing: tokio::sync::Mutex<()>,
    /// When a request last went out on the HTTP/2 connection (`clock` nanos).
    http2_used: AtomicU64,
    /// A task is watching this pool for idle connections.
    reaping: AtomicBool,
}

/// Where a pool's connections go: the endpoint's address, and the identity its sidecar must
/// prove when the connection is mTLS.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub tls: Option<&'a SharedName>,
}

/// Why a request got no response.
pub enum SendError {
    /// No connection could be made, so nothing was sent: the request comes back whole.
    Connect {
        request: Box<Request<Body>>,
        source: BoxError,
    },
    /// The request went out (or may have), and the exchange failed.
    Failed(hyper::Error),
}

impl Upstreams {
    /// `tls` is the proxy's identity, if it has one.
    pub fn new(
        connect_timeout: Duration,
        tls: Option<Arc<MeshTls>>,
        multiplex: bool,
        opened: ConnectionCounters,
    ) -> Upstreams {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30));
        Upstreams {
            connect_timeout,
            tls,
            multiplex,
            http1: http1::Builder::new(),
            http2: h2,
            opened,
        }
    }

    /// Sends `req` to `to` over HTTP/2 or HTTP/1.1, on a pooled connection when one is free.
    /// `req`'s URI is what goes on the wire: absolute for HTTP/2 (`:scheme` and
    /// `:authority`), origin-form for HTTP/1.1.
    ///
    /// A request that a closing connection never sent goes out on another; so does, once, an
    /// idempotent one whose body is in memory (`resendable`) when a reused HTTP/1.1
    /// connection dies under it before any answer: the keep-alive race, where the upstream
    /// closed an idle connection as the request was written (RFC 9110 §9.2.2 allows the
    /// retry). Only then is the request's head copied, and only on a reused connection.
    pub async fn send(
        &self,
        pool: &Pool,
        to: Target<'_>,
        req: Request<Body>,
        h2: bool,
        resendable: bool,
    ) -> Result<Response<Body>, SendError> {
        if h2 {
            self.send_h2(pool, to, req).await
        } else {
            self.send_h1(pool, to, req, resendable).await
        }
    }

    async fn send_h2(
        &self,
        pool: &Pool,
        to: Target<'_>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let c = &pool.0;
        // A request that a closing connection hands back unsent gets one more connection.
        for _ in 0..2 {
            let open = c
                .http2
                .load()
                .as_ref()
                .filter(|tx| !tx.is_closed())
                .map(|tx| http2::SendRequest::clone(tx));
            let mut tx = match open {
                Some(tx) => tx,
                // Boxed: connecting is rare, and its state (a TLS handshake) would otherwise
                // make every request's future, which is moved on each send, kilobytes larger.
                None => match Box::pin(self.dial_h2(pool, to)).await {
                    Ok(tx) => tx,
                    Err(source) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            source,
                        });
                    }
                },
            };
            c.http2_used
                .store(crate::clock::nanos(crate::clock::now()), Ordering::Relaxed);
            match tx.try_send_request(req).await {
                Ok(res) => return Ok(res.map(Body::Incoming)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        Err(SendError::Connect {
            request: Box::new(req),
            source: "the endpoint closed each new HTTP/2 connection before taking a request".into(),
        })
    }

    /// The endpoint's HTTP/2 connection, made now unless a concurrent request just made it.
    async fn dial_h2(
        &self,
        pool: &Pool,
        to: Target<'_>,
    ) -> Result<http2::SendRequest<Body>, BoxError> {
        let c = &pool.0;
        let _dialing = c.dialing.lock().await;
        if let Some(tx) = c.http2.load_full().filter(|tx| !tx.is_closed()) {
            return Ok(http2::SendRequest::clone(&tx));
        }
        let io = self.dial(to, true).await?;
        let (tx, conn) = self.http2.handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        c.http2.store(Some(Arc::new(tx.clone())));
        Self::watch(pool);
        Ok(tx)
    }

    async fn send_h1(
        &self,
        pool: &Pool,
        to: Target<'_>,
        mut req: Request<Body>,
        resendable: bool,
    ) -> Result<Response<Body>, SendError> {
        let c = &pool.0;
        let mut fresh_only = false;
        let mut fresh_failed = false;
        loop {
            let idle = if fresh_only { None } else { c.http1.take() };
            let (mut tx, reused) = match idle {
                Some(idle) => (idle.tx, true),
                // Boxed, as in `send_h2`.
                None => match Box::pin(self.dial_h1(pool, to)).await {
                    Ok(tx) => (tx, false),
                    Err(source) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            source,
                        });
                    }
                },
            };
            // A returned connection becomes ready as soon as its task has seen the last
            // response end; one that closes meanwhile is passed over.
            if !tx.is_ready() && tx.ready().await.is_err() {
                continue;
            }
            let copy = (reused && resendable).then(|| {
                let body = req.body().try_clone().unwrap_or_else(Body::empty);
                same_head(&req, body)
            });
            match tx.try_send_request(req).await {
                Ok(res) => {
                    let ended = http_body::Body::is_end_stream(res.body());
                    let home = &c.http1;
                    return Ok(res.map(|inner| Body::Leased {
                        inner,
                        lease: Lease::new(tx, home, ended),
                    }));
                }
                Err(mut e) => match (e.take_message(), copy) {
                    // Never sent: the connection was closing. A fresh one that does this
                    // too is the endpoint's answer.
                    (Some(back), _) if reused || !fresh_failed => {
                        fresh_failed |= !reused;
                        req = back;
                    }
                    (None, Some(copy)) if !fresh_only && is_stale(e.error()) => {
                        tracing::debug!(endpoint = %to.addr, error = %e.error(), "pooled connection was closed; sending again on a fresh one");
                        fresh_only = true;
                        req = copy;
                    }
                    _ => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
    }

    /// A new HTTP/1.1 connection to the endpoint, which the caller keeps while its response
    /// lasts (then its `Lease` returns it to `pool`).
    async fn dial_h1(
        &self,
        pool: &Pool,
        to: Target<'_>,
    ) -> Result<http1::SendRequest<Body>, BoxError> {
        let io = self.dial(to, false).await?;
        let (tx, conn) = self.http1.handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            // Upgrades (WebSocket) take the connection over once the 101 is read.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Self::watch(pool);
        Ok(tx)
    }

    /// TCP, then TLS when the endpoint has an identity to prove, all within the connect
    /// timeout, and counted. ALPN tells the peer sidecar which protocol follows.
    async fn dial(&self, to: Target<'_>, h2: bool) -> Result<Box<dyn Io>, BoxError> {
        let t = self.connect_timeout;
        let connect = async {
            let tcp = TcpStream::connect(to.addr).await?;
            let _ = tcp.set_nodelay(true);
            let (Some(name), Some(tls)) = (to.tls, &self.tls) else {
                return Ok::<_, BoxError>(Box::new(tcp) as Box<dyn Io>);
            };
            let config = if h2 {
                &tls.client_http2
            } else {
                &tls.client_http1
            };
            let io = tokio_rustls::TlsConnector::from(config.clone())
                .connect((**name).clone(), tcp)
                .await?;
            Ok(Box::new(io))
        };
        let io = match tokio::time::timeout(t, connect).await {
            Ok(r) => r?,
            Err(_) => return Err(format!("no connection within {t:?}").into()),
        };
        self.opened.opened(h2, to.tls.is_some()).inc();
        Ok(io)
    }

    /// Starts the task that closes `pool`'s idle connections, unless one runs. It holds the
    /// pool weakly, and ends once the pool is gone or holds no connection.
    fn watch(pool: &Pool) {
        if pool.0.reaping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Connections> = Arc::downgrade(&pool.0);
        let idle = IDLE_TIMEOUT;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(idle / 2).await;
                let Some(c) = weak.upgrade() else { return };
                if c.expire(idle) > 0 || c.on_loan() > 0 {
                    continue;
                }
                c.reaping.store(false, Ordering::Release);
                // A connection made between the count and the store found a watcher still
                // running; look again so that it is not left unwatched.
                if (c.expire(idle) == 0 && c.on_loan() == 0)
                    || c.reaping.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }
}

impl Connections {
    /// HTTP/1.1 connections out with a response, which come back to the idle list when it
    /// ends: each `Lease` holds the list weakly.
    fn on_loan(&self) -> usize {
        Arc::weak_count(&self.http1)
    }

    /// Closes what has been idle for `idle` or longer; returns how many connections stay.
    fn expire(&self, idle: Duration) -> usize {
        let mut left = self.http1.expire(idle);
        if let Some(tx) = self.http2.load_full() {
            let used = Duration::from_nanos(self.http2_used.load(Ordering::Relaxed));
            if tx.is_closed() || crate::clock::now().saturating_sub(used) >= idle {
                // Requests still running on it keep it open until they end.
                self.http2.store(None);
            } else {
                left += 1;
            }
        }
        left
    }
}

impl Pool {
    /// Open connections held: idle HTTP/1.1 ones, and the HTTP/2 one if any.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.0.http1.count()
            + usize::from(
                self.0
                    .http2
                    .load()
                    .as_ref()
                    .is_some_and(|tx| !tx.is_closed()),
            )
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// The upstream closed a connection under a request without answering any of it.
fn is_stale(h: &hyper::Error) -> bool {
    use std::error::Error as _;
    h.is_incomplete_message()
        || h.source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                )
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use testkit::eventually;
    use testkit::upstream::Upstream;

    fn upstreams() -> Upstreams {
        let m = crate::telemetry::metrics::Metrics::default();
        Upstreams::new(Duration::from_secs(1), None, true, m.connections())
    }

    fn get(addr: SocketAddr, h2: bool) -> Request<Body> {
        let uri = if h2 {
            format!("http://{addr}/bytes/100")
        } else {
            "/bytes/100".to_string()
        };
        Request::builder()
            .uri(uri)
            .header(http::header::HOST, addr.to_string())
            .body(Body::empty())
            .unwrap()
    }

    async fn call(ups: &Upstreams, pool: &Pool, addr: SocketAddr, h2: bool) -> usize {
        let to = Target { addr, tls: None };
        let Ok(res) = ups.send(pool, to, get(addr, h2), h2, true).await else {
            panic!("no answer from {addr}");
        };
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap().to_bytes().len()
    }

    #[tokio::test]
    async fn an_http1_connection_is_reused_once_its_response_is_read() {
        let up = Upstream::start("up").await;
        let (ups, pool) = (upstreams(), Pool::default());
        for _ in 0..5 {
            assert_eq!(call(&ups, &pool, up.addr, false).await, 100);
        }
        assert_eq!(up.connections(), 1, "five requests, one after another");
        assert_eq!(pool.held(), 1);
        assert_eq!(ups.opened.opened(false, false).get(), 1);
    }

    #[tokio::test]
    async fn concurrent_http2_requests_share_one_connection() {
        let up = Upstream::start("up").await;
        let (ups, pool) = (upstreams(), Pool::default());
        let calls = (0..20).map(|_| call(&ups, &pool, up.addr, true));
        let sizes = futures_util::future::join_all(calls).await;
        assert!(sizes.iter().all(|&n| n == 100), "{sizes:?}");
        assert_eq!(
            up.connections(),
            1,
            "twenty requests at once, one connection"
        );
        assert_eq!(ups.opened.opened(true, false).get(), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_does_not_return_its_connection() {
        let up = Upstream::start("up").await;
        let (ups, pool) = (upstreams(), Pool::default());
        let to = Target {
            addr: up.addr,
            tls: None,
        };
        let big = Request::builder()
            .uri("/bytes/10000000")
            .header(http::header::HOST, "up")
            .body(Body::empty())
            .unwrap();
        let Ok(res) = ups.send(&pool, to, big, false, true).await else {
            panic!("no answer");
        };
        drop(res);
        assert_eq!(pool.held(), 0, "half a body is still on that connection");
        assert_eq!(call(&ups, &pool, up.addr, false).await, 100);
        assert_eq!(up.connections(), 2);
    }

    #[tokio::test]
    async fn dropping_the_pool_closes_its_connections() {
        let up = Upstream::start("up").await;
        let ups = upstreams();
        let pool = Pool::default();
        call(&ups, &pool, up.addr, false).await;
        call(&ups, &pool, up.addr, true).await;
        assert_eq!(up.open_connections(), 2);
        // The endpoint left the config: its state, and the pool in it, is dropped.
        drop(pool);
        eventually(
            Duration::from_secs(5),
            "both connections closed",
            || async { (up.open_connections() == 0).then_some(()) },
        )
        .await;
    }

    #[tokio::test]
    async fn a_refused_connection_hands_the_request_back() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let (ups, pool) = (upstreams(), Pool::default());
        let to = Target { addr, tls: None };
        match ups.send(&pool, to, get(addr, false), false, true).await {
            Err(SendError::Connect { request, .. }) => {
                assert_eq!(request.uri().path(), "/bytes/100")
            }
            _ => panic!("a refused connection is a connect error"),
        }
    }
}
