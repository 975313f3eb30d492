//! The breaker as a tower layer: ask for a permit, answer `circuit-open` without one, and
//! report the outcome of each call that went through.

use super::{Breaker, Permit};
use crate::http::errors::ProxyError;
use crate::resilience::clock;
use crate::resilience::exchange::{Exchange, Outcome, Reply, failed};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tower::{Layer, Service};

/// Wraps a service in the cluster's breaker, if it has one.
#[derive(Clone, Copy)]
pub struct BreakerLayer<'a> {
    breaker: Option<&'a Breaker>,
}

impl<'a> BreakerLayer<'a> {
    pub fn new(breaker: Option<&'a Breaker>) -> Self {
        BreakerLayer { breaker }
    }
}

impl<'a, S> Layer<S> for BreakerLayer<'a> {
    type Service = BreakerService<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            breaker: self.breaker,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct BreakerService<'a, S> {
    breaker: Option<&'a Breaker>,
    inner: S,
}

impl<'a, S> Service<Exchange> for BreakerService<'a, S>
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Response = Reply;
    type Error = ProxyError;
    type Future = BreakerFuture<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        let Some(breaker) = self.breaker else {
            return BreakerFuture::Plain {
                fut: self.inner.call(ex),
            };
        };
        let started = clock::now();
        match breaker.try_acquire(started) {
            Ok(permit) => BreakerFuture::Watched {
                fut: self.inner.call(ex),
                permit: Some(permit),
                started,
            },
            Err(state) => BreakerFuture::Rejected {
                err: Some(ProxyError::CircuitOpen {
                    cluster: breaker.cluster.to_string(),
                    state: state.name(),
                }),
            },
        }
    }
}

pin_project! {
    #[project = Proj]
    pub enum BreakerFuture<'a, F> {
        Plain { #[pin] fut: F },
        Watched { #[pin] fut: F, permit: Option<Permit<'a>>, started: Duration },
        Rejected { err: Option<ProxyError> },
    }
}

impl<F> Future for BreakerFuture<'_, F>
where
    F: Future<Output = Outcome>,
{
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            Proj::Plain { fut } => fut.poll(cx),
            Proj::Watched {
                fut,
                permit,
                started,
            } => {
                let out = ready!(fut.poll(cx));
                if let Some(p) = permit.take() {
                    let now = clock::now();
                    match failed(&out) {
                        Some(f) => p.record(f, now.saturating_sub(*started), now),
                        None => p.ignore(),
                    }
                }
                Poll::Ready(out)
            }
            Proj::Rejected { err } => {
                Poll::Ready(Err(err.take().expect("a rejected call is polled once")))
            }
        }
    }
}
