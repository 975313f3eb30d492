//! Telemetry: the Prometheus metrics of DESIGN.md's contract, trace context propagation, and
//! what is recorded once per request (golden metrics, access log).

pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod trace;
