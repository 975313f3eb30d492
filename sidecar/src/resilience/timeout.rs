//! The overall timeout of a request: its deadline covers every attempt and the backoff
//! between them, and passing it answers 504 `timeout`. Each attempt is bounded separately by
//! the per-try timeout, in the endpoint call.

use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Timeout;
use tower::{Layer, Service};

#[derive(Clone, Copy)]
pub struct DeadlineLayer<'a> {
    cluster: &'a Arc<String>,
}

impl<'a> DeadlineLayer<'a> {
    pub fn new(cluster: &'a Arc<String>) -> Self {
        DeadlineLayer { cluster }
    }
}

impl<'a, S> Layer<S> for DeadlineLayer<'a> {
    type Service = DeadlineService<'a, S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            cluster: self.cluster,
            inner,
        }
    }
}

#[derive(Clone)]
pub struct DeadlineService<'a, S> {
    cluster: &'a Arc<String>,
    inner: S,
}

impl<'a, S> Service<Exchange> for DeadlineService<'a, S>
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    type Response = Reply;
    type Error = ProxyError;
    type Future = DeadlineFuture<'a, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        match ex.deadline {
            None => DeadlineFuture::Unbounded {
                fut: self.inner.call(ex),
            },
            Some(d) => DeadlineFuture::Bounded {
                fut: tokio::time::timeout_at(d.at, self.inner.call(ex)),
                cluster: self.cluster,
                budget: d.budget,
            },
        }
    }
}

pin_project! {
    #[project = Proj]
    pub enum DeadlineFuture<'a, F> {
        Unbounded { #[pin] fut: F },
        Bounded { #[pin] fut: Timeout<F>, cluster: &'a Arc<String>, budget: Duration },
    }
}

impl<F: Future<Output = Outcome>> Future for DeadlineFuture<'_, F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            Proj::Unbounded { fut } => fut.poll(cx),
            Proj::Bounded {
                fut,
                cluster,
                budget,
            } => Poll::Ready(ready!(fut.poll(cx)).unwrap_or_else(|_| {
                Err(ProxyError::Timeout {
                    cluster: cluster.to_string(),
                    after: *budget,
                    endpoint: None,
                })
            })),
        }
    }
}
