//! `ResiliencePolicy` and `AuthorizationPolicy`: per-Service policy attached by `targetRef`.
//!
//! The same structs travel inside the compiled snapshot, so they also serialize.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::time::Duration;

/// A reference to another object by name, as in Gateway API `targetRef`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(serde::Serialize, schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    #[cfg_attr(feature = "kube", schemars(with = "String"))]
    pub name: Spanned<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The `spec` of a `ResiliencePolicy`.
pub type ResiliencePolicySpec = Resilience;

/// Everything a `ResiliencePolicy` sets on a cluster; absent parts are off.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[cfg_attr(
    feature = "kube",
    derive(schemars::JsonSchema, kube::CustomResource),
    kube(
        group = "trellis.dev",
        version = "v1alpha1",
        kind = "ResiliencePolicy",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resilience {
    /// Required in a policy document; not carried into snapshots.
    #[serde(default, skip_serializing)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<Bulkhead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjection>,
    /// Opaque TCP to the Service (brokers, databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
}

/// How long an opaque connection may carry no byte either way before both sides close it.
/// Brokers' own heartbeats (Kafka 3 s, ActiveMQ's inactivity monitor 30 s, NATS 2 min) keep a
/// healthy connection far busier than the default, one hour; `0s` never closes it.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// See `DEFAULT_TCP_IDLE_TIMEOUT`.
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub idle_timeout: Option<Duration>,
}

impl Resilience {
    /// The idle timeout of opaque connections to the Service; `None`: never.
    pub fn tcp_idle_timeout(&self) -> Option<Duration> {
        let t = (self.tcp.as_ref())
            .and_then(|t| t.idle_timeout)
            .unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT);
        (!t.is_zero()).then_some(t)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(default)]
    pub policy: LbPolicy,
    /// What `RING_HASH` hashes: one of a header, a cookie, or the source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on in-flight requests.
    #[default]
    LeastRequest,
    Random,
    RingHash,
    PeakEwma,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "d50")]
    pub failure_rate_threshold: f64,
    #[serde(default = "d100")]
    pub slow_call_rate_threshold: f64,
    #[serde(default = "d60s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub slow_call_duration_threshold: Option<Duration>,
    #[serde(default)]
    pub sliding_window: SlidingWindow,
    #[serde(default = "d100u")]
    pub minimum_calls: u32,
    #[serde(default = "d60s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub wait_in_open: Option<Duration>,
    #[serde(default = "d10u")]
    pub permitted_calls_in_half_open: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlidingWindow {
    #[serde(rename = "type")]
    pub kind: SlidingWindowType,
    pub size: u32,
}

impl Default for SlidingWindow {
    /// resilience4j: COUNT_BASED, 100 calls.
    fn default() -> Self {
        SlidingWindow {
            kind: SlidingWindowType::Count,
            size: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlidingWindowType {
    Count,
    Time,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "d5u")]
    pub consecutive5xx: u32,
    #[serde(default = "d10s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub interval: Option<Duration>,
    #[serde(default = "d30s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub base_ejection_time: Option<Duration>,
    #[serde(default = "d300s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub max_ejection_time: Option<Duration>,
    #[serde(default = "d10")]
    pub max_ejection_percent: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "d2u")]
    pub attempts: u32,
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Retry non-idempotent methods (POST, PATCH, ...) even after the request was sent.
    /// Off by default: the upstream may have acted on the first attempt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_non_idempotent: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "d25ms", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub base: Option<Duration>,
    #[serde(default = "d250ms", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub max: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "d20")]
    pub percent: f64,
    #[serde(default = "d10u")]
    pub min_per_second: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bulkhead {
    pub max_concurrent_requests: u32,
    #[serde(default)]
    pub max_pending_requests: u32,
    /// How long a pending request may wait for a slot.
    #[serde(default = "d1s", with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub max_wait: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    pub percent: f64,
    #[serde(with = "crate::duration::serde_opt")]
    #[cfg_attr(feature = "kube", schemars(with = "Option<String>"))]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    pub percent: f64,
    pub status: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    feature = "kube",
    derive(serde::Serialize, schemars::JsonSchema, kube::CustomResource),
    kube(
        group = "trellis.dev",
        version = "v1alpha1",
        kind = "AuthorizationPolicy",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub action: AuthzAction,
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<AuthzSource>,
    #[serde(default)]
    pub to: Vec<AuthzOperation>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzSource {
    /// `namespace/serviceAccount` pairs.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzOperation {
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact paths, prefixes ending in `*`, or suffixes starting with `*`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Every listed header must be present with one of its values (same `*` forms as paths).
    #[serde(default)]
    pub headers: Vec<AuthzHeader>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[cfg_attr(feature = "kube", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzHeader {
    pub name: String,
    pub values: Vec<String>,
}

// Defaults, from resilience4j (breaker) and Envoy (outlier detection) where DESIGN.md is silent.
fn d2u() -> u32 {
    2
}
fn d5u() -> u32 {
    5
}
fn d10u() -> u32 {
    10
}
fn d100u() -> u32 {
    100
}
fn d10() -> f64 {
    10.0
}
fn d20() -> f64 {
    20.0
}
fn d50() -> f64 {
    50.0
}
fn d100() -> f64 {
    100.0
}
fn d25ms() -> Option<Duration> {
    Some(Duration::from_millis(25))
}
fn d250ms() -> Option<Duration> {
    Some(Duration::from_millis(250))
}
fn d1s() -> Option<Duration> {
    Some(Duration::from_secs(1))
}
fn d10s() -> Option<Duration> {
    Some(Duration::from_secs(10))
}
fn d30s() -> Option<Duration> {
    Some(Duration::from_secs(30))
}
fn d60s() -> Option<Duration> {
    Some(Duration::from_secs(60))
}
fn d300s() -> Option<Duration> {
    Some(Duration::from_secs(300))
}
