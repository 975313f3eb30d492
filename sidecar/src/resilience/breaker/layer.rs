//! The breaker's guard in the stack: ask for a permit, answer `circuit-open` without one,
//! and report the outcome of each call that went through.

use super::{Breaker, Permit};
use crate::clock;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply, failed};
use crate::resilience::layer::Guard;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tower::Service;

impl<'a, S> Guard<'a, S> for Breaker
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Future = BreakerFuture<'a, S::Future>;

    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future {
        let started = clock::now();
        match self.try_acquire(started) {
            Ok(permit) => BreakerFuture::Watched {
                fut: inner.call(ex),
                permit: Some(permit),
                started,
            },
            Err(state) => {
                crate::http::exchange::note(&ex.notes, "circuit_breaker.rejected", || {
                    vec![
                        ("trellis.cluster", self.cluster.to_string()),
                        ("trellis.circuit_breaker.state", state.name().to_string()),
                    ]
                });
                BreakerFuture::Rejected {
                    err: Some(ProxyError::CircuitOpen {
                        cluster: self.cluster.to_string(),
                        state: state.name(),
                    }),
                }
            }
        }
    }
}

pin_project! {
    #[project = Proj]
    pub enum BreakerFuture<'a, F> {
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
