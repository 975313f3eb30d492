//! What is recorded once per request: the golden metrics, when enabled a JSON access log
//! line, and when the request is traced its span. Filled in as the request moves through its
//! phases.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::Notes;
use crate::http::respond::{TRELLIS_ERROR, error_response};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::export::Spans;
use crate::telemetry::golden::{GoldenCounts, GoldenKey};
use crate::telemetry::metrics::{Metrics, RequestLabels};
use crate::telemetry::series::RequestSeries;
use crate::telemetry::span::{self, SpanRecord};
use crate::telemetry::trace::{self, TraceIds};
use http::{Request, Response};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

/// Metric label values that never change, made once.
pub struct Labels {
    pub workload: Arc<String>,
    pub namespace: Arc<String>,
    /// This workload's service account: `source_identity` on outbound.
    pub identity: Arc<String>,
    pub unknown: Arc<String>,
    /// The empty string, for the golden keys' fields that do not apply.
    pub empty: Arc<String>,
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
    /// The request's overall budget (route `timeouts.request`, policy `timeout`), for the
    /// access log; set only when the log is on.
    pub timeout: Option<std::time::Duration>,
    /// The matched rule's path prefix, for the span's `http.route`.
    pub http_route: Option<Arc<str>>,
    /// This proxy's span, when the request is sampled and a collector is configured.
    span: Option<Box<SpanRecord>>,
    /// Inbound: the namespace and service account the caller proved over mTLS.
    pub source: Option<(Arc<String>, Arc<String>)>,
    /// The request series of this request's labels, resolved by the route rule or the
    /// caller's connection (`series.rs`); without one, `finish` looks the labels up.
    pub series: Option<Arc<RequestSeries>>,
    /// The counts the control plane's summary reads (`golden.rs`), resolved by the route
    /// backend or the caller's connection; without them, `finish` looks the key up.
    golden: Option<Arc<GoldenCounts>>,
    /// Sent to its endpoint over mTLS, or received over it.
    pub mtls: bool,
    /// The `trellis-error` code of the answer this proxy made up for the request, if it did
    /// (`failed`). A code in a response from upstream (another sidecar's) is not this one's.
    generated: Option<&'static str>,
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
            timeout: None,
            http_route: None,
            span: None,
            source: None,
            series: None,
            golden: None,
            mtls: false,
            generated: None,
            error: None,
            log,
        }
    }

    /// Reads and writes `req`'s trace context (`trace.rs`). `sample_percent` is `None` with
    /// tracing off. When the request is sampled, its span starts, back-dated to when the
    /// request arrived; `identity` gives this proxy's SPIFFE ID, asked only then.
    pub fn trace<B>(
        &mut self,
        req: &mut Request<B>,
        sample_percent: Option<f64>,
        peer: SocketAddr,
        identity: impl FnOnce() -> Option<String>,
    ) {
        let (ids, span) = trace::propagate(req.headers_mut(), sample_percent);
        self.trace = Some(ids);
        if let Some(ids) = span {
            let now = SystemTime::now();
            let began = now.checked_sub(self.started.elapsed()).unwrap_or(now);
            let rec = SpanRecord::start(ids, self.direction, began, req, peer, identity());
            self.span = Some(Box::new(rec));
        }
    }

    /// The caller's SPIFFE ID, for the span of an inbound request.
    pub fn peer_identity(&mut self, id: impl FnOnce() -> Option<String>) {
        if let Some(s) = &mut self.span {
            s.peer_identity = id();
        }
    }

    /// The SPIFFE ID the chosen endpoint proved, for the span of an outbound request.
    pub fn endpoint_identity(&mut self, id: impl FnOnce() -> Option<Arc<str>>) {
        if let Some(s) = &mut self.span {
            s.endpoint_identity = id();
        }
    }

    /// Whether this request writes an access-log line.
    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// Whether this request has a span.
    pub fn traced(&self) -> bool {
        self.span.is_some()
    }

    /// Where the resilience stack notes what it did to a traced request.
    pub fn notes(&self) -> Option<Notes> {
        self.span.as_ref().map(|s| s.notes.clone())
    }

    /// The proxy's own answer for `err`.
    pub fn failed(&mut self, err: ProxyError, grpc: bool) -> Response<Body> {
        let res = error_response(&err, grpc);
        self.generated = Some(err.answer().code);
        if res.status().is_server_error() || grpc {
            tracing::debug!(direction = self.direction, error = %err, "request failed");
        }
        // The text goes only to the access log and the span: formatted only for them.
        if self.log.is_some() || self.span.is_some() {
            self.error = Some(err.to_string());
        }
        res
    }

    /// The request's metric labels, as `finish` records them without a resolved series.
    fn labels(&self, labels: &Labels, code: u16) -> RequestLabels {
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
        RequestLabels {
            direction: self.direction,
            source_workload,
            source_namespace,
            source_identity,
            destination_service: self.destination.clone(),
            route: self.route.clone(),
            response_code: code,
        }
    }

    /// Records this request in the series `slot` holds: a route rule's, a gateway backend's
    /// or a connection's, made by the first request from its labels as they stand (status
    /// code aside) and handed to every later one.
    pub fn use_series(
        &mut self,
        slot: &OnceLock<Arc<RequestSeries>>,
        metrics: &Metrics,
        labels: &Labels,
    ) {
        let series =
            slot.get_or_init(|| Arc::new(RequestSeries::new(metrics, self.labels(labels, 0))));
        self.series = Some(series.clone());
    }

    /// The key of this request's golden counts, as its labels stand.
    fn golden_key(&self, labels: &Labels) -> GoldenKey {
        let inbound = self.direction == "inbound";
        let caller = match (&self.source, inbound) {
            (Some((ns, sa)), true) => Arc::new(format!("{ns}/{sa}")),
            _ => labels.empty.clone(),
        };
        GoldenKey {
            inbound,
            destination: self.destination.clone(),
            route: self.route.clone(),
            backend: match (&self.cluster, inbound) {
                (Some(c), false) => c.clone(),
                _ => labels.empty.clone(),
            },
            caller,
        }
    }

    /// Counts this request in the golden counts `slot` holds (a route backend's or a
    /// connection's), made by the first request from its key as it stands.
    pub fn use_golden(
        &mut self,
        slot: &OnceLock<Arc<GoldenCounts>>,
        metrics: &Metrics,
        labels: &Labels,
    ) {
        let counts = slot.get_or_init(|| metrics.golden.counts(self.golden_key(labels)));
        self.golden = Some(counts.clone());
    }

    pub fn finish(
        mut self,
        metrics: &Metrics,
        labels: &Labels,
        spans: &Spans,
        access_log: &AccessLog,
        res: Response<Body>,
    ) -> Response<Body> {
        let elapsed = self.started.elapsed();
        let code = res.status().as_u16();
        let span = self.span.take();
        let request_labels = || self.labels(labels, code);
        if let Some(rec) = span {
            let l = request_labels();
            let data = rec.finish(&span::Outcome {
                direction: self.direction,
                status: code,
                trellis_error: res
                    .headers()
                    .get(TRELLIS_ERROR)
                    .and_then(|v| v.to_str().ok()),
                error: self.error.as_deref(),
                destination: &self.destination,
                route: &self.route,
                http_route: self.http_route.as_deref(),
                cluster: self.cluster.as_deref().map(String::as_str),
                endpoint: self.endpoint,
                source_workload: &l.source_workload,
                source_namespace: &l.source_namespace,
            });
            spans.send(data, &metrics.trace);
        }
        match &self.series {
            Some(s) => s.record(code, elapsed),
            None => metrics.record(&request_labels(), elapsed),
        }
        match &self.golden {
            Some(g) => g.record(code, elapsed, self.mtls),
            None => {
                (metrics.golden.counts(self.golden_key(labels))).record(code, elapsed, self.mtls)
            }
        }
        if let Some(e) = self.generated {
            metrics.golden.error(&self.destination, e);
        }
        if let Some((method, path, authority)) = &self.log {
            let line = serde_json::json!({
                "direction": self.direction,
                "method": method,
                "path": path,
                "authority": authority,
                "status": res.status().as_u16(),
                "duration_ms": elapsed.as_secs_f64() * 1000.0,
                "timeout_ms": self.timeout.map(|t| t.as_millis() as u64),
                "destination_service": self.destination.as_str(),
                "route": self.route.as_str(),
                "cluster": self.cluster.as_deref().map(String::as_str),
                "upstream": self.endpoint.map(|e| e.to_string()),
                "trace_id": self.trace.map(|t| t.trace_hex()),
                "span_id": self.trace.map(|t| t.span_hex()),
                "trellis_error": res.headers().get(TRELLIS_ERROR).and_then(|v| v.to_str().ok()),
                "error": self.error,
            });
            access_log.write(line.to_string());
        }
        res
    }
}
