//! The bulkhead of a cluster: at most `maxConcurrentRequests` in flight and
//! `maxPendingRequests` more waiting up to `maxWait`; beyond that, 503 `overloaded` at once,
//! so that one cluster's flood cannot tie up the callers of every other cluster.

// Waiting is first come, first served. A request holds its slot until its response headers
// arrive or it fails; a long streaming response body does not hold one.

use super::layer::Guard;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply};
use crate::http::future::LayerFuture;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tower::Service;
use trellis_config::model::Bulkhead as BulkheadConfig;

pub struct Bulkhead {
    pub cfg: BulkheadConfig,
    cluster: Arc<String>,
    slots: Semaphore,
    pending: AtomicU32,
    rejected: Counter,
}

impl Bulkhead {
    pub fn new(cluster: Arc<String>, cfg: BulkheadConfig, rejected: Counter) -> Bulkhead {
        Bulkhead {
            slots: Semaphore::new(cfg.max_concurrent_requests as usize),
            pending: AtomicU32::new(0),
            cluster,
            cfg,
            rejected,
        }
    }

    /// Requests holding a slot now.
    pub fn active(&self) -> usize {
        (self.cfg.max_concurrent_requests as usize).saturating_sub(self.slots.available_permits())
    }

    /// Requests waiting for a slot now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    fn max_wait(&self) -> Duration {
        self.cfg.max_wait.unwrap_or(Duration::from_secs(1))
    }

    fn overloaded(&self) -> ProxyError {
        self.rejected.inc();
        ProxyError::Overloaded {
            cluster: self.cluster.to_string(),
            limit: self.cfg.max_concurrent_requests,
        }
    }

    /// Takes a place in the queue, if there is one.
    fn enqueue(&self) -> Option<Queued<'_>> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < self.cfg.max_pending_requests).then_some(p + 1)
            })
            .ok()
            .map(|_| Queued(self))
    }

    /// Waits in the queue for a slot, then makes the call.
    async fn wait<S>(&self, queued: Queued<'_>, mut inner: S, ex: Exchange) -> Outcome
    where
        S: Service<Exchange, Response = Reply, Error = ProxyError>,
    {
        let give_up = Instant::now() + self.max_wait();
        let (until, deadline_first) = match ex.deadline {
            Some(d) if d.at < give_up => (d.at, true),
            _ => (give_up, false),
        };
        let permit = match tokio::time::timeout_at(until, self.slots.acquire()).await {
            Ok(Ok(p)) => p,
            Err(_) if deadline_first => {
                return Err(ProxyError::Timeout {
                    cluster: self.cluster.to_string(),
                    after: ex.deadline.map_or(Duration::ZERO, |d| d.budget),
                    endpoint: None,
                });
            }
            // Timed out waiting, or the semaphore closed (it never is).
            _ => return Err(self.overloaded()),
        };
        drop(queued);
        let out = inner.call(ex).await;
        drop(permit);
        out
    }
}

/// A place in the queue, given back on drop.
struct Queued<'a>(&'a Bulkhead);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<'a, S> Guard<'a, S> for Bulkhead
where
    S: Service<Exchange, Response = Reply, Error = ProxyError> + Clone + Send + 'a,
    S::Future: Send,
{
    type Future = BulkheadFuture<'a, S::Future>;

    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future {
        if let Ok(permit) = self.slots.try_acquire() {
            return BulkheadFuture::Admitted {
                fut: inner.call(ex),
                _permit: permit,
            };
        }
        let fut = match self.enqueue() {
            Some(queued) => LayerFuture::Boxed {
                fut: Box::pin(self.wait(queued, inner.clone(), ex)),
            },
            None => {
                crate::http::exchange::note(&ex.notes, "bulkhead.rejected", Vec::new);
                LayerFuture::done(Err(self.overloaded()))
            }
        };
        BulkheadFuture::Other { fut }
    }
}

pin_project! {
    #[project = Proj]
    pub enum BulkheadFuture<'a, F> {
        Admitted { #[pin] fut: F, _permit: SemaphorePermit<'a> },
        Other { #[pin] fut: LayerFuture<'a, F> },
    }
}

impl<F: Future<Output = Outcome>> Future for BulkheadFuture<'_, F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            Proj::Admitted { fut, .. } => fut.poll(cx),
            Proj::Other { fut } => fut.poll(cx),
        }
    }
}
