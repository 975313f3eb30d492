//! A cluster's resilience settings; an absent message is a feature turned off.

use super::enums::FromWire;
use super::{WireError, duration_from_wire as dur, duration_to_wire as wire_dur, required, u16_of};
use crate::model::{
    Backoff, Bulkhead, CircuitBreaker, FaultAbort, FaultDelay, FaultInjection, HashKey, LbPolicy,
    LoadBalancer, OutlierDetection, RateLimit, Resilience, Retry, RetryBudget, SlidingWindow,
    SlidingWindowType, TcpSettings,
};
use trellis_proto::v1 as pb;

// === To the wire ===

impl From<&Resilience> for pb::Resilience {
    // `target_ref` is how a policy attaches, not what a cluster does: it is not sent.
    fn from(r: &Resilience) -> Self {
        pb::Resilience {
            load_balancer: Some(pb::LoadBalancer {
                policy: pb::LbPolicy::from(r.load_balancer.policy).into(),
                hash_key: r.load_balancer.hash_key.as_ref().map(|h| pb::HashKey {
                    header: h.header.clone(),
                    cookie: h.cookie.clone(),
                    source_ip: h.source_ip,
                }),
            }),
            circuit_breaker: r.circuit_breaker.as_ref().map(breaker),
            outlier_detection: r.outlier_detection.as_ref().map(|o| pb::OutlierDetection {
                consecutive_5xx: o.consecutive5xx,
                interval: wire_dur(&o.interval),
                base_ejection_time: wire_dur(&o.base_ejection_time),
                max_ejection_time: wire_dur(&o.max_ejection_time),
                max_ejection_percent: o.max_ejection_percent,
            }),
            retry: r.retry.as_ref().map(retry),
            timeout: wire_dur(&r.timeout),
            tcp: r.tcp.as_ref().map(|t| pb::TcpSettings {
                idle_timeout: wire_dur(&t.idle_timeout),
            }),
            rate_limit: r.rate_limit.as_ref().map(|l| pb::RateLimit {
                requests_per_second: l.requests_per_second,
                burst: l.burst,
            }),
            bulkhead: r.bulkhead.as_ref().map(|b| pb::Bulkhead {
                max_concurrent_requests: b.max_concurrent_requests,
                max_pending_requests: b.max_pending_requests,
                max_wait: wire_dur(&b.max_wait),
            }),
            fault_injection: r.fault_injection.as_ref().map(|f| pb::FaultInjection {
                delay: f.delay.as_ref().map(|d| pb::FaultDelay {
                    percent: d.percent,
                    duration: wire_dur(&d.duration),
                }),
                abort: f.abort.as_ref().map(|a| pb::FaultAbort {
                    percent: a.percent,
                    status: a.status.into(),
                }),
            }),
        }
    }
}

fn breaker(b: &CircuitBreaker) -> pb::CircuitBreaker {
    pb::CircuitBreaker {
        failure_rate_threshold: b.failure_rate_threshold,
        slow_call_rate_threshold: b.slow_call_rate_threshold,
        slow_call_duration_threshold: wire_dur(&b.slow_call_duration_threshold),
        sliding_window: Some(pb::SlidingWindow {
            r#type: pb::SlidingWindowType::from(b.sliding_window.kind).into(),
            size: b.sliding_window.size,
        }),
        minimum_calls: b.minimum_calls,
        wait_in_open: wire_dur(&b.wait_in_open),
        permitted_calls_in_half_open: b.permitted_calls_in_half_open,
    }
}

fn retry(r: &Retry) -> pb::Retry {
    pb::Retry {
        attempts: r.attempts,
        per_try_timeout: wire_dur(&r.per_try_timeout),
        retry_on: r.retry_on.clone(),
        backoff: r.backoff.as_ref().map(|b| pb::Backoff {
            base: wire_dur(&b.base),
            max: wire_dur(&b.max),
        }),
        budget: r.budget.as_ref().map(|b| pb::RetryBudget {
            percent: b.percent,
            min_per_second: b.min_per_second,
        }),
        allow_non_idempotent: r.allow_non_idempotent,
    }
}

// === From the wire ===

impl TryFrom<pb::Resilience> for Resilience {
    type Error = WireError;

