//! The one place where a cluster's request path is put together, outermost layer first.

// The stack is assembled per request from references to the cluster's shared state: that
// costs a few pointer copies, takes no lock, and touches no reference count.

use super::breaker::Breaker;
use super::bulkhead::Bulkhead;
use super::fault::Faults;
use super::layer::{Guarded, Optional};
use super::policy::ClusterResilience;
use super::rate_limit::RateLimiter;
use super::retry::RetryPolicy;
use super::timeout::{DeadlineLayer, DeadlineService};
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Deadline, Exchange, Reply};
use crate::http::future::BoxOutcome;
use crate::upstream::call::Call;
use http::Request;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Service, ServiceBuilder};
use trellis_config::snapshot::Timeouts;

type Layers<'a> = Guarded<
    'a,
    Faults,
    Guarded<
        'a,
        RateLimiter,
        Guarded<
            'a,
            Bulkhead,
            Guarded<'a, Breaker, DeadlineService<'a, Guarded<'a, RetryPolicy, Call<'a>>>>,
        >,
    >,
>;

/// A cluster's stack, as one service.
#[derive(Clone)]
pub enum Stack<'a> {
    /// No layer has anything to do: the endpoint call alone, which enforces the timeouts.
    Bare(Call<'a>),
    Layered(Layers<'a>),
}

/// The resilience layers `r` of a cluster in front of `endpoint`, the call that picks one of
/// the cluster's endpoints with the balancer (skipping ejected ones), sends the request,
/// bounds it by the per-try timeout and reports the answer to outlier detection.
pub fn stack<'a>(r: &'a ClusterResilience, endpoint: Call<'a>) -> Stack<'a> {
    if !r.has_layers() {
        return Stack::Bare(endpoint);
    }
    let layers = ServiceBuilder::new()
        // Fault injection comes first so that it acts like the sick upstream it simulates as
        // seen by the caller: an injected abort or delay spends no rate-limit token, holds no
        // bulkhead slot while delayed, and never trips the breaker or gets retried.
        .layer(Optional::new(r.fault.as_deref()))
        // The rate limit is the cheapest refusal, so excess load is shed before it can take
        // a bulkhead slot or a half-open probe from the requests that are within the limit.
        .layer(Optional::new(r.rate_limit.as_deref()))
        // The bulkhead bounds what is in flight to this cluster, and sits outside the breaker
        // so that requests queued for a slot do not hold HALF_OPEN probe permits.
        .layer(Optional::new(r.bulkhead.as_deref()))
        // The breaker sees one outcome per request, after retries and timeouts: a request
        // that a retry saved is a success, and one that ran out of time is a failure.
        .layer(Optional::new(r.breaker.as_deref()))
        // The overall deadline sits inside the breaker so that timeouts count as failures,
        // and outside retries so that it bounds all tries and the backoff between them.
        .layer(DeadlineLayer::new(&endpoint.cluster.name))
        // Retries are innermost, so each try goes back to the balancer for a fresh endpoint
        // (a different one where there is one) under its own per-try timeout.
        .layer(Optional::new(r.retry.as_deref()))
        .service(endpoint);
    Stack::Layered(layers)
}

impl<'a> Service<Exchange> for Stack<'a> {
    type Response = Reply;
    type Error = ProxyError;
    // One box for the whole stack. Its future is a nest of generic futures, and rustc cannot
    // prove such a future `Send` inside an async fn when the types carry lifetimes with
    // bounds (rust-lang/rust#110338, "implementation is not general enough"); boxing it here,
    // where the lifetime is named, settles it once.
    type Future = BoxOutcome<'a>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        match self {
            Stack::Bare(s) => s.poll_ready(cx),
            Stack::Layered(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        match self {
            // Already boxed: no second allocation.
            Stack::Bare(s) => s.call(ex),
            Stack::Layered(s) => Box::pin(s.call(ex)),
        }
    }
}

/// A request ready for the stack of a cluster with layers `r`, with its timeouts. The route's `timeouts.request`
/// and the policy's `timeout` both bound the whole request, retries included; the route's
/// `timeouts.backendRequest` and the policy's `retry.perTryTimeout` both bound each try. Where
/// both of a pair are set, the shorter wins.
pub fn exchange(r: &ClusterResilience, route: &Timeouts, request: Request<Body>) -> Exchange {
    let overall = shorter(route.request, r.timeout);
    let per_try = shorter(
        route.backend_request,
        r.retry.as_ref().and_then(|p| p.cfg.per_try_timeout),
    );
    Exchange {
        request,
        deadline: overall.map(Deadline::after),
        per_try,
        avoid: Vec::new(),
        notes: None,
    }
}

/// The shorter of two optional timeouts; `0s` means none, as in the Gateway API.
fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    let a = a.filter(|d| !d.is_zero());
    let b = b.filter(|d| !d.is_zero());
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
