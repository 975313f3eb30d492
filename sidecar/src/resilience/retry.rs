//! Retries: up to `attempts` more tries of a request that failed in a way `retryOn` names,
//! after an exponential backoff with full jitter, on a different endpoint where there is one,
//! within the request's deadline and the cluster's retry budget.

// Which bodies can be sent again is `replay.rs`'s business. A non-idempotent request (POST,
// PATCH) is sent again only when the upstream provably never saw it (connect failure,
// refused stream) or for a gRPC status that `retryOn` names; `allowNonIdempotent` lifts
// the rule.

use super::budget::Budget;
use super::layer::Guard;
use super::replay::{Head, Replay};
use crate::clock;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Outcome, Reply, grpc_status};
use crate::http::future::LayerFuture;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tower::Service;
use trellis_config::model::Retry;

const DEFAULT_BASE: Duration = Duration::from_millis(25);
const DEFAULT_MAX: Duration = Duration::from_millis(250);

pub struct RetryPolicy {
    pub cfg: Retry,
    cluster: Arc<String>,
    on: RetryOn,
    budget: Option<Budget>,
    retries: Counter,
}

/// `retryOn`, parsed once.
#[derive(Debug, Default)]
struct RetryOn {
    connect_failure: bool,
    refused_stream: bool,
    reset: bool,
    unavailable: bool,
    cancelled: bool,
    gateway_error: bool,
    any_5xx: bool,
    codes: Vec<u16>,
}

impl RetryOn {
    fn parse(list: &[String]) -> RetryOn {
        let mut on = RetryOn::default();
        for item in list {
            match item.as_str() {
                "connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "reset" => on.reset = true,
                "unavailable" => on.unavailable = true,
                "cancelled" => on.cancelled = true,
                "gateway-error" => on.gateway_error = true,
                "5xx" => on.any_5xx = true,
                // Validation has already refused anything else.
                code => on.codes.extend(code.parse::<u16>().ok()),
            }
        }
        on
    }

    /// Whether `out` may be retried, and why.
    fn retryable(&self, out: &Outcome) -> Option<Why> {
        // Like Envoy's, 5xx and gateway-error include failures to get any answer at all.
        let no_answer = self.any_5xx || self.gateway_error;
        match out {
            Ok(r) => {
                let s = r.response.status().as_u16();
                let grpc = grpc_status(r.response.headers());
                if (self.unavailable && grpc == Some(14)) || (self.cancelled && grpc == Some(1)) {
                    return Some(Why::GrpcStatus);
                }
                let hit = (self.any_5xx && (500..600).contains(&s))
                    || (self.gateway_error && (502..=504).contains(&s))
                    || self.codes.contains(&s);
                hit.then_some(Why::Answered)
            }
            Err(ProxyError::Connect { .. }) => {
                (self.connect_failure || no_answer).then_some(Why::NotSent)
            }
            Err(ProxyError::RefusedStream { .. }) => {
                (self.refused_stream || no_answer).then_some(Why::NotSent)
            }
            Err(ProxyError::UpstreamReset { .. } | ProxyError::Timeout { .. }) => {
                (self.reset || no_answer).then_some(Why::Answered)
            }
            Err(_) => None,
        }
    }
}

/// Why a try may be retried, which decides whether a non-idempotent request may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The upstream provably never saw the request: anything may be resent.
    NotSent,
    /// The upstream saw the request (or may have): only idempotent methods are resent, unless
    /// the policy allows the others.
    Answered,
    /// A gRPC call answered UNAVAILABLE or CANCELLED. Every gRPC call is a POST, and gRPC
    /// defines these codes as safe to retry (gRFC A6), so naming them in `retryOn` is the
    /// opt-in.
    GrpcStatus,
}

impl RetryPolicy {
    pub fn new(cluster: Arc<String>, cfg: Retry, retries: Counter) -> RetryPolicy {
        RetryPolicy {
            on: RetryOn::parse(&cfg.retry_on),
            budget: cfg.budget.clone().map(Budget::new),
            cluster,
            cfg,
            retries,
        }
    }

    /// Full jitter (the AWS architecture blog's "Exponential Backoff and Jitter"): a uniform
    /// wait in [0, min(max, base × 2^(retry-1))], so that clients that failed together do
    /// not retry together.
    fn backoff(&self, retry: u32) -> Duration {
        let (base, max) = self
            .cfg
            .backoff
            .as_ref()
            .map_or((DEFAULT_BASE, DEFAULT_MAX), |b| {
                (b.base.unwrap_or(DEFAULT_BASE), b.max.unwrap_or(DEFAULT_MAX))
            });
        let ceiling = base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(max);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }

