//! What is recorded once per request: the golden metrics and, when enabled, a JSON access
//! log line. Filled in as the request moves through its phases.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::respond::{TRELLIS_ERROR, error_response};
use crate::telemetry::metrics::{Metrics, RequestLabels};
use crate::telemetry::trace::TraceIds;
use http::{Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Metric label values that never change, made once.
pub struct Labels {
    pub workload: Arc<String>,
    pub namespace: Arc<String>,
    /// This workload's service account: `source_identity` on outbound.
    pub identity: Arc<String>,
    pub unknown: Arc<String>,
    pub inbound_service: Arc<String>,
    /// `destination_service` of intercepted traffic passed through under `ALLOW_ANY`.
    pub passthrough: Arc<String>,
}

pub struct Observation {
    started: Instant,
    direction: &'static str,
    pub destination: Arc<String>,
    pub route: Arc<String>,
    pub cluster: Option<Arc<String>>,
    pub endpoint: Option<SocketAddr>,
    pub trace: Option<TraceIds>,
    /// Inbound: the namespace and service account the caller proved over mTLS.
    pub source: Option<(Arc<String>, Arc<String>)>,
    error: Option<String>,
    /// Only captured when access logs are on, so the default path copies nothing.
    log: Option<(String, String, String)>,
}

impl Observation {
    pub fn start<B>(
        labels: &Labels,
        access_log: bool,
        direction: &'static str,
        req: &Request<B>,
    ) -> Observation {
        let log = access_log.then(|| {
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            (
                req.method().to_string(),
                req.uri().path().to_string(),
                authority,
            )
        });
        Observation {
            started: Instant::now(),
            direction,
            destination: labels.unknown.clone(),
            route: labels.unknown.clone(),
            cluster: None,
            endpoint: None,
            trace: None,
            source: None,
            error: None,
            log,
        }
    }

    /// The proxy's own answer for `err`.
    pub fn failed(&mut self, err: ProxyError, grpc: bool) -> Response<Body> {
        let res = error_response(&err, grpc);
        if res.status().is_server_error() || grpc {
            tracing::debug!(direction = self.direction, error = %err, "request failed");
        }
        self.error = Some(err.to_string());
        res
    }

    pub fn finish(self, metrics: &Metrics, labels: &Labels, res: Response<Body>) -> Response<Body> {
        let elapsed = self.started.elapsed();
        let unknown = || labels.unknown.clone();
        let (source_workload, source_namespace, source_identity) = if self.direction == "outbound" {
            let l = labels;
            (l.workload.clone(), l.namespace.clone(), l.identity.clone())
        } else {
            // Inbound, the caller is who its mTLS certificate proves: a namespace and a
            // service account. The certificate does not name the workload (a pod), and
            // without a certificate nothing is known.
            match &self.source {
                Some((ns, sa)) => (unknown(), ns.clone(), sa.clone()),
                None => (unknown(), unknown(), unknown()),
            }
        };
        let labels = RequestLabels {
            direction: self.direction,
            source_workload,
            source_namespace,
            source_identity,
            destination_service: self.destination.clone(),
            route: self.route.clone(),
            response_code: res.status().as_u16(),
        };
        metrics.record(&labels, elapsed);
        if let Some((method, path, authority)) = &self.log {
            let line = serde_json::json!({
                "direction": self.direction,
                "method": method,
                "path": path,
                "authority": authority,
                "status": res.status().as_u16(),
                "duration_ms": elapsed.as_secs_f64() * 1000.0,
                "destination_service": self.destination.as_str(),
                "route": self.route.as_str(),
                "cluster": self.cluster.as_deref().map(String::as_str),
                "upstream": self.endpoint.map(|e| e.to_string()),
                "trace_id": self.trace.map(|t| t.trace_hex()),
                "span_id": self.trace.map(|t| t.span_hex()),
                "trellis_error": res.headers().get(TRELLIS_ERROR).and_then(|v| v.to_str().ok()),
                "error": self.error,
            });
            println!("{line}");
        }
        res
    }
}
