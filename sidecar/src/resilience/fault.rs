//! Fault injection for chaos testing: delay a share of requests, abort a share with a
//! status. Aborted requests carry `trellis-error: fault-injected`. An injected delay counts
//! against the request's timeout, as a slow upstream would.

use super::layer::Guard;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply};
use crate::http::future::LayerFuture;
use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::Service;
use trellis_config::model::FaultInjection;

pub struct Faults {
    pub cfg: FaultInjection,
    cluster: Arc<String>,
    delays: Counter,
    aborts: Counter,
}

/// True for `percent` percent of calls.
fn roll(percent: f64) -> bool {
    percent > 0.0 && rand::rng().random::<f64>() * 100.0 < percent
}

impl Faults {
    pub fn new(
        cluster: Arc<String>,
        cfg: FaultInjection,
        delays: Counter,
        aborts: Counter,
    ) -> Self {
        Faults {
            cfg,
            cluster,
            delays,
            aborts,
        }
    }

    /// The faults this request draws: a delay, an abort status, both or neither. The two
    /// draws are independent, as in Envoy and Istio.
    fn draw(&self) -> (Option<Duration>, Option<StatusCode>) {
        let delay = self
            .cfg
            .delay
            .as_ref()
            .filter(|d| roll(d.percent))
            .and_then(|d| d.duration);
        let abort = self
            .cfg
            .abort
            .as_ref()
            .filter(|a| roll(a.percent))
            .and_then(|a| StatusCode::from_u16(a.status).ok());
        (delay, abort)
    }

    fn abort(&self, status: StatusCode) -> ProxyError {
        self.aborts.inc();
        ProxyError::FaultInjected {
            cluster: self.cluster.to_string(),
            status,
        }
    }

    /// Waits out an injected delay (cut short by the request's deadline), then aborts or calls.
    async fn delayed<S>(
        &self,
        delay: Duration,
        abort: Option<StatusCode>,
        mut inner: S,
        ex: Exchange,
    ) -> Outcome
    where
        S: Service<Exchange, Response = Reply, Error = ProxyError>,
    {
        self.delays.inc();
        let wake = Instant::now() + delay;
        match ex.deadline {
            Some(d) if d.at < wake => {
                tokio::time::sleep_until(d.at).await;
                return Err(ProxyError::Timeout {
                    cluster: self.cluster.to_string(),
                    after: d.budget,
                    endpoint: None,
                });
            }
            _ => tokio::time::sleep_until(wake).await,
        }
        match abort {
            Some(status) => Err(self.abort(status)),
            None => inner.call(ex).await,
        }
    }
}

impl<'a, S> Guard<'a, S> for Faults
where
    S: Service<Exchange, Response = Reply, Error = ProxyError> + Clone + Send + 'a,
    S::Future: Send,
{
    type Future = LayerFuture<'a, S::Future>;

    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future {
        match self.draw() {
            (None, None) => LayerFuture::Inner {
                fut: inner.call(ex),
            },
            (None, Some(status)) => LayerFuture::done(Err(self.abort(status))),
            // The inner service is called only after the delay, so that a delayed request
            // holds no rate-limit token, bulkhead slot or breaker permit while it waits.
            (Some(delay), abort) => LayerFuture::Boxed {
                fut: Box::pin(self.delayed(delay, abort, inner.clone(), ex)),
            },
        }
    }
}
