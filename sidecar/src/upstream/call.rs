//! One try of a request to one cluster, the bottom of its stack: pick an endpoint, send on
//! the pooled client, resend what is safe to resend, and classify the failure.

use super::cluster::Upstream;
use super::endpoint::{EndpointState, InFlight};
use super::pool::Upstreams;
use super::ring::hash_key;
use crate::clock;
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Notes, Outcome, Reply, is_server_error, note};
use crate::http::future::BoxOutcome;
use crate::http::headers::same_head;
use crate::http::respond::needs_http2;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Uri, Version};
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
    /// A request whose body is empty or in memory and that cannot connect is tried once on
    /// each other endpoint: nothing of it reached any upstream. An idempotent one that dies on
    /// a pooled connection the upstream had already closed (reset, or closed before any
    /// answer) is sent once more on a fresh connection: this is the keep-alive race, and RFC
    /// 9110 §9.2.2 allows the retry.
    async fn send(self, ex: Exchange) -> Outcome {
        let cluster = self.cluster;
        let name = || cluster.name.to_string();
        let Exchange {
            request: req,
            deadline,
            per_try,
            avoid,
            notes,
        } = ex;
        let remaining =
            || deadline.map(|d| d.at.saturating_duration_since(tokio::time::Instant::now()));
        let hash = self.hash(&req);
        let idempotent = req.method().is_idempotent();
        let resendable = http_body::Body::is_end_stream(req.body()) || req.body().in_memory();
        let replay = (resendable && (idempotent || cluster.balancer.endpoints.len() > 1))
            .then(|| (same_head(&req, ()), req.body().try_clone()));
        let mut stale_retried = false;
        let mut req = Some(req);
        let mut tried: Vec<SocketAddr> = Vec::new();
        loop {
            let Some(ep) = self.pick(hash, &tried, &avoid) else {
                return Err(ProxyError::NoHealthyEndpoints {
                    cluster: name(),
                    ejected: cluster.balancer.ejected(),
                });
            };
            let ep = ep.clone();
            let mut attempt = match (req.take(), &replay) {
                (Some(r), _) => r,
                (None, Some((head, body))) => {
                    let body = body.as_ref().and_then(Body::try_clone);
                    same_head(head, body.unwrap_or_else(Body::empty))
                }
                (None, None) => {
                    return Err(ProxyError::NoHealthyEndpoints {
                        cluster: name(),
                        ejected: cluster.balancer.ejected(),
                    });
                }
            };
            let http2 = match self.protocol {
                AppProtocol::Http2 | AppProtocol::Grpc => true,
                _ => needs_http2(&attempt),
            };
            *attempt.version_mut() = if http2 {
                // RFC 9113 §8.3.1: a Host that differs from :authority makes the request
                // malformed (nginx answers 400). :authority names the endpoint, since the
                // pool is keyed by it, so no Host goes upstream over HTTP/2.
                attempt.headers_mut().remove(http::header::HOST);
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let pq = attempt
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(if ep.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            parts.authority = Some(ep.authority.clone());
            parts.path_and_query = Some(pq);
            *attempt.uri_mut() = Uri::from_parts(parts)
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?;

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
            let client = if http2 {
                &self.upstreams.http2
            } else {
                &self.upstreams.http1
            };
            let fut = client.request(attempt);
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
                Err(e) if e.is_connect() => {
                    tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %e, "connect failed");
                    self.observe(&ep, true, &notes);
                    tried.push(ep.addr);
                    if replay.is_none() || tried.len() >= cluster.balancer.endpoints.len() {
                        return Err(ProxyError::Connect {
                            cluster: name(),
                            endpoint: ep.addr,
                            source: Box::new(e),
                        });
                    }
                }
                Err(e)
                    if idempotent
                        && replay.is_some()
                        && !stale_retried
                        && is_stale_connection(&e) =>
                {
                    tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %e, "pooled connection was closed; retrying on a fresh one");
                    stale_retried = true;
                }
                Err(e) => {
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
fn is_refused_stream(e: &hyper_util::client::legacy::Error) -> bool {
    source_of::<h2::Error>(e).is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// The request body, which the client reads from the downstream, failed: the body's own
/// `IncomingBodyError` in the error chain.
fn downstream_body_error(
    e: &hyper_util::client::legacy::Error,
) -> Option<&crate::http::body::IncomingBodyError> {
    source_of(e)
}

/// The first error of type `T` among the causes of `e`.
fn source_of<T: std::error::Error + 'static>(e: &hyper_util::client::legacy::Error) -> Option<&T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// The upstream closed a connection under a request without answering any of it.
fn is_stale_connection(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    let Some(h) = e.source().and_then(|s| s.downcast_ref::<hyper::Error>()) else {
        return false;
    };
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
