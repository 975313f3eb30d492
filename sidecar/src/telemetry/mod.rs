//! Telemetry: the Prometheus metrics of DESIGN.md's contract, trace context propagation and
//! sampling, spans and their export over OTLP, and what is recorded once per request (golden
//! metrics, access log, span).

pub(crate) mod access_log;
pub(crate) mod export;
pub(crate) mod golden;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod series;
pub(crate) mod span;
pub(crate) mod trace;
