//! The one layer of every optional resilience feature: a feature implements [`Guard`] (what
//! it does with one request), and the `Layer`, `Service` and future plumbing is written once
//! here. A cluster without the feature pays one `None` check per request.

use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// One resilience feature's say over a request, with `inner` the rest of the stack.
pub(crate) trait Guard<'a, S>
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Future: Future<Output = Outcome>;

    /// Lets `ex` through to `inner`, holds it back, or answers it.
    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future;
}

/// The layer of feature `G`, present or not.
pub(crate) struct Optional<'a, G> {
    guard: Option<&'a G>,
}

impl<'a, G> Optional<'a, G> {
    pub fn new(guard: Option<&'a G>) -> Self {
        Optional { guard }
    }
}

impl<'a, G, S> Layer<S> for Optional<'a, G> {
    type Service = Guarded<'a, G, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            guard: self.guard,
            inner,
        }
    }
}

/// A service behind feature `G`'s guard, when the cluster has the feature.
pub(crate) struct Guarded<'a, G, S> {
    guard: Option<&'a G>,
    inner: S,
}

// By hand: a derive would demand `G: Clone`, and only the reference is copied.
impl<G, S: Clone> Clone for Guarded<'_, G, S> {
    fn clone(&self) -> Self {
        Guarded {
            guard: self.guard,
            inner: self.inner.clone(),
        }
    }
}

impl<'a, G, S> Service<Exchange> for Guarded<'a, G, S>
where
    G: Guard<'a, S>,
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Response = Reply;
    type Error = ProxyError;
    type Future = GuardedFuture<S::Future, G::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        match self.guard {
            None => GuardedFuture::Off {
                fut: self.inner.call(ex),
            },
            Some(g) => GuardedFuture::On {
                fut: g.guard(&mut self.inner, ex),
            },
        }
    }
}

pin_project! {
    #[project = Proj]
    pub(crate) enum GuardedFuture<F, G> {
        /// The cluster does not have the feature: the inner future itself.
        Off { #[pin] fut: F },
        On { #[pin] fut: G },
    }
}

impl<F, G> Future for GuardedFuture<F, G>
where
    F: Future<Output = Outcome>,
    G: Future<Output = Outcome>,
{
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            Proj::Off { fut } => fut.poll(cx),
            Proj::On { fut } => fut.poll(cx),
        }
    }
}