    fn try_from(r: pb::Resilience) -> Result<Self, WireError> {
        let lb = required(r.load_balancer, "load_balancer")?;
        Ok(Resilience {
            target_ref: None,
            load_balancer: LoadBalancer {
                policy: LbPolicy::from_wire(lb.policy, "policy")
                    .map_err(|e| e.at("load_balancer"))?,
                hash_key: lb.hash_key.map(|h| HashKey {
                    header: h.header,
                    cookie: h.cookie,
                    source_ip: h.source_ip,
                }),
            },
            circuit_breaker: r
                .circuit_breaker
                .map(|b| from_breaker(b).map_err(|e| e.at("circuit_breaker")))
                .transpose()?,
            outlier_detection: r
                .outlier_detection
                .map(|o| {
                    Ok::<_, WireError>(OutlierDetection {
                        consecutive5xx: o.consecutive_5xx,
                        interval: dur(o.interval, "interval")?,
                        base_ejection_time: dur(o.base_ejection_time, "base_ejection_time")?,
                        max_ejection_time: dur(o.max_ejection_time, "max_ejection_time")?,
                        max_ejection_percent: o.max_ejection_percent,
                    })
                })
                .transpose()
                .map_err(|e| e.at("outlier_detection"))?,
            retry: r
                .retry
                .map(|x| from_retry(x).map_err(|e| e.at("retry")))
                .transpose()?,
            timeout: dur(r.timeout, "timeout")?,
            tcp: r
                .tcp
                .map(|t| {
                    Ok::<_, WireError>(TcpSettings {
                        idle_timeout: dur(t.idle_timeout, "idle_timeout")?,
                    })
                })
                .transpose()
                .map_err(|e| e.at("tcp"))?,
            rate_limit: r.rate_limit.map(|l| RateLimit {
                requests_per_second: l.requests_per_second,
                burst: l.burst,
            }),
            bulkhead: r
                .bulkhead
                .map(|b| {
                    Ok::<_, WireError>(Bulkhead {
                        max_concurrent_requests: b.max_concurrent_requests,
                        max_pending_requests: b.max_pending_requests,
                        max_wait: dur(b.max_wait, "max_wait")?,
                    })
                })
                .transpose()
                .map_err(|e| e.at("bulkhead"))?,
            fault_injection: r
                .fault_injection
                .map(from_fault)
                .transpose()
                .map_err(|e| e.at("fault_injection"))?,
        })
    }
}

fn from_breaker(b: pb::CircuitBreaker) -> Result<CircuitBreaker, WireError> {
    let window = required(b.sliding_window, "sliding_window")?;
    Ok(CircuitBreaker {
        failure_rate_threshold: b.failure_rate_threshold,
        slow_call_rate_threshold: b.slow_call_rate_threshold,
        slow_call_duration_threshold: dur(
            b.slow_call_duration_threshold,
            "slow_call_duration_threshold",
        )?,
        sliding_window: SlidingWindow {
            kind: SlidingWindowType::from_wire(window.r#type, "type")
                .map_err(|e| e.at("sliding_window"))?,
            size: window.size,
        },
        minimum_calls: b.minimum_calls,
        wait_in_open: dur(b.wait_in_open, "wait_in_open")?,
        permitted_calls_in_half_open: b.permitted_calls_in_half_open,
    })
}

fn from_retry(r: pb::Retry) -> Result<Retry, WireError> {
    Ok(Retry {
        attempts: r.attempts,
        per_try_timeout: dur(r.per_try_timeout, "per_try_timeout")?,
        retry_on: r.retry_on,
        backoff: r
            .backoff
            .map(|b| {
                Ok::<_, WireError>(Backoff {
                    base: dur(b.base, "base")?,
                    max: dur(b.max, "max")?,
                })
            })
            .transpose()
            .map_err(|e| e.at("backoff"))?,
        budget: r.budget.map(|b| RetryBudget {
            percent: b.percent,
            min_per_second: b.min_per_second,
        }),
        allow_non_idempotent: r.allow_non_idempotent,
    })
}

fn from_fault(f: pb::FaultInjection) -> Result<FaultInjection, WireError> {
    Ok(FaultInjection {
        delay: f
            .delay
            .map(|d| {
                Ok::<_, WireError>(FaultDelay {
                    percent: d.percent,
                    duration: dur(d.duration, "duration")?,
                })
            })
            .transpose()
            .map_err(|e| e.at("delay"))?,
        abort: f
            .abort
            .map(|a| {
                Ok::<_, WireError>(FaultAbort {
                    percent: a.percent,
                    status: u16_of(a.status, "status")?,
                })
            })
            .transpose()
            .map_err(|e| e.at("abort"))?,
    })
}
