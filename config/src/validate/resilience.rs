//! ResiliencePolicies: one per Service, each value in range (percents, sizes, retry
//! conditions, the ring-hash key).

use super::origin::Origin;
use super::references::check_target;
use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use std::collections::HashMap;

const RETRY_ON: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "reset",
    "unavailable",
    "cancelled",
    "gateway-error",
    "5xx",
];

/// Checks each ResiliencePolicy, and that no two target the same Service.
pub(super) fn check_resilience_policies(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    let mut targeted = HashMap::new();
    for p in &cfg.resilience_policies {
        check_resilience(cfg, p, errs);
        if let Some(t) = &p.object.spec.target_ref {
            let ns = t
                .namespace
                .as_deref()
                .unwrap_or(&p.object.metadata.namespace);
            let key = format!("{ns}/{}", t.name.value);
            if let Some(first) = targeted.insert(key.clone(), p) {
                let msg = format!(
                    "Service {key} already has ResiliencePolicy {} ({}:{}); merge them into one",
                    first.key(),
                    first.file,
                    first.line
                );
                Origin::new(p).at(errs, &t.name, "spec.targetRef", msg);
            }
        }
    }
}

fn check_resilience(cfg: &MeshConfig, p: &Doc<ResiliencePolicySpec>, errs: &mut ConfigErrors) {
    let c = Origin::new(p);
    let s = &p.object.spec;
    check_target(
        cfg,
        &c,
        &p.object.metadata.namespace,
        s.target_ref.as_ref(),
        errs,
    );
    let pct = |errs: &mut ConfigErrors, field: &str, v: f64| {
        if !(0.0..=100.0).contains(&v) {
            c.doc(
                errs,
                field.to_string(),
                format!("{v} must be a percent, 0-100"),
            );
        }
    };
    if s.load_balancer.policy != LbPolicy::RingHash && s.load_balancer.hash_key.is_some() {
        let msg = format!(
            "hashKey only applies to RING_HASH, but the policy is {:?}; remove it or set policy: RING_HASH",
            s.load_balancer.policy
        );
        c.doc(errs, "spec.loadBalancer.hashKey", msg);
    }
    if s.load_balancer.policy == LbPolicy::RingHash {
        let n = s.load_balancer.hash_key.as_ref().map_or(0, |k| {
            usize::from(k.header.is_some())
                + usize::from(k.cookie.is_some())
                + usize::from(k.source_ip)
        });
        if n != 1 {
            c.doc(
                errs,
                "spec.loadBalancer.hashKey",
                "RING_HASH needs exactly one of {header: NAME}, {cookie: NAME}, {sourceIp: true}",
            );
        }
    }
    if let Some(cb) = &s.circuit_breaker {
        pct(
            errs,
            "spec.circuitBreaker.failureRateThreshold",
            cb.failure_rate_threshold,
        );
        pct(
            errs,
            "spec.circuitBreaker.slowCallRateThreshold",
            cb.slow_call_rate_threshold,
        );
        if cb.sliding_window.size == 0 {
            c.doc(
                errs,
                "spec.circuitBreaker.slidingWindow.size",
                "must be at least 1",
            );
        }
        if cb.permitted_calls_in_half_open == 0 {
            c.doc(
                errs,
                "spec.circuitBreaker.permittedCallsInHalfOpen",
                "must be at least 1",
            );
        }
    }
    if let Some(od) = &s.outlier_detection {
        pct(
            errs,
            "spec.outlierDetection.maxEjectionPercent",
            od.max_ejection_percent,
        );
        if od.consecutive5xx == 0 {
            c.doc(
                errs,
                "spec.outlierDetection.consecutive5xx",
                "must be at least 1",
            );
        }
    }
    if let Some(r) = &s.retry {
        for on in &r.retry_on {
            let is_code = on.len() == 3 && on.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
            if !is_code && !RETRY_ON.contains(&on.as_str()) {
                c.doc(
                    errs,
                    "spec.retry.retryOn",
                    format!(
                        "{on:?} is not allowed; allowed: {} or a status code like \"503\"",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
        if let Some(b) = &r.budget {
            pct(errs, "spec.retry.budget.percent", b.percent);
        }
    }
    if let Some(rl) = &s.rate_limit
        && (rl.requests_per_second.is_nan() || rl.requests_per_second <= 0.0)
    {
        c.doc(
            errs,
            "spec.rateLimit.requestsPerSecond",
            "must be greater than 0",
        );
    }
    if let Some(b) = &s.bulkhead
        && b.max_concurrent_requests == 0
    {
        c.doc(
            errs,
            "spec.bulkhead.maxConcurrentRequests",
            "must be at least 1",
        );
    }
    if let Some(fi) = &s.fault_injection {
        if let Some(d) = &fi.delay {
            pct(errs, "spec.faultInjection.delay.percent", d.percent);
        }
        if let Some(a) = &fi.abort {
            pct(errs, "spec.faultInjection.abort.percent", a.percent);
            if !(200..=599).contains(&a.status) {
                c.doc(
                    errs,
                    "spec.faultInjection.abort.status",
                    "must be an HTTP status, 200-599",
                );
            }
        }
    }
}

/// A ClientRateLimit's rate is a positive number and its burst at least one request.
pub(super) fn check_client_rate_limits(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    for l in &cfg.client_rate_limits {
        let s = &l.object.spec;
        if !(s.requests_per_second.is_finite() && s.requests_per_second > 0.0) {
            errs.push(
                &l.file,
                l.line,
                "spec.requestsPerSecond",
                format!("{} must be a number greater than 0", s.requests_per_second),
            );
        }
        if s.burst == Some(0) {
            errs.push(
                &l.file,
                l.line,
                "spec.burst",
                "must be at least 1 (leave it out for one second's worth)",
            );
        }
    }
}