    async fn run<S>(&self, mut inner: S, mut ex: Exchange) -> Outcome
    where
        S: Service<Exchange, Response = Reply, Error = ProxyError>,
    {
        if let Some(b) = &self.budget {
            b.deposit(clock::now());
        }
        let may_resend = ex.request.method().is_idempotent() || self.cfg.allow_non_idempotent;
        let mut replay = Replay::prepare(&mut ex).await?;
        let head = Head::of(&ex.request);
        let (deadline, per_try, notes) = (ex.deadline, ex.per_try, ex.notes.clone());
        let mut avoid = Vec::new();
        let mut retry = 0;
        loop {
            let out = inner.call(ex).await;
            let Some(why) = self.on.retryable(&out) else {
                return out;
            };
            retry += 1;
            if retry > self.cfg.attempts || (why == Why::Answered && !may_resend) {
                return out;
            }
            let Some(body) = replay.body() else {
                return out;
            };
            let wait = self.backoff(retry);
            if deadline.is_some_and(|d| d.at <= tokio::time::Instant::now() + wait) {
                return out;
            }
            if let Some(b) = &self.budget
                && !b.withdraw(clock::now())
            {
                tracing::debug!(cluster = %self.cluster, "retry budget exhausted; not retrying");
                return out;
            }
            let endpoint = match &out {
                Ok(r) => Some(r.endpoint),
                Err(e) => e.endpoint(),
            };
            avoid.extend(endpoint);
            crate::http::exchange::note(&notes, "retry", || {
                let mut attrs = vec![
                    ("trellis.retry.attempt", retry.to_string()),
                    ("trellis.retry.reason", retry_reason(&out)),
                    ("trellis.retry.backoff_ms", wait.as_millis().to_string()),
                ];
                attrs.extend(endpoint.map(|e| ("trellis.endpoint", e.to_string())));
                attrs
            });
            drop(out);
            tokio::time::sleep(wait).await;
            self.retries.inc();
            ex = Exchange {
                request: head.with(body),
                deadline,
                per_try,
                avoid: avoid.clone(),
                notes: notes.clone(),
            };
        }
    }
}

/// What made a try worth retrying, for the span event: the status, or the error's code.
fn retry_reason(out: &Outcome) -> String {
    match out {
        Ok(r) => match crate::http::exchange::grpc_status(r.response.headers()) {
            Some(code) if code != 0 => format!("grpc-status {code}"),
            _ => r.response.status().as_u16().to_string(),
        },
        Err(e) => e.answer().code.to_string(),
    }
}

impl<'a, S> Guard<'a, S> for RetryPolicy
where
    S: Service<Exchange, Response = Reply, Error = ProxyError> + Clone + Send + 'a,
    S::Future: Send,
{
    type Future = LayerFuture<'a, S::Future>;

    fn guard(&'a self, inner: &mut S, ex: Exchange) -> Self::Future {
        if self.cfg.attempts == 0 {
            return LayerFuture::Inner {
                fut: inner.call(ex),
            };
        }
        LayerFuture::Boxed {
            fut: Box::pin(self.run(inner.clone(), ex)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(list: &[&str]) -> RetryOn {
        RetryOn::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn connect() -> Outcome {
        Err(ProxyError::Connect {
            cluster: "c".into(),
            endpoint: "127.0.0.1:1".parse().unwrap(),
            source: "refused".into(),
        })
    }

    fn reset() -> Outcome {
        Err(ProxyError::UpstreamReset {
            cluster: "c".into(),
            endpoint: "127.0.0.1:1".parse().unwrap(),
            source: "reset".into(),
        })
    }

    #[test]
    fn retry_on_names_which_failures_retry_and_whether_they_were_sent() {
        let on_ = |l: &[&str], o: Outcome| on(l).retryable(&o);
        assert_eq!(on_(&["connect-failure"], connect()), Some(Why::NotSent));
        assert_eq!(on_(&["connect-failure"], reset()), None);
        assert_eq!(on_(&["reset"], reset()), Some(Why::Answered));
        assert_eq!(on_(&["5xx"], connect()), Some(Why::NotSent));
        assert_eq!(on_(&["gateway-error"], reset()), Some(Why::Answered));
        assert_eq!(on_(&["503"], connect()), None);
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let p = RetryPolicy::new(
            Arc::new("c".into()),
            Retry {
                attempts: 5,
                per_try_timeout: None,
                retry_on: vec![],
                backoff: Some(trellis_config::model::Backoff {
                    base: Some(Duration::from_millis(10)),
                    max: Some(Duration::from_millis(35)),
                }),
                budget: None,
                allow_non_idempotent: false,
            },
            Counter::default(),
        );
        for (retry, ceiling) in [(1, 10), (2, 20), (3, 35), (9, 35)] {
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff(retry)).collect();
            assert!(waits.iter().all(|w| *w <= Duration::from_millis(ceiling)));
            let high = waits
                .iter()
                .filter(|w| **w > Duration::from_millis(ceiling) / 2)
                .count();
            assert!((40..160).contains(&high), "{high} of 200 in the upper half");
        }
    }
}
