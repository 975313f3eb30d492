//! One try of a request to one cluster, the bottom of its stack: pick an endpoint, send on
//! the pooled client, resend what is safe to resend, and classify the failure.

use super::cluster::Upstream;
use super::endpoint::{EndpointState, InFlight};
use super::pool::{SendError, Target, Upstreams};
use super::ring::hash_key;
use crate::clock;
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Notes, Outcome, Reply, is_server_error, note};
use crate::http::future::BoxOutcome;
use crate::http::headers::is_upgrade;
use crate::http::respond::needs_http2;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri, Version};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Service;
use trellis_config::model::AppProtocol;

/// The request-independent part of a request to a cluster. As a tower `Service` it is the
/// bottom of the cluster's stack: one try of a request, on an endpoint the balancer picks.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub upstreams: &'a Upstreams,
    pub cluster: &'a Upstream,
    /// What the upstream speaks, by its port's `appProtocol`: `http2` and `grpc` mean h2c
    /// for every request; otherwise HTTP/1.1, except gRPC calls, which need HTTP/2.
    /// Whatever the client spoke does not matter (docs/concepts.md, "Protocols").
    pub protocol: AppProtocol,
    pub peer: IpAddr,
}

impl<'a> Service<Exchange> for Call<'a> {
    type Response = Reply;
    type Error = ProxyError;
    type Future = BoxOutcome<'a>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        Box::pin(self.send(ex))
    }
}

impl<'a> Call<'a> {
    /// Sends the request to an endpoint of the cluster, preferring one that `ex.avoid` does
    /// not name, within `ex.per_try` and what is left of `ex.deadline`. Every answer is
    /// reported to outlier detection.
    ///
    /// A request that cannot connect is tried once on each other endpoint: nothing of it was
    /// sent, and the pool hands it back whole. The pool itself resends an idempotent one that
    /// dies on a reused connection the upstream had already closed (`pool.rs`).
    async fn send(self, ex: Exchange) -> Outcome {
        let cluster = self.cluster;
        let name = || cluster.name.to_string();
        let Exchange {
            request: mut req,
            deadline,
            per_try,
            avoid,
            notes,
        } = ex;
        let remaining =
            || deadline.map(|d| d.at.saturating_duration_since(tokio::time::Instant::now()));
        let hash = self.hash(&req);
        let resendable = req.method().is_idempotent()
            && (http_body::Body::is_end_stream(req.body()) || req.body().in_memory());
        let mut tried: Vec<SocketAddr> = Vec::new();
        loop {
            let Some(ep) = self.pick(hash, &tried, &avoid) else {
                return Err(ProxyError::NoHealthyEndpoints {
                    cluster: name(),
                    ejected: cluster.balancer.ejected(),
                });
            };
            let ep = ep.clone();
            let http2 = self.http2(&ep, &req);
            target(&mut req, &ep, http2)?;

            // This try ends at the per-try timeout or the request's deadline, whichever is
            // first; running out of the deadline reports the request's whole budget.
            let limit = match (per_try, remaining(), deadline) {
                (Some(p), Some(r), Some(d)) if r <= p => Some((r, d.budget)),
                (Some(p), _, _) => Some((p, p)),
                (None, Some(r), Some(d)) => Some((r, d.budget)),
                _ => None,
            };
            let timed_out = |after| ProxyError::Timeout {
                cluster: name(),
                after,
                endpoint: Some(ep.addr),
            };
            if let Some((t, after)) = limit
                && t.is_zero()
            {
                return Err(timed_out(after));
            }
            let _in_flight = InFlight::new(ep.clone());
            let started = Instant::now();
            let to = Target {
                addr: ep.addr,
                tls: ep.tls.as_ref(),
            };
            let fut = self.upstreams.send(&ep.pool, to, req, http2, resendable);
            let res = match limit {
                None => fut.await,
                Some((t, after)) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.observe(&ep, true, &notes);
                        return Err(timed_out(after));
                    }
                },
            };
            match res {
                Ok(resp) => {
                    ep.ewma.observe(started.elapsed());
                    self.observe(&ep, is_server_error(&resp), &notes);
                    return Ok(Reply {
                        response: resp,
                        endpoint: ep.addr,
                    });
                }
                Err(SendError::Connect { request, source }) => {
                    tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %source, "connect failed");
                    self.observe(&ep, true, &notes);
                    tried.push(ep.addr);
                    if tried.len() >= cluster.balancer.endpoints.len() {
                        return Err(ProxyError::Connect {
                            cluster: name(),
                            endpoint: ep.addr,
                            source,
                        });
                    }
                    req = *request;
                }
                Err(SendError::Failed(e)) => {
                    // The request's own body failed (a client's broken chunked framing): the
                    // downstream's fault. hyper has abandoned that upstream connection, so it
                    // is not reused; the endpoint's health and the breaker are left alone.
                    if let Some(why) = downstream_body_error(&e) {
                        return Err(ProxyError::DownstreamBody {
                            source: why.to_string().into(),
                        });
                    }
                    self.observe(&ep, true, &notes);
                    if is_refused_stream(&e) {
                        return Err(ProxyError::RefusedStream {
                            cluster: name(),
                            endpoint: ep.addr,
                        });
                    }
                    let source: crate::http::errors::BoxError = match std::error::Error::source(&e)
                    {
                        Some(s) => s.to_string().into(),
                        None => e.to_string().into(),
                    };
                    return Err(ProxyError::UpstreamReset {
                        cluster: name(),
                        endpoint: ep.addr,
                        source,
                    });
                }
            }
        }
    }

    /// Whether a request goes to `ep` over HTTP/2: always when the port speaks it (`http2`,
    /// `grpc`), for gRPC calls, and, with multiplexing on, for every request to another
    /// sidecar over mTLS, except an Upgrade (WebSocket), which needs an HTTP/1.1 connection
    /// of its own. The peer sidecar speaks the app's own protocol to its app.
    fn http2(&self, ep: &EndpointState, req: &Request<Body>) -> bool {
        match self.protocol {
            AppProtocol::Http2 | AppProtocol::Grpc => true,
            _ if needs_http2(req) => true,
            _ => {
                self.upstreams.multiplex
                    && ep.tls.is_some()
                    && req.method() != http::Method::CONNECT
                    && !is_upgrade(req.headers())
            }
        }
    }

    /// An endpoint neither ejected nor tried by this call, and preferably not one an earlier
    /// try of the request used; with a single healthy endpoint, retries go back to it.
    fn pick(
        &self,
        hash: Option<u64>,
        tried: &[SocketAddr],
        avoid: &[SocketAddr],
    ) -> Option<&'a Arc<EndpointState>> {
        let b = &self.cluster.balancer;
        if avoid.is_empty() {
            return b.pick(hash, tried);
        }
        let both: Vec<SocketAddr> = tried.iter().chain(avoid).copied().collect();
        b.pick(hash, &both).or_else(|| b.pick(hash, tried))
    }

    /// Tells outlier detection how an endpoint answered.
    /// Reports an answer to outlier detection; a traced request that sees its endpoint
    /// ejected after a failure notes it.
    fn observe(&self, ep: &EndpointState, failed: bool, notes: &Option<Notes>) {
        if let Some(o) = &self.cluster.outlier {
            let now = clock::now();
            o.record(ep, &self.cluster.balancer.endpoints, failed, now);
            if failed
                && notes.is_some()
                && let Some(until) = ep.health.ejected_until(now)
            {
                note(notes, "outlier_ejection", || {
                    vec![
                        ("trellis.endpoint", ep.addr.to_string()),
                        (
                            "trellis.ejected_for_ms",
                            until.saturating_sub(now).as_millis().to_string(),
                        ),
                    ]
                });
            }
        }
    }

    /// The ring-hash key of a request, when the cluster balances by one.
    fn hash(&self, req: &Request<Body>) -> Option<u64> {
        let key = self.cluster.hash_key.as_ref()?;
        if let Some(h) = &key.header {
            return req
                .headers()
                .get(h.as_str())
                .map(|v| hash_key(v.as_bytes()));
        }
        if let Some(c) = &key.cookie {
            return req
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    kv.trim()
                        .split_once('=')
                        .filter(|(k, _)| k == c)
                        .map(|(_, v)| hash_key(v))
                });
        }
        key.source_ip.then(|| hash_key(self.peer))
    }
}

/// The upstream refused an HTTP/2 stream (RST_STREAM with REFUSED_STREAM): RFC 9113 §8.7
/// guarantees it did not process the request.
fn is_refused_stream(e: &hyper::Error) -> bool {
    source_of::<h2::Error>(e).is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// The request body, which the client reads from the downstream, failed: the body's own
/// `IncomingBodyError` in the error chain.
fn downstream_body_error(e: &hyper::Error) -> Option<&crate::http::body::IncomingBodyError> {
    source_of(e)
}

/// The first error of type `T` among the causes of `e`.
fn source_of<T: std::error::Error + 'static>(e: &hyper::Error) -> Option<&T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// Sets what goes on the wire to `ep`: HTTP/2 carries the Service's authority (the `Host`
/// the outbound side set, else the request's own authority) as `:authority` and no `Host`
/// (RFC 9113 §8.3.1); HTTP/1.1 takes an origin-form target and a `Host`, made from the
/// authority when the request came over HTTP/2 without one. The pool, not the URI, says
/// which endpoint the request goes to, so the Service's name survives the hop to the peer
/// sidecar (docs/concepts.md, "Between sidecars").
fn target(req: &mut Request<Body>, ep: &EndpointState, http2: bool) -> Result<(), ProxyError> {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let invalid = |_| ProxyError::BadRequest("invalid request target");
    if http2 {
        let authority = match req.headers_mut().remove(http::header::HOST) {
            Some(h) => Authority::try_from(h.as_bytes())
                .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
            None => match req.uri().authority() {
                Some(a) => a.clone(),
                None => ep.authority.clone(),
            },
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if ep.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(authority);
        parts.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(parts).map_err(invalid)?;
        *req.version_mut() = Version::HTTP_2;
    } else {
        if !req.headers().contains_key(http::header::HOST) {
            let host = match req.uri().authority() {
                Some(a) => a.as_str(),
                None => ep.authority.as_str(),
            };
            let host = HeaderValue::from_str(host)
                .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
            req.headers_mut().insert(http::header::HOST, host);
        }
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}
